package bolt

import (
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/meta"
)

// RecordedRepositories names, in byte order and after the name given, the
// repositories, and those deleted whose history or pulls remain, each
// once.
func TestRecordedRepositories(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "index.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d := digest.FromString("m")
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	err = s.Update(t.Context(), func(tx meta.Tx) error {
		for _, repo := range []string{"b", "b/c", "e"} {
			if err := tx.PutLink(repo, d, meta.Link{Linked: now}); err != nil {
				return err
			}
		}
		for _, repo := range []string{"a", "b", "d"} { // a, d: deleted, history only
			if _, err := tx.AppendMove(repo, "t", meta.Move{Time: now, Digest: d, Action: "push"}); err != nil {
				return err
			}
		}
		for _, repo := range []string{"b", "b-", "f"} { // b-, f: deleted, pulls only
			if err := tx.PutPull(meta.Pull{Repo: repo, Digest: d, Actor: meta.Actor{Kind: "anonymous"}, Time: now}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	names := func(after string, limit int) []string {
		var out []string
		err := s.View(t.Context(), func(mt meta.Tx) error {
			return mt.(*tx).RecordedRepositories(after, func(repo string) error {
				out = append(out, repo)
				if len(out) == limit {
					return meta.ErrStop
				}
				return nil
			})
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	all := []string{"a", "b", "b-", "b/c", "d", "e", "f"}
	if got := names("", 0); !slices.Equal(got, all) {
		t.Errorf("RecordedRepositories = %q, want %q", got, all)
	}
	if got := names("b", 2); !slices.Equal(got, []string{"b-", "b/c"}) {
		t.Errorf("two after b = %q, want [b- b/c]", got)
	}
	if got := names("f", 0); len(got) != 0 {
		t.Errorf("after the last: %q", got)
	}
}
