package storage_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/blob"
	blobfs "github.com/berth-registry/berth/storage/blob/fs"
)

// Limits that keep one fuzz input cheap.
const (
	fuzzMaxOps   = 32
	fuzzMaxChunk = 64
)

// fuzzUpload is the model of one upload session: the bytes it must hold.
type fuzzUpload struct {
	id    string
	data  []byte
	ended bool
}

// fuzzInput reads the fuzzer's bytes, as zeros once they run out.
type fuzzInput struct {
	b []byte
	i int
}

func (in *fuzzInput) byte() byte {
	if in.i >= len(in.b) {
		return 0
	}
	c := in.b[in.i]
	in.i++
	return c
}

// chunk reads a length and a seed and returns that many bytes of content.
func (in *fuzzInput) chunk() []byte {
	n, seed := int(in.byte())%(fuzzMaxChunk+1), in.byte()
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i)
	}
	return b
}

// Operations of FuzzUploadStateMachine. Every operation but fuzzStart reads
// a session selector and a flags byte after its code; a selector one past
// the last session names an id that was never started.
const (
	fuzzStart       = iota // flags: sha512
	fuzzAppend             // len, seed; flags: start given, length given
	fuzzWrongOffset        // delta, len, seed; flags: before the offset, in a commit
	fuzzBadLength          // delta, len, seed; flags: shorter than the data, in a commit
	fuzzStatus             //
	fuzzCommit             // len, seed; flags: sha512, with a last chunk, its start given, its length unknown
	fuzzCommitWrong        // len, seed; flags: sha512, with a last chunk
	fuzzCancel             //
	fuzzOps
)

// Flag bits.
const (
	flagA         = 1 << 0
	flagB         = 1 << 1
	flagWrongRepo = 1 << 2 // the session is asked for in another repository
	flagC         = 1 << 3
	flagD         = 1 << 4
)

