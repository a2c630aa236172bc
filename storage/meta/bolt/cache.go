package bolt

import (
	"bytes"
	"fmt"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/meta"
	"github.com/berth-registry/berth/storage/meta/internal/record"
)

// The pull-through cache's records (meta.CacheIndex), in cache/; see
// schema.go.

// The kinds of cache/ keys.
const (
	cacheManifest = 'm'
	cacheTag      = 't'
)

// cachePrefix is the prefix of the cache/ keys of kind in repo.
func cachePrefix(kind byte, repo string) []byte {
	b := make([]byte, 0, len(repo)+2)
	b = append(b, kind)
	b = append(b, repo...)
	return append(b, 0)
}

// cacheKey is the cache/ key of name (a digest or a tag) of kind in repo.
func cacheKey(kind byte, repo, name string) []byte {
	return append(cachePrefix(kind, repo), name...)
}

// Cached returns the cache record of manifest d in repo.
func (t *tx) Cached(repo string, d digest.Digest) (meta.Cached, bool, error) {
	if err := t.read(); err != nil {
		return meta.Cached{}, false, err
	}
	var rec record.Cached
	ok, err := getJSON(t.btx.Bucket(bucketCache), "cache", cacheKey(cacheManifest, repo, string(d)), &rec)
	return meta.Cached(rec), ok, err
}

// PutCached records c for manifest d in repo.
func (t *tx) PutCached(repo string, d digest.Digest, c meta.Cached) error {
	if err := t.write(); err != nil {
		return err
	}
	if err := validRepo(repo); err != nil {
		return err
	}
	if err := validDigest(d); err != nil {
		return err
	}
	return putJSON(t.btx.Bucket(bucketCache), cacheKey(cacheManifest, repo, string(d)), record.Cached(c))
}

// DeleteCached removes the cache record of manifest d in repo.
func (t *tx) DeleteCached(repo string, d digest.Digest) error {
	if err := t.write(); err != nil {
		return err
	}
	if err := t.btx.Bucket(bucketCache).Delete(cacheKey(cacheManifest, repo, string(d))); err != nil {
		return fmt.Errorf("delete cache record of %s in %s: %w", d, repo, err)
	}
	return nil
}

// CachedManifests walks the cache records of repo in digest order.
func (t *tx) CachedManifests(repo string, fn func(d digest.Digest, c meta.Cached) error) error {
	if err := t.read(); err != nil {
		return err
	}
	prefix := cachePrefix(cacheManifest, repo)
	return t.walk(t.btx.Bucket(bucketCache), prefix, false, prefix, func(k, v []byte) error {
		var rec record.Cached
		if err := decode(v, &rec); err != nil {
			return corrupt("cache", k, err)
		}
		name := k[len(prefix):]
		if bytes.IndexByte(name, 0) >= 0 {
			return corrupt("cache", k, fmt.Errorf("a key no record can have"))
		}
		return fn(digest.Digest(name), meta.Cached(rec))
	})
}

// TagCheck returns the last check of tag in repo.
func (t *tx) TagCheck(repo, tag string) (meta.TagCheck, bool, error) {
	if err := t.read(); err != nil {
		return meta.TagCheck{}, false, err
	}
	var rec record.TagCheck
	ok, err := getJSON(t.btx.Bucket(bucketCache), "cache", cacheKey(cacheTag, repo, tag), &rec)
	return meta.TagCheck(rec), ok, err
}

// PutTagCheck records c as the last check of tag in repo.
func (t *tx) PutTagCheck(repo, tag string, c meta.TagCheck) error {
	if err := t.write(); err != nil {
		return err
	}
	if err := validRepo(repo); err != nil {
		return err
	}
	if err := validName("tag", tag); err != nil {
		return err
	}
	return putJSON(t.btx.Bucket(bucketCache), cacheKey(cacheTag, repo, tag), record.TagCheck(c))
}

// DeleteTagCheck removes the check of tag in repo.
func (t *tx) DeleteTagCheck(repo, tag string) error {
	if err := t.write(); err != nil {
		return err
	}
	if err := t.btx.Bucket(bucketCache).Delete(cacheKey(cacheTag, repo, tag)); err != nil {
		return fmt.Errorf("delete tag check of %s in %s: %w", tag, repo, err)
	}
	return nil
}
