package storagetest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/meta"
)

// The pull-through cache records a manifest before the content it
// references arrives: that content is pending from the upstream. The
// manifest and a cache record are recorded, the tag's move says mirror,
// and what the repository does hold must still have the descriptors'
// sizes. A push of the same body is still checked in full, and the
// content that arrives later through a fill is linked and referenced like
// any other. Removing the manifest removes its cache record.
func testCachedManifestPendingFromUpstream(t *testing.T, b Backends) {
	s := open(t, b)
	const repo, other = "hub/library/alpine", "local/alpine"
	cfgBody, layerBody := []byte(`{"architecture":"amd64","os":"linux"}`), randomBytes(t, 4096)
	cfg := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfgBody), Size: int64(len(cfgBody))}
	layer := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromBytes(layerBody), Size: int64(len(layerBody))}
	image := imageBody(t, ocispec.Manifest{Config: cfg, Layers: []ocispec.Descriptor{layer}})
	imageDesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(image), Size: int64(len(image))}
	index := indexBody(t, []ocispec.Descriptor{imageDesc})

	// An ordinary push of either is refused, as ever.
	for _, body := range [][]byte{image, index} {
		if _, err := s.PutManifest(ctx(), other, "", body, mustParse(t, body), []string{"v1"}); !errors.Is(err, storage.ErrManifestBlobUnknown) {
			t.Fatalf("push of a manifest whose content is absent: %v", err)
		}
	}
	// The cache records the index before its child, the child before its
	// blobs.
	opts := storage.PutOptions{Tags: []string{"3.19"}, Action: storage.MoveMirror, Upstream: "hub"}
	id, err := s.PutManifestWith(ctx(), repo, "", index, mustParse(t, index), opts)
	if err != nil {
		t.Fatalf("cache an index whose child is pending: %v", err)
	}
	if _, err := s.PutManifestWith(ctx(), repo, imageDesc.Digest, image, mustParse(t, image), storage.PutOptions{Upstream: "hub"}); err != nil {
		t.Fatalf("cache an image whose blobs are pending: %v", err)
	}
	if info, err := s.StatManifest(ctx(), repo, "3.19"); err != nil || info.Digest != id {
		t.Fatalf("tag of the cached index: %+v, %v", info, err)
	}
	moves, _, err := s.TagHistory(ctx(), repo, "3.19", 0, 10)
	if err != nil || len(moves) != 1 || moves[0].Action != storage.MoveMirror || moves[0].Digest != id {
		t.Fatalf("history of a cached tag: %+v, %v; want one mirror move", moves, err)
	}
	view(t, s, func(tx meta.Tx) error {
		for _, d := range []digest.Digest{id, imageDesc.Digest} {
			if c, ok, err := tx.Cached(repo, d); err != nil || !ok || c.Upstream != "hub" || c.Cached.IsZero() {
				t.Errorf("cache record of %s: %+v, %v, %v", d, c, ok, err)
			}
		}
		if c, ok, _ := tx.Cached(other, imageDesc.Digest); ok {
			t.Errorf("cache record in a repository the cache never wrote: %+v", c)
		}
		// The pending layer is referenced, as garbage collection asks.
		found := false
		if err := tx.Uses(layer.Digest, repo, func(u meta.Use) error {
			found = found || (u.Kind == meta.UseReference && u.Manifest == imageDesc.Digest)
			return nil
		}); err != nil {
			return err
		}
		if !found {
			t.Error("the pending layer is not among the references of its manifest")
		}
		return nil
	})
	if _, err := s.StatBlob(ctx(), repo, layer.Digest); !errors.Is(err, storage.ErrBlobUnknown) {
		t.Fatalf("a pending blob answers %v; want unknown until it arrives", err)
	}

	// Content the repository holds must have the descriptor's size, cached
	// or not: a config of another length than the manifest says is refused.
	putBlob(t, s, repo, ocispec.MediaTypeImageConfig, cfgBody)
	wrong := cfg
	wrong.Size++
	bad := imageBody(t, ocispec.Manifest{Config: wrong, Layers: []ocispec.Descriptor{layer}})
	if _, err := s.PutManifestWith(ctx(), repo, "", bad, mustParse(t, bad), storage.PutOptions{Upstream: "hub", Tags: []string{"bad"}}); !errors.Is(err, storage.ErrManifestInvalid) {
		t.Fatalf("cached manifest with a wrong size for held content: %v", err)
	}
	wantNothingStored(t, s, repo, digest.FromBytes(bad), "bad")

	// The layer arrives through a fill, in pieces, readable as it comes,
	// invisible until committed.
	f, err := s.StartFill(ctx(), layer.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Append(ctx(), bytes.NewReader(layerBody[:1000]), 1000); err != nil {
		t.Fatal(err)
	}
	r, err := f.Reader(ctx())
	if err != nil {
		t.Fatal(err)
	}
	head, err := io.ReadAll(r)
	_ = r.Close()
	if err != nil || !bytes.Equal(head, layerBody[:1000]) || f.Size() != 1000 {
		t.Fatalf("a fill reads back %d bytes (%v), size %d; want the 1000 appended", len(head), err, f.Size())
	}
	if _, err := s.StatBlob(ctx(), repo, layer.Digest); !errors.Is(err, storage.ErrBlobUnknown) {
		t.Fatalf("content of a fill in progress answers %v; want unknown", err)
	}
	if _, err := f.Append(ctx(), bytes.NewReader(layerBody[1000:]), int64(len(layerBody)-1000)); err != nil {
		t.Fatal(err)
	}
	if !f.Verified() {
		t.Fatal("a fill of the whole content does not verify")
	}
	if info, err := f.Commit(ctx(), repo); err != nil || info.Size != layer.Size {
		t.Fatalf("commit the fill: %+v, %v", info, err)
	}
	if got := readBlob(t, s, repo, layer.Digest); !bytes.Equal(got, layerBody) {
		t.Fatal("the filled blob reads back other bytes")
	}
	checkIndex(t, s)

	// Deleting the cached manifest removes its cache record with it.
	if err := s.DeleteManifest(ctx(), repo, imageDesc.Digest); err != nil {
		t.Fatal(err)
	}
	view(t, s, func(tx meta.Tx) error {
		if c, ok, err := tx.Cached(repo, imageDesc.Digest); ok || err != nil {
			t.Errorf("cache record of a deleted manifest: %+v, %v, %v", c, ok, err)
		}
		return nil
	})
}

