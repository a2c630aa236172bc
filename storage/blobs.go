package storage

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/blob"
	"github.com/berth-registry/berth/storage/meta"
)

// BlobInfo describes a stored blob.
type BlobInfo struct {
	Digest digest.Digest
	Size   int64
}

// StatBlob returns the blob's size if it is linked into repo.
//
// A client that finds a blob this way may reference it from a manifest it
// pushes next, so the lookup records in the index that it found the link
// (at most once per refresh period) before it answers; see seen.go. It
// takes no digest lock. A lookup that finds the link recorded active
// within the refresh period only reads a snapshot; one that records Seen
// runs a small write transaction, which waits for the index's writers.
func (s *Service) StatBlob(ctx context.Context, repo string, d digest.Digest) (BlobInfo, error) {
	return s.see(ctx, repo, d)
}

// linkedBlob describes d if it is linked into repo.
func linkedBlob(tx meta.Tx, repo string, d digest.Digest) (BlobInfo, error) {
	if _, ok, err := tx.Link(repo, d); err != nil {
		return BlobInfo{}, err
	} else if !ok {
		return BlobInfo{}, fmt.Errorf("%w: %s in %s", ErrBlobUnknown, d, repo)
	}
	return storedBlob(tx, d)
}

// storedBlob describes d if the store holds it.
func storedBlob(tx meta.Tx, d digest.Digest) (BlobInfo, error) {
	rec, ok, err := tx.Blob(d)
	if err != nil {
		return BlobInfo{}, err
	}
	if !ok {
		return BlobInfo{}, fmt.Errorf("%w: %s", ErrBlobUnknown, d)
	}
	return BlobInfo{Digest: d, Size: rec.Size}, nil
}

// OpenBlob opens the content of a blob linked into repo; the caller closes
// it. With the file backend it is an *os.File, which net/http serves with
// sendfile.
func (s *Service) OpenBlob(ctx context.Context, repo string, d digest.Digest) (io.ReadSeekCloser, BlobInfo, error) {
	info, err := s.StatBlob(ctx, repo, d)
	if err != nil {
		return nil, BlobInfo{}, err
	}
	r, err := s.readContent(ctx, d)
	if errors.Is(err, ErrBlobUnknown) {
		// Garbage collection removed it after the lookup: the blob is
		// no longer linked, which is what the lookup would now say.
		return nil, BlobInfo{}, fmt.Errorf("%w: %s in %s", ErrBlobUnknown, d, repo)
	}
	if err != nil {
		return nil, BlobInfo{}, err
	}
	return r, info, nil
}

// BlobURL returns a URL from which a client may read a blob linked into
// repo, when the blob store hands such URLs out (blob.Redirector), with
// the blob's description; or "" when it does not, and the caller serves
// the content through OpenBlob. The lookup leaves a seen mark, as
// StatBlob's does: garbage collection spares the blob for its grace
// period, longer than a client takes to follow the URL.
func (s *Service) BlobURL(ctx context.Context, repo string, d digest.Digest) (string, BlobInfo, error) {
	r, ok := s.blobs.(blob.Redirector)
	if !ok {
		return "", BlobInfo{}, nil
	}
	info, err := s.StatBlob(ctx, repo, d)
	if err != nil {
		return "", BlobInfo{}, err
	}
	url, err := r.RedirectURL(ctx, d)
	if err != nil {
		return "", BlobInfo{}, fmt.Errorf("redirect to content %s: %w", d, err)
	}
	return url, info, nil
}

// readContent opens the content of d. Every read of content goes through
// it: content that is gone is ErrBlobUnknown.
func (s *Service) readContent(ctx context.Context, d digest.Digest) (io.ReadSeekCloser, error) {
	r, err := s.blobs.Open(ctx, d)
	if errors.Is(err, blob.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrBlobUnknown, d)
	}
	if err != nil {
		return nil, fmt.Errorf("open content %s: %w", d, err)
	}
	return r, nil
}

