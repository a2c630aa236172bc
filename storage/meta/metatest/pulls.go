package metatest

import (
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/meta"
)

// pullList returns the pull records of repo (of d when set), in the order
// Pulls gives them.
func pullList(t *testing.T, tx meta.Tx, repo string, d digest.Digest) []meta.Pull {
	t.Helper()
	var out []meta.Pull
	must(t, tx.Pulls(repo, d, func(p meta.Pull) error {
		out = append(out, p)
		return nil
	}))
	return out
}

func samePull(a, b meta.Pull) bool {
	return a.Repo == b.Repo && a.Digest == b.Digest && a.Actor == b.Actor && a.Time.Equal(b.Time)
}

func equalPulls(t *testing.T, what string, got, want []meta.Pull) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d records %+v, want %d %+v", what, len(got), got, len(want), want)
		return
	}
	for i := range got {
		if !samePull(got[i], want[i]) {
			t.Errorf("%s: record %d = %+v, want %+v", what, i, got[i], want[i])
		}
	}
}

// testPulls: one record per repository, digest and identity, the latest
// pull kept whatever the order of the writes, walked in order, durable,
// and independent of the manifests and repositories they name.
func testPulls(t *testing.T, h *handle) {
	a, b := dg("manifest a"), dg("manifest b")
	first, second := a, b
	if second < first {
		first, second = second, first
	}
	ci := meta.Actor{Kind: "robot", Name: "ci", Address: "192.0.2.1"}
	prod := meta.Actor{Kind: "robot", Name: "prod-deployer", Address: "192.0.2.2"}
	alice := meta.Actor{Kind: "user", Name: "alice", Address: "2001:db8::1"}
	anon := meta.Actor{Kind: "anonymous", Address: "192.0.2.9"}
	h.update(t, func(tx meta.Tx) error {
		for _, p := range []meta.Pull{
			{Repo: "apps/web", Digest: second, Actor: prod, Time: at(10)},
			{Repo: "apps/web", Digest: first, Actor: ci, Time: at(1)},
			{Repo: "apps/web", Digest: first, Actor: alice, Time: at(2)},
			{Repo: "apps/web", Digest: first, Actor: anon, Time: at(3)},
			{Repo: "apps/web", Digest: first, Actor: prod, Time: at(4)},
			// Another repository, and one whose name extends this one's.
			{Repo: "apps", Digest: first, Actor: ci, Time: at(5)},
			{Repo: "apps/web/api", Digest: first, Actor: ci, Time: at(6)},
		} {
			must(t, tx.PutPull(p))
		}
		return nil
	})
	want := []meta.Pull{
		{Repo: "apps/web", Digest: first, Actor: anon, Time: at(3)},
		{Repo: "apps/web", Digest: first, Actor: ci, Time: at(1)},
		{Repo: "apps/web", Digest: first, Actor: prod, Time: at(4)},
		{Repo: "apps/web", Digest: first, Actor: alice, Time: at(2)},
		{Repo: "apps/web", Digest: second, Actor: prod, Time: at(10)},
	}
	h.view(t, func(tx meta.Tx) error {
		equalPulls(t, "Pulls of apps/web", pullList(t, tx, "apps/web", ""), want)
		equalPulls(t, "Pulls of one digest", pullList(t, tx, "apps/web", second), want[4:])
		equalPulls(t, "Pulls of apps", pullList(t, tx, "apps", ""), []meta.Pull{{Repo: "apps", Digest: first, Actor: ci, Time: at(5)}})
		equalPulls(t, "Pulls of a repository never pulled", pullList(t, tx, "apps/we", ""), nil)
		equalPulls(t, "Pulls of a digest never pulled", pullList(t, tx, "apps/web", dg("other")), nil)
		return nil
	})

	// A later pull replaces the identity's record, address included; an
	// earlier one, written late, changes nothing.
	moved := meta.Actor{Kind: "robot", Name: "prod-deployer", Address: "192.0.2.3"}
	h.update(t, func(tx meta.Tx) error {
		must(t, tx.PutPull(meta.Pull{Repo: "apps/web", Digest: first, Actor: moved, Time: at(20)}))
		return tx.PutPull(meta.Pull{Repo: "apps/web", Digest: second, Actor: ci, Time: at(7)})
	})
	h.update(t, func(tx meta.Tx) error {
		return tx.PutPull(meta.Pull{Repo: "apps/web", Digest: first, Actor: prod, Time: at(15)})
	})
	want[2] = meta.Pull{Repo: "apps/web", Digest: first, Actor: moved, Time: at(20)}
	want = append(want[:4], meta.Pull{Repo: "apps/web", Digest: second, Actor: ci, Time: at(7)}, want[4])
	h.reopen(t)
	h.view(t, func(tx meta.Tx) error {
		equalPulls(t, "Pulls after later and earlier writes and a restart", pullList(t, tx, "apps/web", ""), want)
		// Pull records name no repository into existence.
		if ok, err := tx.Repository("apps/web"); err != nil || ok {
			t.Errorf("Repository(apps/web) = %v, %v after pulls alone; want false", ok, err)
		}
		return nil
	})

	// Invalid records are refused and leave nothing.
	for name, p := range map[string]meta.Pull{
		"no repository": {Digest: first, Actor: ci, Time: at(1)},
		"no digest":     {Repo: "r", Actor: ci, Time: at(1)},
		"bad digest":    {Repo: "r", Digest: "sha256:nothex", Actor: ci, Time: at(1)},
		"no actor kind": {Repo: "r", Digest: first, Time: at(1)},
	} {
		err := h.s.Update(t.Context(), func(tx meta.Tx) error { return tx.PutPull(p) })
		if err == nil {
			t.Errorf("PutPull with %s succeeded", name)
		}
	}
	h.view(t, func(tx meta.Tx) error {
		equalPulls(t, "Pulls of r after refused writes", pullList(t, tx, "r", ""), nil)
		return nil
	})
}

