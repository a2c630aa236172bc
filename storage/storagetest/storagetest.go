// Package storagetest is the behavioural suite of Berth's storage core:
// every rule of storage.Service (content, uploads, manifests and their
// references, tags and their history, promotion, search, events, locking,
// several replicas sharing the backends) tested through its public API
// over a pair of backends, so that every
// pair of backends (the embedded index and file blob store today, a
// database and an object store tomorrow) inherits every test.
//
// A backend's package runs it with Run, giving a Backends that opens its
// index and blob store. The suite reaches below the core only through the
// two seams: it looks at content with blob.Store (Walk, WalkStaged, Stat)
// and at records with meta.Store transactions, never at files or buckets.
// Tests that need a particular backend (fault injection, crashes, file
// locks) belong to that backend's pair, outside the suite.
package storagetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/blob"
	"github.com/berth-registry/berth/storage/manifest"
	"github.com/berth-registry/berth/storage/meta"
)

// Backends opens the backends the suite runs the core over.
type Backends struct {
	// Open opens the index and the blob store of the store kept under
	// dir, creating them if dir is empty, as a new process would: what a
	// store held when its index was last closed must be there again. The
	// suite closes the index (the blob store has nothing to close) before
	// it opens the same dir again, and at the end of each test. Open
	// fails the test if it cannot open them.
	Open func(t *testing.T, dir string) (meta.Store, blob.Store)
	// Replica, when set, opens a second view of the store Open opened
	// under dir while that is open, as another replica would: its own
	// connections to the same database and the same bucket. The suite
	// closes the index it returns. When nil, the replicas' Services share
	// the index and blob store Open returned (a bolt index admits one
	// process), which is the same view of one index two replicas have.
	Replica func(t *testing.T, dir string) (meta.Store, blob.Store)
}

// suiteTest is one test of the suite.
type suiteTest struct {
	name string
	run  func(t *testing.T, b Backends)
}

