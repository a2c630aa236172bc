package storecopy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	blobfs "github.com/berth-registry/berth/storage/blob/fs"
	"github.com/berth-registry/berth/storage/meta"
	"github.com/berth-registry/berth/storage/meta/bolt"
	"github.com/berth-registry/berth/storage/storecopy"
)

// open opens a store of bbolt and files in a new directory, closed when
// the test ends, and returns it with its directory.
func open(t *testing.T) (storecopy.Store, string) {
	t.Helper()
	dir := t.TempDir()
	index, err := bolt.Open(filepath.Join(dir, "index.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = index.Close() })
	blobs, err := blobfs.Open(t.Context(), dir, blobfs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return storecopy.Store{Index: index, Blobs: blobs}, dir
}

// at is a fixed time plus n seconds.
func at(n int) time.Time { return time.Date(2026, 11, 1, 10, 0, n, 123456789, time.UTC) }

// put places content in s and records it, returning its digest.
func put(t *testing.T, s storecopy.Store, content string) digest.Digest {
	t.Helper()
	d := digest.FromString(content)
	if err := s.Blobs.Put(t.Context(), d, strings.NewReader(content), int64(len(content))); err != nil {
		t.Fatal(err)
	}
	update(t, s, func(tx meta.Tx) error { return tx.PutBlob(d, meta.Blob{Size: int64(len(content)), Created: at(1)}) })
	return d
}

func update(t *testing.T, s storecopy.Store, fn func(tx meta.Tx) error) {
	t.Helper()
	if err := s.Index.Update(t.Context(), fn); err != nil {
		t.Fatal(err)
	}
}

// fill gives src records of every kind the copy carries, and what it
// leaves behind: a repository deleted but for its history and pulls, a
// tag deleted, a referrer, an index of two images, robots, cache and
// replication records, an open upload, a webhook delivery.
func fill(t *testing.T, src storecopy.Store) {
	layer, cfg := put(t, src, "layer"), put(t, src, "config")
	img := put(t, src, `{"image":1}`)
	img2 := put(t, src, `{"image":2}`)
	idx := put(t, src, `{"index":1}`)
	sig := put(t, src, `{"signature":1}`)
	alice := meta.Actor{Kind: "user", Name: "alice", Address: "192.0.2.1"}
	update(t, src, func(tx meta.Tx) error {
		for _, d := range []digest.Digest{layer, cfg} {
			if err := tx.PutLink("apps/web", d, meta.Link{Linked: at(2), Seen: at(3)}); err != nil {
				return err
			}
		}
		rec := meta.Manifest{MediaType: ocispec.MediaTypeImageManifest, Size: 11, References: []digest.Digest{cfg, layer},
			Annotations: map[string]string{"org.opencontainers.image.revision": "abc"}, Labels: map[string]string{"team": "web"}, Created: at(4)}
		for _, d := range []digest.Digest{img, img2} {
			if err := tx.PutManifest("apps/web", d, rec); err != nil {
				return err
			}
		}
		if err := tx.PutManifest("apps/web", idx, meta.Manifest{MediaType: ocispec.MediaTypeImageIndex, Size: 11,
			References: []digest.Digest{img, img2}, Created: at(5)}); err != nil {
			return err
		}
		if err := tx.PutManifest("apps/web", sig, meta.Manifest{MediaType: ocispec.MediaTypeImageManifest, Size: 15,
			ArtifactType: "application/vnd.dev.cosign.artifact.sig.v1+json", References: []digest.Digest{cfg},
			Subject: &ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: idx, Size: 11}, Created: at(6)}); err != nil {
			return err
		}
		moves := []struct {
			tag      string
			from, to digest.Digest
			action   string
		}{
			{"latest", "", img, "push"}, {"latest", img, img2, "push"}, {"latest", img2, img, "rollback"},
			{"temp", "", img2, "push"}, {"temp", img2, "", "delete"}, {"multi", "", idx, "push"},
		}
		for i, m := range moves {
			if _, err := tx.AppendMove("apps/web", m.tag, meta.Move{Time: at(10 + i), Previous: m.from, Digest: m.to, Action: m.action, Actor: alice}); err != nil {
				return err
			}
		}
		for tag, d := range map[string]digest.Digest{"latest": img, "multi": idx} {
			if err := tx.SetTag("apps/web", tag, d); err != nil {
				return err
			}
		}
		// A repository garbage collection removed: only its history and
		// pulls remain.
		if _, err := tx.AppendMove("scratch/gone", "old", meta.Move{Time: at(20), Digest: img, Action: "push", Actor: alice}); err != nil {
			return err
		}
		if _, err := tx.AppendMove("scratch/gone", "old", meta.Move{Time: at(21), Previous: img, Action: "gc", Actor: meta.Actor{Kind: "system"}}); err != nil {
			return err
		}
		for _, p := range []meta.Pull{{Repo: "apps/web", Digest: img, Actor: alice, Time: at(30)},
			{Repo: "scratch/gone", Digest: img, Actor: meta.Actor{Kind: "anonymous", Address: "192.0.2.9"}, Time: at(31)}} {
			if err := tx.PutPull(p); err != nil {
				return err
			}
		}
		revoked := at(42)
		for _, r := range []meta.Robot{{Name: "deployer", Scopes: []string{"repository:apps/*:pull"}, Created: at(40), Expires: at(9999), Hash: strings.Repeat("a", 64)},
			{Name: "retired", Scopes: []string{"repository:*:pull"}, Created: at(41), Expires: at(9999), Revoked: &revoked, Hash: strings.Repeat("b", 64)}} {
			if err := tx.PutRobot(r); err != nil {
				return err
			}
		}
		if err := tx.PutCached("apps/web", img, meta.Cached{Upstream: "hub", Cached: at(50), Pulled: at(51)}); err != nil {
			return err
		}
		if err := tx.PutTagCheck("apps/web", "latest", meta.TagCheck{Upstream: "hub", Checked: at(52), Digest: img}); err != nil {
			return err
		}
		if err := tx.PutSyncRun("out", meta.SyncRun{Started: at(60), Finished: at(61), Tags: 1, Manifests: 2, Blobs: 3, Bytes: 4}); err != nil {
			return err
		}
		if err := tx.PutSyncedTag("out", "apps/web", "latest", meta.SyncedTag{Digest: img, Fingerprint: "fp", Synced: at(62)}); err != nil {
			return err
		}
		if err := tx.PutUpload("u1", meta.Upload{Repo: "apps/web", Algorithm: "sha256", Started: at(70)}); err != nil {
			return err
		}
		_, err := tx.AppendDelivery(meta.Delivery{Endpoint: "hook", Key: "apps/web", EventID: "e1", Payload: []byte(`{}`), Created: at(71)})
		return err
	})
}

// dump reads every record of s that a copy carries, as text, in order.
func dump(t *testing.T, s storecopy.Store) []string {
	t.Helper()
	var out []string
	add := func(what string, v ...any) {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, what+" "+string(b))
	}
	err := s.Index.View(t.Context(), func(tx meta.Tx) error {
		_ = tx.Blobs(func(d digest.Digest, b meta.Blob) error { add("blob", d, b); return nil })
		for _, repo := range []string{"apps/web", "scratch/gone"} {
			_ = tx.Links(repo, func(d digest.Digest, l meta.Link) error { add("link", repo, d, l); return nil })
			_ = tx.Manifests(repo, "", func(d digest.Digest, m meta.Manifest) error {
				add("manifest", repo, d, m)
				return tx.Referrers(repo, d, func(desc ocispec.Descriptor) error { add("referrer", d, desc); return nil })
			})
			_ = tx.Tags(repo, "", func(tag string, d digest.Digest) error { add("tag", repo, tag, d); return nil })
			_ = tx.HistoryTags(repo, "", func(tag string) error {
				c, _, _ := tx.TagCheck(repo, tag)
				add("tag check", repo, tag, c)
				return tx.Moves(repo, tag, 0, func(m meta.Move) error { add("move", repo, tag, m); return nil })
			})
			_ = tx.Pulls(repo, "", func(p meta.Pull) error { add("pull", p); return nil })
			_ = tx.CachedManifests(repo, func(d digest.Digest, c meta.Cached) error { add("cached", repo, d, c); return nil })
		}
		_ = tx.FindPair(meta.Annotation, "org.opencontainers.image.revision", "abc", "", "", func(repo string, d digest.Digest) error {
			add("search", repo, d)
			return nil
		})
		_ = tx.Robots(func(r meta.Robot) error {
			name, _, _ := tx.RobotBySecret(r.Hash)
			add("robot", r, name)
			return nil
		})
		run, _, _ := tx.SyncRun("out")
		add("sync run", run)
		return tx.SyncedTags("out", func(repo, tag string, s meta.SyncedTag) error { add("synced", repo, tag, s); return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestCopy copies a store of every kind of record into an empty one:
// the destination reads back the same records, derived entries included,
// but for the open upload and the webhook delivery, which the report
// counts; a second copy copies nothing.
func TestCopy(t *testing.T) {
	src, _ := open(t)
	dst, _ := open(t)
	fill(t, src)
	r, err := storecopy.Copy(t.Context(), src, dst, storecopy.Options{Rules: []string{"out"}})
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(dump(t, src), dump(t, dst)); d != "" {
		t.Errorf("the destination's records differ (-source +destination):\n%s", d)
	}
	if r.Blobs.Copied != 6 || r.Manifests.Copied != 4 || r.Links.Copied != 2 || r.Tags.Copied != 2 || r.Moves.Copied != 8 ||
		r.Robots.Copied != 2 || r.Pulls.Copied != 2 || r.Cached.Copied != 1 || r.TagChecks.Copied != 1 || r.SyncRuns.Copied != 1 ||
		r.SyncedTags.Copied != 1 || r.Repositories != 1 || r.Deleted != 1 || r.Skipped.Uploads != 1 || r.Skipped.Deliveries != 1 {
		t.Errorf("report %+v", r)
	}
	err = dst.Index.View(t.Context(), func(tx meta.Tx) error {
		if _, ok, _ := tx.Upload("u1"); ok {
			t.Error("the open upload was copied")
		}
		return tx.Deliveries("", func(d meta.Delivery) error {
			t.Errorf("a webhook delivery was copied: %+v", d)
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	again, err := storecopy.Copy(t.Context(), src, dst, storecopy.Options{Rules: []string{"out"}})
	if err != nil {
		t.Fatal(err)
	}
	if again.Copied() != 0 || again.Blobs.Present != 6 || again.Moves.Present != 8 {
		t.Errorf("second copy: %+v, want nothing copied", again)
	}
}

// TestCopyRefusesConflicts: a destination whose tag names another
// manifest, whose history of a tag differs in a move's time and whose
// robot differs is refused, each listed, and nothing is written, not even
// the blobs.
func TestCopyRefusesConflicts(t *testing.T) {
	src, _ := open(t)
	dst, _ := open(t)
	fill(t, src)
	other := put(t, dst, `{"other":1}`)
	update(t, dst, func(tx meta.Tx) error {
		if err := tx.PutManifest("apps/web", other, meta.Manifest{MediaType: ocispec.MediaTypeImageManifest, Size: 11}); err != nil {
			return err
		}
		if err := tx.SetTag("apps/web", "multi", other); err != nil {
			return err
		}
		// The source's first move of temp, but at another time.
		img2 := digest.FromString(`{"image":2}`)
		if _, err := tx.AppendMove("apps/web", "temp", meta.Move{Time: at(99), Digest: img2, Action: "push",
			Actor: meta.Actor{Kind: "user", Name: "alice", Address: "192.0.2.1"}}); err != nil {
			return err
		}
		return tx.PutRobot(meta.Robot{Name: "deployer", Scopes: []string{"repository:*:push"}, Created: at(40), Hash: strings.Repeat("c", 64)})
	})
	before := dump(t, dst)
	_, err := storecopy.Copy(t.Context(), src, dst, storecopy.Options{})
	var conflict *storecopy.ConflictError
	if !errors.As(err, &conflict) || !errors.Is(err, storecopy.ErrConflict) || len(conflict.Conflicts) != 3 ||
		!strings.Contains(conflict.Conflicts[0], "tag apps/web:multi names "+string(other)) ||
		!strings.Contains(conflict.Conflicts[1], "history of apps/web:temp diverges at move 1") ||
		!strings.Contains(conflict.Conflicts[2], "robot deployer") {
		t.Fatalf("copy onto conflicting records: %v", err)
	}
	if d := cmp.Diff(before, dump(t, dst)); d != "" {
		t.Errorf("a refused copy changed the destination:\n%s", d)
	}
}

// TestCopyRefusesCorruptContent: a blob whose content no longer hashes to
// its digest stops the copy, naming it, and is not recorded in the
// destination.
func TestCopyRefusesCorruptContent(t *testing.T) {
	src, dir := open(t)
	dst, _ := open(t)
	content := strings.Repeat("x", 1<<20)
	d := put(t, src, content)
	var path string
	_ = filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err == nil && e.Name() == d.Encoded() {
			path = p
		}
		return nil
	})
	if err := os.WriteFile(path, bytes.Repeat([]byte("y"), 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := storecopy.Copy(t.Context(), src, dst, storecopy.Options{})
	if !errors.Is(err, storecopy.ErrSource) || !strings.Contains(err.Error(), string(d)) {
		t.Fatalf("copy of corrupt content: %v", err)
	}
	err = dst.Index.View(t.Context(), func(tx meta.Tx) error {
		if _, ok, _ := tx.Blob(d); ok {
			t.Error("the corrupt blob is recorded in the destination")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dst.Blobs.Stat(t.Context(), d); err == nil {
		t.Error("the corrupt content is in the destination")
	}
}

// TestCopyNestedIndexes copies indexes of indexes four levels deep, in
// as many passes (a manifest waits for its children), counting each
// manifest once.
func TestCopyNestedIndexes(t *testing.T) {
	src, _ := open(t)
	dst, _ := open(t)
	var prev []digest.Digest
	for level := range 4 {
		var next []digest.Digest
		for i := range 3 {
			d := put(t, src, strings.Repeat("m", level*10+i+1))
			update(t, src, func(tx meta.Tx) error {
				return tx.PutManifest("r", d, meta.Manifest{MediaType: ocispec.MediaTypeImageIndex, Size: 1, References: slices.Clone(prev)})
			})
			next = append(next, d)
		}
		prev = next
	}
	r, err := storecopy.Copy(context.Background(), src, dst, storecopy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Manifests.Copied != 12 || r.Manifests.Present != 0 {
		t.Errorf("report %+v, want 12 manifests copied", r.Manifests)
	}
	if d := cmp.Diff(dump(t, src), dump(t, dst)); d != "" {
		t.Errorf("the destination's records differ:\n%s", d)
	}
}
