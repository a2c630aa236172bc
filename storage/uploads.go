package storage

import (
	"context"
	"encoding"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

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

type uploadRecord struct {
	Repo      string    `json:"repo"`
	Algorithm string    `json:"algorithm"`
	Started   time.Time `json:"started"`
	// Owner is who opened the session (issue 12): only the same kind and
	// name of actor may go on with it. Records written before owners were
	// kept have none, and stay open to any caller until they expire.
	Owner *uploadOwner `json:"owner,omitempty"`
}

// uploadOwner is the actor that opened an upload session, without its
// address: a client may reconnect from another one.
type uploadOwner struct {
	Kind string `json:"kind"`
	Name string `json:"name,omitempty"`
}

// ownerOf is the owner a request's actor makes of the sessions it opens.
func ownerOf(ctx context.Context) *uploadOwner {
	a := ActorFrom(ctx)
	return &uploadOwner{Kind: a.Kind, Name: a.Name}
}

// session is the live state of an upload: its running hash and offset. It is
// rebuilt from the file on disk when missing, for instance after a restart.
type session struct {
	mu     sync.Mutex
	alg    digest.Algorithm
	hash   hash.Hash
	offset int64
	gone   bool
}

// sessionTable maps session ids to their live state. Its lock guards only
// the map; each session has its own lock for the bytes in flight.
type sessionTable struct {
	mu sync.Mutex
	m  map[string]*session
}

func newSessionTable() *sessionTable { return &sessionTable{m: map[string]*session{}} }

// entry returns the live state of session id, adding an empty one (to be
// rebuilt from disk) if this process has not seen it.
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

func (s *Store) uploadPath(id string) string { return filepath.Join(s.root, "uploads", id) }

// StartUpload opens an upload session in repo. alg is the digest algorithm
// the client announced, or empty for sha256.
func (s *Store) StartUpload(ctx context.Context, repo string, alg digest.Algorithm) (UploadInfo, error) {
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
	f, err := s.fs.OpenFile(s.uploadPath(id), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return UploadInfo{}, fmt.Errorf("create upload file: %w", err)
	}
	if err := f.Close(); err != nil {
		return UploadInfo{}, fmt.Errorf("create upload file: %w", err)
	}
	rec := uploadRecord{Repo: repo, Algorithm: string(alg), Started: time.Now().UTC(), Owner: ownerOf(ctx)}
	err = s.db.Update(func(tx *bolt.Tx) error {
		return putJSON(tx.Bucket(bucketUploads), []byte(id), rec)
	})
	if err != nil {
		_ = s.removeFile(s.uploadPath(id))
		return UploadInfo{}, fmt.Errorf("record upload: %w", err)
	}
	s.sessions.mu.Lock()
	s.sessions.m[id] = &session{alg: alg, hash: alg.Hash()}
	s.sessions.mu.Unlock()
	return UploadInfo{ID: id, Repo: repo, Started: rec.Started}, nil
}

// lookupUpload reads the session record and checks it belongs to repo and
// to the actor of ctx. A session of another actor is unknown to the
// caller, exactly as one that does not exist: its id, if learnt, gives no
// way to append to it, commit it or cancel it.
func (s *Store) lookupUpload(ctx context.Context, repo, id string) (uploadRecord, error) {
	var rec uploadRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		ok, err := getJSON(tx.Bucket(bucketUploads), []byte(id), &rec)
		if err != nil {
			return err
		}
		if !ok || rec.Repo != repo || (rec.Owner != nil && *rec.Owner != *ownerOf(ctx)) {
			return fmt.Errorf("%w: %s", ErrUploadUnknown, id)
		}
		return nil
	})
	return rec, err
}

// acquire returns the session locked, rebuilding its hash from disk if this
// process has not seen it yet. The record is read under the session's lock,
// so a session ended by a concurrent request is reported unknown.
func (s *Store) acquire(ctx context.Context, repo, id string) (*session, uploadRecord, error) {
	// Check first, so that unknown ids never enter the table.
	if rec, err := s.lookupUpload(ctx, repo, id); err != nil {
		return nil, rec, err
	}
	sess := s.sessions.entry(id)
	sess.mu.Lock()
	rec, err := s.lookupUpload(ctx, repo, id)
	if err == nil && sess.gone {
		err = fmt.Errorf("%w: %s", ErrUploadUnknown, id)
	}
	if err == nil && sess.hash == nil {
		sess.alg = digest.Algorithm(rec.Algorithm)
		err = s.rehash(ctx, id, sess)
		if errors.Is(err, os.ErrNotExist) {
			// A crash after the content moved into place and before the
			// index commit leaves a record without its file: the session
			// cannot go on, so it ends here.
			_ = s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketUploads).Delete([]byte(id)) })
			err = fmt.Errorf("%w: %s (its content is gone)", ErrUploadUnknown, id)
		}
	}
	if err != nil {
		if sess.hash == nil {
			// Ended while we waited: ids are never reused, so drop the entry.
			s.forget(id, sess)
		}
		sess.mu.Unlock()
		return nil, rec, err
	}
	return sess, rec, nil
}

func (s *Store) rehash(ctx context.Context, id string, sess *session) error {
	if !sess.alg.Available() {
		return fmt.Errorf("%w: digest algorithm %q", ErrUnsupported, sess.alg)
	}
	f, err := os.Open(s.uploadPath(id))
	if err != nil {
		return fmt.Errorf("reopen upload %s: %w", id, err)
	}
	defer f.Close()
	h := sess.alg.Hash()
	n, err := io.Copy(h, contextReader{ctx, f})
	if err != nil {
		return fmt.Errorf("rehash upload %s: %w", id, err)
	}
	sess.hash, sess.offset = h, n
	return nil
}

