package storage_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/blob"
	blobfs "github.com/berth-registry/berth/storage/blob/fs"
	"github.com/berth-registry/berth/storage/meta"
	"github.com/berth-registry/berth/storage/meta/bolt"
	"github.com/berth-registry/berth/storage/storagetest"
)

// openBackends opens the embedded index and the file blob store of the
// store under dir, as registry.OpenStore does: the index first, whose
// lock makes this process the store's only user, then the blob store.
// fsys, if not nil, is the file system the blob store writes through.
func openBackends(t testing.TB, dir string, fsys blobfs.FS) (*bolt.Store, *blobfs.Store) {
	t.Helper()
	index, err := bolt.Open(filepath.Join(dir, "index.db"), bolt.Options{})
	if err != nil {
		t.Fatalf("open index: %v", err)
	}
	blobs, err := blobfs.Open(context.Background(), dir, blobfs.Options{FS: fsys})
	if err != nil {
		_ = index.Close()
		t.Fatalf("open blob store: %v", err)
	}
	return index, blobs
}

// backends are the embedded index and the file blob store.
var backends = storagetest.Backends{
	Open: func(t *testing.T, dir string) (meta.Store, blob.Store) {
		return openBackends(t, dir, nil)
	},
}

// TestSuite runs the core's behavioural suite over the embedded index and
// the file blob store.
func TestSuite(t *testing.T) { storagetest.Run(t, backends) }

// openService opens a store under dir over bolt and fs, closed when the
// test ends.
func openService(t testing.TB, dir string, fsys blobfs.FS, opts storage.Options) (*storage.Service, *bolt.Store, *blobfs.Store) {
	t.Helper()
	index, blobs := openBackends(t, dir, fsys)
	t.Cleanup(func() { _ = index.Close() })
	return storage.New(index, blobs, opts), index, blobs
}
