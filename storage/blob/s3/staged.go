package s3

import (
	"bytes"
	"context"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/blob"
)

// maxStateBytes bounds the state object a session reads: ten thousand
// pieces and a hash state fit well within it.
const maxStateBytes = 4 << 20

// validIDs are the session ids a Store accepts: one plain key segment.
var validIDs = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// validPieces are the names of pieces: the offset in hex and a random
// part, so that a state cannot name another object.
var validPieces = regexp.MustCompile(`^[0-9a-f]{16}-[0-9a-f]{16}$`)

// state is what a session has staged: the session's state object holds
// it as JSON; anonymous content keeps it in memory.
type state struct {
	// Size is the length of the content, the sum of its pieces' sizes.
	Size int64 `json:"size"`
	// LastWrite is when bytes were last appended, or the session began.
	LastWrite time.Time `json:"lastWrite"`
	// PartSize is the size of a full piece, fixed when the session began.
	PartSize int64 `json:"partSize"`
	// Pieces are the objects that hold the content, in order: full
	// pieces of PartSize bytes, then smaller pieces, shorter together
	// than PartSize.
	Pieces []piece `json:"pieces,omitempty"`
	// Hash is the state (encoding.BinaryMarshaler) of the hash the last
	// append was given, after it; empty if that append was given none.
	Hash []byte `json:"hash,omitempty"`
}

// piece is one object of content in flight.
type piece struct {
	// Name is the object's name in its session's directory.
	Name string `json:"name"`
	// Size is its length in bytes.
	Size int64 `json:"size"`
}

// clone returns a copy of st that shares nothing with it.
func (st state) clone() state {
	st.Pieces = append([]piece(nil), st.Pieces...)
	st.Hash = append([]byte(nil), st.Hash...)
	return st
}

// full is the number of full pieces, which come first.
func (st state) full() int {
	for i, p := range st.Pieces {
		if p.Size < st.PartSize {
			return i
		}
	}
	return len(st.Pieces)
}

// check reports a state that breaks its invariants: one this package did
// not write, or that was damaged.
func (st state) check() error {
	if st.PartSize < MinPartSize || st.PartSize > maxPartSize {
		return fmt.Errorf("part size %d out of range", st.PartSize)
	}
	full := st.full()
	var sum, tail int64
	for i, p := range st.Pieces {
		if !validPieces.MatchString(p.Name) || p.Size <= 0 {
			return fmt.Errorf("piece %d (%q, %d bytes) is invalid", i, p.Name, p.Size)
		}
		if i >= full {
			tail += p.Size
		}
		sum += p.Size
	}
	if p := st.Pieces; full < len(p) && tail >= st.PartSize {
		return fmt.Errorf("the %d small pieces hold %d bytes, a part or more", len(p)-full, tail)
	}
	if sum != st.Size {
		return fmt.Errorf("the pieces hold %d bytes, not %d", sum, st.Size)
	}
	return nil
}

// verify checks that the hash state the appends left, if it is of d's
// algorithm, hashes to d: the content is the content its caller verified.
func (st state) verify(d digest.Digest) error {
	if len(st.Hash) == 0 {
		return nil
	}
	h := d.Algorithm().Hash()
	u, ok := h.(encoding.BinaryUnmarshaler)
	if !ok || u.UnmarshalBinary(st.Hash) != nil {
		return nil // kept for another algorithm
	}
	if got := digest.NewDigest(d.Algorithm(), h); got != d {
		return fmt.Errorf("the %d bytes staged hash to %s, not %s", st.Size, got, d)
	}
	return nil
}

// memState is the state of anonymous content.
type memState struct {
	st    state
	ended bool
}

// staged is content in flight: an upload session, whose state is its
// state object, or anonymous content, whose state is in mem. Several
// values for one session (one per request, say) see the same content.
type staged struct {
	s   *Store
	id  string    // the session id; empty for anonymous content
	dir string    // the key prefix of its objects, ending in a slash
	mem *memState // the state of anonymous content; nil for a session
}

