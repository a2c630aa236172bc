package bolt

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

// BenchmarkUpdate measures push-like Updates, each durable, from one
// writer and from 16 concurrent writers, with group commit and with every
// Update committing alone. commits/op is the fsyncs each Update cost.
func BenchmarkUpdate(b *testing.B) {
	for _, mode := range []struct {
		name string
		solo bool
	}{{"group", false}, {"solo", true}} {
		for _, writers := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/c=%d", mode.name, writers), func(b *testing.B) {
				s := openTemp(b)
				defer s.Close()
				s.solo = mode.solo
				var n atomic.Int64
				update := func() {
					i := n.Add(1)
					if err := s.Update(context.Background(), func(tx meta.Tx) error { return push(tx, i) }); err != nil {
						b.Error(err)
					}
				}
				before := s.commits.Load()
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
				b.ReportMetric(float64(s.commits.Load()-before)/float64(b.N), "commits/op")
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "updates/s")
			})
		}
	}
}

// BenchmarkUpdateOverhead measures what group commit costs a lone writer
// in CPU, without the fsync whose noise would hide it.
func BenchmarkUpdateOverhead(b *testing.B) {
	for _, mode := range []struct {
		name string
		solo bool
	}{{"group", false}, {"solo", true}} {
		b.Run(mode.name, func(b *testing.B) {
			s := openTemp(b)
			defer s.Close()
			s.solo = mode.solo
			s.db.NoSync = true
			var i int64
			for b.Loop() {
				i++
				if err := s.Update(context.Background(), func(tx meta.Tx) error { return push(tx, i) }); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkLockDigests measures a lock and unlock of a manifest's digests,
// uncontended.
func BenchmarkLockDigests(b *testing.B) {
	s := openTemp(b)
	defer s.Close()
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
