package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// BlobInfo describes a stored blob.
type BlobInfo struct {
	Digest digest.Digest
	Size   int64
}

type blobRecord struct {
	Size    int64     `json:"size"`
	Created time.Time `json:"created"`
}

type linkRecord struct {
	Linked time.Time `json:"linked"`
}

// StatBlob returns the blob's size if it is linked into repo.
//
// A client that finds a blob this way may reference it from a manifest it
// pushes next, so the link is marked seen for garbage collection before it
// is looked up; see gc.go.
func (s *Store) StatBlob(ctx context.Context, repo string, d digest.Digest) (BlobInfo, error) {
	at := time.Now()
	unlock := s.locks.lock(d)
	s.seen.mark(repo, d, at)
	unlock()
	var info BlobInfo
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		info, err = linkedBlob(tx, repo, d)
		return err
	})
	if err != nil {
		s.seen.unmark(repo, d, at)
	}
	return info, err
}

func linkedBlob(tx *bolt.Tx, repo string, d digest.Digest) (BlobInfo, error) {
	rb := repoBucket(tx, repo)
	if rb == nil || rb.Bucket(bucketLinks).Get([]byte(d)) == nil {
		return BlobInfo{}, fmt.Errorf("%w: %s in %s", ErrBlobUnknown, d, repo)
	}
	return storedBlob(tx, d)
}

func storedBlob(tx *bolt.Tx, d digest.Digest) (BlobInfo, error) {
	var rec blobRecord
	ok, err := getJSON(tx.Bucket(bucketBlobs), []byte(d), &rec)
	if err != nil {
		return BlobInfo{}, err
	}
	if !ok {
		return BlobInfo{}, fmt.Errorf("%w: %s", ErrBlobUnknown, d)
	}
	return BlobInfo{Digest: d, Size: rec.Size}, nil
}

// OpenBlob opens the content of a blob linked into repo. The caller closes
// the file; it is an *os.File so that it can be served with sendfile.
func (s *Store) OpenBlob(ctx context.Context, repo string, d digest.Digest) (*os.File, BlobInfo, error) {
	info, err := s.StatBlob(ctx, repo, d)
	if err != nil {
		return nil, BlobInfo{}, err
	}
	f, err := os.Open(s.blobPath(d))
	if errors.Is(err, os.ErrNotExist) {
		// Garbage collection removed it after the lookup: the blob is
		// no longer linked, which is what the lookup would now say.
		return nil, BlobInfo{}, fmt.Errorf("%w: %s in %s", ErrBlobUnknown, d, repo)
	}
	if err != nil {
		return nil, BlobInfo{}, fmt.Errorf("open blob %s: %w", d, err)
	}
	return f, info, nil
}

// PutBlob stores the content read from r, which must hash to d, and links
// it into repo. size < 0 means the length is not known in advance.
func (s *Store) PutBlob(ctx context.Context, repo string, d digest.Digest, r io.Reader, size int64) (BlobInfo, error) {
	if err := validDigest(d); err != nil {
		return BlobInfo{}, err
	}
	path, got, n, err := s.writeContent(ctx, r, d.Algorithm(), size)
	if err != nil {
		return BlobInfo{}, err
	}
	if got != d {
		_ = s.removeFile(path)
		return BlobInfo{}, detailf(ErrDigestMismatch, map[string]any{"digest": string(d)}, "content hashes to %s", got)
	}
	info := BlobInfo{Digest: d, Size: n}
	if err := s.commitBlob(repo, path, info, nil); err != nil {
		_ = s.removeFile(path)
		return BlobInfo{}, err
	}
	return info, nil
}

// commitBlob moves verified content into place and records it, linking it
// into repo; extra runs inside the same transaction. The digest's lock is
// held from placing to recording, so that garbage collection cannot delete
// the file in between (see gc.go).
func (s *Store) commitBlob(repo, path string, info BlobInfo, extra func(*bolt.Tx) error) error {
	defer s.locks.lock(info.Digest)()
	if err := s.place(path, info.Digest); err != nil {
		return err
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := recordBlob(tx, info); err != nil {
			return err
		}
		if err := link(tx, repo, info.Digest); err != nil {
			return err
		}
		if extra != nil {
			return extra(tx)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record blob %s: %w", info.Digest, err)
	}
	return nil
}

func recordBlob(tx *bolt.Tx, info BlobInfo) error {
	b := tx.Bucket(bucketBlobs)
	if b.Get([]byte(info.Digest)) != nil {
		return nil
	}
	return putJSON(b, []byte(info.Digest), blobRecord{Size: info.Size, Created: time.Now().UTC()})
}

// link links d into repo, or refreshes the time of an existing link: a
// blob uploaded or mounted again is about to be referenced, and garbage
// collection spares links younger than its grace period.
func link(tx *bolt.Tx, repo string, d digest.Digest) error {
	rb, err := ensureRepo(tx, repo)
	if err != nil {
		return err
	}
	return putJSON(rb.Bucket(bucketLinks), []byte(d), linkRecord{Linked: time.Now().UTC()})
}

// MountBlob links a blob into repo without transferring it. With from set,
// the blob must be linked into that repository; with from empty, any blob
// the store holds can be mounted. It returns ErrBlobUnknown when the blob
// cannot be mounted, so the caller can fall back to an upload.
func (s *Store) MountBlob(ctx context.Context, repo, from string, d digest.Digest) (BlobInfo, error) {
	if err := validDigest(d); err != nil {
		return BlobInfo{}, err
	}
	var info BlobInfo
	err := s.db.Update(func(tx *bolt.Tx) error {
		var err error
		if from != "" {
			info, err = linkedBlob(tx, from, d)
		} else {
			info, err = storedBlob(tx, d)
		}
		if err != nil {
			return err
		}
		return link(tx, repo, d)
	})
	return info, err
}

// DeleteBlob unlinks a blob from repo. The content stays on disk for other
// repositories until garbage collection finds nothing referencing it.
func (s *Store) DeleteBlob(ctx context.Context, repo string, d digest.Digest) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		rb := repoBucket(tx, repo)
		if rb == nil || rb.Bucket(bucketLinks).Get([]byte(d)) == nil {
			return fmt.Errorf("%w: %s in %s", ErrBlobUnknown, d, repo)
		}
		if err := rb.Bucket(bucketLinks).Delete([]byte(d)); err != nil {
			return fmt.Errorf("unlink blob: %w", err)
		}
		return nil
	})
}
