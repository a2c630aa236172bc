// Package bolt is the embedded index backend of Berth: a meta.Store kept in
// one bbolt file. It owns the bbolt index: its buckets, key encodings and
// record formats (schema.go, byte-compatible with the stores of earlier
// Berth releases), the derived indexes it keeps in step with the records
// (referrers, search, uses, tags by digest), their check and repair, the
// upgrade of older stores, group commit of concurrent updates, and the
// digest locks.
//
// bbolt runs one write transaction at a time and makes each durable with
// an fsync. Update therefore commits the functions of every writer that
// arrived while the previous commit was in flight in one transaction, with
// one fsync, and no timer: a lone writer commits at once (group.go).
package bolt

import (
	"context"
	_ "crypto/sha256" // digests of these algorithms must validate
	_ "crypto/sha512"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/berth-registry/berth/storage/meta"
	"github.com/berth-registry/berth/storage/meta/internal/record"
)

// ErrInUse means another process, normally a running server, holds the
// index file.
var ErrInUse = errors.New("index is in use by another process")

// initialMmapSize is the size of the index's first memory map. bbolt
// remaps the file as it grows, and a remap waits for every open read
// transaction, so that a long View (a search, a garbage collection plan, a
// check) would hold up every commit meanwhile. Mapping 1 GiB from the
// start, which costs address space, not memory, nor any byte of the file,
// spares commits that wait until the index outgrows it.
const initialMmapSize = 1 << 30

// Options tune a Store.
type Options struct {
	// Timeout bounds the wait for the index file's lock when another
	// process holds it; zero means one second.
	Timeout time.Duration
	// Logger receives the store's diagnostics; nil discards them.
	Logger *slog.Logger
}

// Store is the bbolt index. It implements meta.Store and meta.Checker and
// is safe for concurrent use.
type Store struct {
	db    *bolt.DB
	path  string
	log   *slog.Logger
	group group
	locks digestLocks
	// commits counts the write transactions committed by Update.
	commits atomic.Uint64
	// solo makes Update commit each function alone (no group commit),
	// for tests and benchmarks that compare the two.
	solo bool
}

var (
	_ meta.Store   = (*Store)(nil)
	_ meta.Checker = (*Store)(nil)
)

// Open opens the index file at path, creating it if needed, and upgrades a
// store of schema "1" (see schema.go). A file held by another process fails,
// once opts.Timeout has passed, with an error wrapping ErrInUse.
func Open(path string, opts Options) (*Store, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = time.Second
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout, InitialMmapSize: initialMmapSize})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open index %s: %w (%w)", path, ErrInUse, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open index %s: %w", path, err)
	}
	s := &Store{db: db, path: path, log: log}
	s.locks.init()
	if err := db.Update(s.initialise); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("initialise index %s: %w", path, err)
	}
	return s, nil
}

