package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage/meta"
	"github.com/berth-registry/berth/storage/meta/internal/record"
)

// ErrReadOnly is wrapped by the error of a change attempted in a View.
var ErrReadOnly = errors.New("read-only transaction")

// ErrInvalidKey is wrapped by the error of a change whose repository
// name, digest or other key the index cannot hold (empty, a NUL byte, not
// UTF-8, or not a digest).
var ErrInvalidKey = errors.New("invalid index key")

// errFinished is returned by a Tx used after its function returned.
var errFinished = errors.New("index transaction used after its function returned")

// errNoRepository is the error of SetTag in a repository that does not
// exist.
var errNoRepository = errors.New("repository does not exist")

// walkPage is the number of rows a walk reads per statement. A walk reads
// a page, then calls its function for each row, so that the function may
// use the transaction (one connection runs one statement at a time) and
// memory stays flat whatever the size of the table.
const walkPage = 256

// tx is a meta.Tx over one PostgreSQL transaction, on a session that
// puts off what it may (see session.go).
type tx struct {
	ctx      context.Context
	conn     *session
	writable bool
	done     bool
	// failed is the first error of a statement: PostgreSQL aborts the
	// transaction with it, and every later statement fails.
	failed error
	// fetched holds what was read ahead (see prefetch.go); never nil.
	fetched *fetchedSet
}

var _ meta.Tx = (*tx)(nil)

func (t *tx) read() error {
	if t.done {
		return errFinished
	}
	if t.failed != nil {
		return fmt.Errorf("index transaction failed earlier: %w", t.failed)
	}
	return nil
}

// write checks that t may change the index, before a change, and forgets
// what was prefetched: the change may touch any of it. A change of one
// record calls writeKey instead.
func (t *tx) write() error {
	if err := t.checkWritable(); err != nil {
		return err
	}
	t.fetched.forget()
	return nil
}

func (t *tx) checkWritable() error {
	if err := t.read(); err != nil {
		return err
	}
	if !t.writable {
		return fmt.Errorf("change the index: %w", ErrReadOnly)
	}
	return nil
}

// fail records err, a statement's error, as the transaction's failure and
// returns it classified.
func (t *tx) fail(err error) error {
	err = classify(err)
	if t.failed == nil {
		t.failed = err
	}
	return err
}

// exec runs a statement that returns no rows.
func (t *tx) exec(what, sql string, args ...any) (pgconn.CommandTag, error) {
	tag, err := t.conn.exec(t.ctx, sql, args...)
	if err != nil {
		return tag, fmt.Errorf("%s: %w", what, t.fail(err))
	}
	return tag, nil
}

// execAlone runs a statement made up on the spot, without arguments, in
// a round trip of its own (see session.execAlone).
func (t *tx) execAlone(what, sql string) (pgconn.CommandTag, error) {
	tag, err := t.conn.execAlone(t.ctx, sql)
	if err != nil {
		return tag, fmt.Errorf("%s: %w", what, t.fail(err))
	}
	return tag, nil
}

// later puts off a change whose only possible failure is the database's:
// it is sent with the next statement, and its failure fails that
// statement and the transaction (see session).
func (t *tx) later(sql string, args ...any) { t.conn.later(sql, args...) }

// get scans the one row of a query into dest, reporting whether there is
// one.
func (t *tx) get(what, sql string, args []any, dest ...any) (bool, error) {
	rows, err := t.conn.query(t.ctx, sql, args...)
	if err == nil {
		err = pgx.ErrNoRows
		if rows.Next() {
			err = rows.Scan(dest...)
		}
		rows.Close()
		if rerr := rows.Err(); rerr != nil {
			err = rerr
		}
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("%s: %w", what, t.fail(err))
	}
	return true, nil
}

// batch sends the statements of b in one round trip.
func (t *tx) batch(what string, b *pgx.Batch) error {
	if err := t.conn.sendBatch(t.ctx, b); err != nil {
		return fmt.Errorf("%s: %w", what, t.fail(err))
	}
	return nil
}

// laterBatch puts off the statements of b, as later does.
func (t *tx) laterBatch(b *pgx.Batch) {
	for _, q := range b.QueuedQueries {
		t.conn.later(q.SQL, q.Arguments...)
	}
}

