package storage

import (
	"context"
	"encoding"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/blob"
	"github.com/berth-registry/berth/storage/meta"
)

// The upload protocol. A session is an index record (its repository,
// digest algorithm, start and owner) and content staged in the blob store
// under the session's id. Appends are all or nothing; the commit verifies
// the digest, makes the content durable under it and, in one transaction,
// records the blob, links it and ends the session.
//
// Any replica sharing the index and the blob store may serve any request
// of a session: the record and the staged content are the session's whole
// state. Each Service caches the running hash and offset of the sessions
// it serves, to save rehashing, and trusts that cache only while the
// staged content's size is the cached offset: appends only ever add bytes
// and ids are never reused, so an equal size means the same content. When
// another replica appended meanwhile (or this process has not seen the
// session: after a restart), the hash is rebuilt from the hash state a
// blob store keeps with the content (blob.HashStater), or by reading the
// staged content back.
//
// A session's lock serialises the requests of one process. Requests of
// one session that run at once on two replicas are a client's error; a
// blob store that keeps the hash state with the content (storage/blob/s3)
// refuses an append whose hash is not in the state of the content staged,
// and a commit whose content does not hash to its digest, so they fail
// rather than corrupt anything.

// UploadInfo describes an upload session.
type UploadInfo struct {
	// ID names the session in its Location URL.
	ID string
	// Repo is the repository the session belongs to.
	Repo string
	// Offset is the number of bytes received so far.
	Offset int64
	// Started is when the session was opened.
	Started time.Time
}

// session is the cached state of an upload: its running hash and offset,
// valid while the staged content is offset bytes long.
type session struct {
	mu     sync.Mutex
	alg    digest.Algorithm
	hash   hash.Hash
	offset int64
	gone   bool
}

// sessionTable maps session ids to their cached state. Its lock guards only
// the map; each session has its own lock for the bytes in flight. An
// entry goes when this process ends its session; one another replica
// ended goes when this process looks the session up again and finds it
// unknown, or at its next ExpireUploads (prune).
type sessionTable struct {
	mu sync.Mutex
	m  map[string]*session
}

func newSessionTable() *sessionTable { return &sessionTable{m: map[string]*session{}} }

// entry returns the live state of session id, adding an empty one (to be
// rebuilt from the staged content) if this process has not seen it.
func (t *sessionTable) entry(id string) *session {
	t.mu.Lock()
	defer t.mu.Unlock()
	sess, ok := t.m[id]
	if !ok {
		sess = &session{}
		t.m[id] = sess
	}
	return sess
}

// forget drops a session that ended; ids are never reused.
func (t *sessionTable) forget(id string, sess *session) {
	sess.gone = true
	t.mu.Lock()
	if t.m[id] == sess {
		delete(t.m, id)
	}
	t.mu.Unlock()
}

// ids returns the ids of the sessions cached now.
func (t *sessionTable) ids() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	ids := make([]string, 0, len(t.m))
	for id := range t.m {
		ids = append(ids, id)
	}
	return ids
}

// prune forgets the cached sessions among ids that live does not hold
// (their records were gone when live was read after ids: another replica
// ended them), unless a request holds them, so that the table holds no
// more than the open sessions this process served.
func (t *sessionTable) prune(ids []string, live map[string]bool) {
	for _, id := range ids {
		if live[id] {
			continue
		}
		t.mu.Lock()
		sess, ok := t.m[id]
		t.mu.Unlock()
		if !ok || !sess.mu.TryLock() {
			continue
		}
		t.forget(id, sess)
		sess.mu.Unlock()
	}
}