// UploadStatus reports how many bytes the session has received.
func (s *Store) UploadStatus(ctx context.Context, repo, id string) (UploadInfo, error) {
	sess, rec, err := s.acquire(ctx, repo, id)
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
func (s *Store) AppendUpload(ctx context.Context, repo, id string, start int64, r io.Reader, length int64) (UploadInfo, error) {
	sess, rec, err := s.acquire(ctx, repo, id)
	if err != nil {
		return UploadInfo{}, err
	}
	defer sess.mu.Unlock()
	if err := s.appendLocked(ctx, id, sess, start, r, length); err != nil {
		return UploadInfo{ID: id, Repo: repo, Offset: sess.offset, Started: rec.Started}, err
	}
	return UploadInfo{ID: id, Repo: repo, Offset: sess.offset, Started: rec.Started}, nil
}

func (s *Store) appendLocked(ctx context.Context, id string, sess *session, start int64, r io.Reader, length int64) (err error) {
	if start >= 0 && start != sess.offset {
		return detailf(ErrRangeInvalid, map[string]any{"offset": sess.offset}, "chunk starts at %d, upload is at %d", start, sess.offset)
	}
	saved, err := sess.hash.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return fmt.Errorf("save hash state: %w", err)
	}
	f, err := s.fs.OpenFile(s.uploadPath(id), os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open upload %s: %w", id, err)
	}
	defer func() {
		if err != nil {
			// Roll back to the last good offset and hash state.
			_ = f.Truncate(sess.offset)
			_ = sess.hash.(encoding.BinaryUnmarshaler).UnmarshalBinary(saved)
		}
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close upload %s: %w", id, cerr)
		}
	}()
	if _, err = f.Seek(sess.offset, io.SeekStart); err != nil {
		return fmt.Errorf("seek upload %s: %w", id, err)
	}
	src := r
	if length >= 0 {
		src = io.LimitReader(r, length+1)
	}
	n, err := io.Copy(io.MultiWriter(f, sess.hash), contextReader{ctx, src})
	if err != nil {
		return copyError("write chunk", n, err)
	}
	if length >= 0 && n != length {
		return detailf(ErrSizeInvalid, nil, "chunk has %d bytes, declared %d", n, length)
	}
	sess.offset += n
	return nil
}

// CommitUpload appends a last chunk (r may be nil), verifies that the whole
// upload hashes to d, moves it into place and links it into repo. The session
// ends whether or not the digest matched: a failed upload leaves nothing.
func (s *Store) CommitUpload(ctx context.Context, repo, id string, d digest.Digest, start int64, r io.Reader, length int64) (BlobInfo, error) {
	if err := validDigest(d); err != nil {
		return BlobInfo{}, err
	}
	sess, _, err := s.acquire(ctx, repo, id)
	if err != nil {
		return BlobInfo{}, err
	}
	defer sess.mu.Unlock()
	if r != nil {
		if err := s.appendLocked(ctx, id, sess, start, r, length); err != nil {
			return BlobInfo{}, err
		}
	}
	got := digest.NewDigest(sess.alg, sess.hash)
	if d.Algorithm() != sess.alg {
		sess.alg = d.Algorithm()
		if err := s.rehash(ctx, id, sess); err != nil {
			return BlobInfo{}, err
		}
		got = digest.NewDigest(sess.alg, sess.hash)
	}
	if got != d {
		if err := s.endLocked(id, sess); err != nil {
			return BlobInfo{}, err
		}
		return BlobInfo{}, detailf(ErrDigestMismatch, map[string]any{"digest": string(d)}, "upload hashes to %s", got)
	}
	path := s.uploadPath(id)
	if err := s.syncFile(path); err != nil {
		return BlobInfo{}, err
	}
	info := BlobInfo{Digest: d, Size: sess.offset}
	err = s.commitBlob(repo, path, info, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketUploads).Delete([]byte(id))
	})
	if err != nil {
		if _, serr := os.Stat(path); errors.Is(serr, os.ErrNotExist) {
			// The content moved into place before the failure, so the
			// session has nothing left to resume: end it rather than leave
			// a record without its file. The placed file is complete and
			// verified; a later push of the same content records it.
			_ = s.endLocked(id, sess)
		}
		return BlobInfo{}, err
	}
	s.forget(id, sess)
	return info, nil
}

func (s *Store) syncFile(path string) error {
	f, err := s.fs.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open for sync: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", filepath.Base(path), err)
	}
	return nil
}

// CancelUpload ends the session and removes what it received.
func (s *Store) CancelUpload(ctx context.Context, repo, id string) error {
	sess, _, err := s.acquire(ctx, repo, id)
	if err != nil {
		return err
	}
	defer sess.mu.Unlock()
	return s.endLocked(id, sess)
}

// endLocked deletes a session's record and file.
func (s *Store) endLocked(id string, sess *session) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketUploads).Delete([]byte(id))
	})
	if err != nil {
		return fmt.Errorf("delete upload record: %w", err)
	}
	s.forget(id, sess)
	if err := s.removeFile(s.uploadPath(id)); err != nil {
		return fmt.Errorf("remove upload file: %w", err)
	}
	return nil
}

func (s *Store) forget(id string, sess *session) {
	sess.gone = true
	s.sessions.mu.Lock()
	delete(s.sessions.m, id)
	s.sessions.mu.Unlock()
}