// tests are the tests of the suite, in the order Run runs them.
var tests = []suiteTest{
	// Content and uploads (store.go, uploads.go).
	{"ConcurrentPushesOfOneBlob", testConcurrentPushesOfOneBlob},
	{"ContentWithoutRecordIsInvisible", testContentWithoutRecordIsInvisible},
	{"RestartKeepsAcknowledgedContent", testRestartKeepsAcknowledgedContent},
	{"ShortChunkRollsBack", testShortChunkRollsBack},
	{"DigestMismatchLeavesNothing", testDigestMismatchLeavesNothing},
	{"OpenBlobWhoseContentIsGone", testOpenBlobWhoseContentIsGone},
	{"MountBlob", testMountBlob},
	{"DeleteBlob", testDeleteBlob},
	{"PaginationWalksTheIndex", testPaginationWalksTheIndex},
	{"UploadRecordWithoutContent", testUploadRecordWithoutContent},
	{"ExpireUploads", testExpireUploads},
	{"UploadBelongsToItsActor", testUploadBelongsToItsActor},
	{"UploadUnsupportedAlgorithm", testUploadUnsupportedAlgorithm},
	// Several replicas over one index and one blob store (replicas.go).
	{"ReplicasLookupKeepsLinkFromOtherGC", testReplicasLookupKeepsLinkFromOtherGC},
	{"ReplicasChunkedUploadResumesAnywhere", testReplicasChunkedUploadResumesAnywhere},
	{"ReplicasCancelledUploadUnknownElsewhere", testReplicasCancelledUploadUnknownElsewhere},
	{"ReplicasExpiryLeavesAppendInProgress", testReplicasExpiryLeavesAppendInProgress},
	{"ReplicasGCUnderLoad", testReplicasGCUnderLoad},
	// Manifests (manifests.go).
	{"ManifestReferencesCheckedAtomically", testManifestReferencesCheckedAtomically},
	{"ManifestDescriptorSizeMustMatch", testManifestDescriptorSizeMustMatch},
	{"ManifestDigestMismatch", testManifestDigestMismatch},
	{"ManifestPushedAgainIsNotWrittenAgain", testManifestPushedAgainIsNotWrittenAgain},
	{"ManifestContentPlacedBeforeItsTransaction", testManifestContentPlacedBeforeItsTransaction},
	{"PushAgainKeepsPushTime", testPushAgainKeepsPushTime},
	{"DeleteManifest", testDeleteManifest},
	{"DeleteAndPushFindTagsWithoutWalkingThem", testDeleteAndPushFindTagsWithoutWalkingThem},
	{"Referrers", testReferrers},
	// The pull-through cache's manifests and fills (cache.go).
	{"CachedManifestPendingFromUpstream", testCachedManifestPendingFromUpstream},
	{"FillDigestMismatchLeavesNothing", testFillDigestMismatchLeavesNothing},
	{"FillAppendBytes", testFillAppendBytes},
	// Reads and locks (reads.go).
	{"ReadsDoNotWaitForDigestLocks", testReadsDoNotWaitForDigestLocks},
	{"ReadsDoNotWaitForAnOpenUpdate", testReadsDoNotWaitForAnOpenUpdate},
	// Tags (tags.go).
	{"TagHistoryRecordsEveryMove", testTagHistoryRecordsEveryMove},
	{"ImmutableTagsRefuseEveryMove", testImmutableTagsRefuseEveryMove},
	{"FailedUpdateChangesNothing", testFailedUpdateChangesNothing},
	// Promotion (promote.go).
	{"PromoteAcrossRepositories", testPromoteAcrossRepositories},
	{"PromoteIndexWithChildren", testPromoteIndexWithChildren},
	{"PromoteFollowsReferrers", testPromoteFollowsReferrers},
	{"PromoteImmutableTagChangesNothing", testPromoteImmutableTagChangesNothing},
	{"PromoteUnknownSource", testPromoteUnknownSource},
	{"PromoteSkipsForeignLayers", testPromoteSkipsForeignLayers},
	// Search (search.go).
	{"SearchIndexFollowsPushRepushAndDelete", testSearchIndexFollowsPushRepushAndDelete},
	{"SearchFilters", testSearchFilters},
	{"SearchPaginates", testSearchPaginates},
	{"SearchConfigLabels", testSearchConfigLabels},
	{"SearchBadConfigDoesNotFailPush", testSearchBadConfigDoesNotFailPush},
	{"SearchUnindexablePairs", testSearchUnindexablePairs},
	{"SearchScanLimitPages", testSearchScanLimitPages},
	// What holds some content (holders.go).
	{"HoldersFindsWhatHoldsContent", testHoldersFindsWhatHoldsContent},
	// Events (events.go).
	{"EventsOncePerChangeAfterCommit", testEventsOncePerChangeAfterCommit},
	{"EventsOfRetentionAndGC", testEventsOfRetentionAndGC},
	{"NoEventsForRefusedWrites", testNoEventsForRefusedWrites},
	{"RetriedUpdatePublishesOnce", testRetriedUpdatePublishesOnce},
	// The outbox (outbox.go).
	{"OutboxHoldsTheEventsOfEachChange", testOutboxHoldsTheEventsOfEachChange},
	{"OutboxNothingForRefusedWrites", testOutboxNothingForRefusedWrites},
	{"OutboxRetriedUpdateQueuesOnce", testOutboxRetriedUpdateQueuesOnce},
	{"OutboxFailureFailsTheChange", testOutboxFailureFailsTheChange},
}

// Run runs the suite over the backends b opens, each test in a subtest of
// t named after it, in a directory of its own.
func Run(t *testing.T, b Backends) {
	t.Helper()
	if b.Open == nil {
		t.Fatal("storagetest: Backends.Open is nil")
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, b) })
	}
}

// config is how a test opens a store: the core's options and decorators
// of either seam.
type config struct {
	opts      storage.Options
	wrapIndex func(meta.Store) meta.Store
	wrapBlobs func(blob.Store) blob.Store
}

// option changes a config.
type option func(*config)

// withOptions opens the core with opts.
func withOptions(opts storage.Options) option { return func(c *config) { c.opts = opts } }

// withIndex puts wrap around the index the core sees.
func withIndex(wrap func(meta.Store) meta.Store) option {
	return func(c *config) { c.wrapIndex = wrap }
}

// withBlobs puts wrap around the blob store the core sees.
func withBlobs(wrap func(blob.Store) blob.Store) option {
	return func(c *config) { c.wrapBlobs = wrap }
}

// store is one store under test: the core over the backends, and the
// backends themselves, unwrapped, for the test to look below the core.
type store struct {
	*storage.Service
	index meta.Store
	blobs blob.Store
	dir   string
	b     Backends
	cfg   config
	// closed is set once the index is closed.
	closed bool
}

