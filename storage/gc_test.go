package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"
)

// ageStore moves every time the index records (blob creation, link and
// manifest times) back by d, as if it had all happened that long ago.
func ageStore(t *testing.T, s *Store, d time.Duration) {
	t.Helper()
	err := s.db.Update(func(tx *bolt.Tx) error {
		blobs := tx.Bucket(bucketBlobs)
		err := blobs.ForEach(func(k, _ []byte) error {
			var rec blobRecord
			if _, err := getJSON(blobs, k, &rec); err != nil {
				return err
			}
			rec.Created = rec.Created.Add(-d)
			return putJSON(blobs, k, rec)
		})
		if err != nil {
			return err
		}
		repos := tx.Bucket(bucketRepos)
		return repos.ForEachBucket(func(name []byte) error {
			rb := repos.Bucket(name)
			links, manifests := rb.Bucket(bucketLinks), rb.Bucket(bucketManifests)
			err := links.ForEach(func(k, _ []byte) error {
				var rec linkRecord
				if _, err := getJSON(links, k, &rec); err != nil {
					return err
				}
				rec.Linked = rec.Linked.Add(-d)
				return putJSON(links, k, rec)
			})
			if err != nil {
				return err
			}
			return manifests.ForEach(func(k, _ []byte) error {
				var rec manifestRecord
				if _, err := getJSON(manifests, k, &rec); err != nil {
					return err
				}
				rec.Created = rec.Created.Add(-d)
				return putJSON(manifests, k, rec)
			})
		})
	})
	if err != nil {
		t.Fatal(err)
	}
}

func collect(t *testing.T, s *Store, opts GCOptions) GCReport {
	t.Helper()
	rep, err := s.CollectGarbage(context.Background(), opts)
	if err != nil {
		t.Fatalf("collect garbage: %v", err)
	}
	return rep
}

