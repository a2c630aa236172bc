package s3_test

import (
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"testing"

	"github.com/berth-registry/berth/storage/blob"
	"github.com/berth-registry/berth/storage/meta"
	"github.com/berth-registry/berth/storage/meta/bolt"
	"github.com/berth-registry/berth/storage/storagetest"
)

// TestStorageSuite runs the core's behavioural suite over the embedded
// index and this store: the index in the suite's directory, the blobs in
// a bucket the suite's tests share, under a prefix named after the
// test's directory, so that a store opened again on the same directory (a
// restart) finds its blobs.
func TestStorageSuite(t *testing.T) {
	shared := options(t)
	storagetest.Run(t, storagetest.Backends{
		Open: func(t *testing.T, dir string) (meta.Store, blob.Store) {
			opts := shared
			sum := sha256.Sum256([]byte(dir))
			opts.Prefix = hex.EncodeToString(sum[:8])
			index, err := bolt.Open(filepath.Join(dir, "index.db"), bolt.Options{})
			if err != nil {
				t.Fatalf("open index: %v", err)
			}
			return index, openStore(t, opts)
		},
	})
}
