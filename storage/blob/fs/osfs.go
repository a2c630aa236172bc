package fs

import (
	"io"
	iofs "io/fs"
	"os"
)

// FS is the file system a Store writes through: creating, writing,
// syncing, renaming and removing files. The default is the operating
// system's (OS); tests put in one that fails on demand (a full disk, a
// permission denied, a failed fsync) to show that a failure leaves nothing
// partial behind. Reads and metadata look-ups go straight to the operating
// system, so that content is served from an *os.File (with sendfile).
type FS interface {
	// OpenFile opens a file, as os.OpenFile.
	OpenFile(name string, flag int, perm iofs.FileMode) (File, error)
	// CreateTemp creates a new temporary file, as os.CreateTemp.
	CreateTemp(dir, pattern string) (File, error)
	// Rename moves a file into place, as os.Rename.
	Rename(oldpath, newpath string) error
	// Remove removes a file, as os.Remove.
	Remove(name string) error
	// MkdirAll creates a directory and its parents, as os.MkdirAll.
	MkdirAll(path string, perm iofs.FileMode) error
	// SyncDir makes the entries of a directory durable.
	SyncDir(dir string) error
}

// File is an open file of an FS.
type File interface {
	io.Reader
	io.Writer
	io.Seeker
	io.Closer
	// Sync makes the file's content durable, as (*os.File).Sync.
	Sync() error
	// Truncate changes the file's size, as (*os.File).Truncate.
	Truncate(size int64) error
	// Name is the file's path.
	Name() string
}

// OS is the operating system's file system, the FS a Store uses unless
// told otherwise. Tests may embed it to watch or fail single operations.
type OS struct{}

// OpenFile implements FS.
func (OS) OpenFile(name string, flag int, perm iofs.FileMode) (File, error) {
	return os.OpenFile(name, flag, perm)
}

// CreateTemp implements FS.
func (OS) CreateTemp(dir, pattern string) (File, error) { return os.CreateTemp(dir, pattern) }

// Rename implements FS.
func (OS) Rename(oldpath, newpath string) error { return os.Rename(oldpath, newpath) }

// Remove implements FS.
func (OS) Remove(name string) error { return os.Remove(name) }

// MkdirAll implements FS.
func (OS) MkdirAll(path string, perm iofs.FileMode) error { return os.MkdirAll(path, perm) }

// SyncDir implements FS.
func (OS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

var _ FS = OS{}
