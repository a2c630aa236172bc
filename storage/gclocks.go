package storage

import (
	"hash/fnv"
	"slices"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// digestStripes is the number of locks content placement and garbage
// collection share; see digestLocks.
const digestStripes = 256

// digestLocks serialises, per digest, the placing of content with its
// recording (commitBlob, PutManifest) against garbage collection deleting
// that digest's record and file. Digests share stripes by hash, so the
// table is small and fixed. Lock order: stripes (in ascending order) first,
// then a bbolt write transaction; never the reverse.
type digestLocks struct {
	m [digestStripes]sync.Mutex
}

func stripe(d digest.Digest) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(d))
	return int(h.Sum32() % digestStripes)
}

// lock locks the stripe of d and returns its unlock.
func (l *digestLocks) lock(d digest.Digest) (unlock func()) {
	mu := &l.m[stripe(d)]
	mu.Lock()
	return mu.Unlock
}

// lockAll locks the stripes of every digest of ds, each once, in
// ascending order so that two callers cannot deadlock, and returns the
// unlock of them all.
func (l *digestLocks) lockAll(ds []digest.Digest) (unlock func()) {
	idx := make([]int, 0, len(ds))
	for _, d := range ds {
		idx = append(idx, stripe(d))
	}
	slices.Sort(idx)
	idx = slices.Compact(idx)
	for _, i := range idx {
		l.m[i].Lock()
	}
	return func() {
		for _, i := range slices.Backward(idx) {
			l.m[i].Unlock()
		}
	}
}

// maxSeen bounds the entries of the seen table. Beyond it the table is
// cleared and remembers only that it overflowed, at which moment every
// link counts as seen: garbage collection then keeps all links until a
// grace period has passed, which is safe, merely slower to reclaim.
const maxSeen = 1 << 17

// seenTable remembers when a repository's blob link was last checked or
// read (HEAD or GET of the blob), so that garbage collection keeps a link
// a client has just been told exists and may be about to reference from a
// manifest. It is in memory only: online collection runs in the serving
// process, so a restart forgets it, and a collection right after a
// restart relies on the grace period alone.
type seenTable struct {
	mu       sync.Mutex
	m        map[string]time.Time
	overflow time.Time
}

func newSeenTable() *seenTable { return &seenTable{m: map[string]time.Time{}} }

func seenKey(repo string, d digest.Digest) string { return repo + "\x00" + string(d) }

// mark records that repo's link to d is seen at t.
func (t *seenTable) mark(repo string, d digest.Digest, at time.Time) {
	k := seenKey(repo, d)
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.m[k]; !ok && len(t.m) >= maxSeen {
		clear(t.m)
		t.overflow = at
		return
	}
	t.m[k] = at
}

// unmark forgets the mark of repo's link to d if it is still the one
// made at at: a lookup that found no link has nothing to protect.
func (t *seenTable) unmark(repo string, d digest.Digest, at time.Time) {
	k := seenKey(repo, d)
	t.mu.Lock()
	defer t.mu.Unlock()
	if v, ok := t.m[k]; ok && v.Equal(at) {
		delete(t.m, k)
	}
}

// since reports whether repo's link to d was seen at or after cutoff.
func (t *seenTable) since(repo string, d digest.Digest, cutoff time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.overflow.Before(cutoff) {
		return true
	}
	v, ok := t.m[seenKey(repo, d)]
	return ok && !v.Before(cutoff)
}

// prune forgets marks older than cutoff, which no collection needs any more.
func (t *seenTable) prune(cutoff time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, v := range t.m {
		if v.Before(cutoff) {
			delete(t.m, k)
		}
	}
}
