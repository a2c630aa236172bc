package storage

import (
	"io"
	"io/fs"
	"os"
)

// FS is the file system the store writes through: creating, writing,
// syncing, renaming and removing content files. The default is the
// operating system's; tests put in one that fails on demand (a full disk, a
// permission denied, a failed fsync) to show that a failure leaves nothing
// partial behind. Reads go straight to the operating system, so that blob
// downloads are served from an *os.File (with sendfile).
type FS interface {
	// OpenFile opens a file for writing, as os.OpenFile.
	OpenFile(name string, flag int, perm fs.FileMode) (File, error)
	// CreateTemp creates a new temporary file, as os.CreateTemp.
	CreateTemp(dir, pattern string) (File, error)
	// Rename moves a file into place, as os.Rename.
	Rename(oldpath, newpath string) error
	// Remove removes a file, as os.Remove.
	Remove(name string) error
	// MkdirAll creates a directory and its parents, as os.MkdirAll.
	MkdirAll(path string, perm fs.FileMode) error
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

// osFS is the operating system's file system.
type osFS struct{}

func (osFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	return os.OpenFile(name, flag, perm)
}

func (osFS) CreateTemp(dir, pattern string) (File, error) { return os.CreateTemp(dir, pattern) }
func (osFS) Rename(oldpath, newpath string) error         { return os.Rename(oldpath, newpath) }
func (osFS) Remove(name string) error                     { return os.Remove(name) }
func (osFS) MkdirAll(path string, perm fs.FileMode) error { return os.MkdirAll(path, perm) }

func (osFS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
