// Package blobtest owns the behavioural suite of the blob seam: the tests
// every blob.Store backend must pass, written against the interface alone
// (package blob's doc comments are the contract), so that each new backend
// inherits them. A backend's own tests call Run, then add what only that
// backend can check (its layout, its failures).
package blobtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/blob"
)

// Run runs the suite as subtests of t. open returns a new, empty store for
// each subtest; it registers with t whatever cleaning up the store needs.
func Run(t *testing.T, open func(t *testing.T) blob.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s blob.Store)
	}{
		{"Missing", testMissing},
		{"CommitReadBack", testCommitReadBack},
		{"Walk", testWalk},
		{"WalkStopsOnError", testWalkStopsOnError},
		{"Delete", testDelete},
		{"StageAppendResumeCommit", testStageAppendResumeCommit},
		{"StageExistingID", testStageExistingID},
		{"Cancel", testCancel},
		{"ReaderReadsBack", testReaderReadsBack},
		{"LastWrite", testLastWrite},
		{"LastWriteCountsAppendInProgress", testLastWriteCountsAppendInProgress},
		{"AppendWithoutHash", testAppendWithoutHash},
		{"AppendReaderFails", testAppendReaderFails},
		{"AppendUnexpectedEOF", testAppendUnexpectedEOF},
		{"AppendSizeMismatch", testAppendSizeMismatch},
		{"AppendContextCancelled", testAppendContextCancelled},
		{"CommitExisting", testCommitExisting},
		{"ConcurrentCommitsOfOneDigest", testConcurrentCommitsOfOneDigest},
		{"ConcurrentSessions", testConcurrentSessions},
		{"Anonymous", testAnonymous},
		{"Put", testPut},
		{"PutSizeMismatch", testPutSizeMismatch},
		{"PutContextCancelled", testPutContextCancelled},
		{"ConcurrentPutsOfOneDigest", testConcurrentPutsOfOneDigest},
		{"Quarantine", testQuarantine},
		{"Redirect", testRedirect},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open(t)) })
	}
}

// errReader is the error failingReader fails with.
var errReader = errors.New("the client went away")

