package gc_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage"
	blobfs "github.com/berth-registry/berth/storage/blob/fs"
	"github.com/berth-registry/berth/storage/fsck"
	"github.com/berth-registry/berth/storage/gc"
	"github.com/berth-registry/berth/storage/internal/clienttest"
	"github.com/berth-registry/berth/storage/meta"
)

func collect(t *testing.T, s *clienttest.Store, opts gc.Options) gc.Report {
	t.Helper()
	rep, err := gc.Collect(context.Background(), s.Svc, opts)
	if err != nil {
		t.Fatalf("collect garbage: %v", err)
	}
	return rep
}

// checkClean runs fsck, content included, and requires no finding at all.
func checkClean(t *testing.T, s *clienttest.Store) {
	t.Helper()
	r, err := fsck.Check(context.Background(), s.Svc, s.Bolt, fsck.Options{VerifyContent: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Problems) != 0 || len(r.Orphans) != 0 {
		t.Fatalf("fsck after gc: problems %v, orphans %v", r.Problems, r.Orphans)
	}
}

// blobFiles lists the files of the blob store.
func blobFiles(t *testing.T, s *clienttest.Store) []string {
	t.Helper()
	var names []string
	err := filepath.WalkDir(filepath.Join(s.Dir, "blobs"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			names = append(names, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func TestGCRemovesWhatNothingReferences(t *testing.T) {
	ctx := context.Background()
	s := clienttest.Open(t, "", clienttest.Options{})

	kept := s.PutImage("app", "kept", "v1")
	untagged := s.PutImage("app", "untagged")
	deleted := s.PutImage("app", "deleted", "v2")
	child := s.PutImage("app", "child")
	idx, _ := s.PutIndex("app", []ocispec.Descriptor{s.Descriptor("app", child)}, "multi")
	stray := s.PutBlob("app", "application/octet-stream", []byte("never referenced"))
	// The same layer, shared with another repository that keeps a link.
	shared := s.PutBlob("other", ocispec.MediaTypeImageLayer, []byte("layer of deleted"))
	otherCfg := s.PutBlob("other", ocispec.MediaTypeImageConfig, []byte(`{}`))
	s.PutManifest("other", ocispec.Manifest{Config: otherCfg, Layers: []ocispec.Descriptor{shared}}, "latest")
	s.PutBlob("gone", "application/octet-stream", []byte("only blob of a repository"))

	_, delBody, err := s.Svc.GetManifest(ctx, "app", string(deleted))
	if err != nil {
		t.Fatal(err)
	}
	delM := clienttest.Parse(t, delBody)
	if err := s.Svc.DeleteManifest(ctx, "app", deleted); err != nil {
		t.Fatal(err)
	}
	before := len(blobFiles(t, s))

	// Everything is fresh: the grace keeps it all.
	if rep := collect(t, s, gc.Options{Grace: time.Hour}); rep.LinksRemoved+rep.BlobsRemoved+rep.RepositoriesRemoved != 0 {
		t.Fatalf("gc within the grace removed %+v", rep)
	}
	s.Age(2 * time.Hour)
	dry := collect(t, s, gc.Options{Grace: time.Hour, DryRun: true})
	if n := len(blobFiles(t, s)); n != before {
		t.Fatalf("dry run removed files: %d before, %d after", before, n)
	}
	rep := collect(t, s, gc.Options{Grace: time.Hour})
	t.Logf("report %+v", rep)

	// Removed: the deleted manifest's config link and blob, its layer's
	// link (not the blob: "other" links it), its body, the stray blob, and
	// the repository whose only blob was unlinked.
	wantBytes := int64(len(delBody)) + delM.Blobs[0].Size + stray.Size + int64(len("only blob of a repository"))
	if rep.ManifestsRemoved != 0 || rep.LinksRemoved != 4 || rep.BlobsRemoved != 4 ||
		rep.RepositoriesRemoved != 1 || rep.BytesReclaimed != wantBytes {
		t.Fatalf("report %+v; want 0 manifests, 4 links, 4 blobs, 1 repository, %d bytes", rep, wantBytes)
	}
	if n := len(blobFiles(t, s)); n != before-4 {
		t.Fatalf("%d blob files left of %d; want 4 removed", n, before)
	}
	dry.Duration, rep.Duration, dry.DryRun = 0, 0, false
	if dry != rep {
		t.Fatalf("dry run predicted %+v, gc did %+v", dry, rep)
	}
	for _, ref := range []string{"v1", string(kept), string(untagged), "multi", string(idx), string(child)} {
		s.PullAll("app", ref)
	}
	if got := s.ReadBlob("other", shared.Digest); string(got) != "layer of deleted" {
		t.Fatalf("shared layer reads %q", got)
	}
	for _, d := range []digest.Digest{stray.Digest, delM.Blobs[0].Digest, delM.Blobs[1].Digest} {
		if _, err := s.Svc.StatBlob(ctx, "app", d); !errors.Is(err, storage.ErrBlobUnknown) {
			t.Fatalf("collected blob %s still linked: %v", d, err)
		}
	}
	repos, _, err := s.Svc.ListRepositories(ctx, "", 10)
	if err != nil || fmt.Sprint(repos) != "[app other]" {
		t.Fatalf("repositories after gc: %v %v", repos, err)
	}
	// Tag history outlives the manifest and the collection.
	if moves, _, err := s.Svc.TagHistory(ctx, "app", "v2", 0, 10); err != nil || len(moves) != 2 {
		t.Fatalf("history of v2: %v %v", moves, err)
	}
	checkClean(t, s)
	if rep := collect(t, s, gc.Options{Grace: time.Hour}); rep.LinksRemoved+rep.BlobsRemoved+rep.ManifestsRemoved != 0 {
		t.Fatalf("second gc removed %+v", rep)
	}
}

func TestGCRemovesOrphanReferrers(t *testing.T) {
	ctx := context.Background()
	s := clienttest.Open(t, "", clienttest.Options{})
	cfg := s.PutBlob("app", ocispec.MediaTypeImageConfig, []byte(`{}`))
	subject := s.PutImage("app", "subject")
	other := s.PutImage("app", "other", "latest")
	referrer := func(seed string, subj digest.Digest, tags ...string) digest.Digest {
		layer := s.PutBlob("app", "application/vnd.test", []byte("signature "+seed))
		d, _ := s.PutManifest("app", ocispec.Manifest{
			Config: cfg, Layers: []ocispec.Descriptor{layer},
			Subject: &ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: subj, Size: 2},
		}, tags...)
		return d
	}
	sig := referrer("sig", subject, "sig-tag")
	sigOfSig := referrer("sig of sig", sig)
	live := referrer("live", other)
	if err := s.Svc.DeleteManifest(ctx, "app", subject); err != nil {
		t.Fatal(err)
	}
	s.Age(2 * time.Hour)
	rep := collect(t, s, gc.Options{Grace: time.Hour})
	if rep.ManifestsRemoved != 2 {
		t.Fatalf("report %+v; want the 2 orphan referrers removed", rep)
	}
	for _, d := range []digest.Digest{sig, sigOfSig} {
		if _, err := s.Svc.StatManifest(ctx, "app", string(d)); !errors.Is(err, storage.ErrManifestUnknown) {
			t.Fatalf("orphan referrer %s: %v", d, err)
		}
	}
	s.PullAll("app", string(live))
	if refs, err := s.Svc.Referrers(ctx, "app", other, ""); err != nil || len(refs) != 1 {
		t.Fatalf("referrers of a live subject: %v %v", refs, err)
	}
	moves, _, err := s.Svc.TagHistory(ctx, "app", "sig-tag", 0, 10)
	if err != nil || len(moves) != 2 || moves[0].Action != storage.MoveGC || moves[0].Actor.Kind != storage.ActorSystem {
		t.Fatalf("history of sig-tag: %+v %v; want the gc move first", moves, err)
	}
	checkClean(t, s)
}

// An orphan referrer that an immutable tag names stays, and so do the
// blobs it references; the rest of the collection goes on.
func TestGCKeepsOrphanReferrerWithImmutableTag(t *testing.T) {
	ctx := context.Background()
	rules := tagRules(func(_, tag string) bool { return tag == "pinned" })
	s := clienttest.Open(t, "", clienttest.Options{Core: storage.Options{Tags: rules}})
	subject := s.PutImage("app", "subject")
	cfg := s.PutBlob("app", ocispec.MediaTypeImageConfig, []byte(`{}`))
	layer := s.PutBlob("app", "application/vnd.test", []byte("signature"))
	sig, _ := s.PutManifest("app", ocispec.Manifest{
		Config: cfg, Layers: []ocispec.Descriptor{layer},
		Subject: &ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: subject, Size: 2},
	}, "pinned")
	// A referrer of the pinned referrer: its subject stays, so it does.
	sigLayer := s.PutBlob("app", "application/vnd.test", []byte("signature of the signature"))
	sigOfSig, _ := s.PutManifest("app", ocispec.Manifest{
		Config: cfg, Layers: []ocispec.Descriptor{sigLayer},
		Subject: &ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: sig, Size: 2},
	})
	if err := s.Svc.DeleteManifest(ctx, "app", subject); err != nil {
		t.Fatal(err)
	}
	s.Age(2 * time.Hour)
	dry := collect(t, s, gc.Options{Grace: time.Hour, DryRun: true})
	rep := collect(t, s, gc.Options{Grace: time.Hour})
	// The subject's body, config and layer go; the referrers and what
	// they reference stay.
	if rep.ManifestsRemoved != 0 || rep.BlobsRemoved != 3 || rep.LinksRemoved != 2 || rep.RepositoriesRemoved != 0 {
		t.Fatalf("report %+v; want the referrers kept, the subject's 3 blobs and 2 links removed", rep)
	}
	dry.Duration, rep.Duration, dry.DryRun = 0, 0, false
	if dry != rep {
		t.Fatalf("dry run predicted %+v, gc did %+v", dry, rep)
	}
	s.PullAll("app", "pinned")
	s.PullAll("app", string(sigOfSig))
	if d, err := s.Svc.StatManifest(ctx, "app", "pinned"); err != nil || d.Digest != sig {
		t.Fatalf("pinned: %v %v", d, err)
	}
	checkClean(t, s)
}

type tagRules func(repo, tag string) bool

func (f tagRules) Immutable(repo, tag string) bool { return f(repo, tag) }

func TestGCKeepsRecentlySeenLinks(t *testing.T) {
	ctx := context.Background()
	s := clienttest.Open(t, "", clienttest.Options{})
	checked := s.PutBlob("app", "application/octet-stream", []byte("checked by HEAD"))
	read := s.PutBlob("app", "application/octet-stream", []byte("read by GET"))
	mounted := s.PutBlob("src", "application/octet-stream", []byte("mounted again"))
	if _, err := s.Svc.MountBlob(ctx, "app", "src", mounted.Digest); err != nil {
		t.Fatal(err)
	}
	s.Age(2 * time.Hour)
	if _, err := s.Svc.StatBlob(ctx, "app", checked.Digest); err != nil {
		t.Fatal(err)
	}
	s.ReadBlob("app", read.Digest)
	// Mounting a blob already linked refreshes the link.
	if _, err := s.Svc.MountBlob(ctx, "app", "src", mounted.Digest); err != nil {
		t.Fatal(err)
	}
	rep := collect(t, s, gc.Options{Grace: time.Hour})
	// Only the source repository's link to the mounted blob goes.
	if rep.LinksRemoved != 1 || rep.BlobsRemoved != 0 || rep.RepositoriesRemoved != 1 {
		t.Fatalf("report %+v; want only src's link (and so src) removed", rep)
	}
	for _, d := range []digest.Digest{checked.Digest, read.Digest, mounted.Digest} {
		if _, err := s.Svc.StatBlob(ctx, "app", d); err != nil {
			t.Fatalf("recently seen %s collected: %v", d, err)
		}
	}
	// Once the marks and the mount are older than the grace, all goes.
	rep = collect(t, s, gc.Options{Grace: time.Hour, Now: time.Now().Add(2 * time.Hour)})
	if rep.LinksRemoved != 3 || rep.BlobsRemoved != 3 || rep.RepositoriesRemoved != 1 {
		t.Fatalf("report %+v; want 3 links, 3 blobs, 1 repository", rep)
	}
	if files := blobFiles(t, s); len(files) != 0 {
		t.Fatalf("blob files left: %v", files)
	}
	checkClean(t, s)
}

// hookFS calls onSyncDir before syncing a directory: a commit does so with
// the content of its digest in place, before the core records it.
type hookFS struct {
	blobfs.OS
	mu        sync.Mutex
	onSyncDir func(dir string)
}

func (h *hookFS) SyncDir(dir string) error {
	h.mu.Lock()
	fn := h.onSyncDir
	h.mu.Unlock()
	if fn != nil {
		fn(dir)
	}
	return h.OS.SyncDir(dir)
}

// A blob unlinked everywhere and old is collectable; while a push of the
// same content has placed it and not yet recorded it, the digest's lock
// is held, and a collection that planned to remove it waits for the lock
// and then finds the new link.
func TestGCWaitsForCommitOfSameDigest(t *testing.T) {
	ctx := context.Background()
	content := []byte("content pushed again while collected")
	d := digest.FromBytes(content)
	fsys := &hookFS{}
	var w *watchedIndex
	s := clienttest.Open(t, "", clienttest.Options{FS: fsys, Wrap: func(m meta.Store) meta.Store { w = watch(m); return w }})
	s.PutBlob("a", "application/octet-stream", content)
	if err := s.Svc.DeleteBlob(ctx, "a", d); err != nil {
		t.Fatal(err)
	}
	s.Age(2 * time.Hour)

	// gc asks for the digest's lock once it has planned the removal.
	gcWants := make(chan struct{})
	var once sync.Once
	var gcRep gc.Report
	var gcErr error
	done := make(chan struct{})
	blobDir := filepath.Join(s.Dir, "blobs", "sha256", d.Encoded()[:2])
	var heldDuringPlace bool
	fsys.onSyncDir = func(dir string) {
		if dir != blobDir {
			return
		}
		once.Do(func() {
			// The push holds the lock now: trying it must time out.
			tctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
			defer cancel()
			if unlock, err := s.Bolt.LockDigests(tctx, d); err == nil {
				unlock()
			} else {
				heldDuringPlace = true
			}
			w.setOnLock(func(ds []digest.Digest) {
				for _, x := range ds {
					if x == d {
						w.setOnLock(nil)
						close(gcWants)
						return
					}
				}
			})
			go func() {
				defer close(done)
				gcRep, gcErr = gc.Collect(ctx, s.Svc, gc.Options{Grace: time.Hour})
			}()
			select {
			case <-gcWants:
			case <-done:
			}
		})
	}
	s.PutBlob("b", "application/octet-stream", content)
	<-done
	if !heldDuringPlace {
		t.Fatal("the commit did not hold the digest's lock while placing the content")
	}
	if gcErr != nil {
		t.Fatal(gcErr)
	}
	select {
	case <-gcWants:
	default:
		t.Fatal("gc did not plan to remove the blob: the test shows nothing")
	}
	if gcRep.BlobsRemoved != 0 {
		t.Fatalf("gc removed %d blobs during a commit of the same digest", gcRep.BlobsRemoved)
	}
	if got := s.ReadBlob("b", d); !bytes.Equal(got, content) {
		t.Fatalf("blob reads %q", got)
	}
	checkClean(t, s)
}

func TestOpenBlobWhoseContentIsGone(t *testing.T) {
	ctx := context.Background()
	s := clienttest.Open(t, "", clienttest.Options{})
	b := s.PutBlob("app", "application/octet-stream", []byte("about to vanish"))
	if err := s.Blobs.Delete(ctx, b.Digest); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Svc.OpenBlob(ctx, "app", b.Digest); !errors.Is(err, storage.ErrBlobUnknown) {
		t.Fatalf("open of a collected blob: %v; want ErrBlobUnknown", err)
	}
}

// TestGCUnderConcurrentPushes runs collections in a loop while goroutines
// push images sharing layers and delete some of them; every push must
// succeed and every remaining image must read back whole.
func TestGCUnderConcurrentPushes(t *testing.T) {
	ctx := context.Background()
	// A short grace, so that collections during the load remove things;
	// the refresh period of lookups must be a fraction of it.
	s := clienttest.Open(t, "", clienttest.Options{Core: storage.Options{SeenRefresh: 2 * time.Second / gc.MinGraceRefreshes}})
	const workers, images, shared = 4, 15, 6
	layers := make([][]byte, shared)
	for i := range layers {
		layers[i] = fmt.Appendf(nil, "shared layer %d", i)
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
			if _, err := gc.Collect(ctx, s.Svc, gc.Options{Grace: 2 * time.Second}); err != nil {
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
	put := func(repo string, b []byte) (ocispec.Descriptor, error) {
		d := digest.FromBytes(b)
		_, err := s.Svc.PutBlob(ctx, repo, d, bytes.NewReader(b), int64(len(b)))
		return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: d, Size: int64(len(b))}, err
	}
	push := func(repo, seed string, layer []byte) (digest.Digest, error) {
		cfg, err := put(repo, []byte(`{"seed":"`+seed+`"}`))
		if err != nil {
			return "", err
		}
		cfg.MediaType = ocispec.MediaTypeImageConfig
		own, err := put(repo, []byte("own "+seed))
		if err != nil {
			return "", err
		}
		sh, err := put(repo, layer)
		if err != nil {
			return "", err
		}
		body := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":%q,"digest":%q,"size":%d},"layers":[`+
			`{"mediaType":%q,"digest":%q,"size":%d},{"mediaType":%q,"digest":%q,"size":%d}]}`,
			ocispec.MediaTypeImageManifest, cfg.MediaType, cfg.Digest, cfg.Size,
			own.MediaType, own.Digest, own.Size, sh.MediaType, sh.Digest, sh.Size)
		return s.Svc.PutManifest(ctx, repo, "", body, clienttest.Parse(t, body), nil)
	}
	kept := make([][]image, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			repo := fmt.Sprintf("w%d", w%2)
			for i := range images {
				d, err := push(repo, fmt.Sprintf("%d-%d", w, i), layers[(w+i)%shared])
				if err != nil {
					t.Errorf("push %d-%d: %v", w, i, err)
					return
				}
				if i%3 == 0 {
					if err := s.Svc.DeleteManifest(ctx, repo, d); err != nil {
						t.Errorf("delete: %v", err)
						return
					}
					continue
				}
				kept[w] = append(kept[w], image{repo, d})
			}
		})
	}
	wg.Wait()
	close(stop)
	runs := <-gcDone
	if t.Failed() {
		return
	}
	for _, imgs := range kept {
		for _, im := range imgs {
			s.PullAll(im.repo, string(im.d))
		}
	}
	checkClean(t, s)
	for _, imgs := range kept {
		for _, im := range imgs {
			if err := s.Svc.DeleteManifest(ctx, im.repo, im.d); err != nil {
				t.Fatal(err)
			}
		}
	}
	rep := collect(t, s, gc.Options{Grace: 0})
	t.Logf("%d workers x %d images, %d gc runs during the pushes; final gc %+v", workers, images, runs, rep)
	if files := blobFiles(t, s); len(files) != 0 {
		t.Fatalf("blob files left after deleting everything: %v", files)
	}
	if repos, _, err := s.Svc.ListRepositories(ctx, "", 10); err != nil || len(repos) != 0 {
		t.Fatalf("repositories left: %v %v", repos, err)
	}
	checkClean(t, s)
}

