package fs

import (
	"context"
	"encoding"
	"errors"
	"fmt"
	"hash"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/blob"
)

// validID checks that an upload session id is a single path element that
// names a file directly under uploads/.
func validID(id string) error {
	if id == "" || id == "." || id == ".." || strings.ContainsAny(id, "/\\\x00") || filepath.Base(id) != id {
		return fmt.Errorf("invalid upload session id %q", id)
	}
	return nil
}

// Stage implements blob.Store. A session's content is the file
// uploads/<id>, created empty (mode 0600); Stage fails, with an error that
// wraps fs.ErrExist, if the session exists already. Anonymous content
// (id empty) is a new file in tmp/, which Open of the next process
// removes if this one dies first.
func (s *Store) Stage(ctx context.Context, id string) (blob.Staged, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var f File
	var err error
	if id == "" {
		f, err = s.fs.CreateTemp(filepath.Join(s.root, tmpDir), "content-*")
		if err != nil {
			return nil, fmt.Errorf("create temporary file: %w", err)
		}
	} else {
		if err := validID(id); err != nil {
			return nil, err
		}
		f, err = s.fs.OpenFile(filepath.Join(s.root, uploadsDir, id), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return nil, fmt.Errorf("create upload %s: %w", id, err)
		}
	}
	st := &staged{s: s, id: id, path: f.Name()}
	if err := f.Close(); err != nil {
		_ = s.removeFile(st.path)
		return nil, fmt.Errorf("create %s: %w", st, err)
	}
	return st, nil
}

// Resume implements blob.Store. An id that cannot name a session is
// reported as ErrNotFound; a file in its place that is not a regular file
// is an error of its own, and is never opened or removed.
func (s *Store) Resume(ctx context.Context, id string) (blob.Staged, error) {
	if err := validID(id); err != nil {
		return nil, fmt.Errorf("%w: %w", blob.ErrNotFound, err)
	}
	st := &staged{s: s, id: id, path: filepath.Join(s.root, uploadsDir, id)}
	fi, err := os.Lstat(st.path)
	switch {
	case errors.Is(err, iofs.ErrNotExist):
		return nil, fmt.Errorf("%w: %s", blob.ErrNotFound, st)
	case err != nil:
		return nil, fmt.Errorf("stat %s: %w", st, err)
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("%s is %s", st, notRegular(fi.Mode().Type()))
	}
	return st, nil
}

// WalkStaged implements blob.Store: it calls fn for every entry of
// uploads/, in lexical order, with Irregular set for what is not a
// regular file. Anonymous content in tmp/ is no session and is not
// reported.
func (s *Store) WalkStaged(ctx context.Context, fn func(blob.Entry) error) error {
	entries, err := os.ReadDir(filepath.Join(s.root, uploadsDir))
	if err != nil {
		return fmt.Errorf("read %s: %w", uploadsDir, err)
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		fi, err := e.Info()
		if errors.Is(err, iofs.ErrNotExist) {
			continue // ended meanwhile
		}
		if err != nil {
			return fmt.Errorf("stat %s/%s: %w", uploadsDir, e.Name(), err)
		}
		entry := blob.Entry{Name: e.Name(), Size: fi.Size()}
		if !fi.Mode().IsRegular() {
			entry.Irregular = notRegular(fi.Mode().Type())
		}
		if err := fn(entry); err != nil {
			return err
		}
	}
	return nil
}

// staged is content in flight: the file at path. Its state is the file
// alone, so several values for one session (one per request, say) see
// the same content.
type staged struct {
	s    *Store
	id   string // the session id; empty for anonymous content
	path string
}

func (st *staged) String() string {
	if st.id == "" {
		return "temporary file " + filepath.Base(st.path)
	}
	return "upload " + st.id
}

// stat returns the staged file's information, or ErrNotFound once the
// content has been committed or cancelled.
func (st *staged) stat() (iofs.FileInfo, error) {
	fi, err := os.Lstat(st.path)
	if errors.Is(err, iofs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", blob.ErrNotFound, st)
	}
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", st, err)
	}
	return fi, nil
}

// Size implements blob.Staged: the length of the staged file.
func (st *staged) Size(ctx context.Context) (int64, error) {
	fi, err := st.stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// LastWrite implements blob.Staged: the staged file's modification time,
// which every append updates, so appending costs no other write.
func (st *staged) LastWrite(ctx context.Context) (time.Time, error) {
	fi, err := st.stat()
	if err != nil {
		return time.Time{}, err
	}
	return fi.ModTime(), nil
}

// Reader implements blob.Staged.
func (st *staged) Reader(ctx context.Context) (io.ReadCloser, error) {
	f, err := os.Open(st.path)
	if errors.Is(err, iofs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", blob.ErrNotFound, st)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", st, err)
	}
	return f, nil
}