// walk calls fn for the rows of a keyset-paged query: query returns the
// statement and arguments of the page after last (nil: the first page),
// ordered by its key, without a LIMIT. fn returning meta.ErrStop ends the
// walk with nil. A walk in an Update sees what fn changes in the pages it
// has not read yet.
func walk[T any](t *tx, what string, query func(last *T) (string, []any), scan func(pgx.CollectableRow) (T, error), fn func(T) error) error {
	var last *T
	for {
		if err := t.read(); err != nil {
			return err
		}
		sql, args := query(last)
		rows, err := t.conn.queryPlanned(t.ctx, sql+" LIMIT "+strconv.Itoa(walkPage), args...)
		if err != nil {
			return fmt.Errorf("%s: %w", what, t.fail(err))
		}
		page, err := pgx.CollectRows(rows, scan)
		if err != nil {
			return fmt.Errorf("%s: %w", what, t.fail(err))
		}
		for i := range page {
			if err := fn(page[i]); err != nil {
				return stop(err)
			}
			if t.done {
				return errFinished
			}
		}
		if len(page) < walkPage {
			return nil
		}
		last = &page[len(page)-1]
	}
}

// stop turns meta.ErrStop into the end of a walk.
func stop(err error) error {
	if errors.Is(err, meta.ErrStop) {
		return nil
	}
	return err
}

// keyRec is a row of a key and a record.
type keyRec struct {
	key string
	rec []byte
}

func scanKeyRec(r pgx.CollectableRow) (keyRec, error) {
	var k keyRec
	err := r.Scan(&k.key, &k.rec)
	return k, err
}

// corrupt is the error of a record of table under key that cannot be
// decoded.
func corrupt(table, key string, err error) error {
	return fmt.Errorf("%w: %s %q: %w", meta.ErrCorrupt, table, key, err)
}

// encode is the JSON of a record, as a json parameter.
func encode(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("encode record: %w", err)
	}
	return string(b), nil
}

// storable reports whether every s can be a key: text PostgreSQL holds
// (UTF-8, no NUL byte). A lookup of a key that is not finds nothing.
func storable(ss ...string) bool {
	for _, s := range ss {
		if strings.IndexByte(s, 0) >= 0 || !utf8.ValidString(s) {
			return false
		}
	}
	return true
}

// keyable reports whether s can be a repository name or digest: not
// empty, and storable.
func keyable(s string) bool { return s != "" && storable(s) }

func validRepo(repo string) error {
	if !keyable(repo) {
		return fmt.Errorf("%w: repository name %q", ErrInvalidKey, repo)
	}
	return nil
}

func validDigest(d digest.Digest) error {
	if err := d.Validate(); err != nil {
		return fmt.Errorf("%w: digest %q: %w", ErrInvalidKey, d, err)
	}
	return nil
}

func validName(what, s string) error {
	if !keyable(s) {
		return fmt.Errorf("%w: %s %q", ErrInvalidKey, what, s)
	}
	return nil
}

// Blob returns the record of d.
func (t *tx) Blob(d digest.Digest) (meta.Blob, bool, error) {
	if err := t.read(); err != nil || !storable(string(d)) {
		return meta.Blob{}, false, err
	}
	raw, ok, err := t.lookup(fetchKey{kindBlob, "", string(d)}, "read blob record", sqlBlob, d)
	if !ok || err != nil {
		return meta.Blob{}, false, err
	}
	var rec record.Blob
	if err := json.Unmarshal(raw, &rec); err != nil {
		return meta.Blob{}, false, corrupt("blobs", string(d), err)
	}
	return meta.Blob{Size: rec.Size, Created: rec.Created}, true, nil
}

// PutBlob records d. The change is put off (see session).
func (t *tx) PutBlob(d digest.Digest, b meta.Blob) error {
	if err := t.writeKey(fetchKey{kindBlob, "", string(d)}); err != nil {
		return err
	}
	if err := validDigest(d); err != nil {
		return err
	}
	rec, err := encode(record.Blob{Size: b.Size, Created: b.Created})
	if err != nil {
		return err
	}
	t.later("INSERT INTO blobs (digest, rec) VALUES ($1, $2) ON CONFLICT (digest) DO UPDATE SET rec = EXCLUDED.rec", d, rec)
	return nil
}

// DeleteBlob removes the record of d.
func (t *tx) DeleteBlob(d digest.Digest) error {
	if err := t.writeKey(fetchKey{kindBlob, "", string(d)}); err != nil || !storable(string(d)) {
		return err
	}
	_, err := t.exec("delete blob record "+string(d), "DELETE FROM blobs WHERE digest = $1", d)
	return err
}

