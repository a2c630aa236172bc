package postgres

import (
	"context"
	"sync"
	"testing"

	"github.com/berth-registry/berth/storage/blob"
	blobfs "github.com/berth-registry/berth/storage/blob/fs"
	"github.com/berth-registry/berth/storage/meta"
	"github.com/berth-registry/berth/storage/storagetest"
)

// TestStorageSuite runs the core's behavioural suite over this index and
// the file blob store: each store directory of the suite gets a database
// of its own, which a store opened again on the directory (a restart)
// finds again.
func TestStorageSuite(t *testing.T) {
	var mu sync.Mutex
	dsns := map[string]string{}
	storagetest.Run(t, storagetest.Backends{
		Open: func(t *testing.T, dir string) (meta.Store, blob.Store) {
			mu.Lock()
			dsn, ok := dsns[dir]
			if !ok {
				dsn = pg.Database(t)
				dsns[dir] = dsn
			}
			mu.Unlock()
			index, err := Open(context.Background(), dsn, Options{})
			if err != nil {
				t.Fatalf("open index: %v", err)
			}
			blobs, err := blobfs.Open(context.Background(), dir, blobfs.Options{})
			if err != nil {
				_ = index.Close()
				t.Fatalf("open blob store: %v", err)
			}
			return index, blobs
		},
	})
}
