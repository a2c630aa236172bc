package gc_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage/gc"
	"github.com/berth-registry/berth/storage/internal/clienttest"
	"github.com/berth-registry/berth/storage/meta"
)

// garbageAmong builds the same garbage (a deleted image, a stray blob, an
// orphan referrer, a repository with nothing referenced) among the given
// number of live images, half in the repository of the garbage and half
// in one of their own, and ages it all past the grace.
func garbageAmong(t *testing.T, bystanders int) (*clienttest.Store, *watchedIndex) {
	t.Helper()
	ctx := context.Background()
	var w *watchedIndex
	s := clienttest.Open(t, "", clienttest.Options{Wrap: func(m meta.Store) meta.Store { w = watch(m); return w }})
	for i := range bystanders {
		repo := "app"
		if i%2 == 1 {
			repo = "live"
		}
		s.PutImage(repo, fmt.Sprintf("bystander %d", i), fmt.Sprintf("v%d", i))
	}
	deleted := s.PutImage("app", "deleted", "doomed")
	cfg := s.PutBlob("app", ocispec.MediaTypeImageConfig, []byte(`{}`))
	layer := s.PutBlob("app", "application/vnd.test", []byte("signature"))
	s.PutManifest("app", ocispec.Manifest{Config: cfg, Layers: []ocispec.Descriptor{layer},
		Subject: &ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: deleted, Size: 2}}, "sig")
	s.PutBlob("app", "application/octet-stream", []byte("stray"))
	s.PutBlob("gone", "application/octet-stream", []byte("only blob of a repository"))
	if err := s.Svc.DeleteManifest(ctx, "app", deleted); err != nil {
		t.Fatal(err)
	}
	s.Age(2 * time.Hour)
	w.reset()
	return s, w
}

// GC's cost follows the candidates: the transactions that remove them
// look each one up in the index (its record, its uses), and never walk a
// repository's manifests, its links or tags, nor all repositories or
// blobs. Only the plan, in a read-only snapshot, reads the whole index.
// A collection that checked each batch against every manifest (as Berth's
// first one did) fails this test, whatever the store's size.
func TestGCRemovalCostFollowsCandidates(t *testing.T) {
	type run struct {
		rep         gc.Report
		updateReads int
		updateCalls map[string]int
	}
	measure := func(bystanders int) run {
		s, w := garbageAmong(t, bystanders)
		rep := collect(t, s, gc.Options{Grace: time.Hour})
		// The plan read the whole index...
		if w.count(inView, "Repositories") == 0 || w.count(inView, "Manifests") == 0 || w.count(inView, "Blobs") == 0 {
			t.Fatalf("%d bystanders: the plan walked nothing: the counter sees nothing", bystanders)
		}
		// ...the removals never walked it.
		for _, m := range walks() {
			if n := w.count(inUpdate, m); n != 0 {
				t.Errorf("%d bystanders: a removal transaction called %s %d times", bystanders, m, n)
			}
		}
		checkClean(t, s)
		w.mu.Lock()
		defer w.mu.Unlock()
		calls := map[string]int{}
		for k, v := range w.calls[inUpdate] {
			calls[k] = v
		}
		return run{rep: rep, updateReads: w.reads[inUpdate], updateCalls: calls}
	}
	small, large := measure(1), measure(41)
	t.Logf("removals: %d reads with one bystander, %d with 41; report %+v", small.updateReads, large.updateReads, large.rep)
	small.rep.Duration, large.rep.Duration = 0, 0
	if small.rep != large.rep || small.rep.ManifestsRemoved != 1 || small.rep.BlobsRemoved == 0 || small.rep.RepositoriesRemoved != 1 {
		t.Fatalf("reports differ or miss the garbage:\n%+v\n%+v", small.rep, large.rep)
	}
	// The same candidates cost the same index reads, however many live
	// images surround them.
	if small.updateReads != large.updateReads {
		t.Fatalf("removal transactions read %d records with one bystander and %d with 41:\n%v\n%v",
			small.updateReads, large.updateReads, small.updateCalls, large.updateCalls)
	}
}
