package storage

import (
	"context"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/meta"
)

// Seen: how garbage collection and blob lookups agree, on every replica
// that shares the index, on a link a client has just been told exists.
//
// A client that finds a blob with HEAD or GET may reference it from the
// manifest it pushes next, without uploading it. So a lookup that tells a
// client a link exists leaves that fact in the index, where every
// replica's collection reads it: the link's Seen time (meta.Link.Seen).
// Writing it on every lookup would turn every read into a write, so a
// lookup writes it only when the link's last recorded activity (the later
// of Linked and Seen) is older than the refresh period (Options.
// SeenRefresh): a link a lookup finds always counts as active at most one
// refresh period before that lookup.
//
// The write happens in a read-write transaction of the index that reads
// the link (and the blob's record) again: if it is gone, the lookup
// answers that the blob is unknown, and the client uploads it. Collection
// removes a link only in a read-write transaction that finds its Linked
// and Seen both older than its cutoff (now minus its grace). The index
// serialises read-write transactions (meta.Store.Update), so either the
// lookup's write commits first and collection keeps the link, or
// collection commits first and the lookup finds nothing.
//
// A lookup that writes nothing (the link was active within the refresh
// period) answers from a snapshot. Collection removes such a link only if
// its activity is older than the cutoff, that is, only a collection that
// began at least the grace minus the refresh period after the lookup.
// Collection therefore refuses a grace that is not several times the
// refresh period (storage/gc), and a client has at least the grace minus
// the refresh period (less any difference between the replicas' clocks)
// to push the manifest that references what it found.
//
// Nothing of this lives in a process: a restart forgets nothing, and a
// lookup on one replica protects the link from the collection of every
// other.

// DefaultSeenRefresh is the refresh period of a Service whose options set
// none: a quarter of the shortest grace a scheduled collection accepts.
const DefaultSeenRefresh = 15 * time.Second

// SeenRefresh is the period within which a lookup of a link does not
// record Seen again (Options.SeenRefresh); garbage collection needs a
// grace well above it.
func (s *Service) SeenRefresh() time.Duration { return s.seenRefresh }

// LastActive is when a link was last known to be in use: the later of
// when it was linked and when a lookup last recorded finding it. Garbage
// collection removes a link only when this is older than its cutoff.
func LastActive(l meta.Link) time.Time {
	if l.Seen.After(l.Linked) {
		return l.Seen
	}
	return l.Linked
}

// see describes d if it is linked into repo, as a lookup that tells a
// client so: it records Seen in the index first when the link's activity
// is older than the refresh period, re-reading the link in that
// transaction.
func (s *Service) see(ctx context.Context, repo string, d digest.Digest) (BlobInfo, error) {
	now := s.now()
	var info BlobInfo
	stale := false
	err := s.index.View(ctx, func(tx meta.Tx) error {
		l, ok, err := tx.Link(repo, d)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: %s in %s", ErrBlobUnknown, d, repo)
		}
		stale = LastActive(l).Before(now.Add(-s.seenRefresh))
		info, err = storedBlob(tx, d)
		return err
	})
	if err != nil || !stale {
		return info, err
	}
	err = s.index.Update(ctx, func(tx meta.Tx) error {
		l, ok, err := tx.Link(repo, d)
		if err != nil {
			return err
		}
		if !ok {
			// Collection removed it since the snapshot.
			return fmt.Errorf("%w: %s in %s", ErrBlobUnknown, d, repo)
		}
		if info, err = storedBlob(tx, d); err != nil {
			return err
		}
		if !LastActive(l).Before(now.Add(-s.seenRefresh)) {
			return nil // another lookup recorded it meanwhile
		}
		l.Seen = now
		if err := tx.PutLink(repo, d, l); err != nil {
			return fmt.Errorf("record lookup of %s in %s: %w", d, repo, err)
		}
		return nil
	})
	if err != nil {
		return BlobInfo{}, err
	}
	return info, nil
}