var (
	_ blob.Staged     = (*staged)(nil)
	_ blob.HashStater = (*staged)(nil)
)

func (sg *staged) String() string {
	if sg.id == "" {
		return "anonymous content " + strings.TrimSuffix(sg.s.rel(sg.dir), "/")
	}
	return "upload " + sg.id
}

func (sg *staged) stateKey() string { return sg.dir + stateName }

// Stage implements blob.Store. A session begins with its state object,
// written only if there is none (If-None-Match), so Stage of a live id
// fails and leaves it as it is. Anonymous content writes nothing yet.
func (s *Store) Stage(ctx context.Context, id string) (blob.Staged, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	st := state{LastWrite: time.Now().UTC(), PartSize: s.partSize}
	if id == "" {
		return &staged{s: s, dir: s.key(tmpDir + randomName() + "/"), mem: &memState{st: st}}, nil
	}
	if !validIDs.MatchString(id) {
		return nil, fmt.Errorf("invalid upload session id %q", id)
	}
	sg := &staged{s: s, id: id, dir: s.key(uploadsDir + id + "/")}
	body, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", sg, err)
	}
	_, err = s.client.PutObject(ctx, &awss3.PutObjectInput{Bucket: &s.bucket, Key: aws.String(sg.stateKey()),
		Body: bytes.NewReader(body), ContentLength: aws.Int64(int64(len(body))), ContentType: aws.String("application/json"),
		IfNoneMatch: aws.String("*")})
	switch {
	case preconditionFailed(err) || conflict(err):
		return nil, fmt.Errorf("create %s: the session exists already", sg)
	case err != nil:
		return nil, failed("create "+sg.String(), err)
	}
	return sg, nil
}

// Resume implements blob.Store: the session must have its state object.
func (s *Store) Resume(ctx context.Context, id string) (blob.Staged, error) {
	if !validIDs.MatchString(id) {
		return nil, fmt.Errorf("%w: invalid upload session id %q", blob.ErrNotFound, id)
	}
	sg := &staged{s: s, id: id, dir: s.key(uploadsDir + id + "/")}
	if _, err := s.client.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: &s.bucket, Key: aws.String(sg.stateKey())}); err != nil {
		return nil, failed(sg.String(), err)
	}
	return sg, nil
}

// WalkStaged implements blob.Store: it calls fn for every session that
// has a state object, in lexical order of ids. Pieces whose session has
// no state (left by a crash while it ended) are not sessions; Open
// removes them once they are stale.
func (s *Store) WalkStaged(ctx context.Context, fn func(blob.Entry) error) error {
	p := awss3.NewListObjectsV2Paginator(s.client, &awss3.ListObjectsV2Input{Bucket: &s.bucket,
		Prefix: aws.String(s.key(uploadsDir)), Delimiter: aws.String("/")})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return failed("list "+uploadsDir, err)
		}
		for _, cp := range page.CommonPrefixes {
			id := strings.TrimSuffix(strings.TrimPrefix(s.rel(aws.ToString(cp.Prefix)), uploadsDir), "/")
			if !validIDs.MatchString(id) {
				continue
			}
			sg := &staged{s: s, id: id, dir: aws.ToString(cp.Prefix)}
			st, _, err := sg.load(ctx)
			if errors.Is(err, blob.ErrNotFound) {
				continue // ended meanwhile, or debris
			}
			if err != nil {
				return err
			}
			if err := fn(blob.Entry{Name: id, Size: st.Size}); err != nil {
				return err
			}
		}
	}
	return nil
}

