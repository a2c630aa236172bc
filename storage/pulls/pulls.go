// Package pulls keeps the pull record: per repository and manifest digest,
// when each identity (robot:prod-deployer, user:alice) last pulled it and
// from which address. It is a client of the storage core: it writes
// meta.PullIndex records through Service.Update and reads them through
// Service.View.
//
// A pull must never wait for a write. Record, called on the request path,
// only looks at an in-memory table and queues the record; Run writes the
// queue in batches, in the background, each batch one transaction that
// the index's group commit shares with concurrent writers. The table
// limits the writes to one per Interval (a minute) per identity,
// repository and digest: a deploy target pulling in a loop costs one
// write a minute, not one per pull.
//
// The table lives in one process. Several replicas over one index would
// each write at most once a minute per key, so the store sees up to one
// write per replica per minute, which is harmless (PutPull keeps the
// latest); sharing the limit itself would need a shared cache, which the
// record does not warrant.
package pulls

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/meta"
)

// Pull is the record of the last pull of a manifest by one identity.
type Pull = meta.Pull

// Defaults of Options.
const (
	// DefaultInterval is the least time between two writes of one key.
	DefaultInterval = time.Minute
	// DefaultQueue is how many records may wait to be written.
	DefaultQueue = 4096
	// DefaultBatch is the most records one transaction writes.
	DefaultBatch = 512
	// maxKeys bounds the keys the rate table remembers; beyond it, entries
	// older than the interval are dropped, and if that is not enough, all.
	maxKeys = 1 << 16
)

// Options tune a Recorder.
type Options struct {
	// Interval is the least time between two writes of the record of one
	// identity, repository and digest; zero means DefaultInterval.
	Interval time.Duration
	// Queue is how many records may wait to be written; a pull that finds
	// the queue full is not recorded (and counted in Dropped). Zero means
	// DefaultQueue.
	Queue int
	// Batch is the most records one transaction writes; zero means
	// DefaultBatch.
	Batch int
	// Logger receives failed writes; nil discards them.
	Logger *slog.Logger
	// Now tells the time; nil means time.Now.
	Now func() time.Time
}

// key identifies one record.
type key struct {
	repo       string
	d          digest.Digest
	kind, name string
}

// Recorder records pulls. Record may be called from any goroutine; Run
// writes what it queues. It is safe for concurrent use.
type Recorder struct {
	svc      *storage.Service
	interval time.Duration
	batch    int
	log      *slog.Logger
	now      func() time.Time
	queue    chan Pull

	mu   sync.Mutex
	last map[key]time.Time

	dropped atomic.Uint64
	written atomic.Uint64
}

