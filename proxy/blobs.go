package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/remote"
	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/meta"
)

// A fill is a pipeline of three stages that overlap: a reader takes the
// upstream's body into a ring of chunks in memory, a writer appends each
// chunk to the staged content (written to disk and hashed), and every
// client asking for the blob follows: from the ring what is still there,
// from the staged file what left it, as soon as it arrives. The reader
// waits for the writer only when the ring is full of chunks not yet
// written, so the memory of a fill is bounded by the ring.
const (
	// chunkSize is the size of a chunk of the ring, and of the writer's
	// appends.
	chunkSize = 1 << 20
	// ringChunks is how many chunks a fill keeps in memory.
	ringChunks = 8
	// minRead is the least a read of the upstream waits for, but the
	// first, which goes to clients at once.
	minRead = 128 << 10
	// stallTimeout ends a fill whose upstream sent nothing for that long.
	stallTimeout = 2 * time.Minute
	// fillRetries is how many times a fill whose upstream connection broke
	// asks again for the rest, with a Range request.
	fillRetries = 3
)

// fillKey names a fill: a digest fetched for a repository.
type fillKey struct {
	repo string
	d    digest.Digest
}

// chunk is a piece of the blob in memory, from off; its bytes below the
// fill's received count do not change while it is in the ring, nor while
// a client writes them out (pins counts those): only then is its buffer
// used again.
type chunk struct {
	off     int64
	buf     []byte
	pins    int
	evicted bool
}

// span is bytes of a pinned chunk.
type span struct {
	c *chunk
	b []byte
}

func (c *chunk) end() int64 { return c.off + int64(len(c.buf)) }

// fill is one blob being fetched from an upstream into the store, which
// every client asking for it meanwhile reads as it grows.
type fill struct {
	mu      sync.Mutex
	changed chan struct{} // closed and replaced at every change
	sf      *storage.Fill // set once the upstream answered
	size    int64         // -1 until the upstream said
	// received counts the bytes the upstream sent, in order; written the
	// bytes appended to the staged content; the ring holds the received
	// bytes from ring[0].off on.
	received int64
	written  int64
	eof      bool // the upstream sent everything
	ring     []*chunk
	free     []*chunk // evicted, unpinned: buffers to use again
	// hashed is set once the content hashed to its digest: clients may
	// then read its last byte; verified once it was committed too; err
	// once the fill failed. verified or err ends it.
	hashed   bool
	verified bool
	err      error
}

func newFill() *fill { return &fill{changed: make(chan struct{}), size: -1} }

// update changes the fill's state under its lock and wakes its readers.
func (f *fill) update(fn func()) {
	f.mu.Lock()
	fn()
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

// fillState is a fill's state at one moment, as clients see it.
type fillState struct {
	// readable is how far clients may read: the received bytes, but for
	// the last byte until the content is verified, so that no client ever
	// receives the whole of content that does not hash to its digest.
	readable, size, written int64
	// ringStart is the first byte in memory; below, the staged file.
	ringStart        int64
	hashed, verified bool
	err              error
	changed          <-chan struct{}
}

// stateLocked returns the state; f.mu is held.
func (f *fill) stateLocked() fillState {
	st := fillState{readable: f.received, size: f.size, written: f.written, hashed: f.hashed, verified: f.verified,
		err: f.err, changed: f.changed, ringStart: f.received}
	if len(f.ring) > 0 {
		st.ringStart = f.ring[0].off
	}
	if !f.hashed && f.size >= 0 && st.readable >= f.size {
		st.readable = f.size - 1
	}
	return st
}

func (f *fill) state() fillState {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stateLocked()
}

// pin returns the bytes of the ring from off to at most limit, as spans
// of chunks pinned until unpin, and the state under the same lock; none
// when off is not in the ring.
func (f *fill) pin(off, limit int64) ([]span, fillState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.stateLocked()
	limit = min(limit, st.readable)
	var out []span
	for _, c := range f.ring {
		if off >= limit {
			break
		}
		if off < c.off || off >= c.end() {
			continue
		}
		to := min(c.end(), limit)
		c.pins++
		out = append(out, span{c, c.buf[off-c.off : to-c.off]})
		off = to
	}
	return out, st
}

// unpin releases spans; an evicted chunk no one pins is used again.
func (f *fill) unpin(spans []span) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, sp := range spans {
		sp.c.pins--
		if sp.c.evicted && sp.c.pins == 0 && len(f.free) < ringChunks {
			f.free = append(f.free, sp.c)
		}
	}
}