// StartUpload opens an upload session in repo for the actor ctx carries,
// who alone may use it. alg is the digest algorithm the client announced,
// or empty for sha256.
func (s *Service) StartUpload(ctx context.Context, repo string, alg digest.Algorithm) (UploadInfo, error) {
	if alg == "" {
		alg = digest.Canonical
	}
	if !alg.Available() {
		return UploadInfo{}, fmt.Errorf("%w: digest algorithm %q", ErrUnsupported, alg)
	}
	id, err := newID()
	if err != nil {
		return UploadInfo{}, err
	}
	st, err := s.blobs.Stage(ctx, id)
	if err != nil {
		return UploadInfo{}, fmt.Errorf("create upload: %w", err)
	}
	rec := meta.Upload{Repo: repo, Algorithm: string(alg), Started: s.now(), Owner: owner(ActorFrom(ctx))}
	err = s.index.Update(ctx, func(tx meta.Tx) error { return tx.PutUpload(id, rec) })
	if err != nil {
		_ = st.Cancel(ctx)
		return UploadInfo{}, fmt.Errorf("record upload: %w", err)
	}
	s.sessions.mu.Lock()
	s.sessions.m[id] = &session{alg: alg, hash: alg.Hash()}
	s.sessions.mu.Unlock()
	return UploadInfo{ID: id, Repo: repo, Started: rec.Started}, nil
}

// lookupUpload reads the session record and checks that it belongs to
// repo and to the actor ctx carries: to anyone else the session does not
// exist.
func (s *Service) lookupUpload(ctx context.Context, repo, id string) (meta.Upload, error) {
	var rec meta.Upload
	err := s.index.View(ctx, func(tx meta.Tx) error {
		var ok bool
		var err error
		rec, ok, err = tx.Upload(id)
		if err != nil {
			return err
		}
		if !ok || rec.Repo != repo || (rec.Owner != "" && rec.Owner != owner(ActorFrom(ctx))) {
			return fmt.Errorf("%w: %s", ErrUploadUnknown, id)
		}
		return nil
	})
	return rec, err
}

// acquire returns the session locked with its staged content, rebuilding
// its hash if this process has not seen it yet or the content's size is
// not the one it cached (another replica appended). The record is read
// under the session's lock, so a session ended by a concurrent request is
// reported unknown.
func (s *Service) acquire(ctx context.Context, repo, id string) (*session, meta.Upload, blob.Staged, error) {
	// Check first, so that unknown ids never enter the table.
	if rec, err := s.lookupUpload(ctx, repo, id); err != nil {
		return nil, rec, nil, err
	}
	sess := s.sessions.entry(id)
	sess.mu.Lock()
	rec, err := s.lookupUpload(ctx, repo, id)
	if err == nil && sess.gone {
		err = fmt.Errorf("%w: %s", ErrUploadUnknown, id)
	}
	var st blob.Staged
	if err == nil {
		st, err = s.blobs.Resume(ctx, id)
		if errors.Is(err, blob.ErrNotFound) {
			// A crash after the content was committed and before the
			// index recorded it leaves a record without its content: the
			// session cannot go on, so it ends here.
			_ = s.index.Update(ctx, func(tx meta.Tx) error { return tx.DeleteUpload(id) })
			err = fmt.Errorf("%w: %s (its content is gone)", ErrUploadUnknown, id)
		}
	}
	if err == nil && sess.hash != nil {
		// The cache holds only while nobody else appended.
		var size int64
		if size, err = st.Size(ctx); errors.Is(err, blob.ErrNotFound) {
			err = fmt.Errorf("%w: %s", ErrUploadUnknown, id)
		} else if err == nil && size != sess.offset {
			sess.hash = nil
		}
	}
	if err == nil && sess.hash == nil {
		sess.alg = digest.Algorithm(rec.Algorithm)
		err = s.rehash(ctx, st, sess)
	}
	if err != nil {
		if errors.Is(err, ErrUploadUnknown) {
			// Ended (here or on another replica): ids are never reused,
			// so drop the entry.
			s.sessions.forget(id, sess)
		}
		sess.mu.Unlock()
		return nil, rec, nil, err
	}
	return sess, rec, st, nil
}

