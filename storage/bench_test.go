package storage_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/manifest"
)

// seededReader streams deterministic pseudo-random bytes without holding
// them in memory.
type seededReader struct{ r *rand.ChaCha8 }

func (s seededReader) Read(p []byte) (int, error) { return s.r.Read(p) }

func seeded(seed uint64) io.Reader {
	var key [32]byte
	key[0] = byte(seed)
	key[1] = byte(seed >> 8)
	return seededReader{rand.NewChaCha8(key)}
}

// BenchmarkPutBlob measures the whole write path of a monolithic push over
// bolt and fs: stream to a temporary file while hashing, fsync, rename,
// index commit.
func BenchmarkPutBlob(b *testing.B) {
	for _, size := range []int64{1 << 20, 64 << 20} {
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			s, _, _ := openService(b, b.TempDir(), nil, storage.Options{})
			// Digests are computed outside the timed loop.
			digests := make([]digest.Digest, b.N)
			for i := range b.N {
				d, err := digest.Canonical.FromReader(io.LimitReader(seeded(uint64(i)), size))
				if err != nil {
					b.Fatal(err)
				}
				digests[i] = d
			}
			b.SetBytes(size)
			b.ResetTimer()
			for i := range b.N {
				if _, err := s.PutBlob(context.Background(), "bench", digests[i], io.LimitReader(seeded(uint64(i)), size), size); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// benchStore opens a store for a benchmark with an empty config blob in
// repository "bench", and returns the config's digest.
func benchStore(b *testing.B) (*storage.Service, digest.Digest) {
	b.Helper()
	ctx := context.Background()
	s, _, _ := openService(b, b.TempDir(), nil, storage.Options{})
	config := []byte(`{}`)
	cd := digest.FromBytes(config)
	if _, err := s.PutBlob(ctx, "bench", cd, bytes.NewReader(config), 2); err != nil {
		b.Fatal(err)
	}
	return s, cd
}

// benchManifest returns the n-th distinct manifest over config cd, parsed.
func benchManifest(cd digest.Digest, n int64) ([]byte, *manifest.Manifest, error) {
	body := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"%s","size":2},"layers":[],`+
		`"annotations":{"n":"%d"}}`, cd, n))
	m, err := manifest.Parse("", body)
	return body, m, err
}

// BenchmarkPutManifest measures a manifest push that tags it: parse, hash,
// placing the body, and the reference check and the index commit in one
// transaction.
func BenchmarkPutManifest(b *testing.B) {
	ctx := context.Background()
	s, cd := benchStore(b)
	b.ResetTimer()
	for i := range b.N {
		body, m, err := benchManifest(cd, int64(i))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.PutManifest(ctx, "bench", digest.FromBytes(body), body, m, []string{fmt.Sprintf("t%d", i)}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGetManifestByTag measures resolving a tag and reading the body.
func BenchmarkGetManifestByTag(b *testing.B) {
	ctx := context.Background()
	s, cd := benchStore(b)
	body, m, err := benchManifest(cd, 0)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.PutManifest(ctx, "bench", digest.FromBytes(body), body, m, []string{"latest"}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, err := s.GetManifest(ctx, "bench", "latest"); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkPutManifestParallel measures manifest pushes from 16 writers at
// once per core, where commits can share an fsync.
func BenchmarkPutManifestParallel(b *testing.B) {
	ctx := context.Background()
	s, cd := benchStore(b)
	var n atomic.Int64
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			body, m, err := benchManifest(cd, i)
			if err == nil {
				_, err = s.PutManifest(ctx, "bench", digest.FromBytes(body), body, m, []string{fmt.Sprintf("t%d", i)})
			}
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkStatBlob measures a blob lookup (HEAD) over bolt: "recorded"
// when the link was active within the refresh period (a snapshot read
// only), "records" when every lookup must record Seen (a write
// transaction that re-reads the link), the cost a lookup pays at most
// once per refresh period per link.
func BenchmarkStatBlob(b *testing.B) {
	for _, c := range []struct {
		name    string
		refresh time.Duration
	}{{"recorded", time.Hour}, {"records", time.Nanosecond}} {
		b.Run(c.name, func(b *testing.B) {
			s, _, _ := openService(b, b.TempDir(), nil, storage.Options{SeenRefresh: c.refresh})
			content := []byte("looked up")
			d := digest.FromBytes(content)
			if _, err := s.PutBlob(context.Background(), "bench", d, bytes.NewReader(content), int64(len(content))); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for range b.N {
				if _, err := s.StatBlob(context.Background(), "bench", d); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