// failingReader yields data, then fails with err.
type failingReader struct {
	data []byte
	err  error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

// content returns n bytes that differ with seed.
func content(n int, seed string) []byte {
	out := make([]byte, 0, n+64)
	for i := 0; len(out) < n; i++ {
		out = fmt.Appendf(out, "%s-%d;", seed, i)
	}
	return out[:n]
}

// newID returns a fresh upload session id, as the core makes them.
func newID(t *testing.T) string {
	t.Helper()
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

func stage(t *testing.T, s blob.Store, id string) blob.Staged {
	t.Helper()
	st, err := s.Stage(t.Context(), id)
	if err != nil {
		t.Fatalf("stage %q: %v", id, err)
	}
	return st
}

func resume(t *testing.T, s blob.Store, id string) blob.Staged {
	t.Helper()
	st, err := s.Resume(t.Context(), id)
	if err != nil {
		t.Fatalf("resume %q: %v", id, err)
	}
	return st
}

func appendAll(t *testing.T, st blob.Staged, data []byte, h hash.Hash) {
	t.Helper()
	n, err := st.Append(t.Context(), bytes.NewReader(data), int64(len(data)), h)
	if err != nil {
		t.Fatalf("append %d bytes: %v", len(data), err)
	}
	if n != int64(len(data)) {
		t.Fatalf("append of %d bytes reports %d", len(data), n)
	}
}

func wantSize(t *testing.T, st blob.Staged, want int64) {
	t.Helper()
	got, err := st.Size(t.Context())
	if err != nil {
		t.Fatalf("size: %v", err)
	}
	if got != want {
		t.Fatalf("staged size %d, want %d", got, want)
	}
}

func wantStaged(t *testing.T, st blob.Staged, want []byte) {
	t.Helper()
	wantSize(t, st, int64(len(want)))
	r, err := st.Reader(t.Context())
	if err != nil {
		t.Fatalf("reader: %v", err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read staged content: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("staged content differs: %d bytes, want %d", len(got), len(want))
	}
}

// put commits data as a new upload session and returns its digest.
func put(t *testing.T, s blob.Store, data []byte) digest.Digest {
	t.Helper()
	return putAs(t, s, digest.Canonical, data)
}

func putAs(t *testing.T, s blob.Store, alg digest.Algorithm, data []byte) digest.Digest {
	t.Helper()
	st := stage(t, s, newID(t))
	h := alg.Hash()
	appendAll(t, st, data, h)
	d := digest.NewDigest(alg, h)
	if err := st.Commit(t.Context(), d); err != nil {
		t.Fatalf("commit %s: %v", d, err)
	}
	return d
}

func readBlob(t *testing.T, s blob.Store, d digest.Digest) []byte {
	t.Helper()
	f, err := s.Open(t.Context(), d)
	if err != nil {
		t.Fatalf("open %s: %v", d, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatalf("read %s: %v", d, err)
	}
	return b
}

// wantBlob checks that d is stored with exactly data.
func wantBlob(t *testing.T, s blob.Store, d digest.Digest, data []byte) {
	t.Helper()
	size, err := s.Stat(t.Context(), d)
	if err != nil {
		t.Fatalf("stat %s: %v", d, err)
	}
	if size != int64(len(data)) {
		t.Fatalf("stat %s: %d bytes, want %d", d, size, len(data))
	}
	if got := readBlob(t, s, d); !bytes.Equal(got, data) {
		t.Fatalf("content of %s differs: %d bytes, want %d", d, len(got), len(data))
	}
}

func wantGone(t *testing.T, s blob.Store, d digest.Digest) {
	t.Helper()
	if _, err := s.Stat(t.Context(), d); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("stat %s: %v, want ErrNotFound", d, err)
	}
	f, err := s.Open(t.Context(), d)
	if err == nil {
		f.Close()
	}
	if !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("open %s: %v, want ErrNotFound", d, err)
	}
}

func wantNoSession(t *testing.T, s blob.Store, id string) {
	t.Helper()
	if _, err := s.Resume(t.Context(), id); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("resume %s: %v, want ErrNotFound", id, err)
	}
}

// wantEnded checks that content committed or cancelled is gone for st.
func wantEnded(t *testing.T, st blob.Staged, what string) {
	t.Helper()
	ctx := t.Context()
	if _, err := st.Size(ctx); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("size of %s: %v, want ErrNotFound", what, err)
	}
	if _, err := st.LastWrite(ctx); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("last write of %s: %v, want ErrNotFound", what, err)
	}
	r, err := st.Reader(ctx)
	if err == nil {
		r.Close()
	}
	if !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("reader of %s: %v, want ErrNotFound", what, err)
	}
	if _, err := st.Append(ctx, bytes.NewReader([]byte("late")), 4, nil); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("append to %s: %v, want ErrNotFound", what, err)
	}
}

// walk returns what Walk reports, failing on an object reported twice.
func walk(t *testing.T, s blob.Store) map[string]blob.Entry {
	t.Helper()
	return collect(t, "Walk", s.Walk)
}

func walkStaged(t *testing.T, s blob.Store) map[string]blob.Entry {
	t.Helper()
	return collect(t, "WalkStaged", s.WalkStaged)
}

