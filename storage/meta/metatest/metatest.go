// Package metatest is the behavioural suite of Berth's index backends: it
// owns the tests of the meta.Store contract (every Tx method's documented
// behaviour, the derived indexes, the outbox, transactions, group commit
// as callers see it, digest locks, durability across a restart). Every meta backend
// runs it from its own tests, so that each new backend inherits every test:
//
//	func TestSuite(t *testing.T) {
//		metatest.Run(t, metatest.Backend{Open: ..., Reopen: ...})
//	}
//
// When the store also implements meta.Checker, the suite checks after each
// scenario that the backend finds nothing wrong with what it wrote.
package metatest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage/meta"
)

// Backend opens the stores the suite runs against.
type Backend struct {
	// Open returns a new, empty store, private to the test. The suite
	// closes it.
	Open func(t *testing.T) meta.Store
	// Reopen closes s, a store that Open or Reopen returned, and opens the
	// same index again, as a restart of the process would. The suite
	// closes the store it returns.
	Reopen func(t *testing.T, s meta.Store) meta.Store
}

// Run runs the suite against b, each test in a subtest of t.
func Run(t *testing.T, b Backend) {
	if b.Open == nil || b.Reopen == nil {
		t.Fatal("metatest: Backend needs Open and Reopen")
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, h *handle)
	}{
		{"Blobs", testBlobs},
		{"BlobsWalk", testBlobsWalk},
		{"Repositories", testRepositories},
		{"RepositoriesWalk", testRepositoriesWalk},
		{"DeleteRepository", testDeleteRepository},
		{"Links", testLinks},
		{"Manifests", testManifests},
		{"ManifestsWalk", testManifestsWalk},
		{"Referrers", testReferrers},
		{"Uses", testUses},
		{"Tags", testTags},
		{"TagsOf", testTagsOf},
		{"Moves", testMoves},
		{"MovesPrefetched", testMovesPrefetched},
		{"MovesPaging", testMovesPaging},
		{"Search", testSearch},
		{"SearchAfterChanges", testSearchAfterChanges},
		{"Uploads", testUploads},
		{"Robots", testRobots},
		{"Pulls", testPulls},
		{"HistoryTags", testHistoryTags},
		{"Cache", testCache},
		{"Sync", testSync},
		{"ReadOnly", testReadOnly},
		{"WalkErrors", testWalkErrors},
		{"Model", testModel},
		{"ViewSnapshot", testViewSnapshot},
		{"Durability", testDurability},
		{"UpdateRollsBack", testUpdateRollsBack},
		{"UpdateConcurrent", testUpdateConcurrent},
		{"UpdateConcurrentFailures", testUpdateConcurrentFailures},
		{"UpdateOrder", testUpdateOrder},
		{"LockDigestsExclusion", testLockExclusion},
		{"LockDigestsNoDeadlock", testLockNoDeadlock},
		{"LockDigestsCancel", testLockCancel},
	}
	tests = append(tests, outboxTests...)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := &handle{b: b}
			h.s = b.Open(t)
			t.Cleanup(func() {
				if err := h.s.Close(); err != nil {
					t.Errorf("close store: %v", err)
				}
			})
			tc.fn(t, h)
			h.clean(t)
		})
	}
}

// handle is the store of one test, which Reopen replaces.
type handle struct {
	b Backend
	s meta.Store
}

// reopen restarts the store.
func (h *handle) reopen(t *testing.T) {
	t.Helper()
	h.s = h.b.Reopen(t, h.s)
}

// update runs fn in an Update that must succeed.
func (h *handle) update(t *testing.T, fn func(tx meta.Tx) error) {
	t.Helper()
	if err := h.s.Update(context.Background(), fn); err != nil {
		t.Fatalf("update: %v", err)
	}
}

// view runs fn in a View that must succeed.
func (h *handle) view(t *testing.T, fn func(tx meta.Tx) error) {
	t.Helper()
	if err := h.s.View(context.Background(), fn); err != nil {
		t.Fatalf("view: %v", err)
	}
}