// rehash rebuilds the session's hash and offset: from the hash state the
// blob store keeps with the content when it does (blob.HashStater) and the
// state is of the session's algorithm, else by reading the content back.
func (s *Service) rehash(ctx context.Context, st blob.Staged, sess *session) error {
	if !sess.alg.Available() {
		return fmt.Errorf("%w: digest algorithm %q", ErrUnsupported, sess.alg)
	}
	if hs, ok := st.(blob.HashStater); ok {
		size, state, err := hs.HashState(ctx)
		if err != nil {
			return fmt.Errorf("reopen upload: %w", err)
		}
		h := sess.alg.Hash()
		if u, ok := h.(encoding.BinaryUnmarshaler); ok && len(state) > 0 && u.UnmarshalBinary(state) == nil {
			sess.hash, sess.offset = h, size
			return nil
		}
	}
	r, err := st.Reader(ctx)
	if err != nil {
		return fmt.Errorf("reopen upload: %w", err)
	}
	defer r.Close()
	h := sess.alg.Hash()
	n, err := io.Copy(h, r)
	if err != nil {
		return fmt.Errorf("rehash upload: %w", err)
	}
	sess.hash, sess.offset = h, n
	return nil
}

// UploadStatus reports how many bytes the session has received.
func (s *Service) UploadStatus(ctx context.Context, repo, id string) (UploadInfo, error) {
	sess, rec, _, err := s.acquire(ctx, repo, id)
	if err != nil {
		return UploadInfo{}, err
	}
	defer sess.mu.Unlock()
	return UploadInfo{ID: id, Repo: repo, Offset: sess.offset, Started: rec.Started}, nil
}

// AppendUpload appends a chunk to the session. start is the offset the
// client says the chunk begins at, or -1 when it did not say; length is the
// chunk's declared length, or -1 when unknown. A chunk that does not start
// at the current offset is refused with ErrRangeInvalid. A chunk that fails
// midway is rolled back, so the session stays as it was.
func (s *Service) AppendUpload(ctx context.Context, repo, id string, start int64, r io.Reader, length int64) (UploadInfo, error) {
	sess, rec, st, err := s.acquire(ctx, repo, id)
	if err != nil {
		return UploadInfo{}, err
	}
	defer sess.mu.Unlock()
	err = appendLocked(ctx, st, sess, start, r, length)
	return UploadInfo{ID: id, Repo: repo, Offset: sess.offset, Started: rec.Started}, err
}

func appendLocked(ctx context.Context, st blob.Staged, sess *session, start int64, r io.Reader, length int64) error {
	if start >= 0 && start != sess.offset {
		return detailf(ErrRangeInvalid, map[string]any{"offset": sess.offset}, "chunk starts at %d, upload is at %d", start, sess.offset)
	}
	n, err := st.Append(ctx, r, length, sess.hash)
	if err != nil {
		return appendError("write chunk", n, err)
	}
	sess.offset += n
	return nil
}

// CommitUpload appends a last chunk (r may be nil), verifies that the whole
// upload hashes to d, makes it durable under d and links it into repo. The
// session ends whether or not the digest matched: a failed upload leaves
// nothing.
func (s *Service) CommitUpload(ctx context.Context, repo, id string, d digest.Digest, start int64, r io.Reader, length int64) (BlobInfo, error) {
	if err := validDigest(d); err != nil {
		return BlobInfo{}, err
	}
	sess, _, st, err := s.acquire(ctx, repo, id)
	if err != nil {
		return BlobInfo{}, err
	}
	defer sess.mu.Unlock()
	if r != nil {
		if err := appendLocked(ctx, st, sess, start, r, length); err != nil {
			return BlobInfo{}, err
		}
	}
	if d.Algorithm() != sess.alg {
		sess.alg = d.Algorithm()
		if err := s.rehash(ctx, st, sess); err != nil {
			return BlobInfo{}, err
		}
	}
	if got := digest.NewDigest(sess.alg, sess.hash); got != d {
		if err := s.endLocked(ctx, id, sess, st); err != nil {
			return BlobInfo{}, err
		}
		return BlobInfo{}, detailf(ErrDigestMismatch, map[string]any{"digest": string(d)}, "upload hashes to %s", got)
	}
	info := BlobInfo{Digest: d, Size: sess.offset}
	err = s.commitBlob(ctx, repo, st, info, func(tx *Tx) error { return tx.DeleteUpload(id) })
	if err != nil {
		if _, rerr := s.blobs.Resume(ctx, id); errors.Is(rerr, blob.ErrNotFound) {
			// The content was committed before the failure, so the
			// session has nothing left to resume: end it rather than
			// leave a record without its content. The committed content
			// is complete and verified; a later push of it records it.
			_ = s.endLocked(ctx, id, sess, st)
		}
		return BlobInfo{}, err
	}
	s.sessions.forget(id, sess)
	return info, nil
}