// Blobs walks the blob records in digest order.
func (t *tx) Blobs(fn func(d digest.Digest, b meta.Blob) error) error {
	return walk(t, "walk blob records", func(last *keyRec) (string, []any) {
		if last == nil {
			return "SELECT digest, rec FROM blobs ORDER BY digest", nil
		}
		return "SELECT digest, rec FROM blobs WHERE digest > $1 ORDER BY digest", []any{last.key}
	}, scanKeyRec, func(r keyRec) error {
		var rec record.Blob
		if err := json.Unmarshal(r.rec, &rec); err != nil {
			return corrupt("blobs", r.key, err)
		}
		return fn(digest.Digest(r.key), meta.Blob{Size: rec.Size, Created: rec.Created})
	})
}

// Uses reports the links, manifests and references of d, in the order of
// repository, kind ('l', 'm', 'r') and referencing manifest.
func (t *tx) Uses(d digest.Digest, repo string, fn func(u meta.Use) error) error {
	if err := t.read(); err != nil {
		return err
	}
	if !keyable(string(d)) || (repo != "" && !keyable(repo)) {
		return nil
	}
	const q = `SELECT repo, kind, manifest FROM (
			SELECT repo, 'l' AS kind, '' AS manifest FROM links WHERE digest = $1 AND ($2 = '' OR repo = $2)
			UNION ALL
			SELECT repo, 'm', '' FROM manifests WHERE digest = $1 AND ($2 = '' OR repo = $2)
			UNION ALL
			SELECT repo, 'r', manifest FROM manifest_refs WHERE ref = $1 AND ($2 = '' OR repo = $2)
		) u ORDER BY repo COLLATE "C", kind COLLATE "C", manifest COLLATE "C"`
	rows, err := t.conn.query(t.ctx, q, d, repo)
	if err != nil {
		return fmt.Errorf("read uses of %s: %w", d, t.fail(err))
	}
	us, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (meta.Use, error) {
		var u meta.Use
		var kind, m string
		err := r.Scan(&u.Repo, &kind, &m)
		u.Kind, u.Manifest = meta.UseKind(kind[0]), digest.Digest(m)
		return u, err
	})
	if err != nil {
		return fmt.Errorf("read uses of %s: %w", d, t.fail(err))
	}
	for _, u := range us {
		if err := fn(u); err != nil {
			return stop(err)
		}
		if t.done {
			return errFinished
		}
	}
	return nil
}

// Repository reports whether repo exists.
func (t *tx) Repository(repo string) (bool, error) {
	if err := t.read(); err != nil || !keyable(repo) {
		return false, err
	}
	var one int
	return t.get("read repository "+repo, "SELECT 1 FROM repositories WHERE name = $1", []any{repo}, &one)
}

// Repositories walks the repositories after after.
func (t *tx) Repositories(after string, fn func(repo string) error) error {
	if !storable(after) {
		return t.read()
	}
	return walk(t, "walk repositories", func(last *string) (string, []any) {
		if last != nil {
			return "SELECT name FROM repositories WHERE name > $1 ORDER BY name", []any{*last}
		}
		return "SELECT name FROM repositories WHERE name > $1 ORDER BY name", []any{after}
	}, pgx.RowTo[string], fn)
}

// DeleteRepository deletes repo if it holds no link, manifest or tag (the
// foreign keys of links, manifests and tags refuse it otherwise).
func (t *tx) DeleteRepository(repo string) (bool, error) {
	if err := t.write(); err != nil || !keyable(repo) {
		return false, err
	}
	tag, err := t.exec("delete repository "+repo, `DELETE FROM repositories WHERE name = $1
		AND NOT EXISTS (SELECT 1 FROM links WHERE repo = $1)
		AND NOT EXISTS (SELECT 1 FROM manifests WHERE repo = $1)
		AND NOT EXISTS (SELECT 1 FROM tags WHERE repo = $1)`, repo)
	return tag.RowsAffected() == 1, err
}

// withRepo is the statement that creates repository $1 if it does not
// exist, as a CTE to put before a statement that needs it: the foreign key
// checks at the end of the statement see the row.
const withRepo = `WITH repo AS (INSERT INTO repositories (name) VALUES ($1) ON CONFLICT (name) DO NOTHING) `

