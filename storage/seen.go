package storage

import (
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// Seen marks: how garbage collection and blob lookups agree, without
// either waiting for the other, on a link a client has just been told
// exists.
//
// A client that finds a blob with HEAD or GET may reference it from the
// manifest it pushes next, without uploading it. So a lookup first marks
// the link seen, then reads the index; collection, in the transaction that
// would remove a link, first claims it, which fails if it was seen since
// the collection's cutoff, and holds the claim until that transaction has
// committed or rolled back. A lookup that finds the link claimed answers
// that the blob is unknown, and the client uploads it. The marks and
// claims are taken under one mutex, never held across I/O, so:
//
//   - if the lookup marks first, the claim fails and the link stays;
//   - if the claim comes first, the lookup answers unknown at once, even
//     if the transaction then rolls back (harmless: the client uploads);
//   - once the removal commits, a lookup finds no link.
//
// Either way no client is told a link exists that collection removes.
// Marks live in memory: a restart forgets them, and collection then relies
// on its grace period alone.

// maxSeen bounds the marks kept. Beyond it the table is cleared and
// remembers only that it overflowed, at which moment every link counts as
// seen: collection then keeps every link until a grace period has passed,
// which is safe, merely slower to reclaim.
const maxSeen = 1 << 17

type seenKey struct {
	repo string
	d    digest.Digest
}

// seenMarks holds the marks of lookups and the claims of collection.
type seenMarks struct {
	mu       sync.Mutex
	marks    map[seenKey]time.Time
	claims   map[seenKey]int
	overflow time.Time
}

func newSeenMarks() *seenMarks {
	return &seenMarks{marks: map[seenKey]time.Time{}, claims: map[seenKey]int{}}
}

// mark records that repo's link to d is seen at at, unless collection has
// claimed it: then it returns false and the caller answers unknown.
func (t *seenMarks) mark(k seenKey, at time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.claims[k] > 0 {
		return false
	}
	if _, ok := t.marks[k]; !ok && len(t.marks) >= maxSeen {
		clear(t.marks)
		t.overflow = at
		return true
	}
	t.marks[k] = at
	return true
}

// unmark forgets the mark made at at, if it is still the newest: a lookup
// that found no link has nothing to protect.
func (t *seenMarks) unmark(k seenKey, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if v, ok := t.marks[k]; ok && v.Equal(at) {
		delete(t.marks, k)
	}
}

// since reports whether the link was seen at or after cutoff.
func (t *seenMarks) since(k seenKey, cutoff time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.sinceLocked(k, cutoff)
}

func (t *seenMarks) sinceLocked(k seenKey, cutoff time.Time) bool {
	if !t.overflow.Before(cutoff) {
		return true
	}
	v, ok := t.marks[k]
	return ok && !v.Before(cutoff)
}

// claim claims the link for removal unless it was seen since cutoff.
func (t *seenMarks) claim(k seenKey, cutoff time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.sinceLocked(k, cutoff) {
		return false
	}
	t.claims[k]++
	return true
}

// release ends one claim of each key.
func (t *seenMarks) release(ks []seenKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, k := range ks {
		if t.claims[k]--; t.claims[k] <= 0 {
			delete(t.claims, k)
		}
	}
}

// prune forgets marks older than cutoff, which no collection needs.
func (t *seenMarks) prune(cutoff time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, v := range t.marks {
		if v.Before(cutoff) {
			delete(t.marks, k)
		}
	}
}

// SeenSince reports whether a lookup found repo's link to d at or after
// cutoff; garbage collection plans around such links.
func (s *Service) SeenSince(repo string, d digest.Digest, cutoff time.Time) bool {
	return s.seen.since(seenKey{repo, d}, cutoff)
}

// PruneSeen forgets the marks of lookups older than cutoff.
func (s *Service) PruneSeen(cutoff time.Time) { s.seen.prune(cutoff) }

// Claim claims repo's link to d for removal in this transaction, unless a
// lookup found it at or after cutoff; see seen.go. The claim lasts until
// the transaction has committed or rolled back.
func (tx *Tx) Claim(repo string, d digest.Digest, cutoff time.Time) bool {
	k := seenKey{repo, d}
	if !tx.s.seen.claim(k, cutoff) {
		return false
	}
	tx.claims = append(tx.claims, k)
	return true
}

// release ends the claims of the transaction.
func (tx *Tx) release() {
	tx.s.seen.release(tx.claims)
	tx.claims = nil
}