// New returns a Recorder writing to svc. Nothing is written until Run
// runs.
func New(svc *storage.Service, opts Options) *Recorder {
	r := &Recorder{svc: svc, interval: opts.Interval, batch: opts.Batch, log: opts.Logger, now: opts.Now,
		last: map[key]time.Time{}}
	if r.interval <= 0 {
		r.interval = DefaultInterval
	}
	if r.batch <= 0 {
		r.batch = DefaultBatch
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.now == nil {
		r.now = time.Now
	}
	q := opts.Queue
	if q <= 0 {
		q = DefaultQueue
	}
	r.queue = make(chan Pull, q)
	return r
}

// Record notes that the actor ctx carries (storage.ActorFrom) pulled
// manifest d of repo now. It never blocks and never touches the index: it
// queues the record unless the same identity's pull of d was queued less
// than Interval ago, or the queue is full.
func (r *Recorder) Record(ctx context.Context, repo string, d digest.Digest) {
	a := storage.ActorFrom(ctx)
	now := r.now().UTC()
	k := key{repo: repo, d: d, kind: a.Kind, name: a.Name}
	r.mu.Lock()
	if t, ok := r.last[k]; ok && now.Sub(t) < r.interval {
		r.mu.Unlock()
		return
	}
	if len(r.last) >= maxKeys {
		r.pruneLocked(now)
	}
	r.last[k] = now
	r.mu.Unlock()
	select {
	case r.queue <- Pull{Repo: repo, Digest: d, Actor: a, Time: now}:
	default:
		// Forget the key, so that the next pull tries again.
		r.mu.Lock()
		if r.last[k].Equal(now) {
			delete(r.last, k)
		}
		r.mu.Unlock()
		r.dropped.Add(1)
	}
}

// pruneLocked drops the entries that no longer limit anything, and all of
// them if that is not enough: a table that forgets writes more, never
// less.
func (r *Recorder) pruneLocked(now time.Time) {
	for k, t := range r.last {
		if now.Sub(t) >= r.interval {
			delete(r.last, k)
		}
	}
	if len(r.last) >= maxKeys {
		clear(r.last)
	}
}

// Dropped is how many pulls found the queue full and went unrecorded.
func (r *Recorder) Dropped() uint64 { return r.dropped.Load() }

// Written is how many records Run has written.
func (r *Recorder) Written() uint64 { return r.written.Load() }

// Run writes queued records until ctx is done, then writes what is still
// queued and returns. Each write takes what is
// queued at that moment, up to Batch records, in one transaction.
func (r *Recorder) Run(ctx context.Context) {
	prune := time.NewTicker(r.interval)
	defer prune.Stop()
	for {
		select {
		case p := <-r.queue:
			r.write(ctx, r.take(p))
		case <-prune.C:
			r.mu.Lock()
			r.pruneLocked(r.now().UTC())
			r.mu.Unlock()
		case <-ctx.Done():
			r.Flush(ctx)
			return
		}
	}
}

// Flush writes everything queued now, in batches.
func (r *Recorder) Flush(ctx context.Context) {
	for {
		select {
		case p := <-r.queue:
			r.write(ctx, r.take(p))
		default:
			return
		}
	}
}

// take returns first and what else is queued, up to a batch.
func (r *Recorder) take(first Pull) []Pull {
	batch := []Pull{first}
	for len(batch) < r.batch {
		select {
		case p := <-r.queue:
			batch = append(batch, p)
		default:
			return batch
		}
	}
	return batch
}

// writeTimeout bounds the write of one batch.
const writeTimeout = 30 * time.Second

// write writes a batch in one transaction. A failure is logged and the
// batch dropped: the next pull of each key, an interval later, writes it.
// The end of Run's context does not cancel a write: it stops the loop,
// which then flushes.
func (r *Recorder) write(ctx context.Context, batch []Pull) {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	err := r.svc.Update(wctx, func(tx *storage.Tx) error {
		for _, p := range batch {
			if err := tx.PutPull(p); err != nil {
				return fmt.Errorf("record the pull of %s@%s by %s:%s: %w", p.Repo, p.Digest, p.Actor.Kind, p.Actor.Name, err)
			}
		}
		return nil
	})
	if err != nil {
		r.log.WarnContext(ctx, "pull record not written", "records", len(batch), "error", err)
		return
	}
	r.written.Add(uint64(len(batch)))
}

// Entry is a pull record with the tags naming its manifest now.
type Entry struct {
	Pull
	Tags []string `json:"tags"`
}

// List returns the pull records of repo, newest first (ties by digest,
// then identity), each with the tags naming its manifest now; with d set,
// only those of d.
func List(ctx context.Context, svc *storage.Service, repo string, d digest.Digest) ([]Entry, error) {
	out := []Entry{}
	err := svc.View(ctx, func(tx meta.Tx) error {
		out = out[:0]
		tags := map[digest.Digest][]string{}
		return tx.Pulls(repo, d, func(p Pull) error {
			t, ok := tags[p.Digest]
			if !ok {
				var err error
				if t, err = tx.TagsOf(repo, p.Digest); err != nil {
					return err
				}
				if t == nil {
					t = []string{}
				}
				tags[p.Digest] = t
			}
			out = append(out, Entry{Pull: p, Tags: t})
			return nil
		})
	})
	if err != nil {
		return []Entry{}, fmt.Errorf("pulls of %s: %w", repo, err)
	}
	slices.SortStableFunc(out, func(a, b Entry) int { return b.Time.Compare(a.Time) })
	return out, nil
}

// List returns the pull records of repo, as List does, from the store the
// Recorder writes to.
func (r *Recorder) List(ctx context.Context, repo string, d digest.Digest) ([]Entry, error) {
	return List(ctx, r.svc, repo, d)
}
