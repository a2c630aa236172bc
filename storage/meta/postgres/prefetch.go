package postgres

import (
	"errors"
	"fmt"
	"maps"

	"github.com/jackc/pgx/v5"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/meta"
)

// Prefetched reads.
//
// A transaction keeps what Prefetch read, keyed by record, and Blob, Link,
// Manifest and Tag answer from it, an absent record included. A tag's
// history number comes with the tag: AppendMove then numbers the move
// itself and puts the change off. The snapshot
// of a transaction does not move, so what was read stays true but for the
// transaction's own changes: a change of one record (PutBlob, DeleteLink,
// SetTag and their like) forgets that record, and any other change forgets
// everything (tx.write).

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

// fetched is a prefetched record: its value (the record's JSON, or a
// tag's digest), or its absence.
type fetched struct {
	ok  bool
	val []byte
}

// lookup reads the one value of a record: from what was prefetched under
// k if it was, else by the query sql.
func (t *tx) lookup(k fetchKey, what, sql string, args ...any) ([]byte, bool, error) {
	if f, ok := t.fetched[k]; ok {
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
	delete(t.fetched, k)
	return nil
}

// Prefetch reads the records p names in one round trip (see meta.Prefetch).
func (t *tx) Prefetch(p meta.Prefetch) error {
	if err := t.read(); err != nil {
		return err
	}
	keys := func(repo string, ks []string) []string {
		var out []string
		for _, k := range ks {
			if storable(repo, k) {
				out = append(out, k)
			}
		}
		return out
	}
	blobs := keys("", digests(p.Blobs))
	links := keys(p.Repo, digests(p.Links))
	manifests := keys(p.Repo, digests(p.Manifests))
	tags := keys(p.Repo, p.Tags)
	if len(blobs)+len(links)+len(manifests)+len(tags) == 0 {
		return nil
	}
	// One point query a record, each a prepared statement with a plan
	// of its own, in one round trip.
	type read struct {
		k   fetchKey
		sql string
		arg []any
	}
	var reads []read
	for _, k := range blobs {
		reads = append(reads, read{fetchKey{kindBlob, "", k}, sqlBlob, []any{k}})
	}
	for _, k := range links {
		reads = append(reads, read{fetchKey{kindLink, p.Repo, k}, sqlLink, []any{p.Repo, k}})
	}
	for _, k := range manifests {
		reads = append(reads, read{fetchKey{kindManifest, p.Repo, k}, sqlManifest, []any{p.Repo, k}})
	}
	for _, k := range tags {
		reads = append(reads, read{fetchKey{kindTag, p.Repo, k}, sqlTag, []any{p.Repo, k}},
			read{fetchKey{kindHistory, p.Repo, k}, sqlHistory, []any{p.Repo, k}})
	}
	b := &pgx.Batch{}
	for _, r := range reads {
		b.Queue(r.sql, r.arg...)
	}
	what := "prefetch records of " + p.Repo
	br, err := t.conn.send(t.ctx, b)
	if err != nil {
		return fmt.Errorf("%s: %w", what, t.fail(err))
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
			return fmt.Errorf("%s: %w", what, t.fail(err))
		default:
			got[r.k] = fetched{ok: true, val: val}
		}
	}
	if err := br.Close(); err != nil {
		return fmt.Errorf("%s: %w", what, t.fail(err))
	}
	if t.fetched == nil {
		t.fetched = got
		return nil
	}
	maps.Copy(t.fetched, got)
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

// digests is ds as strings.
func digests(ds []digest.Digest) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = string(d)
	}
	return out
}
