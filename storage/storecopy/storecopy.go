// Package storecopy copies a whole Berth store into another, through the
// two seams of the storage layer only (meta.Store and blob.Store), so that
// any index and any blob store can be the source or the destination: it
// is how a single-machine store (bbolt and files) moves into PostgreSQL
// and an S3 bucket. It owns the rules of that copy.
//
// What is copied: every blob (each digest verified on the bytes read from
// the source while they stream to the destination, in constant memory),
// every repository with its links, manifests (the destination's
// PutManifest derives referrers, search entries and uses), tags, the whole
// history of every tag (deleted tags and deleted repositories included),
// robot credentials, pull records, and the pull-through cache's and
// replication's records. Not copied: open upload sessions (clients start
// them again) and the webhook outbox (its events were about the source's
// changes); the report counts both.
//
// Records keep their times and actors. A tag's moves keep their numbers:
// the index numbers a move itself (meta.TagIndex.AppendMove ignores
// Move.Seq and gives the next number, 1 for a tag's first), so the copy
// appends the source's moves oldest first onto a destination history that
// is equal to the source's first moves, and checks that each is given the
// number it had; a source whose numbering has a gap cannot be reproduced
// and is refused, naming the tag.
//
// Conflicts: the destination may already hold records of the same names
// (an earlier, interrupted copy; or a store in use). Equal records are
// left as they are. A destination that holds different data for a name (a
// tag naming another manifest, a tag the source deleted, a history that is
// not the source's or a prefix of it, a robot with other scopes or secret,
// a blob or manifest of another size) is a conflict: a first pass compares
// everything before anything is written, and a copy with conflicts is
// refused with the list of them (ConflictError). One difference is not a
// conflict, because a tag's history says which side is newer: when the
// destination's history of a tag is the source's first moves and its tag
// is where that history left it, the source moved (or deleted) the tag
// since an earlier copy, and the tag follows the source. So a store copied
// once, then served again, copies again with its changes since: new
// content, new tags, tag moves. A copy adds; it never removes: what the
// source deleted since an earlier copy (manifests, links) stays in the
// destination, and a robot revoked or rotated since is a conflict. Records
// that are bookkeeping of the destination's own use keep the
// destination's version and are not conflicts: a link's times, a
// manifest's created time, a pull record later than the source's, a cache
// or replication record.
//
// Order, so that the destination is a consistent store at every commit:
// blobs first (content committed, then its record, under the digest's
// lock), then each repository's links, then its manifests, children
// before the indexes that reference them, then its tags with their
// history (one transaction per tag), cache records and pull records; then
// robots and replication records. An interrupted copy leaves a
// destination that holds a consistent part of the source; run again, it
// skips what is there (content found in the destination without a record
// is hashed again before it is recorded) and completes.
//
// The destination must not be in use while the copy runs: its garbage
// collection would see the copied blobs unreferenced until their
// manifests arrive.
package storecopy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/blob"
	"github.com/berth-registry/berth/storage/meta"
)

// Store is one side of a copy: an index and its blob store.
type Store struct {
	Index meta.Store
	Blobs blob.Store
}

// Options tune a copy.
type Options struct {
	// Rules names the replication rules whose records (meta.SyncIndex)
	// are copied: the index cannot list them. A rule not named here is
	// not copied, which only makes that rule deliver again.
	Rules []string
	// Jobs is how many blobs are copied at once; zero means 4.
	Jobs int
	// Logger receives progress; nil discards it.
	Logger *slog.Logger
}

// ErrConflict is wrapped by errors about a destination that holds other
// data than the source under the same names.
var ErrConflict = errors.New("the destination holds different data")

// ErrSource is wrapped by errors about a source that cannot be copied
// faithfully: content missing or not matching its digest, a tag history
// with a gap. berth fsck finds most of them.
var ErrSource = errors.New("the source cannot be copied faithfully")

// maxConflicts bounds the conflicts a ConflictError lists.
const maxConflicts = 20

// ConflictError lists the conflicts found, up to maxConflicts of them.
type ConflictError struct {
	// Conflicts says what differs, one line each.
	Conflicts []string
	// More counts the conflicts found beyond those listed.
	More int
}

