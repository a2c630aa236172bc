package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/remote"
	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/meta"
)

// Fill sizes: the first append is small, so that clients get their first
// bytes at once, and they grow to a size that keeps appends few.
const (
	firstChunk = 64 << 10
	maxChunk   = 4 << 20
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

// fill is one blob being fetched from an upstream into the store, which
// every client asking for it meanwhile reads as it grows.
type fill struct {
	mu      sync.Mutex
	changed chan struct{} // closed and replaced at every change
	sf      *storage.Fill // set before size is known
	size    int64         // -1 until the upstream said
	written int64
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

// state returns what readers may read, the size, whether the fill ended
// and how, and the channel that the next change closes. The last byte is
// readable only once the content is verified, so that no client ever
// receives the whole of content that does not hash to its digest.
func (f *fill) state() fillState {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := fillState{readable: f.written, size: f.size, hashed: f.hashed, verified: f.verified, err: f.err, changed: f.changed}
	if !f.hashed && f.size >= 0 && st.readable >= f.size {
		st.readable = f.size - 1
	}
	return st
}

// fillState is a fill's state at one moment, as readers see it.
type fillState struct {
	readable, size   int64
	hashed, verified bool
	err              error
	changed          <-chan struct{}
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
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
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
	resp, err := u.request(ctx, http.MethodGet, name, "/blobs/"+string(d), nil)
	if err != nil {
		return err
	}
	body := resp.Body
	defer func() { body.Close() }()
	sf, err := c.StartFill(ctx, d)
	if err != nil {
		return err
	}
	defer func() { _ = sf.Cancel(context.WithoutCancel(ctx)) }() // after a commit, nothing to cancel
	f.update(func() { f.sf, f.size = sf, resp.ContentLength })

	// A watchdog ends a fill whose upstream stalls.
	progress := make(chan struct{}, 1)
	go func() {
		t := time.NewTimer(stallTimeout)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-progress:
				t.Reset(stallTimeout)
			case <-t.C:
				cancel()
				return
			}
		}
	}()
	buf := make([]byte, maxChunk)
	chunk, retries := firstChunk, 0
	for {
		n, rerr := io.ReadFull(body, buf[:chunk])
		if n > 0 {
			if _, err := sf.Append(ctx, bytes.NewReader(buf[:n]), int64(n)); err != nil {
				return err
			}
			f.update(func() { f.written += int64(n) })
			select {
			case progress <- struct{}{}:
			default:
			}
			chunk = min(chunk*2, maxChunk)
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			if resp.ContentLength < 0 || sf.Size() >= resp.ContentLength {
				break
			}
			rerr = io.ErrUnexpectedEOF
		}
		if rerr != nil {
			// The connection broke: ask for the rest.
			if ctx.Err() != nil || retries == fillRetries || resp.ContentLength < 0 {
				return &remote.UnreachableError{Host: u.reg.Host(), Err: fmt.Errorf("blob %s after %d bytes: %w", d, sf.Size(), rerr)}
			}
			retries++
			body.Close()
			r2, err := u.request(ctx, http.MethodGet, name, "/blobs/"+string(d),
				http.Header{"Range": {fmt.Sprintf("bytes=%d-", sf.Size())}})
			if err != nil {
				return err
			}
			if r2.StatusCode != http.StatusPartialContent {
				r2.Body.Close()
				return fmt.Errorf("%w: upstream %s answered %d to a range request", errBadUpstream, u.name, r2.StatusCode)
			}
			body = r2.Body
			c.log.InfoContext(ctx, "upstream connection broke; fetching the rest", "upstream", u.name, "digest", d, "offset", sf.Size())
		}
	}
	if resp.ContentLength >= 0 && sf.Size() != resp.ContentLength {
		return fmt.Errorf("%w: upstream %s sent %d bytes of blob %s, announced %d", errBadUpstream, u.name, sf.Size(), d, resp.ContentLength)
	}
	if !sf.Verified() {
		return fmt.Errorf("%w: upstream %s: blob %s does not hash to its digest", errBadUpstream, u.name, d)
	}
	// Verified: clients may have the last byte while it is made durable.
	f.update(func() {
		f.hashed = true
		if resp.ContentLength < 0 {
			f.size = sf.Size()
		}
	})
	if _, err := sf.Commit(ctx, repo); err != nil {
		return err
	}
	f.update(func() { f.verified = true })
	c.log.InfoContext(ctx, "blob fetched from upstream", "upstream", u.name, "repo", repo, "digest", d,
		"bytes", sf.Size(), "duration", time.Since(start))
	return nil
}

// follower reads a fill as it grows: what is written is read back from
// the staged content; past it, Read waits.
type follower struct {
	c    *Cache
	f    *fill
	ctx  context.Context
	repo string
	d    digest.Digest
	off  int64
	r    io.ReadCloser
	// done, once the fill is verified and the reader of the staged content
	// failed, is the committed content.
	done io.ReadSeekCloser
}

// Read implements io.Reader.
func (fr *follower) Read(p []byte) (int, error) {
	for {
		st := fr.f.state()
		if st.size >= 0 && fr.off >= st.size && st.readable >= st.size {
			return 0, io.EOF
		}
		if fr.off < st.readable {
			n := int64(len(p))
			n = min(n, st.readable-fr.off)
			return fr.readAt(p[:n])
		}
		if st.err != nil {
			return 0, st.err
		}
		select {
		case <-st.changed:
		case <-fr.ctx.Done():
			return 0, fr.ctx.Err()
		}
	}
}

// readAt reads at the follower's offset from the staged content or, once
// committed, from the store.
func (fr *follower) readAt(p []byte) (int, error) {
	if fr.done != nil {
		n, err := fr.done.Read(p)
		fr.off += int64(n)
		return n, err
	}
	if fr.r == nil {
		fr.f.mu.Lock()
		sf := fr.f.sf
		fr.f.mu.Unlock()
		r, err := sf.Reader(fr.ctx)
		if err != nil {
			return 0, fr.reopen(err)
		}
		fr.r = r
	}
	ra, ok := fr.r.(io.ReaderAt)
	if !ok {
		return 0, fr.reopen(errors.New("staged content cannot be read at an offset"))
	}
	n, err := ra.ReadAt(p, fr.off)
	fr.off += int64(n)
	if n > 0 {
		return n, nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return 0, fr.reopen(err)
}

// reopen switches to the committed content once the fill is verified;
// before, the error stands.
func (fr *follower) reopen(cause error) error {
	for {
		st := fr.f.state()
		if st.verified {
			break
		}
		if !st.hashed || st.err != nil {
			// Before the content is whole and verified, a read that
			// fails is the fill's failure.
			return cause
		}
		// Being committed: the staged content moves into the store.
		select {
		case <-st.changed:
		case <-fr.ctx.Done():
			return fr.ctx.Err()
		}
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
	if fr.r != nil {
		err = fr.r.Close()
	}
	if fr.done != nil {
		err = errors.Join(err, fr.done.Close())
	}
	return err
}
