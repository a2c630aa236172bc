package gc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/fsck"
	"github.com/berth-registry/berth/storage/gc"
	"github.com/berth-registry/berth/storage/internal/clienttest"
	"github.com/berth-registry/berth/storage/meta"
)

// TestPendingReferencesOfTheCache: a manifest the pull-through cache
// recorded before its layers arrived keeps them once they do, however old
// (collection's invariant holds for pending references as for any); fsck
// calls the not yet fetched content pending, harmless, and a cache record
// left without its manifest stale, which repair removes. Once the manifest
// goes, collection reclaims the layer.
func TestPendingReferencesOfTheCache(t *testing.T) {
	ctx := context.Background()
	s := clienttest.Open(t, "", clienttest.Options{})
	const repo = "hub/library/app"
	cfg := s.PutBlob(repo, ocispec.MediaTypeImageConfig, []byte(`{"architecture":"amd64","os":"linux"}`))
	layers := [][]byte{[]byte("the first layer"), []byte("the second layer, fetched later")}
	var descs []ocispec.Descriptor
	for _, l := range layers {
		descs = append(descs, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromBytes(l), Size: int64(len(l))})
	}
	body, err := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: descs})
	if err != nil {
		t.Fatal(err)
	}
	md, err := s.Svc.PutManifestWith(ctx, repo, "", body, clienttest.Parse(t, body), storage.PutOptions{Tags: []string{"v1"}, Action: storage.MoveMirror, Upstream: "hub"})
	if err != nil {
		t.Fatal(err)
	}
	// The first layer arrives; the second is still pending.
	f, err := s.Svc.StartFill(ctx, descs[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Append(ctx, bytes.NewReader(layers[0]), descs[0].Size); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Commit(ctx, repo); err != nil {
		t.Fatal(err)
	}
	s.Age(48 * time.Hour)
	if rep := collect(t, s, gc.Options{Grace: time.Hour}); rep.LinksRemoved != 0 || rep.BlobsRemoved != 0 {
		t.Fatalf("collection removed what a cached manifest references: %+v", rep)
	}
	// (Read below the core: a lookup would leave a seen mark that keeps
	// the link anyway.)
	if n, err := s.Blobs.Stat(ctx, descs[0].Digest); err != nil || n != descs[0].Size {
		t.Fatalf("the fetched layer is gone: %d bytes, %v", n, err)
	}

	// fsck: pending, harmless; a stale cache record is found and repaired.
	s.Update(func(tx meta.Tx) error {
		return tx.PutCached(repo, digest.FromString("a manifest deleted by an older Berth"), meta.Cached{Upstream: "hub"})
	})
	r, err := fsck.Check(ctx, s.Svc, s.Bolt, fsck.Options{Repair: true})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, p := range r.Problems {
		kinds[p.Kind]++
		if !p.Harmless {
			t.Errorf("fsck finds %s, not harmless", p)
		}
	}
	if kinds[fsck.ProblemPendingUpstream] != 1 || kinds[fsck.ProblemStaleCache] != 1 || kinds[fsck.ProblemIncompleteManifest] != 0 {
		t.Errorf("fsck kinds %v; want one pending-upstream and one stale-cache", kinds)
	}
	if r.Inconsistent() != 0 || len(r.Repaired) != 1 || r.Repaired[0].Kind != fsck.ProblemStaleCache {
		t.Errorf("fsck repair: %d inconsistent, repaired %+v", r.Inconsistent(), r.Repaired)
	}
	for _, p := range r.Remaining {
		if p.Kind == fsck.ProblemStaleCache {
			t.Errorf("a stale cache record remains after repair: %s", p)
		}
	}

	// Once retention or a client deletes the manifest, the layer goes.
	if err := s.Svc.DeleteManifest(ctx, repo, md); err != nil {
		t.Fatal(err)
	}
	s.Age(48 * time.Hour)
	if rep := collect(t, s, gc.Options{Grace: time.Hour}); rep.BlobsRemoved != 3 {
		t.Fatalf("collection after the manifest went: %+v; want its config, layer and body removed", rep)
	}
	checkClean(t, s)
}
