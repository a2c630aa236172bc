package postgres

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/meta"
)

// Tag returns the digest tag names in repo.
func (t *tx) Tag(repo, tag string) (digest.Digest, bool, error) {
	if err := t.read(); err != nil || !storable(repo, tag) {
		return "", false, err
	}
	d, ok, err := t.lookup(fetchKey{kindTag, repo, tag}, "read tag", sqlTag, repo, tag)
	return digest.Digest(d), ok, err
}

// SetTag points tag in repo at d; the repository must exist. The change
// is put off (see session).
func (t *tx) SetTag(repo, tag string, d digest.Digest) error {
	if err := t.writeKey(fetchKey{kindTag, repo, tag}); err != nil {
		return err
	}
	if err := validName("tag", tag); err != nil {
		return err
	}
	if err := validDigest(d); err != nil {
		return err
	}
	if !keyable(repo) {
		return fmt.Errorf("tag %s in %s: %w", tag, repo, errNoRepository)
	}
	// Put off: a repository that does not exist fails the foreign key
	// of tags, and the transaction with it.
	t.later(`INSERT INTO tags (repo, tag, digest) VALUES ($1, $2, $3)
		ON CONFLICT (repo, tag) DO UPDATE SET digest = EXCLUDED.digest`, repo, tag, d)
	return nil
}

// DeleteTag removes tag from repo.
func (t *tx) DeleteTag(repo, tag string) error {
	if err := t.writeKey(fetchKey{kindTag, repo, tag}); err != nil || !storable(repo, tag) {
		return err
	}
	_, err := t.exec(fmt.Sprintf("delete tag %s in %s", tag, repo), "DELETE FROM tags WHERE repo = $1 AND tag = $2", repo, tag)
	return err
}

// sqlTagsAfter is the walk of a repository's tags after one, in order.
const sqlTagsAfter = "SELECT tag, digest FROM tags WHERE repo = $1 AND tag > $2 ORDER BY tag"

// tagRow is a tag and the digest it names.
type tagRow struct{ tag, digest string }

// Tags walks the tags of repo after after.
func (t *tx) Tags(repo, after string, fn func(tag string, d digest.Digest) error) error {
	if !storable(repo, after) {
		return t.read()
	}
	return walk(t, "walk tags of "+repo, func(last *tagRow) (string, []any) {
		from := after
		if last != nil {
			from = last.tag
		}
		return sqlTagsAfter, []any{repo, from}
	}, func(r pgx.CollectableRow) (tagRow, error) {
		var x tagRow
		err := r.Scan(&x.tag, &x.digest)
		return x, err
	}, func(r tagRow) error { return fn(r.tag, digest.Digest(r.digest)) })
}

// TagsOf returns the tags of repo naming d, by the index on tags by
// digest.
func (t *tx) TagsOf(repo string, d digest.Digest) ([]string, error) {
	if err := t.read(); err != nil || !keyable(repo) || !keyable(string(d)) {
		return nil, err
	}
	rows, err := t.conn.query(t.ctx, "SELECT tag FROM tags WHERE repo = $1 AND digest = $2 ORDER BY tag", repo, d)
	if err != nil {
		return nil, fmt.Errorf("read tags of %s in %s: %w", d, repo, t.fail(err))
	}
	tags, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read tags of %s in %s: %w", d, repo, t.fail(err))
	}
	return tags, nil
}