// checkClean runs fsck and requires no finding at all.
func checkClean(t *testing.T, s *Store) {
	t.Helper()
	r, err := s.Check(context.Background(), CheckOptions{VerifyContent: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Problems) != 0 || len(r.Orphans) != 0 {
		t.Fatalf("fsck after gc: problems %v, orphans %v", r.Problems, r.Orphans)
	}
}

// pullAll reads a manifest and everything it references, recursively.
func pullAll(t *testing.T, s *Store, repo string, ref string) {
	t.Helper()
	ctx := context.Background()
	info, body, err := s.GetManifest(ctx, repo, ref)
	if err != nil {
		t.Fatalf("pull %s:%s: %v", repo, ref, err)
	}
	m := mustParse(t, body)
	for _, b := range m.Blobs {
		if got := digest.FromBytes(readBlob(t, s, repo, b.Digest)); got != b.Digest {
			t.Fatalf("blob %s of %s reads as %s", b.Digest, info.Digest, got)
		}
	}
	for _, c := range m.Manifests {
		pullAll(t, s, repo, string(c.Digest))
	}
}

func blobFiles(t *testing.T, s *Store) []string {
	t.Helper()
	return dirEntries(t, filepath.Join(s.root, "blobs"))
}

func TestGCRemovesWhatNothingReferences(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	defer s.Close()

	kept := putTestImage(t, s, "app", "kept", "v1")
	untagged := putTestImage(t, s, "app", "untagged")
	deleted := putTestImage(t, s, "app", "deleted", "v2")
	child := putTestImage(t, s, "app", "child")
	idx, _ := putTestIndex(t, s, "app", []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageManifest, Digest: child, Size: manifestSize(t, s, "app", child)}}, "multi")
	stray := putTestBlob(t, s, "app", "application/octet-stream", []byte("never referenced"))
	// The same layer, shared with another repository that keeps a link.
	shared := putTestBlob(t, s, "other", ocispec.MediaTypeImageLayer, []byte("layer of deleted"))
	otherCfg := putTestBlob(t, s, "other", ocispec.MediaTypeImageConfig, []byte(`{}`))
	putTestManifest(t, s, "other", ocispec.Manifest{Config: otherCfg, Layers: []ocispec.Descriptor{shared}}, "latest")
	_ = putTestBlob(t, s, "gone", "application/octet-stream", []byte("only blob of a repository"))

	_, delBody, err := s.GetManifest(ctx, "app", string(deleted))
	if err != nil {
		t.Fatal(err)
	}
	delM := mustParse(t, delBody)
	if err := s.DeleteManifest(ctx, "app", deleted); err != nil {
		t.Fatal(err)
	}
	before := len(blobFiles(t, s))

	// Everything is fresh: the grace keeps it all.
	if rep := collect(t, s, GCOptions{Grace: time.Hour}); rep.LinksRemoved+rep.BlobsRemoved+rep.RepositoriesRemoved != 0 {
		t.Fatalf("gc within the grace removed %+v", rep)
	}
	ageStore(t, s, 2*time.Hour)
	dry := collect(t, s, GCOptions{Grace: time.Hour, DryRun: true})
	if n := len(blobFiles(t, s)); n != before {
		t.Fatalf("dry run removed files: %d before, %d after", before, n)
	}
	rep := collect(t, s, GCOptions{Grace: time.Hour})
	t.Logf("report %+v", rep)

	// Removed: the deleted manifest's config link and blob, its layer's
	// link (not the blob: "other" links it), its body, the stray blob, and
	// the repository whose only blob was unlinked.
	wantBytes := int64(len(delBody)) + delM.Blobs[0].Size + stray.Size + int64(len("only blob of a repository"))
	if rep.ManifestsRemoved != 0 || rep.LinksRemoved != 4 || rep.BlobsRemoved != 4 ||
		rep.RepositoriesRemoved != 1 || rep.BytesReclaimed != wantBytes {
		t.Fatalf("report %+v; want 0 manifests, 4 links, 4 blobs, 1 repository, %d bytes", rep, wantBytes)
	}
	dry.Duration, rep.Duration, dry.DryRun = 0, 0, false
	if dry != rep {
		t.Fatalf("dry run predicted %+v, gc did %+v", dry, rep)
	}
	for _, ref := range []string{"v1", string(kept), string(untagged), "multi", string(idx), string(child)} {
		pullAll(t, s, "app", ref)
	}
	if got := readBlob(t, s, "other", shared.Digest); string(got) != "layer of deleted" {
		t.Fatalf("shared layer reads %q", got)
	}
	for _, d := range []digest.Digest{stray.Digest, delM.Blobs[0].Digest, delM.Blobs[1].Digest} {
		if _, err := s.StatBlob(ctx, "app", d); !errors.Is(err, ErrBlobUnknown) {
			t.Fatalf("collected blob %s still linked: %v", d, err)
		}
	}
	repos, _, err := s.ListRepositories(ctx, "", 10)
	if err != nil || fmt.Sprint(repos) != "[app other]" {
		t.Fatalf("repositories after gc: %v %v", repos, err)
	}
	// Tag history outlives the manifest and the collection.
	if moves, _, err := s.TagHistory(ctx, "app", "v2", 0, 10); err != nil || len(moves) != 2 {
		t.Fatalf("history of v2: %v %v", moves, err)
	}
	checkClean(t, s)
	if rep := collect(t, s, GCOptions{Grace: time.Hour}); rep.LinksRemoved+rep.BlobsRemoved+rep.ManifestsRemoved != 0 {
		t.Fatalf("second gc removed %+v", rep)
	}
}

func manifestSize(t *testing.T, s *Store, repo string, d digest.Digest) int64 {
	t.Helper()
	info, err := s.StatManifest(context.Background(), repo, string(d))
	if err != nil {
		t.Fatal(err)
	}
	return info.Size
}

