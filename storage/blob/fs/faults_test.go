package fs_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/blob"
	"github.com/berth-registry/berth/storage/blob/blobtest"
	blobfs "github.com/berth-registry/berth/storage/blob/fs"
	"github.com/berth-registry/berth/storage/blob/fs/faultfs"
)

// The fault seam changes nothing while it fails nothing.
func TestSuiteThroughFaultFS(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Store { return openStore(t, t.TempDir(), faultfs.New()) })
}

// stagedFile is the one file that holds the content of a session (id) or
// of anonymous content (id empty), and its content.
func stagedFile(t *testing.T, root, id string) []byte {
	t.Helper()
	p := filepath.Join(root, "uploads", id)
	if id == "" {
		names := entries(t, filepath.Join(root, "tmp"))
		if len(names) != 1 {
			t.Fatalf("tmp/ holds %v, want one file", names)
		}
		p = filepath.Join(root, "tmp", names[0])
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func kinds() []struct {
	name string
	id   string
} {
	return []struct {
		name string
		id   string
	}{{"session", "up"}, {"anonymous", ""}}
}

// An append that fails on the disk leaves the content as it was, and the
// hash too: the next append gives the right digest.
func TestAppendFaults(t *testing.T) {
	for _, fc := range []struct {
		name string
		op   string
		err  error
	}{
		{"disk full while writing", faultfs.OpWrite, syscall.ENOSPC},
		{"file cannot be opened", faultfs.OpOpen, syscall.EACCES},
	} {
		for _, k := range kinds() {
			t.Run(fc.name+"/"+k.name, func(t *testing.T) {
				ctx := t.Context()
				root, ffs := t.TempDir(), faultfs.New()
				s := openStore(t, root, ffs)
				st, err := s.Stage(ctx, k.id)
				if err != nil {
					t.Fatal(err)
				}
				good, next := bytes.Repeat([]byte("good "), 1000), bytes.Repeat([]byte("next "), 40000)
				h := digest.Canonical.Hash()
				if _, err := st.Append(ctx, bytes.NewReader(good), -1, h); err != nil {
					t.Fatal(err)
				}
				ffs.Fail(fc.op, fc.err)
				n, err := st.Append(ctx, bytes.NewReader(next), int64(len(next)), h)
				if !errors.Is(err, fc.err) || n != 0 {
					t.Fatalf("append: %d, %v; want 0 and %v", n, err, fc.err)
				}
				ffs.Clear()
				if b := stagedFile(t, root, k.id); !bytes.Equal(b, good) {
					t.Fatalf("after a failed append the file holds %d bytes, want the %d before it", len(b), len(good))
				}
				if _, err := st.Append(ctx, bytes.NewReader(next), int64(len(next)), h); err != nil {
					t.Fatal(err)
				}
				all := append(append([]byte{}, good...), next...)
				d := digest.NewDigest(digest.Canonical, h)
				if d != digest.FromBytes(all) {
					t.Fatalf("hash after a failed append: %s, want %s", d, digest.FromBytes(all))
				}
				if err := st.Commit(ctx, d); err != nil {
					t.Fatal(err)
				}
				if b, err := os.ReadFile(blobPath(root, d)); err != nil || !bytes.Equal(b, all) {
					t.Fatalf("committed: %d bytes, %v", len(b), err)
				}
			})
		}
	}
}

// If the rollback of a failed append fails too, the content in flight is
// removed rather than left disagreeing with its hash.
func TestAppendRollbackFails(t *testing.T) {
	for _, k := range kinds() {
		t.Run(k.name, func(t *testing.T) {
			ctx := t.Context()
			root, ffs := t.TempDir(), faultfs.New()
			s := openStore(t, root, ffs)
			st, err := s.Stage(ctx, k.id)
			if err != nil {
				t.Fatal(err)
			}
			appendAll(t, st, []byte("before"))
			ffs.Fail(faultfs.OpWrite, syscall.ENOSPC)
			ffs.Fail(faultfs.OpTruncate, syscall.EIO)
			_, err = st.Append(ctx, bytes.NewReader(bytes.Repeat([]byte("x"), 100000)), -1, digest.Canonical.Hash())
			if !errors.Is(err, syscall.ENOSPC) || !errors.Is(err, syscall.EIO) {
				t.Fatalf("append: %v, want the write's and the truncation's errors", err)
			}
			ffs.Clear()
			if _, err := st.Size(ctx); !errors.Is(err, blob.ErrNotFound) {
				t.Fatalf("size after a failed rollback: %v, want ErrNotFound", err)
			}
			if k.id != "" {
				if _, err := s.Resume(ctx, k.id); !errors.Is(err, blob.ErrNotFound) {
					t.Fatalf("resume after a failed rollback: %v, want ErrNotFound", err)
				}
			}
			wantEmpty(t, filepath.Join(root, "uploads"))
			wantEmpty(t, filepath.Join(root, "tmp"))
		})
	}
}

// A commit of new content that fails on the disk leaves no partial file in
// blobs/; a session keeps its content to commit again, anonymous content
// leaves nothing in tmp/.
func TestCommitFaults(t *testing.T) {
	for _, fc := range []struct {
		name      string
		op        string
		err       error
		dirExists bool // the blob's directory exists before the commit
		placed    bool // the failure comes after the file moved into place
	}{
		{"file cannot be opened to sync", faultfs.OpOpen, syscall.EACCES, false, false},
		{"fsync fails", faultfs.OpSync, syscall.EIO, false, false},
		{"blob directory cannot be made", faultfs.OpMkdir, syscall.EACCES, false, false},
		{"new directory's parent sync fails", faultfs.OpSyncDir, syscall.EIO, false, false},
		{"rename refused", faultfs.OpRename, syscall.EACCES, true, false},
		{"directory sync fails after the rename", faultfs.OpSyncDir, syscall.EIO, true, true},
	} {
		for _, k := range kinds() {
			t.Run(fc.name+"/"+k.name, func(t *testing.T) {
				ctx := t.Context()
				root, ffs := t.TempDir(), faultfs.New()
				s := openStore(t, root, ffs)
				data := bytes.Repeat([]byte("commit "), 20000)
				d := digest.FromBytes(data)
				if fc.dirExists {
					if err := os.MkdirAll(filepath.Dir(blobPath(root, d)), 0o750); err != nil {
						t.Fatal(err)
					}
				}
				st, err := s.Stage(ctx, k.id)
				if err != nil {
					t.Fatal(err)
				}
				appendAll(t, st, data)
				ffs.Fail(fc.op, fc.err)
				if err := st.Commit(ctx, d); !errors.Is(err, fc.err) {
					t.Fatalf("commit: %v, want %v", err, fc.err)
				}
				ffs.Clear()
				wantComplete(t, root)
				wantEmpty(t, filepath.Join(root, "tmp"))
				if !fc.dirExists {
					// A directory made but not synced is not left for a
					// later commit to trust.
					if _, err := os.Lstat(filepath.Dir(blobPath(root, d))); !errors.Is(err, os.ErrNotExist) {
						t.Fatalf("blob directory after the failure: %v, want none", err)
					}
				}
				_, err = os.Lstat(blobPath(root, d))
				if fc.placed != (err == nil) {
					t.Fatalf("blob file after the failure: %v; want it in place: %v", err, fc.placed)
				}
				switch {
				case fc.placed || k.id == "":
					wantEmpty(t, filepath.Join(root, "uploads"))
				default:
					if b := stagedFile(t, root, k.id); !bytes.Equal(b, data) {
						t.Fatalf("session after a failed commit holds %d bytes, want %d", len(b), len(data))
					}
				}
				// Once the disk recovers, the commit goes through, or for
				// anonymous content lost before its move, reports it gone.
				syncDirs := ffs.Count(faultfs.OpSyncDir)
				err = st.Commit(ctx, d)
				if k.id == "" && !fc.placed {
					if !errors.Is(err, blob.ErrNotFound) {
						t.Fatalf("commit again of dropped anonymous content: %v, want ErrNotFound", err)
					}
					return
				}
				if err != nil {
					t.Fatalf("commit again: %v", err)
				}
				if fc.placed && ffs.Count(faultfs.OpSyncDir) == syncDirs {
					t.Fatal("commit again of content already moved into place did not sync its directory")
				}
				if b, err := os.ReadFile(blobPath(root, d)); err != nil || !bytes.Equal(b, data) {
					t.Fatalf("committed: %d bytes, %v", len(b), err)
				}
				wantEmpty(t, filepath.Join(root, "uploads"))
			})
		}
	}
}

// A commit of content already in place that fails leaves the content in
// place untouched.
func TestCommitExistingFaults(t *testing.T) {
	for _, fc := range []struct {
		name string
		op   string
		err  error
	}{
		{"staged copy cannot be removed", faultfs.OpRemove, syscall.EACCES},
		{"directory sync fails", faultfs.OpSyncDir, syscall.EIO},
	} {
		for _, k := range kinds() {
			t.Run(fc.name+"/"+k.name, func(t *testing.T) {
				ctx := t.Context()
				root, ffs := t.TempDir(), faultfs.New()
				s := openStore(t, root, ffs)
				data := []byte("already here")
				d := put(t, s, data)
				st, err := s.Stage(ctx, k.id)
				if err != nil {
					t.Fatal(err)
				}
				appendAll(t, st, data)
				ffs.Fail(fc.op, fc.err)
				if err := st.Commit(ctx, d); !errors.Is(err, fc.err) {
					t.Fatalf("commit: %v, want %v", err, fc.err)
				}
				ffs.Clear()
				if b, err := os.ReadFile(blobPath(root, d)); err != nil || !bytes.Equal(b, data) {
					t.Fatalf("content in place: %q, %v", b, err)
				}
				wantComplete(t, root)
				if k.id == "" {
					if fc.op == faultfs.OpRemove {
						// Its removal failed too; the next Open removes it.
						openStore(t, root, nil)
					}
					wantEmpty(t, filepath.Join(root, "tmp"))
					return
				}
				if err := st.Commit(ctx, d); err != nil {
					t.Fatalf("commit again: %v", err)
				}
				wantEmpty(t, filepath.Join(root, "uploads"))
				if size, err := s.Stat(ctx, d); err != nil || size != int64(len(data)) {
					t.Fatalf("stat: %d, %v", size, err)
				}
			})
		}
	}
}

func TestStageFaults(t *testing.T) {
	root, ffs := t.TempDir(), faultfs.New()
	s := openStore(t, root, ffs)
	ffs.Fail(faultfs.OpCreate, syscall.EACCES)
	for _, k := range kinds() {
		if _, err := s.Stage(t.Context(), k.id); !errors.Is(err, syscall.EACCES) {
			t.Fatalf("stage %s: %v, want EACCES", k.name, err)
		}
	}
	wantEmpty(t, filepath.Join(root, "uploads"))
	wantEmpty(t, filepath.Join(root, "tmp"))
}

func TestCancelFault(t *testing.T) {
	ctx := t.Context()
	root, ffs := t.TempDir(), faultfs.New()
	s := openStore(t, root, ffs)
	st, err := s.Stage(ctx, "up")
	if err != nil {
		t.Fatal(err)
	}
	appendAll(t, st, []byte("kept"))
	ffs.Fail(faultfs.OpRemove, syscall.EACCES)
	if err := st.Cancel(ctx); !errors.Is(err, syscall.EACCES) {
		t.Fatalf("cancel: %v, want EACCES", err)
	}
	ffs.Clear()
	if b := stagedFile(t, root, "up"); string(b) != "kept" {
		t.Fatalf("session after a failed cancel: %q", b)
	}
	if err := st.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	wantEmpty(t, filepath.Join(root, "uploads"))
}

func TestQuarantineFault(t *testing.T) {
	ctx := t.Context()
	root, ffs := t.TempDir(), faultfs.New()
	s := openStore(t, root, ffs)
	d := put(t, s, []byte("suspect"))
	ffs.Fail(faultfs.OpRename, syscall.EACCES)
	if where, err := s.Quarantine(ctx, d); !errors.Is(err, syscall.EACCES) || where != "" {
		t.Fatalf("quarantine: %q, %v; want EACCES", where, err)
	}
	if size, err := s.Stat(ctx, d); err != nil || size != 7 {
		t.Fatalf("blob after a failed quarantine: %d, %v", size, err)
	}
}

func TestOpenFaults(t *testing.T) {
	for _, fc := range []struct {
		op  string
		err error
	}{{faultfs.OpMkdir, syscall.EACCES}, {faultfs.OpSyncDir, syscall.EIO}} {
		ffs := faultfs.New()
		ffs.Fail(fc.op, fc.err)
		if _, err := blobfs.Open(t.Context(), t.TempDir(), blobfs.Options{FS: ffs}); !errors.Is(err, fc.err) {
			t.Fatalf("open with %s failing: %v, want %v", fc.op, err, fc.err)
		}
	}
}

// Appending never syncs; a commit of new content syncs the file once and
// every directory that gained an entry; a commit of content already in
// place syncs no file, only the blob's directory again.
func TestSyncs(t *testing.T) {
	ctx := t.Context()
	root, ffs := t.TempDir(), faultfs.New()
	var dirs []string
	ffs.Hook(faultfs.OpSyncDir, func(p string) error {
		rel, _ := filepath.Rel(root, p)
		dirs = append(dirs, filepath.ToSlash(rel))
		return nil
	})
	s := openStore(t, root, ffs)
	data := bytes.Repeat([]byte("synced "), 10000)
	d := digest.FromBytes(data)
	blobDir := "blobs/sha256/" + d.Encoded()[:2]

	st, err := s.Stage(ctx, "first")
	if err != nil {
		t.Fatal(err)
	}
	syncs := ffs.Count(faultfs.OpSync)
	for range 3 {
		appendAll(t, st, data[:len(data)/3])
	}
	appendAll(t, st, data[len(data)/3*3:])
	if n := ffs.Count(faultfs.OpSync) - syncs; n != 0 {
		t.Fatalf("appending synced %d times", n)
	}
	dirs = nil
	if err := st.Commit(ctx, d); err != nil {
		t.Fatal(err)
	}
	if n := ffs.Count(faultfs.OpSync) - syncs; n != 1 {
		t.Fatalf("commit of new content synced the file %d times, want 1", n)
	}
	if want := []string{"blobs/sha256", "blobs", blobDir}; !slices.Equal(dirs, want) {
		t.Fatalf("commit of new content synced directories %v, want %v", dirs, want)
	}

	for _, k := range kinds() {
		st, err := s.Stage(ctx, k.id)
		if err != nil {
			t.Fatal(err)
		}
		appendAll(t, st, data)
		syncs, dirs = ffs.Count(faultfs.OpSync), nil
		if err := st.Commit(ctx, d); err != nil {
			t.Fatal(err)
		}
		if n := ffs.Count(faultfs.OpSync) - syncs; n != 0 {
			t.Fatalf("commit of content in place (%s) synced the staged copy %d times, want 0", k.name, n)
		}
		if want := []string{blobDir}; !slices.Equal(dirs, want) {
			t.Fatalf("commit of content in place (%s) synced directories %v, want %v", k.name, dirs, want)
		}
	}
	wantEmpty(t, filepath.Join(root, "uploads"))
	wantEmpty(t, filepath.Join(root, "tmp"))
}
