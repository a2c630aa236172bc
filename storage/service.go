package storage

import (
	"context"
	"crypto/rand"
	_ "crypto/sha256" // digest algorithms must be linked in
	_ "crypto/sha512"
	"encoding/hex"
	"fmt"
	"log/slog"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/blob"
	"github.com/berth-registry/berth/storage/meta"
)

// Options tune a Service.
type Options struct {
	// Logger receives the core's diagnostics; nil discards them.
	Logger *slog.Logger
	// Tags decides which tags are immutable; nil means none.
	Tags TagRules
	// SearchScanLimit bounds how many manifests one Search examines; zero
	// means DefaultSearchScanLimit.
	SearchScanLimit int
	// Sinks receive an Event for every change, after it commits.
	Sinks []Sink
	// Outbox, when set, routes the events of every change to the
	// endpoints that are to be told of them: the core writes one delivery
	// per event and endpoint into the index's outbox, in the transaction
	// of the change (see Outbox).
	Outbox Outbox
	// SeenRefresh is the period within which a blob lookup does not
	// record again that it found a link (seen.go); zero means
	// DefaultSeenRefresh. Every replica sharing an index must use the
	// same, and garbage collection needs a grace several times longer.
	SeenRefresh time.Duration
}

// Service is the storage core: the registry's content and its rules over
// an index and a blob store. It is safe for concurrent use.
type Service struct {
	index meta.Store
	blobs blob.Store
	log   *slog.Logger
	tags  TagRules
	// searchScan bounds the manifests one Search examines.
	searchScan int
	sinks      []Sink
	outbox     Outbox
	// seenRefresh is the period within which a lookup does not record
	// Seen again.
	seenRefresh time.Duration
	// sessions caches the running hash of upload sessions this process
	// has served; the blob store's staged content is the truth.
	sessions *sessionTable
	// bodies keeps small manifest bodies (see bodies.go).
	bodies *bodyCache
}

// New returns the core over index and blobs. The caller owns both and
// closes them once it has stopped using the Service.
func New(index meta.Store, blobs blob.Store, opts Options) *Service {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Service{index: index, blobs: blobs, log: log, tags: opts.Tags, searchScan: opts.SearchScanLimit,
		sinks: opts.Sinks, outbox: opts.Outbox, seenRefresh: opts.SeenRefresh, sessions: newSessionTable(), bodies: newBodyCache()}
	if s.searchScan <= 0 {
		s.searchScan = DefaultSearchScanLimit
	}
	if s.seenRefresh <= 0 {
		s.seenRefresh = DefaultSeenRefresh
	}
	return s
}

// Blobs returns the blob store the core writes content to.
func (s *Service) Blobs() blob.Store { return s.blobs }

// LockDigests locks digests as meta.Store.LockDigests does; clients that
// remove content (garbage collection) hold them across the transaction
// and the removal.
func (s *Service) LockDigests(ctx context.Context, ds ...digest.Digest) (unlock func(), err error) {
	return s.index.LockDigests(ctx, ds...)
}

// View runs fn in a read-only transaction of the index.
func (s *Service) View(ctx context.Context, fn func(meta.Tx) error) error {
	return s.index.View(ctx, fn)
}

// Tx is a read-write transaction of the core: the index's transaction, the
// rules every change obeys (MoveTag, RemoveManifest) and the events to
// publish once it commits.
type Tx struct {
	meta.Tx
	ctx    context.Context
	s      *Service
	events []Event
}

// Update runs fn in a read-write transaction of the index and, once it has
// committed, publishes the events fn queued. With an Outbox, the events'
// deliveries are written in the same transaction, after fn. Like
// meta.Store.Update, fn may run more than once; only the events and
// deliveries of the run that committed count.
func (s *Service) Update(ctx context.Context, fn func(*Tx) error) error {
	var tx *Tx
	err := s.index.Update(ctx, func(mtx meta.Tx) error {
		tx = &Tx{Tx: mtx, ctx: ctx, s: s}
		if err := fn(tx); err != nil {
			return err
		}
		return s.queueDeliveries(mtx, tx.events)
	})
	if err != nil {
		return err
	}
	s.publish(ctx, tx.events)
	return nil
}

// indexAs finds the optional methods T on index, or on the index it wraps
// (a wrapper that adds metrics offers Unwrap() meta.Store), and so on.
func indexAs[T any](index meta.Store) (T, bool) {
	for {
		if t, ok := index.(T); ok {
			return t, true
		}
		u, ok := index.(interface{ Unwrap() meta.Store })
		if !ok {
			var zero T
			return zero, false
		}
		index = u.Unwrap()
	}
}

// Publish queues e, to be published once the transaction commits. Time is
// set when zero.
func (tx *Tx) Publish(e Event) {
	if e.Time.IsZero() {
		e.Time = tx.s.now()
	}
	tx.events = append(tx.events, e)
}

// newID returns a random 128-bit identifier in hex.
func newID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate identifier: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// validDigest checks that d is well formed and uses an algorithm Berth hashes.
func validDigest(d digest.Digest) error {
	if err := d.Validate(); err != nil {
		return detailf(ErrDigestMismatch, map[string]any{"digest": string(d)}, "invalid digest %q: %v", d, err)
	}
	return nil
}
