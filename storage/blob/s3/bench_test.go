package s3_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"testing"

	"github.com/opencontainers/go-digest"

	blobs3 "github.com/berth-registry/berth/storage/blob/s3"
)

// benchStore opens a store in a fresh bucket of gw.
func benchStore(b *testing.B) *blobs3.Store {
	b.Helper()
	return openStore(b, options(b))
}

// BenchmarkPut measures a manifest-sized Put, of new content (one
// conditional PUT) and of content already present (refused by the
// condition).
func BenchmarkPut(b *testing.B) {
	for _, existing := range []bool{false, true} {
		b.Run(fmt.Sprintf("existing=%v", existing), func(b *testing.B) {
			ctx := b.Context()
			s := benchStore(b)
			same := bytes.Repeat([]byte("m"), 2048)
			i := 0
			for b.Loop() {
				data := same
				if !existing {
					i++
					data = fmt.Appendf(bytes.Clone(same), "%d", i)
				}
				if err := s.Put(ctx, digest.FromBytes(data), bytes.NewReader(data), int64(len(data))); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkStageCommit measures content streamed through Stage, one
// Append of unknown length (as a client's streamed PATCH, hashed) and
// Commit, at sizes from below a part to many parts.
func BenchmarkStageCommit(b *testing.B) {
	for _, size := range []int64{256 << 10, 4 << 20, 32 << 20, 256 << 20} {
		b.Run(fmt.Sprintf("size=%dKiB", size>>10), func(b *testing.B) {
			ctx := b.Context()
			s := benchStore(b)
			b.SetBytes(size)
			i := 0
			for b.Loop() {
				i++
				st, err := s.Stage(ctx, fmt.Sprintf("bench-%d", i))
				if err != nil {
					b.Fatal(err)
				}
				h := sha256.New()
				// Each iteration's content differs in its first bytes.
				r := io.MultiReader(bytes.NewReader(fmt.Appendf(nil, "%016d", i)), &stream{n: size - 16})
				if _, err := st.Append(ctx, r, -1, h); err != nil {
					b.Fatal(err)
				}
				if err := st.Commit(ctx, digest.NewDigest(digest.SHA256, h)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAppendChunks measures a chunked upload: 1 MiB chunks appended
// to one session, each a PATCH of its own, hashed.
func BenchmarkAppendChunks(b *testing.B) {
	ctx := b.Context()
	s := benchStore(b)
	chunk := bytes.Repeat([]byte("c"), 1<<20)
	b.SetBytes(int64(len(chunk)))
	st, err := s.Stage(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	h := sha256.New()
	for b.Loop() {
		st, err := s.Resume(ctx, "bench")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := st.Append(ctx, bytes.NewReader(chunk), int64(len(chunk)), h); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if err := st.Cancel(ctx); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRead measures reading a 64 MiB blob through Open.
func BenchmarkRead(b *testing.B) {
	ctx := b.Context()
	s := benchStore(b)
	const size = 64 << 20
	data := make([]byte, size)
	if _, err := io.ReadFull(&stream{n: size}, data); err != nil {
		b.Fatal(err)
	}
	d := digest.FromBytes(data)
	if err := s.Put(ctx, d, bytes.NewReader(data), size); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	for b.Loop() {
		f, err := s.Open(ctx, d)
		if err != nil {
			b.Fatal(err)
		}
		if n, err := io.Copy(io.Discard, f); err != nil || n != size {
			b.Fatalf("read %d bytes: %v", n, err)
		}
		f.Close()
	}
}