// clean fails the test if the store, when it is a meta.Checker, finds
// anything wrong with its own invariants.
func (h *handle) clean(t *testing.T) {
	t.Helper()
	c, ok := h.s.(meta.Checker)
	if !ok || t.Failed() {
		return
	}
	var found []meta.Finding
	if err := c.Check(context.Background(), false, func(f meta.Finding) { found = append(found, f) }); err != nil {
		t.Fatalf("check: %v", err)
	}
	for _, f := range found {
		t.Errorf("the backend's check finds %s: repo=%q digest=%q tag=%q subject=%q: %s", f.Kind, f.Repo, f.Digest, f.Tag, f.Subject, f.Detail)
	}
}

// dg is the digest of name, a stand-in for content.
func dg(name string) digest.Digest { return digest.FromString(name) }

// at is a fixed time, i seconds after a fixed instant.
func at(i int) time.Time { return time.Unix(1_700_000_000+int64(i), 0).UTC() }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// sorted returns the digests sorted.
func sorted(ds ...digest.Digest) []digest.Digest {
	out := slices.Clone(ds)
	slices.Sort(out)
	return out
}

// norm is a manifest record in a canonical form for comparison: empty
// maps and slices as absent, times in UTC.
func norm(m meta.Manifest) string {
	if len(m.Annotations) == 0 {
		m.Annotations = nil
	}
	if len(m.Labels) == 0 {
		m.Labels = nil
	}
	if len(m.References) == 0 {
		m.References = nil
	}
	m.Created = m.Created.UTC()
	if m.ConfigCreated != nil {
		c := m.ConfigCreated.UTC()
		m.ConfigCreated = &c
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// normDesc is a descriptor in a canonical form for comparison.
func normDesc(d ocispec.Descriptor) string {
	if len(d.Annotations) == 0 {
		d.Annotations = nil
	}
	b, err := json.Marshal(d)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// manifestOf returns the record of manifest d in repo, failing the test if
// it is absent.
func manifestOf(t *testing.T, tx meta.Tx, repo string, d digest.Digest) meta.Manifest {
	t.Helper()
	m, ok, err := tx.Manifest(repo, d)
	must(t, err)
	if !ok {
		t.Fatalf("manifest %s of %s is absent", d, repo)
	}
	return m
}

// uses returns the uses of d (in repo, if set), sorted.
func uses(t *testing.T, tx meta.Tx, d digest.Digest, repo string) []meta.Use {
	t.Helper()
	var out []meta.Use
	must(t, tx.Uses(d, repo, func(u meta.Use) error {
		out = append(out, u)
		return nil
	}))
	// Sorted, but not deduplicated: a use is reported once.
	slices.SortFunc(out, cmpUse)
	return out
}

func cmpUse(a, b meta.Use) int {
	return strings.Compare(fmt.Sprintf("%s\x00%c\x00%s", a.Repo, a.Kind, a.Manifest), fmt.Sprintf("%s\x00%c\x00%s", b.Repo, b.Kind, b.Manifest))
}

// useSet sorts expected uses and drops duplicates: a manifest referencing
// a digest twice uses it once.
func useSet(us ...meta.Use) []meta.Use {
	us = slices.Clone(us)
	slices.SortFunc(us, cmpUse)
	return slices.Compact(us)
}

// referrers returns what Referrers yields, in its order, normalised.
func referrers(t *testing.T, tx meta.Tx, repo string, subject digest.Digest) []string {
	t.Helper()
	var out []string
	must(t, tx.Referrers(repo, subject, func(d ocispec.Descriptor) error {
		out = append(out, normDesc(d))
		return nil
	}))
	return out
}

// pairs returns what FindPair yields, as "repo@digest".
func pairs(t *testing.T, tx meta.Tx, kind meta.PairKind, k, v, from string, after digest.Digest) []string {
	t.Helper()
	var out []string
	must(t, tx.FindPair(kind, k, v, from, after, func(repo string, d digest.Digest) error {
		out = append(out, repo+"@"+string(d))
		return nil
	}))
	return out
}

// equal fails the test if got and want differ.
func equal[T comparable](t *testing.T, what string, got, want []T) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !slices.Equal(got, want) {
		t.Errorf("%s:\n got %v\nwant %v", what, got, want)
	}
}

// stringMap is a short map literal helper.
func stringMap(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// errSentinel is returned by functions that must fail.
var errSentinel = errors.New("metatest: this function fails")
