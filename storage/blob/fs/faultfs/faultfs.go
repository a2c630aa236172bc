// Package faultfs owns a file system for tests that fails on demand: an
// fs.FS (the seam of Berth's file blob store) over the operating system's
// files that fails the operations it is told to, as a full disk, a
// permission denied or a failed fsync would, and counts every operation.
// Tests of the file blob store and of the storage core over it use it to
// show that a failure leaves nothing partial behind.
package faultfs

import (
	iofs "io/fs"
	"os"
	"sync"

	blobfs "github.com/berth-registry/berth/storage/blob/fs"
)

// Operations an FS can be told to fail, and counts.
const (
	OpCreate   = "create"   // CreateTemp, and OpenFile with O_CREATE
	OpOpen     = "open"     // OpenFile of an existing file
	OpWrite    = "write"    // File.Write: half the bytes are written, then the error
	OpSync     = "sync"     // File.Sync
	OpTruncate = "truncate" // File.Truncate
	OpRename   = "rename"   // Rename
	OpRemove   = "remove"   // Remove
	OpMkdir    = "mkdir"    // MkdirAll
	OpSyncDir  = "syncdir"  // SyncDir
)

// FS is a blobfs.FS over the operating system's file system that fails
// the operations it is told to, until told otherwise, and counts every
// call of each operation, failed or not. It is safe for concurrent use.
type FS struct {
	mu    sync.Mutex
	fail  map[string]error
	hooks map[string]func(path string) error
	count map[string]int
}

// New returns an FS that fails nothing yet.
func New() *FS {
	return &FS{fail: map[string]error{}, hooks: map[string]func(string) error{}, count: map[string]int{}}
}

// Fail makes every later call of op fail with err (wrapped in the
// *fs.PathError or *os.LinkError the operating system would return).
func (f *FS) Fail(op string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[op] = err
}

// Hook makes every later call of op call fn first with the path it
// concerns (for Rename, the new path; for File methods, the file's
// name); if fn returns an error, the call fails with it as Fail would
// have it. fn runs without the FS's lock held, so it may call the FS.
// A nil fn removes the hook.
func (f *FS) Hook(op string, fn func(path string) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fn == nil {
		delete(f.hooks, op)
		return
	}
	f.hooks[op] = fn
}

// Clear stops every failure and removes every hook; counts go on.
func (f *FS) Clear() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.fail)
	clear(f.hooks)
}

// Count returns how many times op has been called.
func (f *FS) Count(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.count[op]
}

// call counts a call of op on path and returns the error it must fail
// with, if any.
func (f *FS) call(op, path string) error {
	f.mu.Lock()
	f.count[op]++
	err, hook := f.fail[op], f.hooks[op]
	f.mu.Unlock()
	if err != nil {
		return err
	}
	if hook != nil {
		return hook(path)
	}
	return nil
}

// OpenFile implements blobfs.FS.
func (f *FS) OpenFile(name string, flag int, perm iofs.FileMode) (blobfs.File, error) {
	op := OpOpen
	if flag&os.O_CREATE != 0 {
		op = OpCreate
	}
	if err := f.call(op, name); err != nil {
		return nil, &iofs.PathError{Op: op, Path: name, Err: err}
	}
	file, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &faultFile{f: file, fs: f}, nil
}

// CreateTemp implements blobfs.FS.
func (f *FS) CreateTemp(dir, pattern string) (blobfs.File, error) {
	if err := f.call(OpCreate, dir); err != nil {
		return nil, &iofs.PathError{Op: OpCreate, Path: dir, Err: err}
	}
	file, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return nil, err
	}
	return &faultFile{f: file, fs: f}, nil
}

// Rename implements blobfs.FS.
func (f *FS) Rename(oldpath, newpath string) error {
	if err := f.call(OpRename, newpath); err != nil {
		return &os.LinkError{Op: OpRename, Old: oldpath, New: newpath, Err: err}
	}
	return os.Rename(oldpath, newpath)
}

// Remove implements blobfs.FS.
func (f *FS) Remove(name string) error {
	if err := f.call(OpRemove, name); err != nil {
		return &iofs.PathError{Op: OpRemove, Path: name, Err: err}
	}
	return os.Remove(name)
}

// MkdirAll implements blobfs.FS.
func (f *FS) MkdirAll(path string, perm iofs.FileMode) error {
	if err := f.call(OpMkdir, path); err != nil {
		return &iofs.PathError{Op: OpMkdir, Path: path, Err: err}
	}
	return os.MkdirAll(path, perm)
}

// SyncDir implements blobfs.FS.
func (f *FS) SyncDir(dir string) error {
	if err := f.call(OpSyncDir, dir); err != nil {
		return &iofs.PathError{Op: OpSyncDir, Path: dir, Err: err}
	}
	return blobfs.OS{}.SyncDir(dir)
}

// faultFile is an open file of an FS. It has only the methods of
// blobfs.File, so that io.Copy cannot go around its Write.
type faultFile struct {
	f  *os.File
	fs *FS
}

func (f *faultFile) Read(p []byte) (int, error)                   { return f.f.Read(p) }
func (f *faultFile) Seek(offset int64, whence int) (int64, error) { return f.f.Seek(offset, whence) }
func (f *faultFile) Close() error                                 { return f.f.Close() }
func (f *faultFile) Name() string                                 { return f.f.Name() }

// Write writes half of p and fails, as a disk that fills up mid-write.
func (f *faultFile) Write(p []byte) (int, error) {
	if err := f.fs.call(OpWrite, f.Name()); err != nil {
		n, _ := f.f.Write(p[:len(p)/2])
		return n, &iofs.PathError{Op: OpWrite, Path: f.Name(), Err: err}
	}
	return f.f.Write(p)
}

func (f *faultFile) Sync() error {
	if err := f.fs.call(OpSync, f.Name()); err != nil {
		return &iofs.PathError{Op: OpSync, Path: f.Name(), Err: err}
	}
	return f.f.Sync()
}

func (f *faultFile) Truncate(size int64) error {
	if err := f.fs.call(OpTruncate, f.Name()); err != nil {
		return &iofs.PathError{Op: OpTruncate, Path: f.Name(), Err: err}
	}
	return f.f.Truncate(size)
}

var _ blobfs.FS = (*FS)(nil)