// copyAt copies the bytes of the ring at off into p, and returns how
// many and the state under the same lock.
func (f *fill) copyAt(p []byte, off int64) (int, fillState) {
	spans, st := f.pin(off, off+int64(len(p)))
	n := 0
	for _, sp := range spans {
		n += copy(p[n:], sp.b)
	}
	f.unpin(spans)
	return n, st
}

// StatBlob answers for a blob of a namespace from the store, a fill in
// progress, or a HEAD to the upstream.
func (c *Cache) StatBlob(ctx context.Context, repo string, d digest.Digest) (storage.BlobInfo, error) {
	u, rest := c.upstreamOf(repo)
	info, err := c.Service.StatBlob(ctx, repo, d)
	if u == nil || !errors.Is(err, storage.ErrBlobUnknown) {
		if u != nil && err == nil {
			note(ctx, "berth; hit")
		}
		return info, err
	}
	c.mu.Lock()
	f := c.fills[fillKey{repo, d}]
	c.mu.Unlock()
	if f != nil {
		if st := f.state(); st.err == nil && st.size >= 0 {
			note(ctx, "berth; fwd=miss; collapsed")
			return storage.BlobInfo{Digest: d, Size: st.size}, nil
		}
	}
	resp, err := u.request(ctx, http.MethodHead, u.remoteName(rest), "/blobs/"+string(d), nil)
	if err != nil {
		return storage.BlobInfo{}, clientError(u, "blob", err)
	}
	_ = resp.Body.Close()
	if resp.ContentLength < 0 {
		return storage.BlobInfo{}, clientError(u, "blob", fmt.Errorf("%w: no length for blob %s", errBadUpstream, d))
	}
	note(ctx, "berth; fwd=miss")
	return storage.BlobInfo{Digest: d, Size: resp.ContentLength}, nil
}

// OpenBlob serves a blob of a namespace from the store or, when it is
// missing, from the fill that fetches it (starting one if none is in
// progress): the reader follows the fill as it grows.
func (c *Cache) OpenBlob(ctx context.Context, repo string, d digest.Digest) (io.ReadSeekCloser, storage.BlobInfo, error) {
	u, rest := c.upstreamOf(repo)
	r, info, err := c.Service.OpenBlob(ctx, repo, d)
	if u == nil || !errors.Is(err, storage.ErrBlobUnknown) {
		if u != nil && err == nil {
			note(ctx, "berth; hit")
		}
		return r, info, err
	}
	f, joined := c.join(u, repo, rest, d)
	if joined {
		note(ctx, "berth; fwd=miss; collapsed")
	} else {
		note(ctx, "berth; fwd=miss; stored")
	}
	// Wait until the upstream has answered with the length.
	for {
		st := f.state()
		switch {
		case st.err != nil:
			if errors.Is(st.err, errMounted) {
				return c.Service.OpenBlob(ctx, repo, d)
			}
			return nil, storage.BlobInfo{}, clientError(u, "blob", st.err)
		case st.verified:
			return c.Service.OpenBlob(ctx, repo, d)
		case st.size >= 0:
			return &follower{c: c, f: f, ctx: ctx, repo: repo, d: d}, storage.BlobInfo{Digest: d, Size: st.size}, nil
		}
		select {
		case <-st.changed:
		case <-ctx.Done():
			return nil, storage.BlobInfo{}, ctx.Err()
		}
	}
}