// load reads the state and the version (ETag) it was read at, or fails
// with ErrNotFound once the content was committed or cancelled.
func (sg *staged) load(ctx context.Context) (state, string, error) {
	if sg.mem != nil {
		if sg.mem.ended {
			return state{}, "", fmt.Errorf("%w: %s", blob.ErrNotFound, sg)
		}
		return sg.mem.st.clone(), "", nil
	}
	out, err := sg.s.client.GetObject(ctx, &awss3.GetObjectInput{Bucket: &sg.s.bucket, Key: aws.String(sg.stateKey())})
	if err != nil {
		return state{}, "", failed(sg.String(), err)
	}
	defer out.Body.Close()
	body, err := io.ReadAll(io.LimitReader(out.Body, maxStateBytes+1))
	if err != nil {
		return state{}, "", failed("read the state of "+sg.String(), err)
	}
	if len(body) > maxStateBytes {
		return state{}, "", fmt.Errorf("the state of %s is larger than %d bytes", sg, maxStateBytes)
	}
	var st state
	if err := json.Unmarshal(body, &st); err != nil {
		return state{}, "", fmt.Errorf("the state of %s: %w", sg, err)
	}
	if err := st.check(); err != nil {
		return state{}, "", fmt.Errorf("the state of %s is damaged: %w", sg, err)
	}
	return st, aws.ToString(out.ETag), nil
}

// errUnsure means a state write failed in a way that leaves unknown
// whether it took effect.
var errUnsure = errors.New("the outcome of writing the state is unknown")

// save replaces the state read at version etag with next. It fails if
// the state changed meanwhile (ErrNotFound if the session ended), and
// wraps errUnsure when it cannot tell whether the write took effect.
func (sg *staged) save(ctx context.Context, next state, etag string) error {
	if sg.mem != nil {
		sg.mem.st = next
		return nil
	}
	body, err := json.Marshal(next)
	if err != nil {
		return fmt.Errorf("save the state of %s: %w", sg, err)
	}
	key := sg.stateKey()
	_, err = sg.s.client.PutObject(ctx, &awss3.PutObjectInput{Bucket: &sg.s.bucket, Key: &key,
		Body: bytes.NewReader(body), ContentLength: aws.Int64(int64(len(body))), ContentType: aws.String("application/json"),
		IfMatch: &etag})
	if err == nil {
		return nil
	}
	cctx, cancel := cleanupContext(ctx)
	defer cancel()
	if preconditionFailed(err) || conflict(err) || notFound(err) {
		if _, herr := sg.s.client.HeadObject(cctx, &awss3.HeadObjectInput{Bucket: &sg.s.bucket, Key: &key}); notFound(herr) {
			return fmt.Errorf("%w: %s ended meanwhile", blob.ErrNotFound, sg)
		}
		return fmt.Errorf("save the state of %s: another writer changed it meanwhile: %w", sg, err)
	}
	// The request failed, but may have taken effect all the same: the
	// state says which, since ours is unlike any other.
	out, gerr := sg.s.client.GetObject(cctx, &awss3.GetObjectInput{Bucket: &sg.s.bucket, Key: &key})
	if gerr == nil {
		got, rerr := io.ReadAll(io.LimitReader(out.Body, maxStateBytes+1))
		_ = out.Body.Close()
		if rerr == nil {
			if bytes.Equal(got, body) {
				return nil
			}
			return failed("save the state of "+sg.String(), err)
		}
	}
	return fmt.Errorf("%w: %w", errUnsure, failed("save the state of "+sg.String(), err))
}

// Size implements blob.Staged.
func (sg *staged) Size(ctx context.Context) (int64, error) {
	st, _, err := sg.load(ctx)
	return st.Size, err
}

// LastWrite implements blob.Staged: the later of the state's last write
// and the newest object of the session from the first piece an append
// could write on (the pieces an append in progress has written, which no
// state lists yet), so that an append running on any replica keeps its
// session active as each part of it arrives. The objects' times are the
// object store's clock.
func (sg *staged) LastWrite(ctx context.Context) (time.Time, error) {
	st, _, err := sg.load(ctx)
	if err != nil || sg.mem != nil {
		return st.LastWrite, err
	}
	last := st.LastWrite
	// Pieces are named by their offset: an append writes at or after the
	// first small piece, or the end of the full ones.
	after := sg.dir + fmt.Sprintf("%016x", int64(st.full())*st.PartSize)
	p := awss3.NewListObjectsV2Paginator(sg.s.client, &awss3.ListObjectsV2Input{Bucket: &sg.s.bucket,
		Prefix: aws.String(sg.dir), StartAfter: aws.String(after)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return time.Time{}, failed("list the pieces of "+sg.String(), err)
		}
		for _, o := range page.Contents {
			if t := aws.ToTime(o.LastModified); t.After(last) {
				last = t
			}
		}
	}
	return last, nil
}

