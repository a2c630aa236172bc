package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/blob"
)

// putPrefix starts the names of the temporary files Put writes beside the
// blob they become. Walk reports one a crash left behind as a stray, which
// fsck's repair removes.
const putPrefix = ".put-"

// Put implements blob.Store. The content is written to a temporary file in
// the blob's own directory, fsynced and renamed into place, and the
// directory fsynced: a rename within one directory, which does not contend
// with every other commit for the file system's lock of renames across
// directories, nor for the one temporary directory's lock.
func (s *Store) Put(ctx context.Context, d digest.Digest, r io.Reader, want int64) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	dst, err := s.blobPath(d)
	if err != nil {
		return err
	}
	dir := filepath.Dir(dst)
	if fi, err := os.Lstat(dst); err == nil && fi.Mode().IsRegular() && fi.Size() == want {
		// Present already: only its directory entry must be durable.
		return s.syncDir(dir)
	} else if err != nil && !errors.Is(err, iofs.ErrNotExist) {
		return fmt.Errorf("stat blob %s: %w", d, err)
	}
	if err := s.makeBlobDir(dir); err != nil {
		return fmt.Errorf("put %s: %w", d, err)
	}
	f, err := s.fs.CreateTemp(dir, putPrefix+"*")
	if err != nil {
		return fmt.Errorf("put %s: create temporary file: %w", d, err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			if rerr := s.removeFile(f.Name()); rerr != nil {
				s.log.WarnContext(ctx, "remove content in flight", "path", s.rel(f.Name()), "error", rerr)
			}
		}
	}()
	n, err := io.Copy(f, contextReader{ctx, io.LimitReader(r, want+1)})
	if err != nil {
		return fmt.Errorf("put %s: write: %w", d, err)
	}
	if n != want {
		return fmt.Errorf("%w: %d bytes, %d declared", blob.ErrSizeMismatch, n, want)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("put %s: sync: %w", d, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("put %s: close: %w", d, err)
	}
	if err := s.fs.Rename(f.Name(), dst); err != nil {
		return fmt.Errorf("put %s: move into place: %w", d, err)
	}
	return s.syncDir(dir)
}
