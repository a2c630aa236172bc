package s3_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"testing"
	"testing/iotest"

	"github.com/opencontainers/go-digest"

	blobs3 "github.com/berth-registry/berth/storage/blob/s3"
)

// TestAppendEndingOnAPartWithItsLastRead: readers may return their last
// bytes together with io.EOF, as an HTTP request body of known length
// does. An append whose content so ends exactly on a part boundary (a
// whole part, or the rest of one begun by small pieces) still stores a
// full piece, so the session stays readable on every replica and commits.
func TestAppendEndingOnAPartWithItsLastRead(t *testing.T) {
	opts := options(t)
	opts.PartSize = blobs3.MinPartSize
	a, b := openStore(t, opts), openStore(t, opts)
	const part = blobs3.MinPartSize
	// A whole part from nothing; a small piece, then the rest of the
	// part; then a part and a half.
	for _, chunks := range [][]int{{part}, {1 << 20, part - 1<<20}, {part + part/2}} {
		id := rand.Text()
		st, err := a.Stage(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		var all []byte
		for i, n := range chunks {
			data := random(t, n)
			got, err := st.Append(t.Context(), iotest.DataErrReader(bytes.NewReader(data)), int64(n), h)
			if err != nil || got != int64(n) {
				t.Fatalf("chunks %v: append %d: %d, %v", chunks, i, got, err)
			}
			all = append(all, data...)
		}
		// The other replica reads the session's state.
		other, err := b.Resume(t.Context(), id)
		if err != nil {
			t.Fatalf("chunks %v: resume: %v", chunks, err)
		}
		if size, err := other.Size(t.Context()); err != nil || size != int64(len(all)) {
			t.Fatalf("chunks %v: the other replica sees %d bytes (%v), want %d", chunks, size, err, len(all))
		}
		d := digest.FromBytes(all)
		if err := other.Commit(t.Context(), d); err != nil {
			t.Fatalf("chunks %v: commit: %v", chunks, err)
		}
		if got := readBlob(t, a, d); !bytes.Equal(got, all) {
			t.Fatalf("chunks %v: the blob reads back %d bytes that differ from the %d appended", chunks, len(got), len(all))
		}
	}
}