// HashState implements blob.HashStater.
func (sg *staged) HashState(ctx context.Context) (int64, []byte, error) {
	st, _, err := sg.load(ctx)
	return st.Size, st.Hash, err
}

// Reader implements blob.Staged: it reads the pieces the state lists, one
// after the other.
func (sg *staged) Reader(ctx context.Context) (io.ReadCloser, error) {
	st, _, err := sg.load(ctx)
	if err != nil {
		return nil, err
	}
	return &pieces{s: sg.s, ctx: ctx, dir: sg.dir, what: sg.String(), list: st.Pieces}, nil
}

// readPieces reads the pieces ps into p, which is exactly as long as
// they are together.
func (sg *staged) readPieces(ctx context.Context, ps []piece, p []byte) error {
	r := &pieces{s: sg.s, ctx: ctx, dir: sg.dir, what: sg.String(), list: ps}
	defer r.Close()
	if _, err := io.ReadFull(r, p); err != nil {
		return fmt.Errorf("read back %d bytes of %s: %w", len(p), sg, err)
	}
	return nil
}

// Append implements blob.Staged; see the package comment. It reads the
// client's bytes a part at a time into a buffer, writes full pieces as
// the buffer fills (the small pieces before them read back into its head)
// and what remains as a small piece, then replaces the state: only that
// makes the pieces part of the content. On any failure the pieces it
// wrote are removed, h is restored and 0 is returned. An error of the
// reader, such as io.ErrUnexpectedEOF, and the context's error are
// wrapped, so errors.Is finds them.
//
// A hash h given while the state keeps the hash state of earlier appends
// must be in that same state: a hash that disagrees with the content
// could make a commit publish content under a digest it does not have.
func (sg *staged) Append(ctx context.Context, r io.Reader, want int64, h hash.Hash) (n int64, err error) {
	var saved []byte
	var restore encoding.BinaryUnmarshaler
	if h != nil {
		m, ok1 := h.(encoding.BinaryMarshaler)
		u, ok2 := h.(encoding.BinaryUnmarshaler)
		if !ok1 || !ok2 {
			return 0, fmt.Errorf("append to %s: the hash cannot save and restore its state", sg)
		}
		if saved, err = m.MarshalBinary(); err != nil {
			return 0, fmt.Errorf("append to %s: save hash state: %w", sg, err)
		}
		restore = u
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("append to %s: %w", sg, err)
	}
	cur, etag, err := sg.load(ctx)
	if err != nil {
		return 0, err
	}
	if h != nil && len(cur.Hash) > 0 && !bytes.Equal(saved, cur.Hash) {
		return 0, fmt.Errorf("append to %s: the hash given is not in the state of the hash of the %d bytes staged", sg, cur.Size)
	}
	var written []string // keys of the pieces this append wrote
	keep := false        // whether they may be part of the content
	defer func() {
		if err == nil {
			return
		}
		n = 0
		if restore != nil {
			if rerr := restore.UnmarshalBinary(saved); rerr != nil {
				err = errors.Join(err, fmt.Errorf("restore hash state: %w", rerr))
			}
		}
		if len(written) > 0 && !keep {
			cctx, cancel := cleanupContext(ctx)
			defer cancel()
			if derr := sg.s.deleteKeys(cctx, written); derr != nil {
				sg.s.log.WarnContext(ctx, "remove the pieces of a failed append", "staged", sg.String(), "error", derr)
			}
		}
	}()

	src := r
	if want >= 0 {
		src = io.LimitReader(r, want+1) // one more, to see a longer body
	}
	if h != nil {
		src = io.TeeReader(src, h)
	}
	src = contextReader{ctx, src}
	part := cur.PartSize
	buf := sg.s.buffer(part)
	defer sg.s.release(buf)

	next := cur.clone()
	full := next.full()
	tailSize := next.Size - int64(full)*part // bytes of the small pieces
	var consumed []string                    // small pieces merged into a full one
	var read int64
	for {
		k, rerr := fill(src, buf[tailSize:part])
		read += int64(k)
		if want >= 0 && read > want {
			return 0, fmt.Errorf("%w: more than the %d bytes declared", blob.ErrSizeMismatch, want)
		}
		if rerr != nil && !errors.Is(rerr, io.EOF) {
			return 0, fmt.Errorf("append to %s after %d bytes: %w", sg, read, rerr)
		}
		if rerr == nil {
			// The buffer is full: a full piece, the small pieces first.
			if full+1 >= maxParts {
				return 0, fmt.Errorf("append to %s: content longer than %d bytes needs a larger part size than %d", sg, int64(maxParts-1)*part, part)
			}
			if tailSize > 0 {
				if err := sg.readPieces(ctx, next.Pieces[full:], buf[:tailSize]); err != nil {
					return 0, err
				}
				for _, p := range next.Pieces[full:] {
					consumed = append(consumed, sg.dir+p.Name)
				}
			}
			name := pieceName(int64(full) * part)
			if err := sg.s.putPiece(ctx, sg.dir+name, buf[:part]); err != nil {
				return 0, fmt.Errorf("append to %s: %w", sg, err)
			}
			written = append(written, sg.dir+name)
			next.Pieces = append(next.Pieces[:full], piece{Name: name, Size: part})
			next.Size += int64(k)
			full++
			tailSize = 0
			continue
		}
		// The reader ended: what it gave last is a small piece.
		if k > 0 {
			name := pieceName(next.Size)
			if err := sg.s.putPiece(ctx, sg.dir+name, buf[tailSize:tailSize+int64(k)]); err != nil {
				return 0, fmt.Errorf("append to %s: %w", sg, err)
			}
			written = append(written, sg.dir+name)
			next.Pieces = append(next.Pieces, piece{Name: name, Size: int64(k)})
			next.Size += int64(k)
		}
		break
	}
	if want >= 0 && read != want {
		return 0, fmt.Errorf("%w: %d bytes, %d declared", blob.ErrSizeMismatch, read, want)
	}
	if read == 0 {
		return 0, nil
	}
	next.LastWrite = time.Now().UTC()
	next.Hash = nil
	if h != nil {
		if next.Hash, err = h.(encoding.BinaryMarshaler).MarshalBinary(); err != nil {
			return 0, fmt.Errorf("append to %s: save hash state: %w", sg, err)
		}
	}
	if err := sg.save(ctx, next, etag); err != nil {
		keep = errors.Is(err, errUnsure)
		return 0, fmt.Errorf("append to %s: %w", sg, err)
	}
	if len(consumed) > 0 {
		if err := sg.s.deleteKeys(ctx, consumed); err != nil {
			// Debris: no state names them; once the session has
			// ended, Open removes them when they are stale.
			sg.s.log.WarnContext(ctx, "remove pieces merged into a full one", "staged", sg.String(), "error", err)
		}
	}
	return read, nil
}