// FuzzUploadStateMachine runs sequences of upload operations against one
// store over bolt and fs and a model of its sessions, and checks after
// each one that the store agrees with the model: offsets, the bytes staged
// in the blob store, errors for refused chunks that change nothing,
// sessions that end on commit, failed commit and cancel, and committed
// blobs that read back as uploaded.
func FuzzUploadStateMachine(f *testing.F) {
	for _, seed := range [][]byte{
		// Chunks with and without start and length, status, commit.
		{fuzzStart, 0, fuzzAppend, 0, flagA | flagB, 10, 7, fuzzAppend, 0, 0, 20, 9, fuzzStatus, 0, 0, fuzzCommit, 0, 0, 0, 0},
		// Chunks at wrong offsets, after and before, in PATCH and PUT,
		// then a commit with a last chunk at a given start.
		{fuzzStart, 0, fuzzAppend, 0, flagA | flagB, 16, 1, fuzzWrongOffset, 0, 0, 3, 5, 2, fuzzWrongOffset, 0, flagA, 2, 5, 2,
			fuzzWrongOffset, 0, flagB, 1, 5, 2, fuzzStatus, 0, 0, fuzzCommit, 0, flagB | flagC, 8, 3},
		// Refused chunks must not reach the running hash: a commit after
		// them with the session's own algorithm.
		{fuzzStart, 0, fuzzAppend, 0, flagA | flagB, 5, 1, fuzzBadLength, 0, 0, 2, 5, 2, fuzzBadLength, 0, flagA, 1, 5, 2,
			fuzzCommit, 0, 0, 0, 0},
		// Declared lengths that disagree with the data, then a failed
		// commit, then every operation on the ended session.
		{fuzzStart, 0, fuzzAppend, 0, flagA | flagB, 5, 1, fuzzBadLength, 0, 0, 2, 5, 2, fuzzBadLength, 0, flagA, 0, 5, 2,
			fuzzBadLength, 0, flagB, 0, 5, 2, fuzzCommitWrong, 0, flagB, 4, 4,
			fuzzAppend, 0, flagA | flagB, 5, 1, fuzzStatus, 0, 0, fuzzCancel, 0, 0, fuzzCommit, 0, 0, 0, 0, fuzzWrongOffset, 0, 0, 1, 1, 1},
		// Two sessions, one sha512; another repository; cancel; a sha256
		// commit of the sha512 session; an id never started.
		{fuzzStart, flagA, fuzzStart, 0, fuzzAppend, 0, flagA | flagB, 30, 5, fuzzAppend, 1, flagA | flagB, 30, 5,
			fuzzCancel, 1, flagWrongRepo, fuzzStatus, 0, flagWrongRepo, fuzzAppend, 0, flagWrongRepo | flagA | flagB, 3, 3,
			fuzzCancel, 1, 0, fuzzStatus, 1, 0, fuzzCommit, 0, 0, 0, 0, fuzzCommit, 1, 0, 0, 0, fuzzStatus, 2, 0, fuzzCancel, 2, 0},
		// The same content committed from two sessions, then an empty blob.
		{fuzzStart, 0, fuzzStart, 0, fuzzAppend, 0, flagA | flagB, 10, 1, fuzzAppend, 1, flagA | flagB, 10, 1,
			fuzzCommit, 0, 0, 0, 0, fuzzCommit, 1, flagA, 0, 0, fuzzStart, 0, fuzzCommit, 2, 0, 0, 0},
		// A commit whose last chunk has no declared length, and a wrong
		// digest with a last chunk.
		{fuzzStart, 0, fuzzCommit, 0, flagB | flagD, 64, 0, fuzzStart, 0, fuzzCommitWrong, 1, flagA | flagB, 12, 3},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, ops []byte) {
		ctx := context.Background()
		dir := t.TempDir()
		s, _, bs := openService(t, dir, nil, storage.Options{})
		const repo, other = "fuzz/repo", "fuzz/other"
		var ups []*fuzzUpload
		blobs := map[digest.Digest][]byte{}
		never := &fuzzUpload{id: "0123456789abcdef0123456789abcdef", ended: true}
		in := &fuzzInput{b: ops}

		for n := 0; n < fuzzMaxOps && in.i < len(in.b); n++ {
			op := in.byte() % fuzzOps
			if op == fuzzStart {
				alg := digest.SHA256
				if in.byte()&flagA != 0 {
					alg = digest.SHA512
				}
				info, err := s.StartUpload(ctx, repo, alg)
				if err != nil {
					t.Fatalf("op %d: start: %v", n, err)
				}
				if info.Offset != 0 || info.Repo != repo || len(info.ID) != 32 {
					t.Fatalf("op %d: start: %+v", n, info)
				}
				ups = append(ups, &fuzzUpload{id: info.ID})
				continue
			}
			u := never
			if sel := int(in.byte()) % (len(ups) + 1); sel < len(ups) {
				u = ups[sel]
			}
			flags := in.byte()
			r := repo
			if flags&flagWrongRepo != 0 {
				r = other
			}
			unknown := u.ended || r != repo
			offset := int64(len(u.data))
			// wantErr checks err against what the model expects: err
			// for a live session, ErrUploadUnknown for any other.
			wantErr := func(what string, got, want error) {
				t.Helper()
				if unknown {
					want = storage.ErrUploadUnknown
				}
				if !errors.Is(got, want) {
					t.Fatalf("op %d: %s: error %v, want %v", n, what, got, want)
				}
			}

			switch op {
			case fuzzAppend:
				chunk := in.chunk()
				start, length := int64(-1), int64(-1)
				if flags&flagA != 0 {
					start = offset
				}
				if flags&flagB != 0 {
					length = int64(len(chunk))
				}
				info, err := s.AppendUpload(ctx, r, u.id, start, bytes.NewReader(chunk), length)
				if unknown {
					wantErr("append", err, nil)
					break
				}
				if err != nil {
					t.Fatalf("op %d: append %d bytes at %d: %v", n, len(chunk), start, err)
				}
				u.data = append(u.data, chunk...)
				if info.Offset != int64(len(u.data)) || info.ID != u.id || info.Repo != repo {
					t.Fatalf("op %d: append: %+v, want offset %d", n, info, len(u.data))
				}

			case fuzzWrongOffset, fuzzBadLength:
				delta := int64(in.byte()%16) + 1
				chunk := in.chunk()
				start, length := offset, int64(len(chunk))
				want := storage.ErrSizeInvalid
				switch {
				case op == fuzzWrongOffset && flags&flagA != 0 && offset >= delta:
					start, want = offset-delta, storage.ErrRangeInvalid
				case op == fuzzWrongOffset:
					start, want = offset+delta, storage.ErrRangeInvalid
				case flags&flagA != 0 && length > 0:
					length -= min(delta, length)
				default:
					length += delta
				}
				if flags&flagB != 0 {
					d := digest.FromBytes(append(slices.Clone(u.data), chunk...))
					_, err := s.CommitUpload(ctx, r, u.id, d, start, bytes.NewReader(chunk), length)
					wantErr("commit with a bad chunk", err, want)
					break
				}
				info, err := s.AppendUpload(ctx, r, u.id, start, bytes.NewReader(chunk), length)
				wantErr("append a bad chunk", err, want)
				if !unknown && info.Offset != offset {
					t.Fatalf("op %d: refused chunk: offset %d, want %d", n, info.Offset, offset)
				}

			case fuzzStatus:
				info, err := s.UploadStatus(ctx, r, u.id)
				if unknown {
					wantErr("status", err, nil)
					break
				}
				if err != nil || info.Offset != offset || info.ID != u.id || info.Repo != repo {
					t.Fatalf("op %d: status: %+v, %v; want offset %d", n, info, err, offset)
				}

			case fuzzCommit, fuzzCommitWrong:
				alg := digest.SHA256
				if flags&flagA != 0 {
					alg = digest.SHA512
				}
				chunk := in.chunk()
				var body *bytes.Reader
				content := u.data
				start, length := int64(-1), int64(len(chunk))
				if flags&flagB != 0 {
					body = bytes.NewReader(chunk)
					content = append(slices.Clone(u.data), chunk...)
					if flags&flagC != 0 {
						start = offset
					}
					if flags&flagD != 0 {
						length = -1
					}
				}
				d := alg.FromBytes(content)
				if op == fuzzCommitWrong {
					d = wrongDigest(d)
				}
				var info storage.BlobInfo
				var err error
				if body != nil {
					info, err = s.CommitUpload(ctx, r, u.id, d, start, body, length)
				} else {
					info, err = s.CommitUpload(ctx, r, u.id, d, start, nil, length)
				}
				if unknown {
					wantErr("commit", err, nil)
					break
				}
				u.ended, u.data = true, nil
				if op == fuzzCommitWrong {
					wantErr("commit with a wrong digest", err, storage.ErrDigestMismatch)
					if _, err := s.StatBlob(ctx, repo, d); !errors.Is(err, storage.ErrBlobUnknown) {
						t.Fatalf("op %d: blob of a failed commit: %v", n, err)
					}
					break
				}
				if err != nil {
					t.Fatalf("op %d: commit %d bytes as %s: %v", n, len(content), d, err)
				}
				if info.Digest != d || info.Size != int64(len(content)) {
					t.Fatalf("op %d: commit: %+v, want %s of %d bytes", n, info, d, len(content))
				}
				if got := readAll(t, s, repo, d); !bytes.Equal(got, content) {
					t.Fatalf("op %d: blob %s reads back %d bytes, want %d", n, d, len(got), len(content))
				}
				blobs[d] = content

			case fuzzCancel:
				err := s.CancelUpload(ctx, r, u.id)
				if unknown {
					wantErr("cancel", err, nil)
					break
				}
				if err != nil {
					t.Fatalf("op %d: cancel: %v", n, err)
				}
				u.ended, u.data = true, nil
			}
			checkUploads(t, s, bs, n, repo, ups)
		}

		for d, content := range blobs {
			if got := readAll(t, s, repo, d); !bytes.Equal(got, content) {
				t.Fatalf("blob %s reads back %d bytes, want %d", d, len(got), len(content))
			}
		}
		if names := files(t, dir, "tmp"); len(names) != 0 {
			t.Fatalf("temporary files left: %v", names)
		}
	})
}