// open opens a new store in a directory of its own, closed when the test
// ends.
func open(t *testing.T, b Backends, opts ...option) *store {
	t.Helper()
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	return openIn(t, b, t.TempDir(), cfg)
}

func openIn(t *testing.T, b Backends, dir string, cfg config) *store {
	t.Helper()
	index, blobs := b.Open(t, dir)
	if index == nil || blobs == nil {
		t.Fatal("storagetest: Backends.Open returned a nil backend")
	}
	s := &store{index: index, blobs: blobs, dir: dir, b: b, cfg: cfg}
	var idx meta.Store = index
	var bs blob.Store = blobs
	if cfg.wrapIndex != nil {
		idx = cfg.wrapIndex(idx)
	}
	if cfg.wrapBlobs != nil {
		bs = cfg.wrapBlobs(bs)
	}
	s.Service = storage.New(idx, bs, cfg.opts)
	t.Cleanup(func() { s.close(t) })
	return s
}

// close closes the index, once.
func (s *store) close(t *testing.T) {
	t.Helper()
	if s.closed {
		return
	}
	s.closed = true
	if err := s.index.Close(); err != nil {
		t.Errorf("close index: %v", err)
	}
}

// restart closes the store and opens it again, as the next process would,
// with the same options: every test that restarts uses the new store.
func (s *store) restart(t *testing.T) *store {
	t.Helper()
	s.close(t)
	return openIn(t, s.b, s.dir, s.cfg)
}

// ctx is the context of the suite's calls.
func ctx() context.Context { return context.Background() }

// randomBytes returns n random bytes.
func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// putBlob stores b in repo and returns its descriptor.
func putBlob(t *testing.T, s *store, repo, mediaType string, b []byte) ocispec.Descriptor {
	t.Helper()
	d := digest.FromBytes(b)
	info, err := s.PutBlob(ctx(), repo, d, bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatalf("put blob in %s: %v", repo, err)
	}
	if info.Digest != d || info.Size != int64(len(b)) {
		t.Fatalf("put blob in %s: %+v, want %s of %d bytes", repo, info, d, len(b))
	}
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(b))}
}

