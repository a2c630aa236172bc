// Package fs is Berth's blob store in files. It owns the files of content
// by digest, the content in flight (upload sessions and anonymous
// content), the quarantine where corrupt content is set aside, and the
// durability discipline that makes committed content survive a crash.
//
// Its layout under the store's root is the one every Berth release has
// used, so that an existing data directory keeps working:
//
//	blobs/<algorithm>/<hex[0:2]>/<hex>   committed content of <algorithm>:<hex>
//	uploads/<session id>                  an upload session's content in flight
//	tmp/                                  anonymous content in flight
//	quarantine/<algorithm>-<hex>          content set aside by Quarantine (0700)
//
// The discipline: appending never syncs; Commit syncs the staged file,
// renames it to its digest's path and syncs that directory (and the
// directories it had to create), so content is complete and durable before
// Commit returns and before the caller records it in its index. A file
// under blobs/ is therefore always complete: a crash leaves at worst a file
// no index names, which fsck reports and removes. Content already in place
// is never copied again: its staged copy is removed unsynced, and the
// directory is synced once more in case an earlier commit renamed the file
// and failed before its own directory sync.
//
// Digests and session ids are checked before they become paths, so no
// name a client sends can reach outside the store's directories.
package fs

import (
	"context"
	_ "crypto/sha256" // digests of these algorithms must validate
	_ "crypto/sha512"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/blob"
)

// The store's directories under its root.
const (
	blobsDir      = "blobs"
	uploadsDir    = "uploads"
	tmpDir        = "tmp"
	quarantineDir = "quarantine"
)

// Options tune a Store.
type Options struct {
	// FS is the file system content is written through; nil means the
	// operating system's. Tests put in one that fails on demand.
	FS FS
	// Logger receives the store's diagnostics; nil discards them.
	Logger *slog.Logger
}

// Store keeps blobs as files under a root directory. It implements
// blob.Store, blob.Quarantiner and blob.Sweeper, and is safe for
// concurrent use. It holds no open files between calls, so it needs no
// closing.
type Store struct {
	root string
	fs   FS
	log  *slog.Logger
}

var (
	_ blob.Store       = (*Store)(nil)
	_ blob.Quarantiner = (*Store)(nil)
	_ blob.Sweeper     = (*Store)(nil)
)

// Open opens the store rooted at root, creating its directories (mode
// 0750) if needed, and removes everything under tmp/.
//
// The caller must hold the store's exclusive lock before calling Open
// (Berth's server and tools do by opening the index first): what tmp/
// holds belongs to requests of a process that has died, and Open must not
// remove the content in flight of a process still running.
func Open(ctx context.Context, root string, opts Options) (*Store, error) {
	s := &Store{root: filepath.Clean(root), fs: opts.FS, log: opts.Logger}
	if s.fs == nil {
		s.fs = OS{}
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	for _, sub := range []string{blobsDir, uploadsDir, tmpDir} {
		if err := s.fs.MkdirAll(filepath.Join(s.root, sub), 0o750); err != nil {
			return nil, fmt.Errorf("create store directory: %w", err)
		}
	}
	// Directories just made must survive a crash along with what they
	// will hold.
	if err := s.fs.SyncDir(s.root); err != nil {
		return nil, fmt.Errorf("sync store directory: %w", err)
	}
	n, err := clearDir(filepath.Join(s.root, tmpDir))
	if err != nil {
		return nil, err
	}
	if n > 0 {
		s.log.InfoContext(ctx, "removed content in flight of an earlier process", "dir", filepath.Join(s.root, tmpDir), "entries", n)
	}
	return s, nil
}

// clearDir removes everything in dir, returning how many entries it held.
func clearDir(dir string) (int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", dir, err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return 0, fmt.Errorf("remove stale temporary file: %w", err)
		}
	}
	return len(entries), nil
}

// blobPath is where the content of d lives. It refuses digests that are
// malformed or of an algorithm Berth does not hash, so that the encoded
// part is plain lower-case hex and cannot name another directory.
func (s *Store) blobPath(d digest.Digest) (string, error) {
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("invalid digest %q: %w", d, err)
	}
	enc := d.Encoded()
	if len(enc) < 2 || strings.Trim(enc, "0123456789abcdef") != "" {
		return "", fmt.Errorf("invalid digest %q: its encoding is not hex", d)
	}
	return filepath.Join(s.root, blobsDir, string(d.Algorithm()), enc[:2], enc), nil
}

