package metatest

import (
	"errors"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/meta"
)

// testCache: the pull-through cache's records (meta.CacheIndex) are kept
// per repository and digest or tag, replaced by a put, walked in digest
// order within their repository only, survive a restart, and cannot be
// written in a View.
func testCache(t *testing.T, h *handle) {
	a, b := meta.Cached{Upstream: "hub", Cached: at(1), Pulled: at(2)}, meta.Cached{Upstream: "quay", Cached: at(3), Pulled: at(3)}
	ds := sorted(dg("x"), dg("y"), dg("z"))
	h.view(t, func(tx meta.Tx) error {
		if _, ok, err := tx.Cached("hub/r", ds[0]); ok || err != nil {
			t.Errorf("Cached of nothing = %v, %v; want absent", ok, err)
		}
		if _, ok, err := tx.TagCheck("hub/r", "latest"); ok || err != nil {
			t.Errorf("TagCheck of nothing = %v, %v; want absent", ok, err)
		}
		return nil
	})
	h.update(t, func(tx meta.Tx) error {
		must(t, tx.PutCached("hub/r", ds[2], a))
		must(t, tx.PutCached("hub/r", ds[0], a))
		must(t, tx.PutCached("hub/r2", ds[1], b)) // another repository, whose name extends the first
		must(t, tx.PutCached("hub", ds[1], b))    // and one that prefixes it
		must(t, tx.PutTagCheck("hub/r", "latest", meta.TagCheck{Upstream: "hub", Checked: at(5), Digest: ds[0]}))
		return tx.PutTagCheck("hub/r", "v1", meta.TagCheck{Upstream: "hub", Checked: at(6)})
	})
	h.reopen(t)
	walk := func(tx meta.Tx, repo string) (out []digest.Digest) {
		must(t, tx.CachedManifests(repo, func(d digest.Digest, c meta.Cached) error {
			out = append(out, d)
			return nil
		}))
		return out
	}
	h.view(t, func(tx meta.Tx) error {
		c, ok, err := tx.Cached("hub/r", ds[0])
		must(t, err)
		if !ok || c.Upstream != "hub" || !c.Cached.Equal(at(1)) || !c.Pulled.Equal(at(2)) {
			t.Errorf("Cached = %+v, %v; want %+v", c, ok, a)
		}
		if _, ok, _ := tx.Cached("hub/r", ds[1]); ok {
			t.Error("Cached of a digest recorded in another repository only is present")
		}
		equal(t, "CachedManifests(hub/r)", walk(tx, "hub/r"), []digest.Digest{ds[0], ds[2]})
		equal(t, "CachedManifests(hub/r2)", walk(tx, "hub/r2"), []digest.Digest{ds[1]})
		equal(t, "CachedManifests(hub)", walk(tx, "hub"), []digest.Digest{ds[1]})
		equal(t, "CachedManifests(none)", walk(tx, "nothing"), nil)
		tc, ok, err := tx.TagCheck("hub/r", "latest")
		must(t, err)
		if !ok || tc.Upstream != "hub" || !tc.Checked.Equal(at(5)) || tc.Digest != ds[0] {
			t.Errorf("TagCheck = %+v, %v; want checked %v naming %s", tc, ok, at(5), ds[0])
		}
		if _, ok, _ := tx.TagCheck("hub/r2", "latest"); ok {
			t.Error("TagCheck of a tag checked in another repository only is present")
		}
		return nil
	})
	// Replacing, deleting (absent ones too), and stopping a walk.
	h.update(t, func(tx meta.Tx) error {
		must(t, tx.PutCached("hub/r", ds[0], meta.Cached{Upstream: "hub", Cached: at(1), Pulled: at(9)}))
		must(t, tx.DeleteCached("hub/r", ds[2]))
		must(t, tx.DeleteCached("hub/r", dg("never")))
		must(t, tx.PutTagCheck("hub/r", "latest", meta.TagCheck{Upstream: "hub", Checked: at(7), Digest: ds[1]}))
		must(t, tx.DeleteTagCheck("hub/r", "v1"))
		return tx.DeleteTagCheck("hub/r", "never")
	})
	h.view(t, func(tx meta.Tx) error {
		if c, _, _ := tx.Cached("hub/r", ds[0]); !c.Pulled.Equal(at(9)) {
			t.Errorf("Cached after replacing = %+v; want pulled %v", c, at(9))
		}
		equal(t, "CachedManifests after delete", walk(tx, "hub/r"), []digest.Digest{ds[0]})
		if tc, _, _ := tx.TagCheck("hub/r", "latest"); !tc.Checked.Equal(at(7)) || tc.Digest != ds[1] {
			t.Errorf("TagCheck after replacing = %+v", tc)
		}
		if _, ok, _ := tx.TagCheck("hub/r", "v1"); ok {
			t.Error("TagCheck after DeleteTagCheck is present")
		}
		n := 0
		must(t, tx.CachedManifests("hub/r2", func(digest.Digest, meta.Cached) error { n++; return meta.ErrStop }))
		if err := tx.CachedManifests("hub/r2", func(digest.Digest, meta.Cached) error { return errSentinel }); !errors.Is(err, errSentinel) {
			t.Errorf("CachedManifests returns %v when fn fails; want fn's error", err)
		}
		// Writes fail in a View and change nothing.
		for name, w := range map[string]error{
			"PutCached":      tx.PutCached("hub/r", ds[1], a),
			"DeleteCached":   tx.DeleteCached("hub/r", ds[0]),
			"PutTagCheck":    tx.PutTagCheck("hub/r", "v2", meta.TagCheck{Upstream: "hub", Checked: at(1)}),
			"DeleteTagCheck": tx.DeleteTagCheck("hub/r", "latest"),
		} {
			if w == nil {
				t.Errorf("%s in a View succeeded", name)
			}
		}
		if _, ok, _ := tx.Cached("hub/r", ds[0]); !ok {
			t.Error("DeleteCached in a View removed the record")
		}
		return nil
	})
	// A failed Update keeps nothing.
	err := h.s.Update(t.Context(), func(tx meta.Tx) error {
		must(t, tx.PutCached("hub/r", ds[1], a))
		must(t, tx.PutTagCheck("hub/r", "v3", meta.TagCheck{Upstream: "hub", Checked: at(1)}))
		return errSentinel
	})
	if !errors.Is(err, errSentinel) {
		t.Fatalf("failing Update = %v", err)
	}
	h.view(t, func(tx meta.Tx) error {
		if _, ok, _ := tx.Cached("hub/r", ds[1]); ok {
			t.Error("PutCached of a rolled-back Update is present")
		}
		if _, ok, _ := tx.TagCheck("hub/r", "v3"); ok {
			t.Error("PutTagCheck of a rolled-back Update is present")
		}
		return nil
	})
}