// readBlob reads a blob of repo whole.
func readBlob(t *testing.T, s *store, repo string, d digest.Digest) []byte {
	t.Helper()
	f, info, err := s.OpenBlob(ctx(), repo, d)
	if err != nil {
		t.Fatalf("open blob %s in %s: %v", d, repo, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	if info.Digest != d || info.Size != int64(len(b)) {
		t.Fatalf("blob %s in %s: info %+v, %d bytes read", d, repo, info, len(b))
	}
	return b
}

// imageBody is m as a body, with schemaVersion and media type filled in.
func imageBody(t *testing.T, m ocispec.Manifest) []byte {
	t.Helper()
	m.Versioned = specs.Versioned{SchemaVersion: 2}
	m.MediaType = ocispec.MediaTypeImageManifest
	return mustMarshal(t, m)
}

// indexBody is an image index over children, as a body.
func indexBody(t *testing.T, children []ocispec.Descriptor) []byte {
	t.Helper()
	return mustMarshal(t, ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: children,
	})
}

// putManifest stores m (schemaVersion and media type filled in) in repo
// under tags, and returns its digest and descriptor.
func putManifest(t *testing.T, s *store, repo string, m ocispec.Manifest, tags ...string) (digest.Digest, ocispec.Descriptor) {
	t.Helper()
	return putBody(t, s, repo, imageBody(t, m), tags...)
}

// putIndex stores an image index over children in repo under tags.
func putIndex(t *testing.T, s *store, repo string, children []ocispec.Descriptor, tags ...string) (digest.Digest, ocispec.Descriptor) {
	t.Helper()
	return putBody(t, s, repo, indexBody(t, children), tags...)
}

// putBody stores a manifest body in repo under tags.
func putBody(t *testing.T, s *store, repo string, body []byte, tags ...string) (digest.Digest, ocispec.Descriptor) {
	t.Helper()
	parsed := mustParse(t, body)
	d := digest.FromBytes(body)
	got, err := s.PutManifest(ctx(), repo, d, body, parsed, tags)
	if err != nil {
		t.Fatalf("put manifest in %s: %v", repo, err)
	}
	if got != d {
		t.Fatalf("put manifest in %s: digest %s, want %s", repo, got, d)
	}
	return d, ocispec.Descriptor{MediaType: parsed.MediaType, Digest: d, Size: int64(len(body))}
}

// putImage stores a small image in repo, made distinct by seed: a config,
// one layer of its own, and the manifest, tagged with tags.
func putImage(t *testing.T, s *store, repo, seed string, tags ...string) digest.Digest {
	t.Helper()
	cfg := putBlob(t, s, repo, ocispec.MediaTypeImageConfig, []byte(`{"architecture":"amd64","os":"linux","config":{"Labels":{"seed":"`+seed+`"}}}`))
	layer := putBlob(t, s, repo, ocispec.MediaTypeImageLayer, []byte("layer of "+seed))
	d, _ := putManifest(t, s, repo, ocispec.Manifest{Config: cfg, Layers: []ocispec.Descriptor{layer}}, tags...)
	return d
}

// describe returns the descriptor of manifest d of repo.
func describe(t *testing.T, s *store, repo string, d digest.Digest) ocispec.Descriptor {
	t.Helper()
	info, err := s.StatManifest(ctx(), repo, string(d))
	if err != nil {
		t.Fatalf("manifest %s in %s: %v", d, repo, err)
	}
	return ocispec.Descriptor{MediaType: info.MediaType, Digest: d, Size: info.Size}
}

// mustParse parses a manifest body already known to be valid.
func mustParse(t *testing.T, body []byte) *manifest.Manifest {
	t.Helper()
	m, err := manifest.Parse("", body)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// stored lists what the blob store holds: the digests of committed
// content, and the upload sessions in flight with their sizes.
func stored(t *testing.T, s *store) (blobs []digest.Digest, staged map[string]int64) {
	t.Helper()
	blobs, staged = []digest.Digest{}, map[string]int64{}
	err := s.blobs.Walk(ctx(), func(e blob.Entry) error {
		if e.Digest == "" {
			return errors.New("stray object " + e.Name + " in the blob store")
		}
		blobs = append(blobs, e.Digest)
		return nil
	})
	if err != nil {
		t.Fatalf("walk blobs: %v", err)
	}
	err = s.blobs.WalkStaged(ctx(), func(e blob.Entry) error {
		staged[e.Name] = e.Size
		return nil
	})
	if err != nil {
		t.Fatalf("walk staged content: %v", err)
	}
	return blobs, staged
}

// wantNoContent checks that the blob store holds nothing at all.
func wantNoContent(t *testing.T, s *store) {
	t.Helper()
	if blobs, staged := stored(t, s); len(blobs) != 0 || len(staged) != 0 {
		t.Fatalf("blob store not empty: blobs %v, staged %v", blobs, staged)
	}
}

// checkIndex runs the backend's own check of its derived indexes, if it
// has one, and fails on any finding.
func checkIndex(t *testing.T, s *store) {
	t.Helper()
	c, ok := s.index.(meta.Checker)
	if !ok {
		return
	}
	err := c.Check(ctx(), false, func(f meta.Finding) {
		t.Errorf("index check: %+v", f)
	})
	if err != nil {
		t.Fatalf("index check: %v", err)
	}
}

// view runs fn in a read transaction of the unwrapped index.
func view(t *testing.T, s *store, fn func(tx meta.Tx) error) {
	t.Helper()
	if err := s.index.View(ctx(), fn); err != nil {
		t.Fatal(err)
	}
}

// update runs fn in a write transaction of the unwrapped index, below the
// core: the suite's way to age or break records.
func update(t *testing.T, s *store, fn func(tx meta.Tx) error) {
	t.Helper()
	if err := s.index.Update(ctx(), fn); err != nil {
		t.Fatal(err)
	}
}

// hasManifestRecord reports whether the index records manifest d in repo.
func hasManifestRecord(t *testing.T, s *store, repo string, d digest.Digest) bool {
	t.Helper()
	var ok bool
	view(t, s, func(tx meta.Tx) error {
		var err error
		_, ok, err = tx.Manifest(repo, d)
		return err
	})
	return ok
}

// tagRulesFunc adapts a function to storage.TagRules.
type tagRulesFunc func(repo, tag string) bool

func (f tagRulesFunc) Immutable(repo, tag string) bool { return f(repo, tag) }

// parallel runs fn(i) for i in [0, n) at once and returns the first error.
func parallel(n int, fn func(i int) error) error {
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- fn(i)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