// Link returns the link of d in repo.
func (t *tx) Link(repo string, d digest.Digest) (meta.Link, bool, error) {
	if err := t.read(); err != nil || !storable(repo, string(d)) {
		return meta.Link{}, false, err
	}
	raw, ok, err := t.lookup(fetchKey{kindLink, repo, string(d)}, "read link", sqlLink, repo, d)
	if !ok || err != nil {
		return meta.Link{}, false, err
	}
	var rec record.Link
	if err := json.Unmarshal(raw, &rec); err != nil {
		return meta.Link{}, false, corrupt("links", repo+"@"+string(d), err)
	}
	return meta.Link{Linked: rec.Linked, Seen: rec.Seen}, true, nil
}

// PutLink links d into repo, creating repo if needed. The change is put
// off (see session).
func (t *tx) PutLink(repo string, d digest.Digest, l meta.Link) error {
	if err := t.writeKey(fetchKey{kindLink, repo, string(d)}); err != nil {
		return err
	}
	if err := validRepo(repo); err != nil {
		return err
	}
	if err := validDigest(d); err != nil {
		return err
	}
	rec, err := encode(record.Link{Linked: l.Linked, Seen: l.Seen})
	if err != nil {
		return err
	}
	t.later(withRepo+`INSERT INTO links (repo, digest, rec) VALUES ($1, $2, $3)
		ON CONFLICT (repo, digest) DO UPDATE SET rec = EXCLUDED.rec`, repo, d, rec)
	return nil
}

// DeleteLink unlinks d from repo.
func (t *tx) DeleteLink(repo string, d digest.Digest) error {
	if err := t.writeKey(fetchKey{kindLink, repo, string(d)}); err != nil || !storable(repo, string(d)) {
		return err
	}
	_, err := t.exec(fmt.Sprintf("delete link %s in %s", d, repo), "DELETE FROM links WHERE repo = $1 AND digest = $2", repo, d)
	return err
}

// Links walks the links of repo in digest order.
func (t *tx) Links(repo string, fn func(d digest.Digest, l meta.Link) error) error {
	return walkRecords(t, "links", repo, "", func(d digest.Digest, rec record.Link) error {
		return fn(d, meta.Link{Linked: rec.Linked, Seen: rec.Seen})
	})
}

// walkRecords walks the rows of table (links, manifests, cached_manifests:
// keyed by repository and digest, holding a JSON record) of repo after the
// digest after, in digest order, decoding each record as an R.
func walkRecords[R any](t *tx, table, repo string, after digest.Digest, fn func(d digest.Digest, rec R) error) error {
	if !storable(repo, string(after)) {
		return t.read()
	}
	query := "SELECT digest, rec FROM " + table + " WHERE repo = $1 AND digest > $2 ORDER BY digest"
	return walk(t, "walk "+table+" of "+repo, func(last *keyRec) (string, []any) {
		from := string(after)
		if last != nil {
			from = last.key
		}
		return query, []any{repo, from}
	}, scanKeyRec, func(r keyRec) error {
		var rec R
		if err := json.Unmarshal(r.rec, &rec); err != nil {
			return corrupt(table, repo+"@"+r.key, err)
		}
		return fn(digest.Digest(r.key), rec)
	})
}

// Manifest returns the record of manifest d in repo.
func (t *tx) Manifest(repo string, d digest.Digest) (meta.Manifest, bool, error) {
	if err := t.read(); err != nil || !storable(repo, string(d)) {
		return meta.Manifest{}, false, err
	}
	raw, ok, err := t.lookup(fetchKey{kindManifest, repo, string(d)}, "read manifest record", sqlManifest, repo, d)
	if !ok || err != nil {
		return meta.Manifest{}, false, err
	}
	var rec record.Manifest
	if err := json.Unmarshal(raw, &rec); err != nil {
		return meta.Manifest{}, false, corrupt("manifests", repo+"@"+string(d), err)
	}
	return rec.Meta(), true, nil
}

// PutManifest records manifest d in repo, replacing a record there may be
// with its derived rows: the old record's go with it (ON DELETE CASCADE),
// the new one's are written from it. The changes are put off (see
// session) and go in one round trip.
func (t *tx) PutManifest(repo string, d digest.Digest, m meta.Manifest) error {
	if err := t.writeKey(fetchKey{kindManifest, repo, string(d)}); err != nil {
		return err
	}
	if err := validRepo(repo); err != nil {
		return err
	}
	if err := validDigest(d); err != nil {
		return err
	}
	for _, ref := range m.References {
		if err := validDigest(ref); err != nil {
			return fmt.Errorf("reference of %s: %w", d, err)
		}
	}
	if m.Subject != nil {
		if err := validDigest(m.Subject.Digest); err != nil {
			return fmt.Errorf("subject of %s: %w", d, err)
		}
	}
	rec := record.FromManifest(m)
	raw, err := encode(rec)
	if err != nil {
		return err
	}
	b := &pgx.Batch{}
	b.Queue("DELETE FROM manifests WHERE repo = $1 AND digest = $2", repo, d)
	b.Queue(withRepo+"INSERT INTO manifests (repo, digest, rec, subject) VALUES ($1, $2, $3, $4)", repo, d, raw, subjectOf(&rec))
	queueDerived(b, repo, d, &rec)
	t.laterBatch(b)
	return nil
}

