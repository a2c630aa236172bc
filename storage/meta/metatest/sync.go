package metatest

import (
	"errors"
	"testing"

	"github.com/berth-registry/berth/storage/meta"
)

// testSync: replication's records (meta.SyncIndex) are kept per rule,
// repository and tag, replaced by a put, walked in order of repository and
// tag within their rule only, survive a restart, refuse what no record can
// be, and cannot be written in a View.
func testSync(t *testing.T, h *handle) {
	rec := func(name string, i int) meta.SyncedTag {
		return meta.SyncedTag{Digest: dg(name), Fingerprint: "fp-" + name, Synced: at(i)}
	}
	run := meta.SyncRun{Started: at(1), Finished: at(2), Error: "1 tag failed", Tags: 3, Manifests: 4, Blobs: 5, Bytes: 6}
	h.view(t, func(tx meta.Tx) error {
		if _, ok, err := tx.SyncedTag("push", "apps/web", "v1"); ok || err != nil {
			t.Errorf("SyncedTag of nothing = %v, %v; want absent", ok, err)
		}
		if _, ok, err := tx.SyncRun("push"); ok || err != nil {
			t.Errorf("SyncRun of nothing = %v, %v; want absent", ok, err)
		}
		return nil
	})
	h.update(t, func(tx meta.Tx) error {
		must(t, tx.PutSyncedTag("push", "apps/web", "v2", rec("a", 1)))
		must(t, tx.PutSyncedTag("push", "apps/web", "v1", rec("b", 2)))
		must(t, tx.PutSyncedTag("push", "apps", "v9", rec("c", 3)))          // a repository that prefixes the other
		must(t, tx.PutSyncedTag("push", "apps/web2", "v0", rec("d", 4)))     // and one that extends it
		must(t, tx.PutSyncedTag("push-more", "apps/web", "v1", rec("e", 5))) // a rule whose name extends the first
		must(t, tx.PutSyncedTag("pus", "apps/web", "v1", rec("f", 6)))       // and one it extends
		must(t, tx.PutSyncRun("push", run))
		return tx.PutSyncRun("pus", meta.SyncRun{Started: at(9)})
	})
	h.reopen(t)
	type entry struct {
		repo, tag string
		d         string
	}
	walk := func(tx meta.Tx, rule string) (out []entry) {
		must(t, tx.SyncedTags(rule, func(repo, tag string, s meta.SyncedTag) error {
			out = append(out, entry{repo, tag, string(s.Digest)})
			return nil
		}))
		return out
	}
	h.view(t, func(tx meta.Tx) error {
		s, ok, err := tx.SyncedTag("push", "apps/web", "v1")
		must(t, err)
		if !ok || s != rec("b", 2) {
			t.Errorf("SyncedTag = %+v, %v; want %+v", s, ok, rec("b", 2))
		}
		if _, ok, _ := tx.SyncedTag("push", "apps/web", "v9"); ok {
			t.Error("SyncedTag of a tag recorded in another repository only is present")
		}
		equal(t, "SyncedTags(push)", walk(tx, "push"), []entry{
			{"apps", "v9", string(dg("c"))}, {"apps/web", "v1", string(dg("b"))}, {"apps/web", "v2", string(dg("a"))},
			{"apps/web2", "v0", string(dg("d"))}})
		equal(t, "SyncedTags(push-more)", walk(tx, "push-more"), []entry{{"apps/web", "v1", string(dg("e"))}})
		equal(t, "SyncedTags(pus)", walk(tx, "pus"), []entry{{"apps/web", "v1", string(dg("f"))}})
		equal(t, "SyncedTags(none)", walk(tx, "none"), nil)
		r, ok, err := tx.SyncRun("push")
		must(t, err)
		if !ok || !r.Started.Equal(run.Started) || !r.Finished.Equal(run.Finished) || r.Error != run.Error ||
			r.Tags != 3 || r.Manifests != 4 || r.Blobs != 5 || r.Bytes != 6 {
			t.Errorf("SyncRun = %+v, %v; want %+v", r, ok, run)
		}
		if r, ok, _ := tx.SyncRun("pus"); !ok || !r.Started.Equal(at(9)) || !r.Finished.IsZero() {
			t.Errorf("SyncRun(pus) = %+v, %v; want started at(9), unfinished", r, ok)
		}
		n := 0
		must(t, tx.SyncedTags("push", func(string, string, meta.SyncedTag) error { n++; return meta.ErrStop }))
		if n != 1 {
			t.Errorf("SyncedTags went on after ErrStop: %d calls", n)
		}
		if err := tx.SyncedTags("push", func(string, string, meta.SyncedTag) error { return errSentinel }); !errors.Is(err, errSentinel) {
			t.Errorf("SyncedTags returns %v when fn fails; want fn's error", err)
		}
		for name, w := range map[string]error{
			"PutSyncedTag": tx.PutSyncedTag("push", "apps/web", "v3", rec("g", 1)),
			"PutSyncRun":   tx.PutSyncRun("push", meta.SyncRun{}),
		} {
			if w == nil {
				t.Errorf("%s in a View succeeded", name)
			}
		}
		return nil
	})
	// Replacing, and refusing what no record can be.
	h.update(t, func(tx meta.Tx) error {
		must(t, tx.PutSyncedTag("push", "apps/web", "v1", rec("h", 7)))
		for name, err := range map[string]error{
			"empty rule":   tx.PutSyncedTag("", "apps/web", "v1", rec("x", 1)),
			"NUL in rule":  tx.PutSyncedTag("a\x00b", "apps/web", "v1", rec("x", 1)),
			"empty repo":   tx.PutSyncedTag("push", "", "v1", rec("x", 1)),
			"empty tag":    tx.PutSyncedTag("push", "apps/web", "", rec("x", 1)),
			"no digest":    tx.PutSyncedTag("push", "apps/web", "v1", meta.SyncedTag{}),
			"run, no rule": tx.PutSyncRun("", meta.SyncRun{}),
		} {
			if err == nil {
				t.Errorf("%s: accepted", name)
			}
		}
		return nil
	})
	h.view(t, func(tx meta.Tx) error {
		if s, _, _ := tx.SyncedTag("push", "apps/web", "v1"); s != rec("h", 7) {
			t.Errorf("SyncedTag after replacing = %+v; want %+v", s, rec("h", 7))
		}
		equal(t, "SyncedTags(push-more) after a put in push", walk(tx, "push-more"), []entry{{"apps/web", "v1", string(dg("e"))}})
		return nil
	})
	// A failed Update keeps nothing.
	err := h.s.Update(t.Context(), func(tx meta.Tx) error {
		must(t, tx.PutSyncedTag("pus", "apps/web", "v5", rec("i", 1)))
		must(t, tx.PutSyncRun("pus", run))
		return errSentinel
	})
	if !errors.Is(err, errSentinel) {
		t.Fatalf("failing Update = %v", err)
	}
	h.view(t, func(tx meta.Tx) error {
		if _, ok, _ := tx.SyncedTag("pus", "apps/web", "v5"); ok {
			t.Error("PutSyncedTag of a rolled-back Update is present")
		}
		if r, _, _ := tx.SyncRun("pus"); r.Tags != 0 {
			t.Error("PutSyncRun of a rolled-back Update is present")
		}
		return nil
	})
}
