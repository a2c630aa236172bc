package storage

import (
	"bytes"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/opencontainers/go-digest"
)

// Manifest bodies this process has written or read, kept in memory. A
// body is named by its digest and never changes, so a copy is right on
// every replica for as long as the index says the manifest exists: a GET
// still asks the index first, and only the bytes come from here, saving a
// read of the blob store (a request to a bucket) per pull.

const (
	// bodyCacheEntries bounds the bodies kept, and bodyCacheMax the size
	// of one kept: the cache holds at most their product, 16 MiB.
	bodyCacheEntries = 1024
	bodyCacheMax     = 16 << 10
)

// bodyCache is the least recently used manifest bodies.
type bodyCache struct {
	c *lru.Cache[digest.Digest, []byte]
}

func newBodyCache() *bodyCache {
	c, err := lru.New[digest.Digest, []byte](bodyCacheEntries)
	if err != nil {
		panic(err) // only for a size below one
	}
	return &bodyCache{c: c}
}

// get returns a copy of d's body if it is kept and has size bytes.
func (b *bodyCache) get(d digest.Digest, size int64) ([]byte, bool) {
	body, ok := b.c.Get(d)
	if !ok || int64(len(body)) != size {
		return nil, false
	}
	return bytes.Clone(body), true
}

// add keeps a copy of body, d's, if it is small enough.
func (b *bodyCache) add(d digest.Digest, body []byte) {
	if len(body) <= bodyCacheMax {
		b.c.Add(d, bytes.Clone(body))
	}
}
