package fs_test

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/opencontainers/go-digest"

	blobfs "github.com/berth-registry/berth/storage/blob/fs"
)

// BenchmarkCommit measures a small manifest-sized commit through anonymous
// content, of new content (file and directory fsync) and of content
// already in place (directory fsync only).
func BenchmarkCommit(b *testing.B) {
	for _, existing := range []bool{false, true} {
		b.Run(fmt.Sprintf("existing=%v", existing), func(b *testing.B) {
			ctx := b.Context()
			s, err := blobfs.Open(ctx, b.TempDir(), blobfs.Options{})
			if err != nil {
				b.Fatal(err)
			}
			same := bytes.Repeat([]byte("m"), 2048)
			i := 0
			for b.Loop() {
				data := same
				if !existing {
					i++
					data = fmt.Appendf(bytes.Clone(same), "%d", i)
				}
				st, err := s.Stage(ctx, "")
				if err != nil {
					b.Fatal(err)
				}
				if _, err := st.Append(ctx, bytes.NewReader(data), int64(len(data)), nil); err != nil {
					b.Fatal(err)
				}
				if err := st.Commit(ctx, digest.FromBytes(data)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAppend measures appending 1 MiB chunks while hashing them, as
// a chunked upload does.
func BenchmarkAppend(b *testing.B) {
	ctx := b.Context()
	s, err := blobfs.Open(ctx, b.TempDir(), blobfs.Options{})
	if err != nil {
		b.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("c"), 1<<20)
	b.SetBytes(int64(len(chunk)))
	st, err := s.Stage(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	h := digest.Canonical.Hash()
	for b.Loop() {
		if _, err := st.Append(ctx, bytes.NewReader(chunk), int64(len(chunk)), h); err != nil {
			b.Fatal(err)
		}
	}
}