// pieceName names a piece that starts at offset off.
func pieceName(off int64) string { return fmt.Sprintf("%016x-%s", off, randomName()) }

// fill reads from r until p is full (returning nil) or r ends (returning
// io.EOF, with what it read), or fails. A reader that returns its last
// bytes with io.EOF (an HTTP body of known length does) and so fills p
// exactly has filled it: the next fill sees the end.
func fill(r io.Reader, p []byte) (int, error) {
	n := 0
	for n < len(p) {
		k, err := r.Read(p[n:])
		n += k
		if err != nil {
			if n == len(p) && errors.Is(err, io.EOF) {
				return n, nil
			}
			return n, err
		}
	}
	return n, nil
}

// contextReader stops a copy once its context is done.
type contextReader struct {
	ctx context.Context
	r   io.Reader
}

func (c contextReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Commit implements blob.Staged; see the package comment. A session whose
// content an earlier failed Commit had already made visible commits again
// without error. A session whose Commit fails before keeps its content;
// anonymous content is removed by a failed Commit, since nothing else can
// reach it.
func (sg *staged) Commit(ctx context.Context, d digest.Digest) (err error) {
	if sg.mem != nil {
		defer func() {
			if err != nil {
				cctx, cancel := cleanupContext(ctx)
				defer cancel()
				if cerr := sg.Cancel(cctx); cerr != nil {
					sg.s.log.WarnContext(ctx, "remove content in flight", "staged", sg.String(), "error", cerr)
				}
			}
		}()
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("commit %s: %w", sg, err)
	}
	name, err := blobName(d)
	if err != nil {
		return fmt.Errorf("commit %s: %w", sg, err)
	}
	cur, _, err := sg.load(ctx)
	if errors.Is(err, blob.ErrNotFound) && sg.mem == nil {
		if _, serr := sg.s.Stat(ctx, d); serr == nil {
			return nil
		}
	}
	if err != nil {
		return err
	}
	if err := cur.verify(d); err != nil {
		return fmt.Errorf("commit %s: %w", sg, err)
	}
	if err := sg.place(ctx, sg.s.key(name), cur); err != nil {
		return fmt.Errorf("commit %s as %s: %w", sg, d, err)
	}
	return sg.end(ctx, cur)
}

// place makes the content cur describes visible under key, in one step.
func (sg *staged) place(ctx context.Context, key string, cur state) error {
	s := sg.s
	full := cur.full()
	if full == 0 {
		// Less than a part: read back, and written once.
		data := make([]byte, cur.Size)
		if err := sg.readPieces(ctx, cur.Pieces, data); err != nil {
			return err
		}
		return s.putIfAbsent(ctx, key, data, s.rel(key))
	}
	out, err := s.client.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: &s.bucket, Key: &key})
	switch {
	case err == nil && aws.ToInt64(out.ContentLength) == cur.Size:
		return nil // present already; content under a digest never changes
	case err == nil:
		s.log.WarnContext(ctx, "replacing an object of the wrong length in the place of a blob", "key", key,
			"size", aws.ToInt64(out.ContentLength), "want", cur.Size)
	case !notFound(err):
		return failed("stat "+s.rel(key), err)
	}
	if full == 1 && len(cur.Pieces) == 1 {
		return s.copyObject(ctx, sg.dir+cur.Pieces[0].Name, key, cur.Size)
	}
	return s.assemble(ctx, key, sg, cur)
}