func TestGCRemovesOrphanReferrers(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	defer s.Close()
	cfg := putTestBlob(t, s, "app", ocispec.MediaTypeImageConfig, []byte(`{}`))
	subject := putTestImage(t, s, "app", "subject")
	other := putTestImage(t, s, "app", "other", "latest")
	referrer := func(seed string, subj digest.Digest, tags ...string) digest.Digest {
		layer := putTestBlob(t, s, "app", "application/vnd.test", []byte("signature "+seed))
		d, _ := putTestManifest(t, s, "app", ocispec.Manifest{
			Config: cfg, Layers: []ocispec.Descriptor{layer},
			Subject: &ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: subj, Size: 2},
		}, tags...)
		return d
	}
	sig := referrer("sig", subject, "sig-tag")
	sigOfSig := referrer("sig of sig", sig)
	live := referrer("live", other)
	if err := s.DeleteManifest(ctx, "app", subject); err != nil {
		t.Fatal(err)
	}
	ageStore(t, s, 2*time.Hour)
	rep := collect(t, s, GCOptions{Grace: time.Hour})
	if rep.ManifestsRemoved != 2 {
		t.Fatalf("report %+v; want the 2 orphan referrers removed", rep)
	}
	for _, d := range []digest.Digest{sig, sigOfSig} {
		if _, err := s.StatManifest(ctx, "app", string(d)); !errors.Is(err, ErrManifestUnknown) {
			t.Fatalf("orphan referrer %s: %v", d, err)
		}
	}
	pullAll(t, s, "app", string(live))
	if refs, err := s.Referrers(ctx, "app", other, ""); err != nil || len(refs) != 1 {
		t.Fatalf("referrers of a live subject: %v %v", refs, err)
	}
	moves, _, err := s.TagHistory(ctx, "app", "sig-tag", 0, 10)
	if err != nil || len(moves) != 2 || moves[0].Action != MoveGC {
		t.Fatalf("history of sig-tag: %+v %v; want the gc move first", moves, err)
	}
	checkClean(t, s)
}

func TestGCKeepsRecentlySeenLinks(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	defer s.Close()
	checked := putTestBlob(t, s, "app", "application/octet-stream", []byte("checked by HEAD"))
	read := putTestBlob(t, s, "app", "application/octet-stream", []byte("read by GET"))
	mounted := putTestBlob(t, s, "src", "application/octet-stream", []byte("mounted again"))
	if _, err := s.MountBlob(ctx, "app", "src", mounted.Digest); err != nil {
		t.Fatal(err)
	}
	ageStore(t, s, 2*time.Hour)
	if _, err := s.StatBlob(ctx, "app", checked.Digest); err != nil {
		t.Fatal(err)
	}
	readBlob(t, s, "app", read.Digest)
	// Mounting a blob already linked refreshes the link.
	if _, err := s.MountBlob(ctx, "app", "src", mounted.Digest); err != nil {
		t.Fatal(err)
	}
	rep := collect(t, s, GCOptions{Grace: time.Hour})
	// Only the source repository's link to the mounted blob goes.
	if rep.LinksRemoved != 1 || rep.BlobsRemoved != 0 || rep.RepositoriesRemoved != 1 {
		t.Fatalf("report %+v; want only src's link (and so src) removed", rep)
	}
	for _, d := range []digest.Digest{checked.Digest, read.Digest, mounted.Digest} {
		if _, err := s.StatBlob(ctx, "app", d); err != nil {
			t.Fatalf("recently seen %s collected: %v", d, err)
		}
	}
	// Once the marks and the mount are older than the grace, all goes.
	rep = collect(t, s, GCOptions{Grace: time.Hour, Now: time.Now().Add(2 * time.Hour)})
	if rep.LinksRemoved != 3 || rep.BlobsRemoved != 3 || rep.RepositoriesRemoved != 1 {
		t.Fatalf("report %+v; want 3 links, 3 blobs, 1 repository", rep)
	}
	if files := blobFiles(t, s); len(files) != 0 {
		t.Fatalf("blob files left: %v", files)
	}
	checkClean(t, s)
}

// hookFS calls onSyncDir before syncing a directory: place does so with the
// file of the digest in place, before commitBlob records it.
type hookFS struct {
	osFS
	onSyncDir func(dir string)
}

func (h hookFS) SyncDir(dir string) error {
	if h.onSyncDir != nil {
		h.onSyncDir(dir)
	}
	return h.osFS.SyncDir(dir)
}

