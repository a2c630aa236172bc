package storagetest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/gc"
	"github.com/berth-registry/berth/storage/internal/ageing"
	"github.com/berth-registry/berth/storage/meta"
)

// Several replicas: two Services, each with its own memory, over one
// index and one blob store, as two processes behind a load balancer see
// them. Every scenario here fails if a Service keeps in memory something
// the other must know.

// openReplicas opens a store in a directory of its own and a second
// replica of it: over a second view of the same backends when the
// Backends open one (Backends.Replica), else over the very same handles.
func openReplicas(t *testing.T, b Backends, opts ...option) (a, r *store) {
	t.Helper()
	a = open(t, b, opts...)
	if b.Replica == nil {
		// Shared handles: the first store closes them.
		return a, &store{Service: storage.New(a.index, a.blobs, a.cfg.opts), index: a.index, blobs: a.blobs,
			dir: a.dir, b: b, cfg: a.cfg, closed: true}
	}
	index, blobs := b.Replica(t, a.dir)
	if index == nil || blobs == nil {
		t.Fatal("storagetest: Backends.Replica returned a nil backend")
	}
	r = &store{Service: storage.New(index, blobs, a.cfg.opts), index: index, blobs: blobs, dir: a.dir, b: b, cfg: a.cfg}
	t.Cleanup(func() { r.close(t) })
	return a, r
}

// ageLinks moves the times of every link of repo (Linked, and Seen if
// set) back by d, below the core.
func ageLinks(t *testing.T, s *store, repo string, d time.Duration) {
	t.Helper()
	update(t, s, func(tx meta.Tx) error { return ageing.Links(tx, repo, d) })
}

// A blob a lookup found through one replica is kept by a collection that
// runs on the other: the lookup's Seen is in the index, not in the memory
// of the replica that served it.
func testReplicasLookupKeepsLinkFromOtherGC(t *testing.T, b Backends) {
	a, r := openReplicas(t, b)
	seen := putBlob(t, a, "app", "application/octet-stream", []byte("looked up through A"))
	unseen := putBlob(t, a, "app", "application/octet-stream", []byte("looked up by nobody"))
	ageLinks(t, a, "app", 2*time.Hour)
	update(t, a, func(tx meta.Tx) error {
		for _, d := range []digest.Digest{seen.Digest, unseen.Digest} {
			rec, _, err := tx.Blob(d)
			if err != nil {
				return err
			}
			rec.Created = rec.Created.Add(-2 * time.Hour)
			if err := tx.PutBlob(d, rec); err != nil {
				return err
			}
		}
		return nil
	})
	if _, err := a.StatBlob(ctx(), "app", seen.Digest); err != nil {
		t.Fatalf("lookup through A: %v", err)
	}
	rep, err := gc.Collect(ctx(), r.Service, gc.Options{Grace: time.Hour})
	if err != nil {
		t.Fatalf("collection on B: %v", err)
	}
	if rep.LinksRemoved != 1 || rep.BlobsRemoved != 1 {
		t.Fatalf("collection on B: %+v; want the link and blob nobody looked up removed, and only them", rep)
	}
	for _, s := range []*store{a, r} {
		if got := readBlob(t, s, "app", seen.Digest); !bytes.Equal(got, []byte("looked up through A")) {
			t.Fatalf("blob seen through A reads %q", got)
		}
		if _, err := s.StatBlob(ctx(), "app", unseen.Digest); !errors.Is(err, storage.ErrBlobUnknown) {
			t.Fatalf("blob nobody looked up: %v, want ErrBlobUnknown", err)
		}
	}
	// A manifest pushed through B may reference the blob found through A.
	cfg := putBlob(t, r, "app", ocispec.MediaTypeImageConfig, []byte(`{"architecture":"amd64","os":"linux"}`))
	putManifest(t, r, "app", ocispec.Manifest{Config: cfg, Layers: []ocispec.Descriptor{seen}}, "v1")
}