// Error implements error.
func (e *ConflictError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v under the same names; nothing was written:", ErrConflict)
	for _, c := range e.Conflicts {
		b.WriteString("\n  ")
		b.WriteString(c)
	}
	if e.More > 0 {
		fmt.Fprintf(&b, "\n  and %d more", e.More)
	}
	return b.String()
}

// Unwrap makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Unwrap() error { return ErrConflict }

// Count counts the records of one kind.
type Count struct {
	// Copied counts the records this copy wrote.
	Copied int `json:"copied"`
	// Present counts those the destination held already, equal.
	Present int `json:"present"`
}

// BlobCount counts blobs and their bytes.
type BlobCount struct {
	Count
	// Bytes is the size of the blobs copied; PresentBytes of those
	// present already.
	Bytes        int64 `json:"bytes"`
	PresentBytes int64 `json:"presentBytes"`
	// Transferred counts the bytes read from the source and written to
	// the destination (less than Bytes when an interrupted copy had
	// placed content it had not recorded yet).
	Transferred int64 `json:"transferred"`
}

// Skipped counts what a copy leaves out by design.
type Skipped struct {
	// Uploads counts the open upload sessions: their clients start again.
	Uploads int `json:"uploads"`
	// Deliveries and DeadLetters count the webhook outbox: events about
	// the source's changes, not the destination's.
	Deliveries  int `json:"deliveries"`
	DeadLetters int `json:"deadLetters"`
	// StaleCache counts cache records of manifests the source no longer
	// holds, which mean nothing.
	StaleCache int `json:"staleCache"`
}

// Report says what a copy did.
type Report struct {
	Blobs BlobCount `json:"blobs"`
	// Repositories counts the source's repositories; Deleted those it
	// deleted whose tag history or pull records remain, copied too.
	Repositories int `json:"repositories"`
	Deleted      int `json:"deletedRepositories"`

	Links      Count `json:"links"`
	Manifests  Count `json:"manifests"`
	Tags       Count `json:"tags"`
	Moves      Count `json:"moves"`
	Robots     Count `json:"robots"`
	Pulls      Count `json:"pulls"`
	Cached     Count `json:"cached"`
	TagChecks  Count `json:"tagChecks"`
	SyncedTags Count `json:"syncedTags"`
	SyncRuns   Count `json:"syncRuns"`
	// Rules are the replication rules whose records were looked for.
	Rules []string `json:"rules"`

	Skipped Skipped `json:"skipped"`
	// DeletedHistory is false when the source index cannot name the
	// repositories it deleted, so that their history was not copied.
	DeletedHistory bool `json:"deletedHistory"`

	// waiting counts the manifests left for a later pass (manifests).
	waiting int
}

// counts returns the counts of records, for sums.
func (r *Report) counts() []*Count {
	return []*Count{&r.Blobs.Count, &r.Links, &r.Manifests, &r.Tags, &r.Moves, &r.Robots, &r.Pulls,
		&r.Cached, &r.TagChecks, &r.SyncedTags, &r.SyncRuns}
}

// Copied is the number of blobs and records this copy wrote: zero when
// the destination held everything already.
func (r *Report) Copied() int {
	n := 0
	for _, c := range r.counts() {
		n += c.Copied
	}
	return n
}

// add adds the counts of d to r.
func (r *Report) add(d *Report) {
	rc, dc := r.counts(), d.counts()
	for i := range rc {
		rc[i].Copied += dc[i].Copied
		rc[i].Present += dc[i].Present
	}
	r.Blobs.Bytes += d.Blobs.Bytes
	r.Blobs.PresentBytes += d.Blobs.PresentBytes
	r.Blobs.Transferred += d.Blobs.Transferred
	r.Skipped.StaleCache += d.Skipped.StaleCache
	r.waiting += d.waiting
}