// Append implements blob.Staged. It writes at the end of the staged file,
// without syncing; on any failure (of the reader, the context, the length
// or the disk) it truncates the file back to its length before the call,
// restores h to its state before the call, and returns 0 bytes appended.
// An error of the reader, such as io.ErrUnexpectedEOF, and the context's
// error are wrapped, so errors.Is finds them.
//
// Should the truncation itself fail, the content and h could no longer
// agree, so the staged file is removed instead: the session ends, and
// later calls report ErrNotFound.
func (st *staged) Append(ctx context.Context, r io.Reader, want int64, h hash.Hash) (n int64, err error) {
	var saved []byte
	var restore encoding.BinaryUnmarshaler
	if h != nil {
		m, ok1 := h.(encoding.BinaryMarshaler)
		u, ok2 := h.(encoding.BinaryUnmarshaler)
		if !ok1 || !ok2 {
			return 0, fmt.Errorf("append to %s: the hash cannot save and restore its state", st)
		}
		if saved, err = m.MarshalBinary(); err != nil {
			return 0, fmt.Errorf("append to %s: save hash state: %w", st, err)
		}
		restore = u
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("append to %s: %w", st, err)
	}
	f, err := st.s.fs.OpenFile(st.path, os.O_WRONLY, 0)
	if errors.Is(err, iofs.ErrNotExist) {
		return 0, fmt.Errorf("%w: %s", blob.ErrNotFound, st)
	}
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", st, err)
	}
	start, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		_ = f.Close()
		return 0, fmt.Errorf("seek %s: %w", st, err)
	}
	defer func() {
		truncate := f.Truncate
		if err == nil {
			cerr := f.Close()
			if cerr == nil {
				return
			}
			// The bytes may not all have reached the file: undo them.
			err, truncate = fmt.Errorf("close %s: %w", st, cerr), func(size int64) error { return os.Truncate(st.path, size) }
		} else {
			defer f.Close()
		}
		n = 0
		if restore != nil {
			if rerr := restore.UnmarshalBinary(saved); rerr != nil {
				err = errors.Join(err, fmt.Errorf("restore hash state: %w", rerr))
			}
		}
		if terr := truncate(start); terr != nil {
			err = errors.Join(err, st.abandon(ctx, fmt.Errorf("truncate %s back to %d bytes: %w", st, start, terr)))
		}
	}()
	src := r
	if want >= 0 {
		src = io.LimitReader(r, want+1) // one more, to see a longer body
	}
	var w io.Writer = writerOnly{f}
	if h != nil {
		w = io.MultiWriter(w, h)
	}
	n, err = io.Copy(w, contextReader{ctx, src})
	if err != nil {
		return 0, fmt.Errorf("append to %s after %d bytes: %w", st, n, err)
	}
	if want >= 0 && n != want {
		if n > want {
			return 0, fmt.Errorf("%w: more than the %d bytes declared", blob.ErrSizeMismatch, want)
		}
		return 0, fmt.Errorf("%w: %d bytes, %d declared", blob.ErrSizeMismatch, n, want)
	}
	return n, nil
}

// abandon removes the staged file after a failed rollback, so that no
// content is left that disagrees with its writer's hash.
func (st *staged) abandon(ctx context.Context, cause error) error {
	st.s.log.ErrorContext(ctx, "content in flight could not be rolled back; removing it", "staged", st.String(), "error", cause)
	if err := st.s.removeFile(st.path); err != nil {
		return errors.Join(cause, fmt.Errorf("%s is left inconsistent: %w", st, err))
	}
	return fmt.Errorf("%w; %s ended", cause, st)
}

// writerOnly hides every method of a File but Write, so that io.Copy
// cannot bypass it (with ReadFrom) and writes pass through the FS.
type writerOnly struct{ w io.Writer }

func (w writerOnly) Write(p []byte) (int, error) { return w.w.Write(p) }

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