// AppendMove numbers m by the tag's tag_histories row, which it creates
// or updates (locking it until commit), and records it, in one statement:
// put off when the row was prefetched (see prefetch.go), else at once.
func (t *tx) AppendMove(repo, tag string, m meta.Move) (meta.Move, error) {
	if err := t.checkWritable(); err != nil {
		return m, err
	}
	if err := validName("repository name", repo); err != nil {
		return m, err
	}
	if err := validName("tag", tag); err != nil {
		return m, err
	}
	m.Seq = 0
	rec, err := encode(m)
	if err != nil {
		return m, err
	}
	hk := fetchKey{kindHistory, repo, tag}
	if f, ok := t.fetched.m[hk]; ok {
		// The last number was read in this transaction, whose
		// snapshot does not move: the next is known, and the change
		// can be put off. Should another transaction have appended to
		// the history since the snapshot, the change of its row fails
		// to serialise; and the key of tag_moves refuses a number
		// twice.
		last := int64(0)
		if f.ok {
			if last, err = strconv.ParseInt(string(f.val), 10, 64); err != nil {
				return m, corrupt("tag_histories", repo+":"+tag, err)
			}
		}
		m.Seq = uint64(last + 1)
		// The move is inserted from the row the history's change
		// returns, so that change runs first: a concurrent append fails
		// it to serialise (40001, run again) before the move's key
		// could refuse the number (23505, final).
		t.later(`WITH h AS (INSERT INTO tag_histories (repo, tag, last_seq) VALUES ($1, $2, $3)
				ON CONFLICT (repo, tag) DO UPDATE SET last_seq = EXCLUDED.last_seq
				RETURNING last_seq)
			INSERT INTO tag_moves (repo, tag, seq, rec) SELECT $1, $2, h.last_seq, $4 FROM h`, repo, tag, last+1, rec)
		t.fetched.m[hk] = fetched{ok: true, val: strconv.AppendInt(nil, last+1, 10)}
		return m, nil
	}
	delete(t.fetched.m, hk)
	var seq int64
	_, err = t.get(fmt.Sprintf("append to the history of %s:%s", repo, tag),
		`WITH h AS (INSERT INTO tag_histories (repo, tag, last_seq) VALUES ($1, $2, 1)
			ON CONFLICT (repo, tag) DO UPDATE SET last_seq = tag_histories.last_seq + 1
			RETURNING last_seq)
		INSERT INTO tag_moves (repo, tag, seq, rec) SELECT $1, $2, h.last_seq, $3 FROM h RETURNING seq`,
		[]any{repo, tag, rec}, &seq)
	if err != nil {
		return m, err
	}
	m.Seq = uint64(seq)
	return m, nil
}

// moveRow is a move's number and record.
type moveRow struct {
	seq int64
	rec []byte
}

// Moves walks the history of tag backwards from just before before.
func (t *tx) Moves(repo, tag string, before uint64, fn func(m meta.Move) error) error {
	if !storable(repo, tag) {
		return t.read()
	}
	bound := int64(before)
	if before == 0 || before > 1<<63-1 {
		bound = 1<<63 - 1
	}
	return walk(t, fmt.Sprintf("walk the history of %s:%s", repo, tag), func(last *moveRow) (string, []any) {
		b := bound
		if last != nil {
			b = last.seq
		}
		return "SELECT seq, rec FROM tag_moves WHERE repo = $1 AND tag = $2 AND seq < $3 ORDER BY seq DESC",
			[]any{repo, tag, b}
	}, func(r pgx.CollectableRow) (moveRow, error) {
		var x moveRow
		err := r.Scan(&x.seq, &x.rec)
		return x, err
	}, func(r moveRow) error {
		var m meta.Move
		if err := json.Unmarshal(r.rec, &m); err != nil {
			return corrupt("tag_moves", repo+":"+tag+"#"+strconv.FormatInt(r.seq, 10), err)
		}
		m.Seq = uint64(r.seq)
		return fn(m)
	})
}

// HistoryTags walks the tags of repo that have a history, after after.
func (t *tx) HistoryTags(repo, after string, fn func(tag string) error) error {
	if !keyable(repo) || !storable(after) {
		return t.read()
	}
	return walk(t, "walk the history of "+repo, func(last *string) (string, []any) {
		from := after
		if last != nil {
			from = *last
		}
		return "SELECT tag FROM tag_histories WHERE repo = $1 AND tag > $2 ORDER BY tag", []any{repo, from}
	}, pgx.RowTo[string], fn)
}