// errMounted ends a fill that found the content in the store already and
// linked it, once the upstream confirmed the repository has it.
var errMounted = errors.New("content linked from the store")

// join returns the fill of d for repo, starting it if none is in
// progress, and whether it was in progress.
func (c *Cache) join(u *upstream, repo, rest string, d digest.Digest) (*fill, bool) {
	k := fillKey{repo, d}
	c.mu.Lock()
	defer c.mu.Unlock()
	if f := c.fills[k]; f != nil {
		return f, true
	}
	f := newFill()
	c.fills[k] = f
	// The fill belongs to no request: a client that goes away does not
	// stop it.
	ctx := storage.WithActor(context.Background(), actor(u))
	go func() {
		err := c.runFill(ctx, f, u, repo, u.remoteName(rest), d)
		c.mu.Lock()
		delete(c.fills, k)
		c.mu.Unlock()
		if err != nil {
			f.update(func() { f.err = err })
		}
	}()
	return f, false
}

// runFill fetches d from the upstream into the store and links it into
// repo. It returns nil once the content is verified and committed.
func (c *Cache) runFill(ctx context.Context, f *fill, u *upstream, repo, name string, d digest.Digest) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// Content the store holds for another repository is linked, not
	// fetched again, once the upstream says this repository has it.
	var have bool
	if err := c.View(ctx, func(tx meta.Tx) error {
		var err error
		_, have, err = tx.Blob(d)
		return err
	}); err != nil {
		return err
	}
	if have {
		resp, err := u.request(ctx, http.MethodHead, name, "/blobs/"+string(d), nil)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if _, err := c.Service.MountBlob(ctx, repo, "", d); err == nil {
			return errMounted
		}
	}
	start := time.Now()
	// The staged content is created while the upstream answers; clients
	// may follow as soon as it has, from memory.
	type started struct {
		sf  *storage.Fill
		err error
	}
	staging := make(chan started, 1)
	go func() {
		sf, err := c.StartFill(ctx, d)
		staging <- started{sf, err}
	}()
	resp, err := u.request(ctx, http.MethodGet, name, "/blobs/"+string(d), nil)
	if err == nil {
		f.update(func() { f.size = resp.ContentLength })
	}
	st := <-staging
	if st.sf != nil {
		defer func() { _ = st.sf.Cancel(context.WithoutCancel(ctx)) }() // after a commit, nothing to cancel
	}
	if err != nil {
		return err
	}
	if st.err != nil {
		resp.Body.Close()
		return st.err
	}
	sf := st.sf
	f.update(func() { f.sf = sf })

	// The writer appends what the reader brings in; its end, or its
	// failure, ends the fill's transfer.
	written := make(chan error, 1)
	go func() { written <- c.writeFill(ctx, f, sf) }()
	rerr := c.readFill(ctx, cancel, f, u, name, d, resp)
	if rerr != nil {
		cancel(rerr)
		f.update(func() {}) // wake the writer to see the cancellation
	}
	werr := <-written
	if rerr != nil {
		return rerr
	}
	if werr != nil {
		return werr
	}
	if f.size >= 0 && sf.Size() != f.size {
		return fmt.Errorf("%w: upstream %s sent %d bytes of blob %s, announced %d", errBadUpstream, u.name, sf.Size(), d, f.size)
	}
	if !sf.Verified() {
		return fmt.Errorf("%w: upstream %s: blob %s does not hash to its digest", errBadUpstream, u.name, d)
	}
	// Verified: clients may have the last byte while it is made durable.
	f.update(func() {
		f.hashed = true
		f.size = sf.Size()
	})
	if _, err := sf.Commit(ctx, repo); err != nil {
		return err
	}
	f.update(func() { f.verified = true; f.ring = nil })
	c.log.InfoContext(ctx, "blob fetched from upstream", "upstream", u.name, "repo", repo, "digest", d,
		"bytes", sf.Size(), "duration", time.Since(start))
	return nil
}

// errStalled ends a fill whose upstream sent nothing for stallTimeout.
var errStalled = fmt.Errorf("nothing received for %s", stallTimeout)