// testHistoryTags: the tags with history, deleted ones included, in byte
// order, after a given tag, per repository.
func testHistoryTags(t *testing.T, h *handle) {
	h.update(t, func(tx meta.Tx) error {
		must(t, tx.PutManifest("r", dg("m"), fullManifest("")))
		must(t, tx.SetTag("r", "now", dg("m")))
		must(t, tx.SetTag("r", "never-moved", dg("m")))
		for _, tag := range []string{"now", "gone", "a-first", "z-last"} {
			if _, err := tx.AppendMove("r", tag, meta.Move{Time: at(1), Digest: dg("m"), Action: "push"}); err != nil {
				return err
			}
		}
		_, err := tx.AppendMove("r/sub", "other", meta.Move{Time: at(2), Digest: dg("m"), Action: "push"})
		return err
	})
	list := func(tx meta.Tx, repo, after string) []string {
		var out []string
		must(t, tx.HistoryTags(repo, after, func(tag string) error {
			out = append(out, tag)
			return nil
		}))
		return out
	}
	h.view(t, func(tx meta.Tx) error {
		equal(t, "HistoryTags(r)", list(tx, "r", ""), []string{"a-first", "gone", "now", "z-last"})
		equal(t, "HistoryTags(r, after gone)", list(tx, "r", "gone"), []string{"now", "z-last"})
		equal(t, "HistoryTags(r, after b)", list(tx, "r", "b"), []string{"gone", "now", "z-last"})
		equal(t, "HistoryTags(r/sub)", list(tx, "r/sub", ""), []string{"other"})
		equal(t, "HistoryTags(absent)", list(tx, "absent", ""), nil)
		var first []string
		must(t, tx.HistoryTags("r", "", func(tag string) error {
			first = append(first, tag)
			return meta.ErrStop
		}))
		equal(t, "HistoryTags stopped after one", first, []string{"a-first"})
		return nil
	})
}