func collect(t *testing.T, what string, w func(context.Context, func(blob.Entry) error) error) map[string]blob.Entry {
	t.Helper()
	out := map[string]blob.Entry{}
	err := w(t.Context(), func(e blob.Entry) error {
		if _, dup := out[e.Name]; dup {
			return fmt.Errorf("%s reports %q twice", what, e.Name)
		}
		out[e.Name] = e
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return out
}

// wantCommitted checks that Walk reports exactly the blobs of want (digest
// to size), each once, as regular objects.
func wantCommitted(t *testing.T, s blob.Store, want map[digest.Digest]int64) {
	t.Helper()
	got := map[digest.Digest]int64{}
	for name, e := range walk(t, s) {
		if e.Digest == "" || e.Irregular != "" {
			t.Fatalf("Walk reports %q as %+v, want a blob", name, e)
		}
		if _, dup := got[e.Digest]; dup {
			t.Fatalf("Walk reports %s twice", e.Digest)
		}
		got[e.Digest] = e.Size
	}
	if len(got) != len(want) {
		t.Fatalf("Walk reports %d blobs (%v), want %d (%v)", len(got), got, len(want), want)
	}
	for d, size := range want {
		if g, ok := got[d]; !ok || g != size {
			t.Fatalf("Walk reports %s with %d bytes (present: %v), want %d", d, g, ok, size)
		}
	}
}

func wantNoStaged(t *testing.T, s blob.Store) {
	t.Helper()
	if got := walkStaged(t, s); len(got) != 0 {
		t.Fatalf("WalkStaged reports %v, want nothing", got)
	}
}

func testMissing(t *testing.T, s blob.Store) {
	ctx := t.Context()
	d := digest.FromString("never stored")
	wantGone(t, s, d)
	if err := s.Delete(ctx, d); err != nil {
		t.Fatalf("delete of absent content: %v", err)
	}
	wantNoSession(t, s, newID(t))
	wantCommitted(t, s, nil)
	wantNoStaged(t, s)
}

func testCommitReadBack(t *testing.T, s blob.Store) {
	want := map[digest.Digest]int64{}
	for _, n := range []int{0, 1, 4096, 100<<10 + 7} {
		data := content(n, "readback")
		d := put(t, s, data)
		if d != digest.FromBytes(data) {
			t.Fatalf("the hash passed to Append gives %s, want %s", d, digest.FromBytes(data))
		}
		wantBlob(t, s, d, data)
		want[d] = int64(n)
		if n < 2 {
			continue
		}
		// The content seeks, as range requests need.
		f, err := s.Open(t.Context(), d)
		if err != nil {
			t.Fatal(err)
		}
		half := int64(n / 2)
		if off, err := f.Seek(half, io.SeekStart); err != nil || off != half {
			t.Fatalf("seek to %d: %d, %v", half, off, err)
		}
		rest, err := io.ReadAll(f)
		f.Close()
		if err != nil || !bytes.Equal(rest, data[half:]) {
			t.Fatalf("read from %d: %d bytes, %v", half, len(rest), err)
		}
	}
	// Another algorithm Berth accepts.
	data := content(5000, "sha512")
	d := putAs(t, s, digest.SHA512, data)
	if d != digest.SHA512.FromBytes(data) {
		t.Fatalf("sha512 digest %s", d)
	}
	wantBlob(t, s, d, data)
	want[d] = int64(len(data))
	wantCommitted(t, s, want)
	wantNoStaged(t, s)
}

func testWalk(t *testing.T, s blob.Store) {
	want := map[digest.Digest]int64{}
	for i, n := range []int{0, 10, 70000} {
		data := content(n, fmt.Sprint("walk", i))
		want[put(t, s, data)] = int64(n)
	}
	d := putAs(t, s, digest.SHA512, []byte("walk sha512"))
	want[d] = int64(len("walk sha512"))
	// Content in flight is not committed content.
	id := newID(t)
	appendAll(t, stage(t, s, id), []byte("in flight"), nil)
	appendAll(t, stage(t, s, ""), []byte("anonymous, in flight"), nil)
	wantCommitted(t, s, want)
	staged := walkStaged(t, s)
	if len(staged) != 1 || staged[id].Size != int64(len("in flight")) || staged[id].Irregular != "" {
		t.Fatalf("WalkStaged reports %+v, want only %s with %d bytes", staged, id, len("in flight"))
	}
}

func testWalkStopsOnError(t *testing.T, s blob.Store) {
	ctx := t.Context()
	for i := range 3 {
		put(t, s, content(10, fmt.Sprint("stop", i)))
		appendAll(t, stage(t, s, newID(t)), []byte("x"), nil)
	}
	stop := errors.New("stop here")
	for name, w := range map[string]func(context.Context, func(blob.Entry) error) error{"Walk": s.Walk, "WalkStaged": s.WalkStaged} {
		calls := 0
		err := w(ctx, func(blob.Entry) error {
			calls++
			return stop
		})
		if !errors.Is(err, stop) || calls != 1 {
			t.Fatalf("%s with fn failing: %v after %d calls, want fn's error after 1", name, err, calls)
		}
	}
}

func testDelete(t *testing.T, s blob.Store) {
	ctx := t.Context()
	keep, gone := content(300, "keep"), content(300, "gone")
	dk, dg := put(t, s, keep), put(t, s, gone)
	if err := s.Delete(ctx, dg); err != nil {
		t.Fatalf("delete: %v", err)
	}
	wantGone(t, s, dg)
	wantBlob(t, s, dk, keep)
	wantCommitted(t, s, map[digest.Digest]int64{dk: 300})
	if err := s.Delete(ctx, dg); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	// Deleted content can be committed again.
	if d := put(t, s, gone); d != dg {
		t.Fatalf("digest %s, want %s", d, dg)
	}
	wantBlob(t, s, dg, gone)
}

func testStageAppendResumeCommit(t *testing.T, s blob.Store) {
	ctx := t.Context()
	id := newID(t)
	part1, part2 := content(50000, "part1"), content(70001, "part2")
	st := stage(t, s, id)
	wantSize(t, st, 0)
	h := digest.Canonical.Hash()
	appendAll(t, st, part1, h)
	wantSize(t, st, int64(len(part1)))

	// Another request reopens the session and goes on.
	st2 := resume(t, s, id)
	wantStaged(t, st2, part1)
	if got := walkStaged(t, s); len(got) != 1 || got[id].Size != int64(len(part1)) {
		t.Fatalf("WalkStaged reports %+v, want %s with %d bytes", got, id, len(part1))
	}
	appendAll(t, st2, part2, h)
	all := append(append([]byte{}, part1...), part2...)
	wantStaged(t, resume(t, s, id), all)
	d := digest.NewDigest(digest.Canonical, h)
	if d != digest.FromBytes(all) {
		t.Fatalf("hash over two appends gives %s, want %s", d, digest.FromBytes(all))
	}
	wantGone(t, s, d)
	if err := st2.Commit(ctx, d); err != nil {
		t.Fatalf("commit: %v", err)
	}
	wantBlob(t, s, d, all)
	wantNoSession(t, s, id)
	wantEnded(t, st, "a committed session")
	wantNoStaged(t, s)
	wantCommitted(t, s, map[digest.Digest]int64{d: int64(len(all))})
}

func testStageExistingID(t *testing.T, s blob.Store) {
	ctx := t.Context()
	id := newID(t)
	appendAll(t, stage(t, s, id), []byte("abc"), nil)
	if _, err := s.Stage(ctx, id); err == nil {
		t.Fatal("a second Stage of a live session id succeeded")
	}
	wantStaged(t, resume(t, s, id), []byte("abc"))
}

func testCancel(t *testing.T, s blob.Store) {
	ctx := t.Context()
	id, other := newID(t), newID(t)
	st := stage(t, s, id)
	appendAll(t, st, content(1000, "cancel"), nil)
	appendAll(t, stage(t, s, other), []byte("other"), nil)
	if err := resume(t, s, id).Cancel(ctx); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	wantNoSession(t, s, id)
	wantEnded(t, st, "a cancelled session")
	staged := walkStaged(t, s)
	if _, ok := staged[id]; ok || len(staged) != 1 {
		t.Fatalf("WalkStaged after cancel: %+v, want only %s", staged, other)
	}
	wantStaged(t, resume(t, s, other), []byte("other"))
	wantCommitted(t, s, nil)
}

func testReaderReadsBack(t *testing.T, s blob.Store) {
	st := stage(t, s, newID(t))
	wantStaged(t, st, nil)
	var all []byte
	for i := range 5 {
		chunk := content(1000*i+1, fmt.Sprint("chunk", i))
		appendAll(t, st, chunk, nil)
		all = append(all, chunk...)
		wantStaged(t, st, all)
	}
}

func testLastWrite(t *testing.T, s blob.Store) {
	// File systems keep times to a second or two at worst.
	const slack = 2 * time.Second
	within := func(what string, st blob.Staged, from, to time.Time) {
		t.Helper()
		got, err := st.LastWrite(t.Context())
		if err != nil {
			t.Fatalf("last write %s: %v", what, err)
		}
		if got.Before(from.Add(-slack)) || got.After(to.Add(slack)) {
			t.Fatalf("last write %s is %v, want between %v and %v", what, got, from, to)
		}
	}
	for _, id := range []string{newID(t), ""} {
		before := time.Now()
		st := stage(t, s, id)
		within("at stage", st, before, time.Now())
		before = time.Now()
		appendAll(t, st, []byte("some bytes"), nil)
		within("after append", st, before, time.Now())
		if id != "" {
			within("after resume", resume(t, s, id), before, time.Now())
		}
	}
}

// stallingReader yields data, then, asked for more, closes stalled and
// waits for release before it ends.
type stallingReader struct {
	data     []byte
	stalled  chan struct{}
	release  chan struct{}
	signaled bool
}

func (r *stallingReader) Read(p []byte) (int, error) {
	if len(r.data) > 0 {
		n := copy(p, r.data)
		r.data = r.data[n:]
		return n, nil
	}
	if !r.signaled {
		r.signaled = true
		close(r.stalled)
	}
	<-r.release
	return 0, io.EOF
}

// An append in progress counts as a write once a part of it has been
// written: another process (here, a Staged of the session resumed apart)
// sees LastWrite move on while the append has not returned, so that
// expiry of idle sessions on any replica leaves the session alone.
func testLastWriteCountsAppendInProgress(t *testing.T, s blob.Store) {
	id := newID(t)
	st := stage(t, s, id)
	before, err := resume(t, s, id).LastWrite(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// Stores keep times to the second: let one pass, so that a write
	// from now on has a later time than the session's start.
	time.Sleep(time.Until(before.Add(1100 * time.Millisecond)))
	// More than two parts of any backend (S3 parts are 5 to 8 MiB).
	r := &stallingReader{data: content(17<<20, "in progress"), stalled: make(chan struct{}), release: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		_, err := st.Append(t.Context(), r, -1, nil)
		done <- err
	}()
	select {
	case <-r.stalled:
	case err := <-done:
		t.Fatalf("append ended before its reader did: %v", err)
	}
	during, err := resume(t, s, id).LastWrite(t.Context())
	close(r.release)
	if aerr := <-done; aerr != nil {
		t.Fatalf("append: %v", aerr)
	}
	if err != nil {
		t.Fatalf("last write during an append: %v", err)
	}
	if !during.After(before) {
		t.Fatalf("last write while 17 MiB were being appended is %v, no later than the session's start %v", during, before)
	}
}

func testAppendWithoutHash(t *testing.T, s blob.Store) {
	st := stage(t, s, newID(t))
	data := content(40000, "nohash")
	n, err := st.Append(t.Context(), bytes.NewReader(data), -1, nil)
	if err != nil || n != int64(len(data)) {
		t.Fatalf("append of unknown length without a hash: %d, %v", n, err)
	}
	wantStaged(t, st, data)
	d := digest.FromBytes(data)
	if err := st.Commit(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	wantBlob(t, s, d, data)
}

// failedAppend checks that an append failed with an error that is want,
// and left the content and the hash as they were: appending rest then
// gives content all and its digest.
func failedAppend(t *testing.T, s blob.Store, st blob.Staged, h hash.Hash, n int64, err, want error, before, rest []byte) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("failed append: %v, want %v", err, want)
	}
	if n != 0 {
		t.Fatalf("failed append reports %d bytes appended", n)
	}
	wantStaged(t, st, before)
	appendAll(t, st, rest, h)
	all := append(append([]byte{}, before...), rest...)
	d := digest.NewDigest(digest.Canonical, h)
	if d != digest.FromBytes(all) {
		t.Fatalf("hash after a failed append gives %s, want %s: its state was not restored", d, digest.FromBytes(all))
	}
	if err := st.Commit(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	wantBlob(t, s, d, all)
}

func testAppendReaderFails(t *testing.T, s blob.Store) {
	good, next := content(3000, "good"), content(200000, "next")
	for _, want := range []int64{-1, int64(len(next))} {
		t.Run(fmt.Sprint("declared ", want), func(t *testing.T) {
			st := stage(t, s, newID(t))
			h := digest.Canonical.Hash()
			appendAll(t, st, good, h)
			n, err := st.Append(t.Context(), &failingReader{data: next[:len(next)/2], err: errReader}, want, h)
			failedAppend(t, s, st, h, n, err, errReader, good, next)
		})
	}
}

func testAppendUnexpectedEOF(t *testing.T, s blob.Store) {
	good, next := content(100, "good"), content(100000, "next")
	st := stage(t, s, newID(t))
	h := digest.Canonical.Hash()
	appendAll(t, st, good, h)
	n, err := st.Append(t.Context(), &failingReader{data: next[:40000], err: io.ErrUnexpectedEOF}, int64(len(next)), h)
	failedAppend(t, s, st, h, n, err, io.ErrUnexpectedEOF, good, next)
}

func testAppendSizeMismatch(t *testing.T, s blob.Store) {
	good, body := content(500, "good"), content(70000, "body")
	for _, tc := range []struct {
		name string
		want int64
	}{
		{"short body", int64(len(body)) + 5},
		{"long body", int64(len(body)) - 1},
		{"body where none was declared", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := stage(t, s, newID(t))
			h := digest.Canonical.Hash()
			appendAll(t, st, good, h)
			n, err := st.Append(t.Context(), bytes.NewReader(body), tc.want, h)
			failedAppend(t, s, st, h, n, err, blob.ErrSizeMismatch, good, body)
		})
	}
	t.Run("empty body declared empty", func(t *testing.T) {
		st := stage(t, s, newID(t))
		h := digest.Canonical.Hash()
		appendAll(t, st, good, h)
		if n, err := st.Append(t.Context(), bytes.NewReader(nil), 0, h); err != nil || n != 0 {
			t.Fatalf("empty append: %d, %v", n, err)
		}
		wantStaged(t, st, good)
		if d := digest.NewDigest(digest.Canonical, h); d != digest.FromBytes(good) {
			t.Fatalf("hash after an empty append: %s", d)
		}
	})
}

// cancellingReader yields chunks of data, cancelling its context after the
// first; it ends after total bytes.
type cancellingReader struct {
	cancel context.CancelFunc
	chunk  []byte
	left   int
}

func (r *cancellingReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	n := copy(p, r.chunk[:min(len(r.chunk), r.left)])
	r.left -= n
	r.cancel()
	return n, nil
}

func testAppendContextCancelled(t *testing.T, s blob.Store) {
	good, rest := content(1000, "good"), content(10, "rest")
	t.Run("midway", func(t *testing.T) {
		st := stage(t, s, newID(t))
		h := digest.Canonical.Hash()
		appendAll(t, st, good, h)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		r := &cancellingReader{cancel: cancel, chunk: content(32<<10, "cancelled"), left: 4 << 20}
		n, err := st.Append(ctx, r, -1, h)
		if r.left == 4<<20 {
			t.Fatal("the reader was never read")
		}
		failedAppend(t, s, st, h, n, err, context.Canceled, good, rest)
	})
	t.Run("before", func(t *testing.T) {
		st := stage(t, s, newID(t))
		h := digest.Canonical.Hash()
		appendAll(t, st, good, h)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		n, err := st.Append(ctx, bytes.NewReader(content(1000, "x")), 1000, h)
		failedAppend(t, s, st, h, n, err, context.Canceled, good, rest)
	})
}

func testCommitExisting(t *testing.T, s blob.Store) {
	ctx := t.Context()
	data := content(20000, "twice")
	d := digest.FromBytes(data)
	ids := []string{newID(t), newID(t), ""}
	var staged []blob.Staged
	for _, id := range ids {
		st := stage(t, s, id)
		appendAll(t, st, data, nil)
		staged = append(staged, st)
	}
	for i, st := range staged {
		if err := st.Commit(ctx, d); err != nil {
			t.Fatalf("commit %d of the same content: %v", i+1, err)
		}
		wantBlob(t, s, d, data)
		wantCommitted(t, s, map[digest.Digest]int64{d: int64(len(data))})
	}
	for _, id := range ids[:2] {
		wantNoSession(t, s, id)
	}
	wantNoStaged(t, s)
	// Content committed before one session is staged, too.
	st := stage(t, s, newID(t))
	appendAll(t, st, data, nil)
	if err := st.Commit(ctx, d); err != nil {
		t.Fatal(err)
	}
	wantBlob(t, s, d, data)
	wantCommitted(t, s, map[digest.Digest]int64{d: int64(len(data))})
	wantNoStaged(t, s)
}

func testConcurrentCommitsOfOneDigest(t *testing.T, s blob.Store) {
	ctx := t.Context()
	data := content(256<<10, "concurrent")
	d := digest.FromBytes(data)
	const n = 8
	staged := make([]blob.Staged, n)
	for i := range staged {
		id := newID(t)
		if i%2 == 1 {
			id = "" // anonymous content, as a manifest put
		}
		staged[i] = stage(t, s, id)
		appendAll(t, staged[i], data, nil)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, st := range staged {
		wg.Go(func() { errs[i] = st.Commit(ctx, d) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("commit %d: %v", i, err)
		}
	}
	wantBlob(t, s, d, data)
	wantCommitted(t, s, map[digest.Digest]int64{d: int64(len(data))})
	wantNoStaged(t, s)
}

func testConcurrentSessions(t *testing.T, s blob.Store) {
	ctx := t.Context()
	const n = 6
	datas := make([][]byte, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		datas[i] = content(100000+i, fmt.Sprint("session", i))
		id := newID(t)
		wg.Go(func() {
			errs[i] = func() error {
				st, err := s.Stage(ctx, id)
				if err != nil {
					return err
				}
				h := digest.Canonical.Hash()
				for off := 0; off < len(datas[i]); off += 30000 {
					chunk := datas[i][off:min(off+30000, len(datas[i]))]
					if _, err := st.Append(ctx, bytes.NewReader(chunk), int64(len(chunk)), h); err != nil {
						return err
					}
				}
				return st.Commit(ctx, digest.NewDigest(digest.Canonical, h))
			}()
		})
	}
	wg.Wait()
	want := map[digest.Digest]int64{}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
		d := digest.FromBytes(datas[i])
		wantBlob(t, s, d, datas[i])
		want[d] = int64(len(datas[i]))
	}
	wantCommitted(t, s, want)
	wantNoStaged(t, s)
}

func testAnonymous(t *testing.T, s blob.Store) {
	ctx := t.Context()
	data := content(9000, "anonymous")
	st := stage(t, s, "")
	wantSize(t, st, 0)
	h := digest.Canonical.Hash()
	appendAll(t, st, data, h)
	wantStaged(t, st, data)
	wantNoStaged(t, s) // anonymous content is no session
	d := digest.NewDigest(digest.Canonical, h)
	if err := st.Commit(ctx, d); err != nil {
		t.Fatalf("commit: %v", err)
	}
	wantBlob(t, s, d, data)
	wantEnded(t, st, "committed anonymous content")

	st = stage(t, s, "")
	appendAll(t, st, content(500, "dropped"), nil)
	if err := st.Cancel(ctx); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	wantEnded(t, st, "cancelled anonymous content")
	wantCommitted(t, s, map[digest.Digest]int64{d: int64(len(data))})
	wantNoStaged(t, s)
}

// testQuarantine runs for stores that implement blob.Quarantiner.
func testQuarantine(t *testing.T, s blob.Store) {
	q, ok := s.(blob.Quarantiner)
	if !ok {
		t.Skipf("%T does not implement blob.Quarantiner, an optional capability", s)
	}
	ctx := t.Context()
	bad, good := content(700, "bad"), content(700, "good")
	db, dg := put(t, s, bad), put(t, s, good)
	where, err := q.Quarantine(ctx, db)
	if err != nil {
		t.Fatalf("quarantine: %v", err)
	}
	if where == "" {
		t.Fatal("quarantine of present content says nothing moved")
	}
	wantGone(t, s, db)
	wantBlob(t, s, dg, good)
	wantCommitted(t, s, map[digest.Digest]int64{dg: 700})
	if where, err := q.Quarantine(ctx, db); err != nil || where != "" {
		t.Fatalf("quarantine of absent content: %q, %v; want nothing moved", where, err)
	}
	// The content can be committed again.
	put(t, s, bad)
	wantBlob(t, s, db, bad)
}

// testRedirect runs for stores that implement blob.Redirector: the URL
// serves the content.
func testRedirect(t *testing.T, s blob.Store) {
	r, ok := s.(blob.Redirector)
	if !ok {
		t.Skipf("%T does not implement blob.Redirector, an optional capability", s)
	}
	data := content(5000, "redirect")
	d := put(t, s, data)
	url, err := r.RedirectURL(t.Context(), d)
	if err != nil || url == "" {
		t.Fatalf("redirect URL: %q, %v", url, err)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("GET the redirect URL: %v", err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(got, data) {
		t.Fatalf("GET the redirect URL: %s, %d bytes, %v", resp.Status, len(got), err)
	}
}

// testPut stores content in one step: it reads back, Walk lists it and
// nothing else, and a second Put of the same content changes nothing.
func testPut(t *testing.T, s blob.Store) {
	ctx := t.Context()
	for _, n := range []int{0, 1, 4 << 10} {
		data := content(n, fmt.Sprint("put ", n))
		d := digest.FromBytes(data)
		if err := s.Put(ctx, d, bytes.NewReader(data), int64(n)); err != nil {
			t.Fatalf("put %d bytes: %v", n, err)
		}
		wantBlob(t, s, d, data)
		if err := s.Put(ctx, d, bytes.NewReader(data), int64(n)); err != nil {
			t.Fatalf("put %d bytes again: %v", n, err)
		}
		wantBlob(t, s, d, data)
	}
	want := map[digest.Digest]int64{}
	for _, n := range []int{0, 1, 4 << 10} {
		want[digest.FromBytes(content(n, fmt.Sprint("put ", n)))] = int64(n)
	}
	wantCommitted(t, s, want)
	wantNoStaged(t, s)
}

// testPutSizeMismatch refuses a body shorter or longer than declared with
// ErrSizeMismatch, and leaves nothing.
func testPutSizeMismatch(t *testing.T, s blob.Store) {
	ctx := t.Context()
	data := content(1000, "put mismatch")
	d := digest.FromBytes(data)
	for _, want := range []int64{999, 1001} {
		err := s.Put(ctx, d, bytes.NewReader(data), want)
		if !errors.Is(err, blob.ErrSizeMismatch) {
			t.Fatalf("put of 1000 bytes declared %d: %v, want ErrSizeMismatch", want, err)
		}
		wantGone(t, s, d)
	}
	wantCommitted(t, s, map[digest.Digest]int64{})
	wantNoStaged(t, s)
}

// testPutContextCancelled stops a Put whose context is done, leaving
// nothing.
func testPutContextCancelled(t *testing.T, s blob.Store) {
	data := content(64<<10, "put cancelled")
	d := digest.FromBytes(data)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.Put(ctx, d, bytes.NewReader(data), int64(len(data))); !errors.Is(err, context.Canceled) {
		t.Fatalf("put with a cancelled context: %v, want context.Canceled", err)
	}
	wantGone(t, s, d)
	ctx, cancel = context.WithCancel(t.Context())
	defer cancel()
	r := &cancellingReader{cancel: cancel, chunk: data[:32<<10], left: len(data)}
	if err := s.Put(ctx, d, r, int64(len(data))); !errors.Is(err, context.Canceled) {
		t.Fatalf("put cancelled midway: %v, want context.Canceled", err)
	}
	wantGone(t, s, d)
	wantCommitted(t, s, map[digest.Digest]int64{})
}

// testConcurrentPutsOfOneDigest puts one content from several goroutines:
// each succeeds and one copy remains.
func testConcurrentPutsOfOneDigest(t *testing.T, s blob.Store) {
	ctx := t.Context()
	data := content(32<<10, "concurrent puts")
	d := digest.FromBytes(data)
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = s.Put(ctx, d, bytes.NewReader(data), int64(len(data))) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	wantBlob(t, s, d, data)
	wantCommitted(t, s, map[digest.Digest]int64{d: int64(len(data))})
}
