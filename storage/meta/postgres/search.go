package postgres

import (
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/meta"
)

// Indexed reports whether search_pairs holds the pair k=v: at most 1024
// bytes of key and value together, UTF-8 without a NUL byte.
func (t *tx) Indexed(key, value string) bool { return indexed(key, value) }

// hit is one manifest FindPair finds.
type hit struct{ repo, digest string }

// FindPair walks the search_pairs rows of one pair from repository from,
// after the manifest after in it: a range of the primary key, which orders
// them by repository, then digest.
func (t *tx) FindPair(kind meta.PairKind, key, value, from string, after digest.Digest, fn func(repo string, d digest.Digest) error) error {
	if err := t.read(); err != nil {
		return err
	}
	if kind != meta.Annotation && kind != meta.Label {
		return fmt.Errorf("search: unknown pair kind %q", byte(kind))
	}
	if !indexed(key, value) || !storable(from, string(after)) {
		return nil
	}
	k := string(rune(kind))
	const cols = "SELECT repo, digest FROM search_pairs WHERE kind = $1 AND key = $2 AND value = $3"
	const order = " ORDER BY repo, digest"
	return walk(t, "search", func(last *hit) (string, []any) {
		switch {
		case last != nil:
			return cols + " AND (repo, digest) > ($4, $5)" + order, []any{k, key, value, last.repo, last.digest}
		case after != "":
			return cols + " AND (repo, digest) > ($4, $5)" + order, []any{k, key, value, from, after}
		default:
			return cols + " AND repo >= $4" + order, []any{k, key, value, from}
		}
	}, func(r pgx.CollectableRow) (hit, error) {
		var h hit
		err := r.Scan(&h.repo, &h.digest)
		return h, err
	}, func(h hit) error { return fn(h.repo, digest.Digest(h.digest)) })
}
