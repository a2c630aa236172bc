// Package storagetest helps test code that uses the storage package: it
// provides a file system that fails on demand.
package storagetest

import (
	"io/fs"
	"os"
	"sync"

	"github.com/berth-registry/berth/storage"
)

// Operations a FaultFS can be told to fail.
const (
	OpCreate  = "create"  // CreateTemp and OpenFile with O_CREATE
	OpOpen    = "open"    // OpenFile of an existing file
	OpWrite   = "write"   // Write: half the bytes are written, then the error
	OpSync    = "sync"    // File.Sync
	OpRename  = "rename"  // Rename
	OpRemove  = "remove"  // Remove
	OpMkdir   = "mkdir"   // MkdirAll
	OpSyncDir = "syncdir" // SyncDir
)

// FaultFS is a storage.FS over the operating system's file system that
// fails the operations it is told to, until told otherwise. It is safe for
// concurrent use.
type FaultFS struct {
	mu   sync.Mutex
	fail map[string]error
}

// NewFaultFS returns a FaultFS that fails nothing yet.
func NewFaultFS() *FaultFS { return &FaultFS{fail: map[string]error{}} }

// Fail makes every later op fail with err.
func (f *FaultFS) Fail(op string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[op] = err
}

// Clear stops every failure.
func (f *FaultFS) Clear() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.fail)
}

func (f *FaultFS) err(op string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fail[op]
}

// OpenFile implements storage.FS.
func (f *FaultFS) OpenFile(name string, flag int, perm fs.FileMode) (storage.File, error) {
	op := OpOpen
	if flag&os.O_CREATE != 0 {
		op = OpCreate
	}
	if err := f.err(op); err != nil {
		return nil, &fs.PathError{Op: op, Path: name, Err: err}
	}
	file, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &faultFile{File: file, fs: f}, nil
}

// CreateTemp implements storage.FS.
func (f *FaultFS) CreateTemp(dir, pattern string) (storage.File, error) {
	if err := f.err(OpCreate); err != nil {
		return nil, &fs.PathError{Op: OpCreate, Path: dir, Err: err}
	}
	file, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return nil, err
	}
	return &faultFile{File: file, fs: f}, nil
}

// Rename implements storage.FS.
func (f *FaultFS) Rename(oldpath, newpath string) error {
	if err := f.err(OpRename); err != nil {
		return &os.LinkError{Op: OpRename, Old: oldpath, New: newpath, Err: err}
	}
	return os.Rename(oldpath, newpath)
}

// Remove implements storage.FS.
func (f *FaultFS) Remove(name string) error {
	if err := f.err(OpRemove); err != nil {
		return &fs.PathError{Op: OpRemove, Path: name, Err: err}
	}
	return os.Remove(name)
}

// MkdirAll implements storage.FS.
func (f *FaultFS) MkdirAll(path string, perm fs.FileMode) error {
	if err := f.err(OpMkdir); err != nil {
		return &fs.PathError{Op: OpMkdir, Path: path, Err: err}
	}
	return os.MkdirAll(path, perm)
}

// SyncDir implements storage.FS.
func (f *FaultFS) SyncDir(dir string) error {
	if err := f.err(OpSyncDir); err != nil {
		return &fs.PathError{Op: OpSyncDir, Path: dir, Err: err}
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

type faultFile struct {
	*os.File
	fs *FaultFS
}

// Write writes half of p and fails, as a disk that fills up mid-write.
func (f *faultFile) Write(p []byte) (int, error) {
	if err := f.fs.err(OpWrite); err != nil {
		n, _ := f.File.Write(p[:len(p)/2])
		return n, &fs.PathError{Op: OpWrite, Path: f.Name(), Err: err}
	}
	return f.File.Write(p)
}

func (f *faultFile) Sync() error {
	if err := f.fs.err(OpSync); err != nil {
		return &fs.PathError{Op: OpSync, Path: f.Name(), Err: err}
	}
	return f.File.Sync()
}

var _ storage.FS = (*FaultFS)(nil)
