package storage

import (
	"bytes"
	"context"
	"encoding"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/blob"
)

// Fill is content of a known digest arriving from elsewhere (the
// pull-through cache's upstream, a replication's remote), written in
// pieces as it arrives and readable while it is written. It follows the
// upload protocol without a session record: the content is staged
// anonymously (the blob store drops what a dead process left), hashed as
// it is appended, and Commit makes it durable and visible under its digest
// only once the hash matches, then links it into a repository in one
// transaction. Until then nothing records it and no lookup finds it.
//
// A Fill has one writer: Append, AppendBytes, Commit and Cancel are not
// safe for concurrent use with each other. Reader may be called from any goroutine.
type Fill struct {
	s  *Service
	d  digest.Digest
	st blob.Staged
	h  hash.Hash
	n  int64
}

// StartFill begins content that must hash to d.
func (s *Service) StartFill(ctx context.Context, d digest.Digest) (*Fill, error) {
	if err := validDigest(d); err != nil {
		return nil, err
	}
	if !d.Algorithm().Available() {
		return nil, fmt.Errorf("%w: digest algorithm %q", ErrUnsupported, d.Algorithm())
	}
	st, err := s.blobs.Stage(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("stage content: %w", err)
	}
	return &Fill{s: s, d: d, st: st, h: d.Algorithm().Hash()}, nil
}

// Digest is the digest the content must hash to.
func (f *Fill) Digest() digest.Digest { return f.d }

// Size is the number of bytes appended so far; Reader reads at least
// that many.
func (f *Fill) Size() int64 { return f.n }

// Append appends the bytes of r, exactly n of them when n >= 0. A failed
// append changes nothing.
func (f *Fill) Append(ctx context.Context, r io.Reader, n int64) (int64, error) {
	got, err := f.st.Append(ctx, r, n, f.h)
	if err != nil {
		return 0, appendError("append content", got, err)
	}
	f.n += got
	return got, nil
}

// AppendBytes appends p, hashing it while it is written: the hash and the
// write run at once, on two cores when there are, which halves the time of
// an append of content already in memory. A failed append changes nothing.
func (f *Fill) AppendBytes(ctx context.Context, p []byte) error {
	m, ok1 := f.h.(encoding.BinaryMarshaler)
	u, ok2 := f.h.(encoding.BinaryUnmarshaler)
	if !ok1 || !ok2 {
		_, err := f.Append(ctx, bytes.NewReader(p), int64(len(p)))
		return err
	}
	saved, err := m.MarshalBinary()
	if err != nil {
		return fmt.Errorf("save hash state: %w", err)
	}
	hashed := make(chan struct{})
	go func() {
		f.h.Write(p)
		close(hashed)
	}()
	got, err := f.st.Append(ctx, bytes.NewReader(p), int64(len(p)), nil)
	<-hashed
	if err != nil {
		if rerr := u.UnmarshalBinary(saved); rerr != nil {
			err = errors.Join(err, fmt.Errorf("restore hash state: %w", rerr))
		}
		return appendError("append content", got, err)
	}
	f.n += got
	return nil
}

// Verified reports whether what was appended so far hashes to the digest.
func (f *Fill) Verified() bool {
	return digest.NewDigest(f.d.Algorithm(), f.h) == f.d
}

// Reader reads back the content appended so far; what is appended later
// may or may not be read by it. After Commit it fails with ErrNotFound
// from the blob store (readers opened before may go on: with the file
// store they do), and the content is read with OpenBlob.
func (f *Fill) Reader(ctx context.Context) (io.ReadCloser, error) {
	return f.st.Reader(ctx)
}

// Commit checks that the content hashes to the digest (ErrDigestMismatch
// otherwise, and the fill is cancelled), makes it durable under it and
// records it, linked into repo, publishing a blob-push event with the
// actor ctx carries.
func (f *Fill) Commit(ctx context.Context, repo string) (BlobInfo, error) {
	if got := digest.NewDigest(f.d.Algorithm(), f.h); got != f.d {
		_ = f.st.Cancel(ctx)
		return BlobInfo{}, detailf(ErrDigestMismatch, map[string]any{"digest": string(f.d)}, "content hashes to %s", got)
	}
	info := BlobInfo{Digest: f.d, Size: f.n}
	if err := f.s.commitBlob(ctx, repo, f.st, info, nil); err != nil {
		_ = f.st.Cancel(ctx) // nothing left to cancel once committed
		return BlobInfo{}, err
	}
	return info, nil
}

// Cancel drops the content. Cancelling a committed or cancelled fill does
// nothing.
func (f *Fill) Cancel(ctx context.Context) error {
	return f.st.Cancel(ctx)
}
