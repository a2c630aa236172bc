package bolt

import (
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/meta"
)

// Indexed reports whether search/ holds the pair k=v: at most 1024 bytes
// of key and value together, and no NUL byte.
func (t *tx) Indexed(key, value string) bool { return indexed(key, value) }

// FindPair walks the search/ entries of one pair from repository from.
func (t *tx) FindPair(kind meta.PairKind, key, value, from string, after digest.Digest, fn func(repo string, d digest.Digest) error) error {
	if err := t.read(); err != nil {
		return err
	}
	if kind != meta.Annotation && kind != meta.Label {
		return fmt.Errorf("search: unknown pair kind %q", byte(kind))
	}
	if !indexed(key, value) {
		return nil
	}
	prefix := searchPrefix(kind, key, value)
	seek := append(append([]byte(nil), prefix...), from...)
	exclusive := false
	if after != "" {
		seek = append(append(seek, 0), after...)
		exclusive = true
	}
	return t.walk(t.btx.Bucket(bucketSearch), seek, exclusive, prefix, func(k, _ []byte) error {
		e, ok := parseSearchKey(k)
		if !ok {
			return corrupt("search", k, errors.New("not a search key"))
		}
		return fn(e.repo, e.digest)
	})
}