// stagedContent reads back the content staged for session id.
func stagedContent(ctx context.Context, blobs *blobfs.Store, id string) ([]byte, error) {
	st, err := blobs.Resume(ctx, id)
	if err != nil {
		return nil, err
	}
	r, err := st.Reader(ctx)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// checkUploads compares every session of the store with its model: the
// status, and the bytes it staged. Ended sessions leave neither.
func checkUploads(t *testing.T, s *storage.Service, blobs *blobfs.Store, n int, repo string, ups []*fuzzUpload) {
	t.Helper()
	ctx := context.Background()
	live := 0
	for _, u := range ups {
		info, err := s.UploadStatus(ctx, repo, u.id)
		data, ferr := stagedContent(ctx, blobs, u.id)
		if u.ended {
			if !errors.Is(err, storage.ErrUploadUnknown) || !errors.Is(ferr, blob.ErrNotFound) {
				t.Fatalf("after op %d: ended session %s: status %v, file %v", n, u.id, err, ferr)
			}
			continue
		}
		live++
		if err != nil || info.Offset != int64(len(u.data)) {
			t.Fatalf("after op %d: session %s: %+v, %v; want offset %d", n, u.id, info, err, len(u.data))
		}
		if ferr != nil || !bytes.Equal(data, u.data) {
			t.Fatalf("after op %d: session %s holds %d bytes, want %d (%v)", n, u.id, len(data), len(u.data), ferr)
		}
	}
	staged := 0
	if err := blobs.WalkStaged(ctx, func(blob.Entry) error { staged++; return nil }); err != nil {
		t.Fatal(err)
	}
	if staged != live {
		t.Fatalf("after op %d: %d sessions staged for %d live ones", n, staged, live)
	}
}

// wrongDigest returns a well-formed digest other than d, of no content.
func wrongDigest(d digest.Digest) digest.Digest {
	enc := []byte(d.Encoded())
	if enc[0] == '0' {
		enc[0] = '1'
	} else {
		enc[0] = '0'
	}
	return digest.NewDigestFromEncoded(d.Algorithm(), string(enc))
}