// A fill whose content does not hash to its digest is refused at commit
// and leaves nothing: no record, no content, nothing staged.
func testFillDigestMismatchLeavesNothing(t *testing.T, b Backends) {
	s := open(t, b)
	body := randomBytes(t, 2048)
	d := digest.FromBytes(body)
	f, err := s.StartFill(ctx(), d)
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Clone(body)
	tampered[100] ^= 1
	if _, err := f.Append(ctx(), bytes.NewReader(tampered), int64(len(tampered))); err != nil {
		t.Fatal(err)
	}
	if f.Verified() {
		t.Fatal("tampered content verifies")
	}
	if _, err := f.Commit(ctx(), "r"); !errors.Is(err, storage.ErrDigestMismatch) {
		t.Fatalf("commit of tampered content: %v; want ErrDigestMismatch", err)
	}
	if _, err := s.StatBlob(ctx(), "r", d); !errors.Is(err, storage.ErrBlobUnknown) {
		t.Fatalf("refused fill answers %v", err)
	}
	wantNoContent(t, s)
	// A short append is refused and changes nothing.
	f, err = s.StartFill(ctx(), d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Append(ctx(), bytes.NewReader(body[:10]), 20); !errors.Is(err, storage.ErrSizeInvalid) || f.Size() != 0 {
		t.Fatalf("short append: %v, size %d", err, f.Size())
	}
	if err := f.Cancel(ctx()); err != nil {
		t.Fatal(err)
	}
	wantNoContent(t, s)
	if _, err := s.StartFill(ctx(), "sha256:nothex"); !errors.Is(err, storage.ErrDigestMismatch) {
		t.Fatalf("fill of an invalid digest: %v", err)
	}
}

// AppendBytes appends in-memory pieces, hashed while they are written; one
// that fails (its context ended) changes neither the content nor the hash,
// and the fill goes on to verify and commit.
func testFillAppendBytes(t *testing.T, b Backends) {
	s := open(t, b)
	body := randomBytes(t, 3<<20+17)
	d := digest.FromBytes(body)
	f, err := s.StartFill(ctx(), d)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.AppendBytes(ctx(), body[:1<<20]); err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(ctx())
	cancel()
	if err := f.AppendBytes(cancelled, body[1<<20:2<<20]); err == nil {
		t.Fatal("an append with an ended context succeeded")
	}
	if f.Size() != 1<<20 {
		t.Fatalf("size after a failed append: %d; want %d", f.Size(), 1<<20)
	}
	for _, piece := range [][]byte{body[1<<20 : 2<<20], body[2<<20:]} {
		if err := f.AppendBytes(ctx(), piece); err != nil {
			t.Fatal(err)
		}
	}
	if !f.Verified() {
		t.Fatal("the whole content appended in pieces does not verify: the failed append left the hash changed")
	}
	if _, err := f.Commit(ctx(), "r"); err != nil {
		t.Fatal(err)
	}
	if got := readBlob(t, s, "r", d); !bytes.Equal(got, body) {
		t.Fatal("the committed content differs")
	}
}