func TestGCExpiresIdleUploads(t *testing.T) {
	ctx := context.Background()
	s := clienttest.Open(t, "", clienttest.Options{})
	up, err := s.Svc.StartUpload(ctx, "app", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Svc.AppendUpload(ctx, "app", up.ID, 0, bytes.NewReader([]byte("half")), 4); err != nil {
		t.Fatal(err)
	}
	// A dry run neither expires nor counts sessions.
	if rep := collect(t, s, gc.Options{UploadIdle: time.Minute, Now: time.Now().Add(time.Hour), DryRun: true}); rep.UploadsExpired != 0 {
		t.Fatalf("dry run: %+v", rep)
	}
	if rep := collect(t, s, gc.Options{UploadIdle: time.Hour}); rep.UploadsExpired != 0 {
		t.Fatalf("active session expired: %+v", rep)
	}
	if rep := collect(t, s, gc.Options{UploadIdle: time.Minute, Now: time.Now().Add(time.Hour)}); rep.UploadsExpired != 1 {
		t.Fatalf("idle session: %+v", rep)
	}
	if _, err := s.Svc.UploadStatus(ctx, "app", up.ID); !errors.Is(err, storage.ErrUploadUnknown) {
		t.Fatalf("expired session: %v", err)
	}
	if entries, err := os.ReadDir(filepath.Join(s.Dir, "uploads")); err != nil || len(entries) != 0 {
		t.Fatalf("uploads/ after expiry: %v %v", entries, err)
	}
	checkClean(t, s)
}

func TestGCRefusesNegativeGrace(t *testing.T) {
	s := clienttest.Open(t, "", clienttest.Options{})
	if _, err := gc.Collect(context.Background(), s.Svc, gc.Options{Grace: -time.Second}); err == nil {
		t.Fatal("a negative grace was accepted")
	}
}

// A collection stopped through its context stops between two batches;
// what it removed is removed cleanly, and the next collection finishes.
func TestGCStoppedBetweenBatches(t *testing.T) {
	var w *watchedIndex
	s := clienttest.Open(t, "", clienttest.Options{Wrap: func(m meta.Store) meta.Store { w = watch(m); return w }})
	s.PutBlob("a", "application/octet-stream", []byte("garbage of a"))
	s.PutBlob("b", "application/octet-stream", []byte("garbage of b"))
	s.Age(2 * time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w.setHook(func(method, repo string, _ digest.Digest) error {
		if method == "DeleteLink" {
			cancel() // while removing a's links
		}
		return nil
	})
	rep, err := gc.Collect(ctx, s.Svc, gc.Options{Grace: time.Hour})
	w.setHook(nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("stopped collection: %v, want context.Canceled", err)
	}
	if rep.LinksRemoved != 1 || rep.BlobsRemoved != 0 {
		t.Fatalf("stopped collection removed %+v; want a's link only", rep)
	}
	checkClean(t, s)
	rep = collect(t, s, gc.Options{Grace: time.Hour})
	if rep.LinksRemoved != 1 || rep.BlobsRemoved != 2 || rep.RepositoriesRemoved != 2 {
		t.Fatalf("next collection %+v; want b's link, both blobs and both repositories", rep)
	}
	if files := blobFiles(t, s); len(files) != 0 {
		t.Fatalf("blob files left: %v", files)
	}
}