// end ends the session (its state object goes first: then it is gone for
// everyone) and removes the pieces of cur. Debris that failed appends
// could not remove, and pieces whose removal fails here, stay under the
// session's directory without a state, which Open removes once stale.
func (sg *staged) end(ctx context.Context, cur state) error {
	if sg.mem != nil {
		sg.mem.ended = true
	} else if err := sg.s.deleteKey(ctx, sg.stateKey(), "the state of "+sg.String()); err != nil {
		return err
	}
	keys := make([]string, len(cur.Pieces))
	for i, p := range cur.Pieces {
		keys[i] = sg.dir + p.Name
	}
	if err := sg.s.deleteKeys(ctx, keys); err != nil {
		sg.s.log.WarnContext(ctx, "remove the pieces of ended content in flight", "staged", sg.String(), "error", err)
	}
	return nil
}

// Cancel implements blob.Staged: it ends the session and removes its
// pieces. Cancelling what was committed or cancelled already does
// nothing.
func (sg *staged) Cancel(ctx context.Context) error {
	cur, _, err := sg.load(ctx)
	if errors.Is(err, blob.ErrNotFound) {
		return nil
	}
	if err == nil {
		err = sg.end(ctx, cur)
	}
	if err != nil {
		return fmt.Errorf("cancel %s: %w", sg, err)
	}
	return nil
}