// CancelUpload ends the session and removes what it received.
func (s *Service) CancelUpload(ctx context.Context, repo, id string) error {
	sess, _, st, err := s.acquire(ctx, repo, id)
	if err != nil {
		return err
	}
	defer sess.mu.Unlock()
	return s.endLocked(ctx, id, sess, st)
}

// endLocked deletes a session's record, then its staged content.
func (s *Service) endLocked(ctx context.Context, id string, sess *session, st blob.Staged) error {
	err := s.index.Update(ctx, func(tx meta.Tx) error { return tx.DeleteUpload(id) })
	if err != nil {
		return fmt.Errorf("delete upload record: %w", err)
	}
	s.sessions.forget(id, sess)
	if err := st.Cancel(ctx); err != nil {
		return fmt.Errorf("remove upload content: %w", err)
	}
	return nil
}

// ExpireUploads ends every upload session that has received nothing for at
// least idle as of now, removing its content and record, and returns how
// many it ended. Activity is the staged content's last write, which the
// blob store keeps with the content (so appending costs no index write),
// and which counts the bytes of an append in progress on any replica: a
// session another replica is appending to is active. A session that a
// request of this process holds at that moment is active and left alone.
// It also forgets the cached state of sessions that other replicas ended.
func (s *Service) ExpireUploads(ctx context.Context, idle time.Duration, now time.Time) (int, error) {
	type candidate struct {
		id      string
		started time.Time
	}
	var all []candidate
	cached := s.sessions.ids()
	live := map[string]bool{}
	err := s.index.View(ctx, func(tx meta.Tx) error {
		all = all[:0]
		clear(live)
		return tx.Uploads(func(id string, u meta.Upload) error {
			all = append(all, candidate{id, u.Started})
			live[id] = true
			return nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("list uploads: %w", err)
	}
	s.sessions.prune(cached, live)
	ended := 0
	for _, c := range all {
		if err := ctx.Err(); err != nil {
			return ended, err
		}
		if !s.idleSince(ctx, c.id, c.started, now, idle) {
			continue
		}
		sess := s.sessions.entry(c.id)
		if !sess.mu.TryLock() {
			continue // a request is using it right now
		}
		// Look again under the lock: a chunk may have landed meanwhile, or
		// the session may have ended.
		if sess.gone || !s.idleSince(ctx, c.id, c.started, now, idle) {
			sess.mu.Unlock()
			continue
		}
		err := s.expireLocked(ctx, c.id, sess)
		sess.mu.Unlock()
		if err != nil {
			return ended, fmt.Errorf("expire upload %s: %w", c.id, err)
		}
		s.log.DebugContext(ctx, "upload session expired", "id", c.id)
		ended++
	}
	return ended, nil
}

// expireLocked ends an idle session, whose content may be gone.
func (s *Service) expireLocked(ctx context.Context, id string, sess *session) error {
	st, err := s.blobs.Resume(ctx, id)
	if errors.Is(err, blob.ErrNotFound) {
		err = s.index.Update(ctx, func(tx meta.Tx) error { return tx.DeleteUpload(id) })
		s.sessions.forget(id, sess)
		return err
	}
	if err != nil {
		return err
	}
	return s.endLocked(ctx, id, sess, st)
}

// idleSince reports whether the session has been idle for at least idle.
// A session whose content is missing (a crash between creating it and its
// record, or committing it and ending the record) counts from when it
// started.
func (s *Service) idleSince(ctx context.Context, id string, started, now time.Time, idle time.Duration) bool {
	last := started
	st, err := s.blobs.Resume(ctx, id)
	switch {
	case err == nil:
		t, err := st.LastWrite(ctx)
		if err != nil {
			return false
		}
		last = t
	case !errors.Is(err, blob.ErrNotFound):
		return false
	}
	return now.Sub(last) >= idle
}