// readFill reads the upstream's body into the ring until its end. A
// connection that breaks is resumed with a Range request; an upstream
// that sends nothing for stallTimeout is given up: a watchdog cancels
// ctx (whose requests bring the body) with errStalled.
func (c *Cache) readFill(ctx context.Context, cancel context.CancelCauseFunc, f *fill, u *upstream, name string, d digest.Digest, resp *http.Response) error {
	body := resp.Body
	defer func() { body.Close() }()
	size := resp.ContentLength
	progress := make(chan struct{}, 1)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		t := time.NewTimer(stallTimeout)
		defer t.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-progress:
				t.Reset(stallTimeout)
			case <-t.C:
				cancel(errStalled)
				return
			}
		}
	}()
	retries, first := 0, true
	for {
		cur, err := f.room(ctx)
		if err != nil {
			return err
		}
		// The first read goes out at once; later ones gather at least
		// minRead (or what is left), for fewer wake-ups.
		free := cur.buf[len(cur.buf):cap(cur.buf)]
		want := 1
		if !first {
			want = min(minRead, len(free))
			if size >= 0 {
				f.mu.Lock()
				want = int(min(int64(want), max(size-f.received, 1)))
				f.mu.Unlock()
			}
		}
		n, rerr := io.ReadAtLeast(body, free, want)
		if n > 0 {
			first = false
			f.update(func() {
				cur.buf = cur.buf[:len(cur.buf)+n]
				f.received += int64(n)
			})
			select {
			case progress <- struct{}{}:
			default:
			}
		}
		if rerr == nil {
			continue
		}
		f.mu.Lock()
		got := f.received
		f.mu.Unlock()
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			if size < 0 || got >= size {
				f.update(func() { f.eof = true })
				return nil
			}
			rerr = io.ErrUnexpectedEOF
		}
		if errors.Is(context.Cause(ctx), errStalled) {
			rerr = errStalled
		}
		// The connection broke: ask for the rest.
		if ctx.Err() != nil || retries == fillRetries || size < 0 {
			return &remote.UnreachableError{Host: u.reg.Host(), Err: fmt.Errorf("blob %s after %d bytes: %w", d, got, rerr)}
		}
		retries++
		body.Close()
		r2, err := u.request(ctx, http.MethodGet, name, "/blobs/"+string(d), http.Header{"Range": {fmt.Sprintf("bytes=%d-", got)}})
		if err != nil {
			return err
		}
		if r2.StatusCode != http.StatusPartialContent {
			r2.Body.Close()
			return fmt.Errorf("%w: upstream %s answered %d to a range request", errBadUpstream, u.name, r2.StatusCode)
		}
		body = r2.Body
		c.log.InfoContext(ctx, "upstream connection broke; fetching the rest", "upstream", u.name, "digest", d, "offset", got)
	}
}