// digestOf returns the digest whose blob path is name, a path relative to
// blobs/ with forward slashes, if there is one.
func digestOf(name string) (digest.Digest, bool) {
	parts := strings.Split(name, "/")
	if len(parts) != 3 {
		return "", false
	}
	d := digest.Digest(parts[0] + ":" + parts[2])
	if d.Validate() != nil || strings.Trim(parts[2], "0123456789abcdef") != "" || parts[1] != parts[2][:2] {
		return "", false
	}
	return d, true
}

// rel is p relative to the store's root, with forward slashes: the name
// Walk and Quarantine report.
func (s *Store) rel(p string) string {
	if r, err := filepath.Rel(s.root, p); err == nil {
		return filepath.ToSlash(r)
	}
	return p
}

// regular checks the result of an Lstat of the file of what: a file that
// is absent, or that is not a regular file (which is never opened), is
// reported as blob.ErrNotFound.
func regular(what string, fi iofs.FileInfo, err error) error {
	switch {
	case errors.Is(err, iofs.ErrNotExist):
		return fmt.Errorf("%w: %s", blob.ErrNotFound, what)
	case err != nil:
		return fmt.Errorf("stat %s: %w", what, err)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%w: %s is %s", blob.ErrNotFound, what, notRegular(fi.Mode().Type()))
	}
	return nil
}

// notRegular describes a file that is not a regular file. Such files are
// never opened or removed.
func notRegular(t iofs.FileMode) string {
	what := "a special file"
	switch {
	case t&iofs.ModeSymlink != 0:
		what = "a symbolic link"
	case t&iofs.ModeDir != 0:
		what = "a directory"
	case t&iofs.ModeNamedPipe != 0:
		what = "a named pipe"
	case t&iofs.ModeSocket != 0:
		what = "a socket"
	case t&iofs.ModeDevice != 0:
		what = "a device"
	}
	return "not a regular file but " + what
}