// Copy copies src into dst and reports what it copied. It first compares
// everything and refuses, with a *ConflictError and nothing written, a
// destination that holds different data; then it copies. Nothing else may
// write to src meanwhile. On an error after the copy began, the report
// says what was copied until then, and a new Copy goes on from there.
func Copy(ctx context.Context, src, dst Store, opts Options) (*Report, error) {
	if opts.Jobs <= 0 {
		opts.Jobs = 4
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	check := &copier{src: src, dst: dst, opts: opts, log: opts.Logger, check: true}
	if err := check.run(ctx); err != nil {
		return nil, err
	}
	if len(check.conflicts) > 0 {
		return nil, &ConflictError{Conflicts: check.conflicts, More: check.more}
	}
	opts.Logger.InfoContext(ctx, "no conflict: copying",
		"blobs", check.report.Blobs.Copied, "bytes", check.report.Blobs.Bytes, "manifests", check.report.Manifests.Copied)
	c := &copier{src: src, dst: dst, opts: opts, log: opts.Logger}
	err := c.run(ctx)
	return &c.report, err
}

// copier is one pass of a copy: the comparing one (check), or the copy.
type copier struct {
	src, dst Store
	opts     Options
	log      *slog.Logger
	// check compares only: conflicts are collected, nothing is written.
	check     bool
	conflicts []string
	more      int

	mu     sync.Mutex // guards report during the blob copy
	report Report
}

// conflict reports what differs: collected when checking, an error when
// copying (the destination changed since the check).
func (c *copier) conflict(format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if !c.check {
		return &ConflictError{Conflicts: []string{msg}}
	}
	if len(c.conflicts) < maxConflicts {
		c.conflicts = append(c.conflicts, msg)
	} else {
		c.more++
	}
	return nil
}

// run runs the pass over one snapshot of the source.
func (c *copier) run(ctx context.Context) error {
	c.report.Rules = slices.Clone(c.opts.Rules)
	if c.report.Rules == nil {
		c.report.Rules = []string{}
	}
	return c.src.Index.View(ctx, func(stx meta.Tx) error {
		steps := []struct {
			name string
			fn   func(context.Context, meta.Tx) error
		}{
			{"copying blobs", c.blobs},
			{"copying repositories", c.repositories},
			{"copying robots", c.robots},
			{"copying replication records", c.syncRecords},
			{"counting what is not copied", c.skipped},
		}
		for _, s := range steps {
			if !c.check {
				c.log.InfoContext(ctx, s.name)
			}
			if err := s.fn(ctx, stx); err != nil {
				return err
			}
		}
		return nil
	})
}

// op is one step of a batch: it reads the destination (tx) and, unless
// checking, writes it, counting what it did in t.
type op func(tx meta.Tx, t *Report) error

// batchSize bounds the steps of one transaction of the destination.
const batchSize = 256

// batch runs ops in transactions of the destination, batchSize at a time:
// Views when checking, Updates when copying. A transaction may run its
// function more than once, so each run counts afresh.
type batch struct {
	c   *copier
	ops []op
}

func (c *copier) newBatch() *batch { return &batch{c: c} }

// add queues o, running the batch when it is full.
func (b *batch) add(ctx context.Context, o op) error {
	b.ops = append(b.ops, o)
	if len(b.ops) >= batchSize {
		return b.flush(ctx)
	}
	return nil
}

// flush runs the queued ops in one transaction.
func (b *batch) flush(ctx context.Context) error {
	if len(b.ops) == 0 {
		return nil
	}
	var t Report
	run := func(tx meta.Tx) error {
		t = Report{}
		for _, o := range b.ops {
			if err := o(tx, &t); err != nil {
				return err
			}
		}
		return nil
	}
	var err error
	if b.c.check {
		err = b.c.dst.Index.View(ctx, run)
	} else {
		err = b.c.dst.Index.Update(ctx, run)
	}
	if err != nil {
		return err
	}
	b.ops = b.ops[:0]
	b.c.mu.Lock()
	b.c.report.add(&t)
	b.c.mu.Unlock()
	return nil
}

// nextName returns the first name walk gives after after, if any.
func nextName(walk func(after string, fn func(string) error) error, after string) (string, bool, error) {
	var name string
	var ok bool
	err := walk(after, func(n string) error {
		name, ok = n, true
		return meta.ErrStop
	})
	return name, ok, err
}

// sameManifest reports whether two records of one digest agree on what
// the content says; times and labels read from the config may differ.
func sameManifest(a, b meta.Manifest) bool {
	sub := func(m meta.Manifest) digest.Digest {
		if m.Subject == nil {
			return ""
		}
		return m.Subject.Digest
	}
	return a.MediaType == b.MediaType && a.Size == b.Size && a.ArtifactType == b.ArtifactType &&
		sub(a) == sub(b) && slices.Equal(a.References, b.References) && maps.Equal(a.Annotations, b.Annotations)
}
