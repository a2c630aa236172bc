package postgres

import (
	"context"
	"errors"
	"fmt"
	"maps"

	"github.com/jackc/pgx/v5"

	"github.com/berth-registry/berth/storage/meta"
)

// Prefetched reads.
//
// A transaction keeps what was read ahead (Prefetch, or its group commit
// for all its functions), keyed by record, and Blob, Link, Manifest and Tag
// answer from it, an absent record included. A tag's history number comes
// with the tag: AppendMove then numbers the move itself and puts the
// change off. The snapshot of a transaction does not move, so what was
// read stays true but for the transaction's own changes: a change of one
// record (PutBlob, DeleteLink, SetTag and their like) forgets that record,
// and any other change forgets everything (tx.write).

// Kinds of prefetched records.
const (
	kindBlob     = 'b'
	kindLink     = 'l'
	kindManifest = 'm'
	kindTag      = 't'
	// kindHistory is the last number of a tag's history, prefetched
	// with the tag, for AppendMove.
	kindHistory = 'h'
)

// fetchKey names a prefetched record: its kind, repository (none for
// blobs) and key (a digest, or a tag).
type fetchKey struct {
	kind      byte
	repo, key string
}

// fetchedSet is what a transaction read ahead. The functions of a group
// commit share one: what one changes, the next does not read from it.
type fetchedSet struct {
	m map[fetchKey]fetched
}

// forget drops everything read ahead.
func (f *fetchedSet) forget() { clear(f.m) }

// fetched is a prefetched record: its value (the record's JSON, or a
// tag's digest), or its absence.
type fetched struct {
	ok  bool
	val []byte
}

// lookup reads the one value of a record: from what was prefetched under
// k if it was, else by the query sql.
func (t *tx) lookup(k fetchKey, what, sql string, args ...any) ([]byte, bool, error) {
	if f, ok := t.fetched.m[k]; ok {
		return f.val, f.ok, nil
	}
	var raw []byte
	ok, err := t.get(what, sql, args, &raw)
	return raw, ok, err
}

// writeKey is write for a change of the one record k: it forgets that
// record alone.
func (t *tx) writeKey(k fetchKey) error {
	if err := t.checkWritable(); err != nil {
		return err
	}
	delete(t.fetched.m, k)
	return nil
}

// Prefetch reads the records p names that t has not read ahead yet, in
// one round trip (see meta.Prefetch); with all of them read ahead (a group
// commit read what its functions announced: see group.go), none.
func (t *tx) Prefetch(p meta.Prefetch) error {
	if err := t.read(); err != nil {
		return err
	}
	reads := t.fetched.missing(p)
	if len(reads) == 0 {
		return nil
	}
	if err := t.fetched.fetch(t.ctx, t.conn, reads); err != nil {
		return fmt.Errorf("prefetch records of %s: %w", p.Repo, t.fail(err))
	}
	return nil
}

// fetchRead is one point query of a prefetch.
type fetchRead struct {
	k   fetchKey
	sql string
	arg []any
}

// missing returns the point queries of the records ps name that f does
// not hold, each once.
func (f *fetchedSet) missing(ps ...meta.Prefetch) []fetchRead {
	var reads []fetchRead
	seen := map[fetchKey]bool{}
	add := func(k fetchKey, sql string, arg ...any) {
		if _, ok := f.m[k]; ok || seen[k] || !storable(k.repo, k.key) {
			return
		}
		seen[k] = true
		reads = append(reads, fetchRead{k, sql, arg})
	}
	for _, p := range ps {
		for _, d := range p.Blobs {
			add(fetchKey{kindBlob, "", string(d)}, sqlBlob, string(d))
		}
		for _, d := range p.Links {
			add(fetchKey{kindLink, p.Repo, string(d)}, sqlLink, p.Repo, string(d))
		}
		for _, d := range p.Manifests {
			add(fetchKey{kindManifest, p.Repo, string(d)}, sqlManifest, p.Repo, string(d))
		}
		for _, tag := range p.Tags {
			add(fetchKey{kindTag, p.Repo, tag}, sqlTag, p.Repo, tag)
			add(fetchKey{kindHistory, p.Repo, tag}, sqlHistory, p.Repo, tag)
		}
	}
	return reads
}

// fetch runs reads, one point query a record, each a prepared statement
// with a plan of its own, in one round trip after what conn put off, and
// keeps what they found, an absence included.
func (f *fetchedSet) fetch(ctx context.Context, conn *session, reads []fetchRead) error {
	b := &pgx.Batch{}
	for _, r := range reads {
		b.Queue(r.sql, r.arg...)
	}
	br, err := conn.send(ctx, b)
	if err != nil {
		return err
	}
	got := make(map[fetchKey]fetched, len(reads))
	for _, r := range reads {
		var val []byte
		err := br.QueryRow().Scan(&val)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			got[r.k] = fetched{}
		case err != nil:
			_ = br.Close()
			return err
		default:
			got[r.k] = fetched{ok: true, val: val}
		}
	}
	if err := br.Close(); err != nil {
		return err
	}
	if f.m == nil {
		f.m = got
		return nil
	}
	maps.Copy(f.m, got)
	return nil
}

// The point reads of records, shared by Prefetch and the reads it serves.
const (
	sqlBlob     = "SELECT rec FROM blobs WHERE digest = $1"
	sqlLink     = "SELECT rec FROM links WHERE repo = $1 AND digest = $2"
	sqlManifest = "SELECT rec FROM manifests WHERE repo = $1 AND digest = $2"
	sqlTag      = "SELECT digest FROM tags WHERE repo = $1 AND tag = $2"
	sqlHistory  = "SELECT last_seq::text FROM tag_histories WHERE repo = $1 AND tag = $2"
)