// A chunked upload started on one replica, continued on the other and
// finished on the first hashes right: each replica notices that the
// other appended and does not trust what it remembers of the session.
func testReplicasChunkedUploadResumesAnywhere(t *testing.T, b Backends) {
	a, r := openReplicas(t, b)
	chunks := [][]byte{randomBytes(t, 70_000), randomBytes(t, 30_001), randomBytes(t, 12_345), randomBytes(t, 999)}
	all := bytes.Join(chunks, nil)
	up, err := a.StartUpload(ctx(), "r", "")
	if err != nil {
		t.Fatal(err)
	}
	var off int64
	for i, s := range []*store{a, r, a} {
		info, err := s.AppendUpload(ctx(), "r", up.ID, off, bytes.NewReader(chunks[i]), int64(len(chunks[i])))
		if err != nil {
			t.Fatalf("chunk %d on replica %d: %v", i, i%2, err)
		}
		off += int64(len(chunks[i]))
		if info.Offset != off {
			t.Fatalf("chunk %d: offset %d, want %d", i, info.Offset, off)
		}
		// The other replica agrees.
		other := map[*store]*store{a: r, r: a}[s]
		if st, err := other.UploadStatus(ctx(), "r", up.ID); err != nil || st.Offset != off {
			t.Fatalf("status on the other replica after chunk %d: %+v, %v; want offset %d", i, st, err, off)
		}
	}
	// A chunk at the offset a replica last saw itself is refused there
	// as at the other: the session has moved on.
	if _, err := r.AppendUpload(ctx(), "r", up.ID, int64(len(chunks[0])+len(chunks[1])), bytes.NewReader([]byte("stale")), 5); !errors.Is(err, storage.ErrRangeInvalid) {
		t.Fatalf("chunk at a stale offset on B: %v, want ErrRangeInvalid", err)
	}
	last := chunks[3]
	d := digest.FromBytes(all)
	// B committed nothing of its own last; A finishes with the last chunk.
	info, err := a.CommitUpload(ctx(), "r", up.ID, d, off, bytes.NewReader(last), int64(len(last)))
	if err != nil {
		t.Fatalf("commit on A: %v", err)
	}
	if info.Digest != d || info.Size != int64(len(all)) {
		t.Fatalf("committed %+v, want %s of %d bytes", info, d, len(all))
	}
	for _, s := range []*store{a, r} {
		if got := readBlob(t, s, "r", d); !bytes.Equal(got, all) {
			t.Fatalf("blob read back differs (%d bytes, want %d)", len(got), len(all))
		}
		if _, err := s.UploadStatus(ctx(), "r", up.ID); !errors.Is(err, storage.ErrUploadUnknown) {
			t.Fatalf("status of the committed session: %v, want ErrUploadUnknown", err)
		}
	}
	if _, staged := stored(t, a); len(staged) != 0 {
		t.Fatalf("content in flight after the commit: %v", staged)
	}

	// The same, finished on B after A appended last: B's memory of the
	// session is stale, and its digest check must still be right.
	up, err = a.StartUpload(ctx(), "r", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.AppendUpload(ctx(), "r", up.ID, 0, bytes.NewReader(chunks[0]), int64(len(chunks[0]))); err != nil {
		t.Fatal(err)
	}
	if _, err := a.AppendUpload(ctx(), "r", up.ID, int64(len(chunks[0])), bytes.NewReader(chunks[1]), int64(len(chunks[1]))); err != nil {
		t.Fatal(err)
	}
	two := bytes.Join(chunks[:2], nil)
	if _, err := r.CommitUpload(ctx(), "r", up.ID, digest.FromBytes(two), -1, nil, -1); err != nil {
		t.Fatalf("commit on B of chunks appended on B then A: %v", err)
	}
	if got := readBlob(t, a, "r", digest.FromBytes(two)); !bytes.Equal(got, two) {
		t.Fatal("blob committed on B reads back different")
	}
}

// A session cancelled on one replica is unknown on the other, even to a
// replica that served it before, and leaves nothing.
func testReplicasCancelledUploadUnknownElsewhere(t *testing.T, b Backends) {
	a, r := openReplicas(t, b)
	up, err := a.StartUpload(ctx(), "r", "")
	if err != nil {
		t.Fatal(err)
	}
	chunk := randomBytes(t, 4096)
	if _, err := a.AppendUpload(ctx(), "r", up.ID, 0, bytes.NewReader(chunk), int64(len(chunk))); err != nil {
		t.Fatal(err)
	}
	if err := r.CancelUpload(ctx(), "r", up.ID); err != nil {
		t.Fatalf("cancel on B: %v", err)
	}
	if _, err := a.UploadStatus(ctx(), "r", up.ID); !errors.Is(err, storage.ErrUploadUnknown) {
		t.Fatalf("status on A of a session cancelled on B: %v, want ErrUploadUnknown", err)
	}
	if _, err := a.AppendUpload(ctx(), "r", up.ID, int64(len(chunk)), bytes.NewReader(chunk), int64(len(chunk))); !errors.Is(err, storage.ErrUploadUnknown) {
		t.Fatalf("append on A to a session cancelled on B: %v, want ErrUploadUnknown", err)
	}
	all := append(bytes.Clone(chunk), chunk...)
	if _, err := a.CommitUpload(ctx(), "r", up.ID, digest.FromBytes(all), -1, nil, -1); !errors.Is(err, storage.ErrUploadUnknown) {
		t.Fatalf("commit on A of a session cancelled on B: %v, want ErrUploadUnknown", err)
	}
	wantNoContent(t, a)
	view(t, a, func(tx meta.Tx) error {
		if _, ok, err := tx.Upload(up.ID); err != nil || ok {
			return fmt.Errorf("upload record after cancel: present %v, %w", ok, err)
		}
		return nil
	})
}

// Collections on both replicas at once, in loops, while both serve pushes
// that share layers (found by lookup, as clients do, or uploaded) and
// deletes: every push succeeds, every remaining manifest's blobs read back
// through either replica, and once everything is deleted a final
// collection leaves the blob store empty.
func testReplicasGCUnderLoad(t *testing.T, b Backends) {
	// A short grace, so that the collections during the load remove
	// things; the refresh period of lookups is the shortest it allows.
	const grace = 2 * time.Second
	a, r := openReplicas(t, b, withOptions(storage.Options{SeenRefresh: grace / gc.MinGraceRefreshes}))
	replicas := []*store{a, r}
	const workers, images, shared = 4, 12, 5
	layers := make([][]byte, shared)
	for i := range layers {
		layers[i] = fmt.Appendf(nil, "shared layer %d", i)
	}
	stop := make(chan struct{})
	var collectors sync.WaitGroup
	runs := make([]int, len(replicas))
	for i, s := range replicas {
		collectors.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := gc.Collect(ctx(), s.Service, gc.Options{Grace: grace}); err != nil {
					t.Errorf("collection on replica %d: %v", i, err)
					return
				}
				runs[i]++
			}
		})
	}
	type image struct {
		repo string
		d    digest.Digest
	}
	// put uploads b through s, unless a lookup through s finds it.
	put := func(s *store, repo, mediaType string, b []byte, lookFirst bool) (ocispec.Descriptor, error) {
		desc := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(b), Size: int64(len(b))}
		if lookFirst {
			if _, err := s.StatBlob(ctx(), repo, desc.Digest); err == nil {
				return desc, nil
			} else if !errors.Is(err, storage.ErrBlobUnknown) {
				return desc, err
			}
		}
		_, err := s.PutBlob(ctx(), repo, desc.Digest, bytes.NewReader(b), desc.Size)
		return desc, err
	}
	push := func(w, i int, repo string) (digest.Digest, error) {
		// Blobs through one replica, the manifest through the other.
		up, man := replicas[(w+i)%2], replicas[(w+i+1)%2]
		seed := fmt.Sprintf("%d-%d", w, i)
		cfg, err := put(up, repo, ocispec.MediaTypeImageConfig, []byte(`{"seed":"`+seed+`"}`), false)
		if err != nil {
			return "", err
		}
		own, err := put(up, repo, ocispec.MediaTypeImageLayer, []byte("own "+seed), false)
		if err != nil {
			return "", err
		}
		sh, err := put(man, repo, ocispec.MediaTypeImageLayer, layers[(w+i)%shared], true)
		if err != nil {
			return "", err
		}
		body := imageBody(t, ocispec.Manifest{Config: cfg, Layers: []ocispec.Descriptor{own, sh}})
		return man.PutManifest(ctx(), repo, digest.FromBytes(body), body, mustParse(t, body), nil)
	}
	kept := make([][]image, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			repo := fmt.Sprintf("w%d", w%2)
			for i := range images {
				d, err := push(w, i, repo)
				if err != nil {
					t.Errorf("push %d-%d: %v", w, i, err)
					return
				}
				if i%3 == 0 {
					if err := replicas[i%2].DeleteManifest(ctx(), repo, d); err != nil {
						t.Errorf("delete %d-%d: %v", w, i, err)
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
	collectors.Wait()
	if t.Failed() {
		return
	}
	t.Logf("%d and %d collections ran during the load", runs[0], runs[1])
	// Nothing referenced went: every remaining image reads back whole,
	// through either replica, also after one more collection on each.
	readAll := func() {
		t.Helper()
		for _, imgs := range kept {
			for _, im := range imgs {
				for _, s := range replicas {
					_, body, err := s.GetManifest(ctx(), im.repo, string(im.d))
					if err != nil {
						t.Fatalf("manifest %s in %s: %v", im.d, im.repo, err)
					}
					m := mustParse(t, body)
					if len(m.Blobs) != 3 {
						t.Fatalf("manifest %s names %d blobs, want 3", im.d, len(m.Blobs))
					}
					for _, ref := range m.Blobs {
						readBlob(t, s, im.repo, ref.Digest)
					}
				}
			}
		}
	}
	readAll()
	for _, s := range replicas {
		if _, err := gc.Collect(ctx(), s.Service, gc.Options{Grace: grace}); err != nil {
			t.Fatal(err)
		}
	}
	readAll()
	checkIndex(t, a)
	// Once everything is deleted, a final collection leaves nothing.
	for _, imgs := range kept {
		for _, im := range imgs {
			if err := r.DeleteManifest(ctx(), im.repo, im.d); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := gc.Collect(ctx(), a.Service, gc.Options{Now: time.Now().Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	wantNoContent(t, a)
}

// stallingReader is a request body that delivers data, then, asked for
// more, closes stalled and waits for release before it ends: a client in
// the middle of a long chunk.
type stallingReader struct {
	data     []byte
	stalled  chan struct{}
	release  *latch
	signaled bool
}

func (r *stallingReader) Read(p []byte) (int, error) {
	if len(r.data) > 0 {
		n := copy(p, r.data)
		r.data = r.data[n:]
		return n, nil
	}
	if !r.signaled {
		r.signaled = true
		close(r.stalled)
	}
	<-r.release.C
	return 0, io.EOF
}

// Expiry of idle sessions on one replica leaves alone a session the other
// is appending to, though the append has not ended and the session began
// longer ago than the idle limit: the blob store counts the bytes of an
// append in progress as writes. Once the session is idle, expiry on
// either replica ends it.
func testReplicasExpiryLeavesAppendInProgress(t *testing.T, b Backends) {
	a, r := openReplicas(t, b)
	const idle = 2 * time.Second
	up, err := a.StartUpload(ctx(), "r", "")
	if err != nil {
		t.Fatal(err)
	}
	// Stores keep times to the second: the session is older than the
	// idle limit by more than that before the append begins.
	time.Sleep(idle + 100*time.Millisecond)
	// More than two parts of any blob store (S3 parts are 5 to 8 MiB).
	body := &stallingReader{data: bytes.Repeat([]byte("in flight "), 17<<20/10), stalled: make(chan struct{}), release: newLatch(t)}
	type result struct {
		info storage.UploadInfo
		err  error
	}
	done := make(chan result, 1)
	go func() {
		info, err := a.AppendUpload(ctx(), "r", up.ID, 0, body, -1)
		done <- result{info, err}
	}()
	select {
	case <-body.stalled:
	case res := <-done:
		t.Fatalf("the append ended before its body did: %+v, %v", res.info, res.err)
	}
	n, err := r.ExpireUploads(ctx(), idle, time.Now())
	body.release.open()
	res := <-done
	if err != nil {
		t.Fatalf("expiry on B: %v", err)
	}
	if n != 0 {
		t.Fatalf("expiry on B ended %d sessions while A was appending to one", n)
	}
	if res.err != nil || res.info.Offset != int64(17<<20/10*len("in flight ")) {
		t.Fatalf("the append on A: %+v, %v", res.info, res.err)
	}
	// Idle now (as of an hour later): expiry on B ends it, for A too.
	if n, err := r.ExpireUploads(ctx(), idle, time.Now().Add(time.Hour)); err != nil || n != 1 {
		t.Fatalf("expiry of the idle session on B: %d, %v; want 1 ended", n, err)
	}
	if _, err := a.UploadStatus(ctx(), "r", up.ID); !errors.Is(err, storage.ErrUploadUnknown) {
		t.Fatalf("status on A of a session expired on B: %v, want ErrUploadUnknown", err)
	}
	wantNoContent(t, a)
}