// subjectOf is the subject column of a manifest record: its subject's
// digest, or NULL.
func subjectOf(rec *record.Manifest) *string {
	if rec.Subject == nil {
		return nil
	}
	s := string(rec.Subject.Digest)
	return &s
}

// queueDerived queues the statements that write the derived rows of
// manifest d of repo, whose record is rec: its references and its search
// pairs.
func queueDerived(b *pgx.Batch, repo string, d digest.Digest, rec *record.Manifest) {
	if refs := refsOf(rec); len(refs) > 0 {
		b.Queue(`INSERT INTO manifest_refs (repo, manifest, ref) SELECT $1, $2, r FROM unnest($3::text[]) AS r
			ON CONFLICT DO NOTHING`, repo, d, refs)
	}
	if kinds, keys, values := pairsOf(rec); len(kinds) > 0 {
		b.Queue(`INSERT INTO search_pairs (kind, key, value, repo, digest)
			SELECT p.kind, p.key, p.value, $1, $2 FROM unnest($3::text[], $4::text[], $5::text[]) AS p(kind, key, value)
			ON CONFLICT DO NOTHING`, repo, d, kinds, keys, values)
	}
}

// refsOf is the references of a manifest record as manifest_refs holds
// them: each once.
func refsOf(rec *record.Manifest) []string {
	seen := make(map[digest.Digest]bool, len(rec.References))
	var out []string
	for _, r := range rec.References {
		if !seen[r] && keyable(string(r)) {
			seen[r] = true
			out = append(out, string(r))
		}
	}
	return out
}

// pairsOf is the search pairs of a manifest record: its indexed
// annotations and labels, as three parallel columns.
func pairsOf(rec *record.Manifest) (kinds, keys, values []string) {
	for _, c := range []struct {
		kind  meta.PairKind
		pairs map[string]string
	}{{meta.Annotation, rec.Annotations}, {meta.Label, rec.Labels}} {
		for k, v := range c.pairs {
			if indexed(k, v) {
				kinds, keys, values = append(kinds, string(rune(c.kind))), append(keys, k), append(values, v)
			}
		}
	}
	return kinds, keys, values
}

// DeleteManifest removes manifest d of repo; its derived rows go with it.
func (t *tx) DeleteManifest(repo string, d digest.Digest) error {
	if err := t.writeKey(fetchKey{kindManifest, repo, string(d)}); err != nil || !storable(repo, string(d)) {
		return err
	}
	_, err := t.exec(fmt.Sprintf("delete manifest %s in %s", d, repo), "DELETE FROM manifests WHERE repo = $1 AND digest = $2", repo, d)
	return err
}

// Manifests walks the manifests of repo after after.
func (t *tx) Manifests(repo string, after digest.Digest, fn func(d digest.Digest, m meta.Manifest) error) error {
	return walkRecords(t, "manifests", repo, after, func(d digest.Digest, rec record.Manifest) error {
		return fn(d, rec.Meta())
	})
}

// Referrers walks the manifests of repo whose subject is subject, by the
// index on their subject column.
func (t *tx) Referrers(repo string, subject digest.Digest, fn func(desc ocispec.Descriptor) error) error {
	if !storable(repo, string(subject)) {
		return t.read()
	}
	return walk(t, "walk referrers in "+repo, func(last *keyRec) (string, []any) {
		after := ""
		if last != nil {
			after = last.key
		}
		return `SELECT digest, rec FROM manifests WHERE repo = $1 AND subject = $2 AND digest > $3
			ORDER BY digest`, []any{repo, subject, after}
	}, scanKeyRec, func(r keyRec) error {
		var rec record.Manifest
		if err := json.Unmarshal(r.rec, &rec); err != nil {
			return corrupt("manifests", repo+"@"+r.key, err)
		}
		return fn(rec.Meta().Descriptor(digest.Digest(r.key)))
	})
}
