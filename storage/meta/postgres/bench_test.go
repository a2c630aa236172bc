package postgres

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage/meta"
)

// push records what a manifest push does in one transaction: the
// manifest's blob and its record, a tag and its move.
func push(tx meta.Tx, i int64) error {
	d := digest.FromString(fmt.Sprint("manifest ", i))
	now := time.Now()
	if err := tx.PutBlob(d, meta.Blob{Size: 512, Created: now}); err != nil {
		return err
	}
	m := meta.Manifest{MediaType: ocispec.MediaTypeImageManifest, Size: 512, Created: now,
		References:  []digest.Digest{digest.FromString("config"), digest.FromString(fmt.Sprint("layer ", i))},
		Annotations: map[string]string{"org.opencontainers.image.title": fmt.Sprint("image ", i)}}
	if err := tx.PutManifest("bench/app", d, m); err != nil {
		return err
	}
	tag := fmt.Sprint("v", i)
	if err := tx.SetTag("bench/app", tag, d); err != nil {
		return err
	}
	_, err := tx.AppendMove("bench/app", tag, meta.Move{Time: now, Digest: d, Action: "push",
		Actor: meta.Actor{Kind: "user", Name: "bench"}})
	return err
}

// BenchmarkUpdate measures push-like Updates from one writer and from 16
// concurrent writers. commits/op is the transactions each Update
// committed (one), retries/op the functions run again after a conflict.
func BenchmarkUpdate(b *testing.B) {
	for _, writers := range []int{1, 16} {
		b.Run(fmt.Sprintf("c=%d", writers), func(b *testing.B) {
			s := openTemp(b)
			var n atomic.Int64
			update := func() {
				i := n.Add(1)
				if err := s.Update(context.Background(), func(tx meta.Tx) error { return push(tx, i) }); err != nil {
					b.Error(err)
				}
			}
			commits, retries := s.commits.Load(), s.retries.Load()
			b.ResetTimer()
			if writers == 1 {
				for b.Loop() {
					update()
				}
			} else {
				// RunParallel starts parallelism × GOMAXPROCS goroutines.
				b.SetParallelism((writers + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						update()
					}
				})
			}
			b.StopTimer()
			b.ReportMetric(float64(s.commits.Load()-commits)/float64(b.N), "commits/op")
			b.ReportMetric(float64(s.retries.Load()-retries)/float64(b.N), "retries/op")
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "updates/s")
		})
	}
}

// BenchmarkView measures a View reading a manifest record and its tags.
func BenchmarkView(b *testing.B) {
	s := openTemp(b)
	if err := s.Update(context.Background(), func(tx meta.Tx) error { return push(tx, 1) }); err != nil {
		b.Fatal(err)
	}
	d := digest.FromString("manifest 1")
	for b.Loop() {
		err := s.View(context.Background(), func(tx meta.Tx) error {
			if _, ok, err := tx.Manifest("bench/app", d); !ok || err != nil {
				return fmt.Errorf("manifest: %v, %w", ok, err)
			}
			_, err := tx.TagsOf("bench/app", d)
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLockDigests measures a lock and unlock of a manifest's digests,
// uncontended: a round trip per digest and one per unlock.
func BenchmarkLockDigests(b *testing.B) {
	s := openTemp(b)
	ds := []digest.Digest{digest.FromString("a"), digest.FromString("b"), digest.FromString("c")}
	var once sync.Once
	for b.Loop() {
		unlock, err := s.LockDigests(context.Background(), ds...)
		if err != nil {
			once.Do(func() { b.Error(err) })
			return
		}
		unlock()
	}
}