// A blob unlinked everywhere and old is collectable; while a push of the
// same content has placed its file and not yet recorded it, the digest's
// lock is held, and a collection running then waits and finds the new link.
func TestGCWaitsForCommitOfSameDigest(t *testing.T) {
	ctx := context.Background()
	var s *Store
	content := []byte("content pushed again while collected")
	d := digest.FromBytes(content)
	var wg sync.WaitGroup
	var gcRep GCReport
	var gcErr error
	var armed, heldDuringPlace bool
	fsys := hookFS{onSyncDir: func(dir string) {
		if !armed || dir != filepath.Dir(s.blobPath(d)) {
			return
		}
		armed = false
		if mu := &s.locks.m[stripe(d)]; mu.TryLock() {
			mu.Unlock()
			return
		}
		heldDuringPlace = true
		wg.Add(1)
		go func() {
			defer wg.Done()
			gcRep, gcErr = s.CollectGarbage(ctx, GCOptions{Grace: time.Hour})
		}()
	}}
	var err error
	s, err = Open(ctx, t.TempDir(), Options{FS: fsys})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	putTestBlob(t, s, "a", "application/octet-stream", content)
	if err := s.DeleteBlob(ctx, "a", d); err != nil {
		t.Fatal(err)
	}
	ageStore(t, s, 2*time.Hour)
	armed = true
	putTestBlob(t, s, "b", "application/octet-stream", content)
	wg.Wait()
	if !heldDuringPlace {
		t.Fatal("commitBlob did not hold the digest's lock while placing the file")
	}
	if gcErr != nil {
		t.Fatal(gcErr)
	}
	if gcRep.BlobsRemoved != 0 {
		t.Fatalf("gc removed %d blobs during a commit of the same digest", gcRep.BlobsRemoved)
	}
	if got := readBlob(t, s, "b", d); !bytes.Equal(got, content) {
		t.Fatalf("blob reads %q", got)
	}
	checkClean(t, s)
}

func TestOpenBlobWhoseFileIsGone(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	defer s.Close()
	b := putTestBlob(t, s, "app", "application/octet-stream", []byte("about to vanish"))
	if err := os.Remove(s.blobPath(b.Digest)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.OpenBlob(ctx, "app", b.Digest); !errors.Is(err, ErrBlobUnknown) {
		t.Fatalf("open of a collected blob: %v; want ErrBlobUnknown", err)
	}
}

// TestGCUnderConcurrentPushes runs collections in a loop while goroutines
// push images sharing layers and delete some of them; every push must
// succeed and every remaining image must read back whole.
func TestGCUnderConcurrentPushes(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	defer s.Close()
	const workers, images, shared = 4, 15, 6
	layers := make([][]byte, shared)
	for i := range layers {
		layers[i] = []byte(fmt.Sprintf("shared layer %d", i))
	}
	stop := make(chan struct{})
	gcDone := make(chan int)
	go func() {
		runs := 0
		defer func() { gcDone <- runs }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := s.CollectGarbage(ctx, GCOptions{Grace: 2 * time.Second}); err != nil {
				t.Errorf("gc: %v", err)
				return
			}
			runs++
		}
	}()
	type image struct {
		repo string
		d    digest.Digest
	}
	kept := make([][]image, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			repo := fmt.Sprintf("w%d", w%2)
			for i := range images {
				if t.Failed() {
					return
				}
				seed := fmt.Sprintf("%d-%d", w, i)
				cfg := putTestBlob(t, s, repo, ocispec.MediaTypeImageConfig, []byte(`{"seed":"`+seed+`"}`))
				own := putTestBlob(t, s, repo, ocispec.MediaTypeImageLayer, []byte("own "+seed))
				sh := putTestBlob(t, s, repo, ocispec.MediaTypeImageLayer, layers[(w+i)%shared])
				d, _ := putTestManifest(t, s, repo, ocispec.Manifest{Config: cfg, Layers: []ocispec.Descriptor{own, sh}})
				if i%3 == 0 {
					if err := s.DeleteManifest(ctx, repo, d); err != nil {
						t.Errorf("delete: %v", err)
					}
					continue
				}
				kept[w] = append(kept[w], image{repo, d})
			}
		}()
	}
	wg.Wait()
	close(stop)
	runs := <-gcDone
	if t.Failed() {
		return
	}
	for _, imgs := range kept {
		for _, im := range imgs {
			pullAll(t, s, im.repo, string(im.d))
		}
	}
	checkClean(t, s)
	for _, imgs := range kept {
		for _, im := range imgs {
			if err := s.DeleteManifest(ctx, im.repo, im.d); err != nil {
				t.Fatal(err)
			}
		}
	}
	rep := collect(t, s, GCOptions{Grace: 0})
	t.Logf("%d workers x %d images, %d gc runs during the pushes; final gc %+v", workers, images, runs, rep)
	if files := blobFiles(t, s); len(files) != 0 {
		t.Fatalf("blob files left after deleting everything: %v", files)
	}
	if repos, _, err := s.ListRepositories(ctx, "", 10); err != nil || len(repos) != 0 {
		t.Fatalf("repositories left: %v %v", repos, err)
	}
	checkClean(t, s)
}