// initialise creates the buckets of a new store, upgrades an older one and
// refuses one of an unknown version.
func (s *Store) initialise(tx *bolt.Tx) error {
	var v []byte
	if b := tx.Bucket(bucketMeta); b != nil {
		v = b.Get(keySchema)
	}
	switch string(v) {
	case SchemaVersion:
	case "", schemaV1:
		// A new store, or one of schema "1" (from before the version
		// was written, the version was "1" too).
	default:
		return fmt.Errorf("index schema version %q; this Berth reads %q (and upgrades %q)", v, SchemaVersion, schemaV1)
	}
	if string(v) != SchemaVersion {
		// Only Berth of schema "2" keeps uses/ and tagged/ in step: any
		// found in an older store (one set back to "1" by hand, say)
		// cannot be trusted, and are built afresh.
		for _, name := range [][]byte{bucketUses, bucketTagged} {
			if tx.Bucket(name) != nil {
				if err := tx.DeleteBucket(name); err != nil {
					return fmt.Errorf("drop stale bucket %s: %w", name, err)
				}
			}
		}
	}
	missing := map[string]bool{}
	for _, name := range topBuckets {
		if tx.Bucket(name) == nil {
			missing[string(name)] = true
		}
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	// Build every derived bucket this store did not have. A store of
	// schema "2" has them all; one that lost a bucket is rebuilt too.
	build := buildSet{
		search: missing[string(bucketSearch)],
		uses:   missing[string(bucketUses)],
		tagged: missing[string(bucketTagged)],
	}
	if build.any() {
		n, err := build.run(tx)
		if err != nil {
			return fmt.Errorf("build derived indexes: %w", err)
		}
		if v != nil {
			s.log.Info("index upgraded", "from", string(v), "to", SchemaVersion, "path", s.path,
				"search", build.search, "uses", build.uses, "tagged", build.tagged,
				"repositories", n.repos, "manifests", n.manifests, "links", n.links, "tags", n.tags,
				"undecodable", n.skipped)
		}
	}
	if string(v) != SchemaVersion {
		if err := tx.Bucket(bucketMeta).Put(keySchema, []byte(SchemaVersion)); err != nil {
			return fmt.Errorf("write schema version: %w", err)
		}
	}
	return nil
}

// buildSet says which derived buckets to fill from the records.
type buildSet struct{ search, uses, tagged bool }

func (b buildSet) any() bool { return b.search || b.uses || b.tagged }

type buildCounts struct{ repos, manifests, links, tags, skipped int }

// run fills the chosen derived buckets, which must be empty, from every
// record. Records it cannot decode derive nothing: they are counted in
// skipped, and Check reports them.
func (b buildSet) run(tx *bolt.Tx) (buildCounts, error) {
	var n buildCounts
	repos := tx.Bucket(bucketRepos)
	search, uses, tagged := tx.Bucket(bucketSearch), tx.Bucket(bucketUses), tx.Bucket(bucketTagged)
	put := func(bucket *bolt.Bucket) func([]byte) error {
		return func(k []byte) error { return bucket.Put(k, nil) }
	}
	err := repos.ForEach(func(name, v []byte) error {
		rb := repos.Bucket(name)
		if v != nil || rb == nil {
			n.skipped++
			return nil
		}
		repo := string(name)
		n.repos++
		if links := rb.Bucket(bucketLinks); links != nil && b.uses {
			err := links.ForEach(func(k, _ []byte) error {
				if !keyable(string(k)) {
					n.skipped++
					return nil
				}
				n.links++
				return uses.Put(useKey(digest.Digest(k), repo, meta.UseLink, ""), nil)
			})
			if err != nil {
				return err
			}
		}
		if manifests := rb.Bucket(bucketManifests); manifests != nil && (b.uses || b.search) {
			err := manifests.ForEach(func(k, v []byte) error {
				var rec record.Manifest
				if !keyable(string(k)) || decode(v, &rec) != nil {
					n.skipped++
					return nil
				}
				n.manifests++
				if b.uses {
					if err := manifestUseKeys(repo, digest.Digest(k), &rec, put(uses)); err != nil {
						return err
					}
				}
				if b.search {
					return searchKeys(repo, digest.Digest(k), &rec, put(search))
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		if tags := rb.Bucket(bucketTags); tags != nil && b.tagged {
			err := tags.ForEach(func(k, v []byte) error {
				if !keyable(string(v)) {
					n.skipped++
					return nil
				}
				n.tags++
				return tagged.Put(taggedKey(repo, digest.Digest(v), string(k)), nil)
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	return n, err
}

// Path returns the path of the index file.
func (s *Store) Path() string { return s.path }

// Close closes the index. Callers must have stopped using the store;
// closing it twice is fine.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close index: %w", err)
	}
	return nil
}

// View runs fn in a read-only bbolt transaction. Views run concurrently
// with each other and with Update. fn must not wait for an Update: once
// the index outgrows its first memory map, a commit that grows the file
// waits for open Views (see initialMmapSize).
func (s *Store) View(ctx context.Context, fn func(meta.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	btx, err := s.db.Begin(false)
	if err != nil {
		return fmt.Errorf("begin read transaction: %w", err)
	}
	defer func() { _ = btx.Rollback() }()
	t := &tx{btx: btx}
	defer t.finish()
	return fn(t)
}

// Update runs fn in a read-write transaction and commits it durably if fn
// returns nil, sharing the commit with concurrent updates (group.go). fn's
// own error is returned as is; errors of the index are wrapped. fn may run
// more than once, on another goroutine than the caller's, and a panic in
// it is raised again in the caller. fn must not call Update or wait for
// another Update: the commit it is part of waits for it. ctx ends only the
// wait for a commit to join; once fn runs, the Update runs to its end.
func (s *Store) Update(ctx context.Context, fn func(meta.Tx) error) error {
	return s.update(ctx, func(btx *bolt.Tx) error {
		t := &tx{btx: btx, writable: true}
		defer t.finish()
		return fn(t)
	})
}

// LockDigests locks the given digests against every other holder of any of
// them: digests share 256 stripes by hash, taken in ascending order, each
// once. A done ctx ends the wait with its error, holding nothing. The
// unlock may be called more than once.
func (s *Store) LockDigests(ctx context.Context, ds ...digest.Digest) (func(), error) {
	return s.locks.lock(ctx, ds)
}