// Commit implements blob.Staged. If d is not in place yet, the staged file
// is synced, renamed to the path of d, and that directory synced (with the
// directories Commit had to create). If a regular file of the same length
// is in place already, the staged file is removed without being synced,
// and the directory is synced again: an earlier commit may have renamed
// the file and failed before its own directory sync. A file of another
// length or kind in the place of d is damaged or foreign, and the staged
// content replaces it. A session whose file an earlier failed Commit had
// already moved into place commits again without error.
//
// A session whose Commit fails before its file moved keeps its content,
// to be committed again or cancelled; anonymous content is removed by a
// failed Commit, since nothing else can reach it.
func (st *staged) Commit(ctx context.Context, d digest.Digest) (err error) {
	s := st.s
	if st.id == "" {
		defer func() {
			if err != nil {
				if rerr := s.removeFile(st.path); rerr != nil {
					s.log.WarnContext(ctx, "remove content in flight", "staged", st.String(), "error", rerr)
				}
			}
		}()
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("commit %s: %w", st, err)
	}
	dst, err := s.blobPath(d)
	if err != nil {
		return fmt.Errorf("commit %s: %w", st, err)
	}
	dir := filepath.Dir(dst)
	src, err := os.Lstat(st.path)
	if errors.Is(err, iofs.ErrNotExist) {
		if fi, derr := os.Lstat(dst); derr == nil && fi.Mode().IsRegular() {
			return s.syncDir(dir)
		}
		return fmt.Errorf("%w: %s", blob.ErrNotFound, st)
	}
	if err != nil {
		return fmt.Errorf("stat %s: %w", st, err)
	}
	fi, err := os.Lstat(dst)
	switch {
	case err == nil && fi.Mode().IsRegular() && fi.Size() == src.Size():
		// Content under a digest never changes: the copy in place is as
		// good as this one, which is dropped without costing an fsync.
		if err := s.removeFile(st.path); err != nil {
			return fmt.Errorf("commit %s: %w", st, err)
		}
		return s.syncDir(dir)
	case err == nil:
		what := fmt.Sprintf("a file of %d bytes, not %d", fi.Size(), src.Size())
		if !fi.Mode().IsRegular() {
			what = notRegular(fi.Mode().Type())
		}
		s.log.WarnContext(ctx, "replacing what stands in the place of a blob", "digest", d, "path", s.rel(dst), "found", what)
	case !errors.Is(err, iofs.ErrNotExist):
		return fmt.Errorf("commit %s: stat blob %s: %w", st, d, err)
	}
	if err := s.syncFile(st.path); err != nil {
		return fmt.Errorf("commit %s: %w", st, err)
	}
	if err := s.makeBlobDir(dir); err != nil {
		return fmt.Errorf("commit %s: %w", st, err)
	}
	if err := s.fs.Rename(st.path, dst); err != nil {
		return fmt.Errorf("commit %s: move into place: %w", st, err)
	}
	return s.syncDir(dir)
}

// syncFile makes the content of the file at p durable.
func (s *Store) syncFile(p string) error {
	f, err := s.fs.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open for sync: %w", err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return fmt.Errorf("sync %s: %w", s.rel(p), err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", s.rel(p), err)
	}
	return nil
}

func (s *Store) syncDir(dir string) error {
	if err := s.fs.SyncDir(dir); err != nil {
		return fmt.Errorf("sync directory %s: %w", s.rel(dir), err)
	}
	return nil
}

// makeBlobDir creates dir, blobs/<algorithm>/<hex[0:2]>, if it is missing,
// and syncs the directories that gained an entry, so that a crash cannot
// lose the directory of a committed blob.
func (s *Store) makeBlobDir(dir string) error {
	if fi, err := os.Lstat(dir); err == nil && fi.IsDir() {
		return nil
	}
	algDir := filepath.Dir(dir)
	_, algErr := os.Lstat(algDir)
	if err := s.fs.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("create blob directory: %w", err)
	}
	err := s.syncDir(algDir)
	if err == nil && algErr != nil {
		err = s.syncDir(filepath.Dir(algDir))
	}
	if err != nil {
		// Unsynced, the new directory might not survive a crash, and a
		// later commit, finding it, would not sync its parent again:
		// remove it while it is empty, for the next commit to make anew.
		_ = s.fs.Remove(dir)
		if algErr != nil {
			_ = s.fs.Remove(algDir)
		}
		return err
	}
	return nil
}

// Cancel implements blob.Staged: it removes the staged file. Content
// already gone (committed or cancelled) is fine; a file in its place that
// is not a regular file is left alone, with an error.
func (st *staged) Cancel(ctx context.Context) error {
	fi, err := os.Lstat(st.path)
	switch {
	case errors.Is(err, iofs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("cancel %s: %w", st, err)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("cancel %s: it is %s; left in place", st, notRegular(fi.Mode().Type()))
	}
	if err := st.s.removeFile(st.path); err != nil {
		return fmt.Errorf("cancel %s: %w", st, err)
	}
	return nil
}
