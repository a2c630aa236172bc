package pulls_test

import (
	"context"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage"
	blobfs "github.com/berth-registry/berth/storage/blob/fs"
	"github.com/berth-registry/berth/storage/meta/bolt"
	"github.com/berth-registry/berth/storage/pulls"
)

// BenchmarkRecord measures what a pull costs on the request path: the
// rate table and the queue, with the writer running. "same" is a deploy
// target pulling one digest in a loop (no write after the first); "distinct"
// is a new identity on every pull (a write each, in batches).
func BenchmarkRecord(b *testing.B) {
	for _, c := range []struct {
		name     string
		distinct bool
	}{{"same", false}, {"distinct", true}} {
		b.Run(c.name, func(b *testing.B) {
			dir := b.TempDir()
			index, err := bolt.Open(filepath.Join(dir, "index.db"), bolt.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer index.Close()
			blobs, err := blobfs.Open(context.Background(), dir, blobfs.Options{})
			if err != nil {
				b.Fatal(err)
			}
			r := pulls.New(storage.New(index, blobs, storage.Options{}), pulls.Options{Queue: 1 << 16})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				defer close(done)
				r.Run(ctx)
			}()
			d := digest.FromString("manifest")
			same := storage.WithActor(context.Background(), storage.Actor{Kind: "robot", Name: "prod"})
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				actx := same
				if c.distinct {
					actx = storage.WithActor(context.Background(), storage.Actor{Kind: "robot", Name: strconv.Itoa(i)})
				}
				r.Record(actx, "apps/web", d)
			}
			b.StopTimer()
			cancel()
			<-done
			b.ReportMetric(float64(r.Dropped()), "dropped")
		})
	}
}