// room returns the chunk the reader appends to next: the last of the
// ring while it has room, else a new one, once the ring has room for it
// (its oldest chunk written out).
func (f *fill) room(ctx context.Context) (*chunk, error) {
	for {
		f.mu.Lock()
		if n := len(f.ring); n > 0 && len(f.ring[n-1].buf) < cap(f.ring[n-1].buf) {
			cur := f.ring[n-1]
			f.mu.Unlock()
			return cur, nil
		}
		if len(f.ring) < ringChunks || f.ring[0].end() <= f.written {
			var cur *chunk
			if len(f.ring) >= ringChunks {
				old := f.ring[0]
				f.ring[0] = nil
				f.ring = f.ring[1:]
				old.evicted = true
				if old.pins == 0 {
					cur = old
				}
			}
			if cur == nil && len(f.free) > 0 {
				cur = f.free[len(f.free)-1]
				f.free = f.free[:len(f.free)-1]
			}
			if cur == nil {
				cur = &chunk{buf: make([]byte, 0, chunkSize)}
			}
			cur.off, cur.buf, cur.evicted = f.received, cur.buf[:0], false
			f.ring = append(f.ring, cur)
			f.mu.Unlock()
			return cur, nil
		}
		changed := f.changed
		f.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}

// writeFill appends the received bytes to the staged content, a chunk at
// a time (the last one once the upstream sent everything), until all are
// written.
func (c *Cache) writeFill(ctx context.Context, f *fill, sf *storage.Fill) error {
	for {
		f.mu.Lock()
		var piece []byte
		for _, ch := range f.ring {
			if f.written >= ch.off && f.written < ch.end() && (len(ch.buf) == cap(ch.buf) || f.eof) {
				piece = ch.buf[f.written-ch.off:]
				break
			}
		}
		done := f.eof && f.written == f.received
		changed := f.changed
		f.mu.Unlock()
		switch {
		case done:
			return nil
		case piece != nil:
			if err := sf.AppendBytes(ctx, piece); err != nil {
				return err
			}
			f.update(func() { f.written += int64(len(piece)) })
			continue
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// follower reads a fill as it grows: from the ring what is in memory,
// from the staged content what left it, and once the fill is committed,
// from the store.
type follower struct {
	c    *Cache
	f    *fill
	ctx  context.Context
	repo string
	d    digest.Digest
	off  int64
	// staged reads the staged content; done, once the fill is verified
	// and committed, is the committed content.
	staged *os.File
	done   io.ReadSeekCloser
}

// Streaming tells the distribution API to hand a whole-blob answer to
// WriteTo: the content is still arriving.
func (fr *follower) Streaming() bool { return true }

// next waits until the fill has bytes for the follower's offset (or an
// end), and returns the state then.
func (fr *follower) next() (fillState, error) {
	for {
		st := fr.f.state()
		switch {
		case st.verified:
			return st, nil
		case st.size >= 0 && fr.off >= st.size && st.readable >= st.size:
			return st, io.EOF
		case fr.off < st.readable:
			return st, nil
		case st.err != nil:
			return st, st.err
		}
		select {
		case <-st.changed:
		case <-fr.ctx.Done():
			return st, fr.ctx.Err()
		}
	}
}

// Read implements io.Reader.
func (fr *follower) Read(p []byte) (int, error) {
	if fr.done != nil {
		n, err := fr.done.Read(p)
		fr.off += int64(n)
		return n, err
	}
	st, err := fr.next()
	if err != nil {
		return 0, err
	}
	if st.verified {
		if err := fr.committed(); err != nil {
			return 0, err
		}
		return fr.Read(p)
	}
	limit := min(int64(len(p)), st.readable-fr.off)
	n, st := fr.f.copyAt(p[:limit], fr.off)
	if n > 0 {
		fr.off += int64(n)
		return n, nil
	}
	// Below the ring: in the staged file.
	n = int(min(limit, st.written-fr.off))
	if n <= 0 {
		return 0, fmt.Errorf("blob %s: offset %d is neither in memory nor written", fr.d, fr.off)
	}
	if err := fr.openStaged(); err != nil {
		return 0, err
	}
	if fr.done != nil {
		return fr.Read(p) // committed meanwhile
	}
	n, err = fr.staged.ReadAt(p[:n], fr.off)
	fr.off += int64(n)
	if n > 0 {
		return n, nil
	}
	if err := fr.stagedGone(err); err != nil {
		return 0, err
	}
	return fr.Read(p) // committed meanwhile
}

// WriteTo implements io.WriterTo: what is in memory is written to w as
// it is, what is on disk (the staged content, then the committed blob)
// with w's ReadFrom, which sends files with sendfile.
func (fr *follower) WriteTo(w io.Writer) (int64, error) {
	var total int64
	rf, _ := w.(io.ReaderFrom)
	for {
		if fr.done != nil {
			n, err := copyFile(w, rf, fr.done)
			fr.off += n
			return total + n, err
		}
		st, err := fr.next()
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		if st.verified {
			if err := fr.committed(); err != nil {
				return total, err
			}
			continue
		}
		spans, st := fr.f.pin(fr.off, st.readable)
		if len(spans) > 0 {
			var err error
			for _, sp := range spans {
				var n int
				n, err = w.Write(sp.b)
				fr.off += int64(n)
				total += int64(n)
				if err != nil {
					break
				}
			}
			fr.f.unpin(spans)
			if err != nil {
				return total, err
			}
			continue
		}
		// Below the ring (the state is the one pin saw): in the staged
		// file.
		if fr.off >= st.written {
			return total, fmt.Errorf("blob %s: offset %d is neither in memory nor written", fr.d, fr.off)
		}
		if err := fr.openStaged(); err != nil {
			return total, err
		}
		if fr.done != nil {
			continue // committed meanwhile
		}
		if _, err := fr.staged.Seek(fr.off, io.SeekStart); err != nil {
			return total, err
		}
		n, err := copyFile(w, rf, &io.LimitedReader{R: fr.staged, N: min(st.written, st.readable) - fr.off})
		fr.off += n
		total += n
		if err != nil {
			if err := fr.stagedGone(err); err != nil {
				return total, err
			}
		}
	}
}

// copyFile copies r to w, through rf when there is one: net/http sends
// an *os.File, or a limited one, with sendfile.
func copyFile(w io.Writer, rf io.ReaderFrom, r io.Reader) (int64, error) {
	if rf != nil {
		return rf.ReadFrom(r)
	}
	return io.Copy(w, r)
}

// openStaged opens the staged content for reading, once; when it is gone
// because the fill was committed, it switches to the committed content
// (fr.done) instead.
func (fr *follower) openStaged() error {
	if fr.staged != nil {
		return nil
	}
	fr.f.mu.Lock()
	sf := fr.f.sf
	fr.f.mu.Unlock()
	if sf == nil {
		return fmt.Errorf("blob %s: no staged content yet", fr.d)
	}
	r, err := sf.Reader(fr.ctx)
	if err != nil {
		return fr.stagedGone(err)
	}
	file, ok := r.(*os.File)
	if !ok {
		_ = r.Close()
		return fr.stagedGone(errors.New("staged content cannot be read at an offset"))
	}
	fr.staged = file
	return nil
}

// stagedGone handles a read of the staged content that failed: once the
// fill is committed the staged content has moved into the store, which is
// read from then on; before, the failure is the follower's.
func (fr *follower) stagedGone(cause error) error {
	for {
		st := fr.f.state()
		if st.verified {
			return fr.committed()
		}
		if !st.hashed || st.err != nil {
			if cause == nil || errors.Is(cause, io.EOF) {
				cause = io.ErrUnexpectedEOF
			}
			return cause
		}
		select {
		case <-st.changed:
		case <-fr.ctx.Done():
			return fr.ctx.Err()
		}
	}
}

// committed switches to the committed content, at the follower's offset.
func (fr *follower) committed() error {
	if fr.done != nil {
		return nil
	}
	r, _, err := fr.c.Service.OpenBlob(fr.ctx, fr.repo, fr.d)
	if err != nil {
		return err
	}
	if _, err := r.Seek(fr.off, io.SeekStart); err != nil {
		_ = r.Close()
		return err
	}
	fr.done = r
	return nil
}

// Seek implements io.Seeker within the blob's announced length.
func (fr *follower) Seek(offset int64, whence int) (int64, error) {
	size := fr.f.state().size
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += fr.off
	case io.SeekEnd:
		offset += size
	default:
		return 0, errors.New("seek: invalid whence")
	}
	if offset < 0 {
		return 0, errors.New("seek: negative position")
	}
	fr.off = offset
	if fr.done != nil {
		return fr.done.Seek(offset, io.SeekStart)
	}
	return offset, nil
}

// Close implements io.Closer.
func (fr *follower) Close() error {
	var err error
	if fr.staged != nil {
		err = fr.staged.Close()
	}
	if fr.done != nil {
		err = errors.Join(err, fr.done.Close())
	}
	return err
}