// Stat implements blob.Store. A file in the place of d that is not a
// regular file (a symbolic link, say) counts as absent, with a message
// that says what it is.
func (s *Store) Stat(ctx context.Context, d digest.Digest) (int64, error) {
	p, err := s.blobPath(d)
	if err != nil {
		return 0, err
	}
	fi, err := os.Lstat(p)
	if err := regular("blob "+string(d), fi, err); err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// Open implements blob.Store; the content is an *os.File. As with Stat,
// only a regular file is opened.
func (s *Store) Open(ctx context.Context, d digest.Digest) (io.ReadSeekCloser, error) {
	p, err := s.blobPath(d)
	if err != nil {
		return nil, err
	}
	what := "blob " + string(d)
	// One open that neither follows a symbolic link nor waits on a named
	// pipe, then what was opened must be a regular file: two system calls
	// on every read of content, whatever stands at the path.
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	switch {
	case errors.Is(err, iofs.ErrNotExist):
		return nil, fmt.Errorf("%w: %s", blob.ErrNotFound, what)
	case errors.Is(err, syscall.ELOOP):
		return nil, fmt.Errorf("%w: %s is %s", blob.ErrNotFound, what, notRegular(iofs.ModeSymlink))
	case err != nil:
		return nil, fmt.Errorf("open %s: %w", what, err)
	}
	fi, err := f.Stat()
	if err := regular(what, fi, err); err != nil {
		_ = f.Close()
		return nil, err
	}
	return f, nil
}

// Delete implements blob.Store. It does not sync the directory: content
// that comes back after a crash has no index record, and fsck removes it.
func (s *Store) Delete(ctx context.Context, d digest.Digest) error {
	p, err := s.blobPath(d)
	if err != nil {
		return err
	}
	return s.removeFile(p)
}

// removeFile removes a file through the store's FS; one already gone is
// fine.
func (s *Store) removeFile(p string) error {
	if err := s.fs.Remove(p); err != nil && !errors.Is(err, iofs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", s.rel(p), err)
	}
	return nil
}

// Walk implements blob.Store: it calls fn for every file under blobs/,
// named by its path relative to the root ("blobs/sha256/ab/ab..."). A file
// whose path is not a blob's has an empty Digest. Symbolic links are
// reported, with Irregular set, and never followed; nothing is opened. The
// order is lexical. An error fn returns stops the walk and is returned as
// it is.
func (s *Store) Walk(ctx context.Context, fn func(blob.Entry) error) error {
	base := filepath.Join(s.root, blobsDir)
	var fnErr error
	// The trailing separator makes WalkDir start in blobs/ even if it is a
	// symbolic link to a directory; below it, none is followed.
	err := filepath.WalkDir(base+string(filepath.Separator), func(p string, e iofs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if e.IsDir() {
			return nil
		}
		fi, err := e.Info()
		if errors.Is(err, iofs.ErrNotExist) {
			return nil // deleted meanwhile
		}
		if err != nil {
			return err
		}
		entry := blob.Entry{Name: s.rel(p), Size: fi.Size()}
		if r, err := filepath.Rel(base, p); err == nil {
			entry.Digest, _ = digestOf(filepath.ToSlash(r))
		}
		if !fi.Mode().IsRegular() {
			entry.Irregular = notRegular(fi.Mode().Type())
		}
		if err := fn(entry); err != nil {
			fnErr = err
			return err
		}
		return nil
	})
	if fnErr != nil {
		return fnErr
	}
	if err != nil {
		return fmt.Errorf("walk blobs: %w", err)
	}
	return nil
}

// Quarantine implements blob.Quarantiner: it moves whatever stands at the
// path of d (a file of any kind; a symbolic link is moved, not followed)
// to quarantine/<algorithm>-<hex>, syncs the directories involved, and
// returns that name relative to the root.
func (s *Store) Quarantine(ctx context.Context, d digest.Digest) (string, error) {
	src, err := s.blobPath(d)
	if err != nil {
		return "", err
	}
	if _, err := os.Lstat(src); errors.Is(err, iofs.ErrNotExist) {
		return "", nil // absent, or moved by an interrupted earlier attempt
	} else if err != nil {
		return "", fmt.Errorf("stat blob %s: %w", d, err)
	}
	dir := filepath.Join(s.root, quarantineDir)
	if err := s.fs.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create quarantine directory: %w", err)
	}
	dst := filepath.Join(dir, string(d.Algorithm())+"-"+d.Encoded())
	if err := s.fs.Rename(src, dst); err != nil {
		return "", fmt.Errorf("move blob %s to quarantine: %w", d, err)
	}
	for _, sync := range []string{dir, s.root, filepath.Dir(src)} {
		if err := s.fs.SyncDir(sync); err != nil {
			return "", fmt.Errorf("sync %s: %w", s.rel(sync), err)
		}
	}
	return s.rel(dst), nil
}

// Sweep implements blob.Sweeper. name must be a name Walk reports without
// a digest: a clean slash-separated path inside blobs/ that is not a
// blob's path. Every directory on the way must be a real directory (a
// symbolic link is never followed), and the file must be a regular file:
// anything else is refused and left in place. A file already gone is
// fine.
func (s *Store) Sweep(ctx context.Context, name string) error {
	if name == "" || path.Clean(name) != name || !strings.HasPrefix(name, blobsDir+"/") || strings.ContainsAny(name, "\\\x00") {
		return fmt.Errorf("sweep %q: not a name inside %s/", name, blobsDir)
	}
	if _, ok := digestOf(strings.TrimPrefix(name, blobsDir+"/")); ok {
		return fmt.Errorf("sweep %q: it names a blob, which only Delete removes", name)
	}
	p := s.root
	parts := strings.Split(name, "/")
	for i, part := range parts {
		p = filepath.Join(p, part)
		fi, err := os.Lstat(p)
		if errors.Is(err, iofs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("sweep %q: %w", name, err)
		}
		if i < len(parts)-1 && !fi.IsDir() {
			return fmt.Errorf("sweep %q: %s is not a directory", name, s.rel(p))
		}
		if i == len(parts)-1 && !fi.Mode().IsRegular() {
			return fmt.Errorf("sweep %q: %s; left in place", name, notRegular(fi.Mode().Type()))
		}
	}
	return s.removeFile(p)
}