// PutBlob stores the content read from r, which must hash to d, and links
// it into repo. size < 0 means the length is not known in advance.
func (s *Service) PutBlob(ctx context.Context, repo string, d digest.Digest, r io.Reader, size int64) (BlobInfo, error) {
	if err := validDigest(d); err != nil {
		return BlobInfo{}, err
	}
	st, err := s.blobs.Stage(ctx, "")
	if err != nil {
		return BlobInfo{}, fmt.Errorf("stage content: %w", err)
	}
	h := d.Algorithm().Hash()
	n, err := st.Append(ctx, r, size, h)
	if err != nil {
		_ = st.Cancel(ctx)
		return BlobInfo{}, appendError("write content", n, err)
	}
	if got := digest.NewDigest(d.Algorithm(), h); got != d {
		_ = st.Cancel(ctx)
		return BlobInfo{}, detailf(ErrDigestMismatch, map[string]any{"digest": string(d)}, "content hashes to %s", got)
	}
	info := BlobInfo{Digest: d, Size: n}
	if err := s.commitBlob(ctx, repo, st, info, nil); err != nil {
		_ = st.Cancel(ctx) // nothing left to cancel once committed
		return BlobInfo{}, err
	}
	return info, nil
}

// commitBlob makes verified staged content durable under its digest and
// records it, linking it into repo; extra runs inside the same
// transaction. The digest's lock is held from placing to recording, so
// that garbage collection cannot remove the content in between. On
// failure the staged content may remain; the caller cancels or keeps it.
func (s *Service) commitBlob(ctx context.Context, repo string, st blob.Staged, info BlobInfo, extra func(*Tx) error) error {
	unlock, err := s.index.LockDigests(ctx, info.Digest)
	if err != nil {
		return err
	}
	defer unlock()
	if err := st.Commit(ctx, info.Digest); err != nil {
		return fmt.Errorf("place blob %s: %w", info.Digest, err)
	}
	err = s.Update(ctx, func(tx *Tx) error {
		if err := recordBlob(tx, info); err != nil {
			return err
		}
		if err := tx.link(repo, info.Digest); err != nil {
			return err
		}
		tx.Publish(Event{Action: EventBlobPush, Repo: repo, Digest: info.Digest, Size: info.Size, Actor: ActorFrom(ctx)})
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

// recordBlob records content of d placed in the blob store, unless it is
// recorded already.
func recordBlob(tx *Tx, info BlobInfo) error {
	if _, ok, err := tx.Blob(info.Digest); err != nil || ok {
		return err
	}
	return tx.PutBlob(info.Digest, meta.Blob{Size: info.Size, Created: tx.s.now()})
}

// link links d into repo, or refreshes the time of an existing link: a
// blob uploaded or mounted again is about to be referenced, and garbage
// collection spares links younger than its grace period.
func (tx *Tx) link(repo string, d digest.Digest) error {
	return tx.PutLink(repo, d, meta.Link{Linked: tx.s.now()})
}

// MountBlob links a blob into repo without transferring it. With from set,
// the blob must be linked into that repository; with from empty, any blob
// the store holds can be mounted. It returns ErrBlobUnknown when the blob
// cannot be mounted, so the caller can fall back to an upload.
func (s *Service) MountBlob(ctx context.Context, repo, from string, d digest.Digest) (BlobInfo, error) {
	if err := validDigest(d); err != nil {
		return BlobInfo{}, err
	}
	var info BlobInfo
	err := s.Update(ctx, func(tx *Tx) error {
		var err error
		if from != "" {
			info, err = linkedBlob(tx, from, d)
		} else {
			info, err = storedBlob(tx, d)
		}
		if err != nil {
			return err
		}
		if err := tx.link(repo, d); err != nil {
			return err
		}
		tx.Publish(Event{Action: EventBlobPush, Repo: repo, Digest: d, Size: info.Size, Actor: ActorFrom(ctx)})
		return nil
	})
	return info, err
}

// DeleteBlob unlinks a blob from repo. The content stays for other
// repositories until garbage collection finds nothing referencing it.
func (s *Service) DeleteBlob(ctx context.Context, repo string, d digest.Digest) error {
	return s.Update(ctx, func(tx *Tx) error {
		if _, ok, err := tx.Link(repo, d); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("%w: %s in %s", ErrBlobUnknown, d, repo)
		}
		if err := tx.DeleteLink(repo, d); err != nil {
			return fmt.Errorf("unlink blob: %w", err)
		}
		tx.Publish(Event{Action: EventDeleteBlob, Repo: repo, Digest: d, Actor: ActorFrom(ctx)})
		return nil
	})
}

// appendError describes a failed append of content from a client. A body
// shorter or longer than declared, or one that ends before the length it
// declared, is the client's error, ErrSizeInvalid, not a failure of the
// store.
func appendError(what string, n int64, err error) error {
	switch {
	case errors.Is(err, blob.ErrSizeMismatch):
		return detailf(ErrSizeInvalid, nil, "%s: %v", what, err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return detailf(ErrSizeInvalid, nil, "%s: body ended after %d bytes: %v", what, n, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}
