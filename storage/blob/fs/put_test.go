package fs_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/blob"
	"github.com/berth-registry/berth/storage/blob/fs/faultfs"
)

// A Put that fails on the disk leaves no partial file: nothing under the
// blob's name, no temporary file beside it, nothing in tmp/.
func TestPutFaults(t *testing.T) {
	for _, fc := range []struct {
		name   string
		op     string
		err    error
		placed bool // the failure comes after the file moved into place
	}{
		{"temporary file cannot be made", faultfs.OpCreate, syscall.EACCES, false},
		{"disk full while writing", faultfs.OpWrite, syscall.ENOSPC, false},
		{"fsync fails", faultfs.OpSync, syscall.EIO, false},
		{"rename refused", faultfs.OpRename, syscall.EACCES, false},
		{"directory sync fails after the rename", faultfs.OpSyncDir, syscall.EIO, true},
	} {
		t.Run(fc.name, func(t *testing.T) {
			ctx := t.Context()
			root, ffs := t.TempDir(), faultfs.New()
			s := openStore(t, root, ffs)
			data := bytes.Repeat([]byte("put "), 5000)
			d := digest.FromBytes(data)
			// The blob's directory exists, so that the fault hits Put's
			// own steps.
			if err := os.MkdirAll(filepath.Dir(blobPath(root, d)), 0o750); err != nil {
				t.Fatal(err)
			}
			ffs.Fail(fc.op, fc.err)
			if err := s.Put(ctx, d, bytes.NewReader(data), int64(len(data))); !errors.Is(err, fc.err) {
				t.Fatalf("put: %v, want %v", err, fc.err)
			}
			ffs.Clear()
			wantComplete(t, root)
			wantEmpty(t, filepath.Join(root, "tmp"))
			names := entries(t, filepath.Join(root, "blobs"))
			for _, name := range names {
				if strings.Contains(name, "/.put-") {
					t.Fatalf("a failed put left %s", name)
				}
			}
			if _, err := os.Lstat(blobPath(root, d)); fc.placed != (err == nil) {
				t.Fatalf("blob file after the failure: %v; want it in place: %v", err, fc.placed)
			}
			// Once the fault clears, the same Put succeeds.
			if err := s.Put(ctx, d, bytes.NewReader(data), int64(len(data))); err != nil {
				t.Fatalf("put after the fault cleared: %v", err)
			}
			if got, err := os.ReadFile(blobPath(root, d)); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("content after the fault cleared: %v", err)
			}
		})
	}
}

// A Put of new content syncs its file once and its directory; content in
// place costs a directory sync and no write at all.
func TestPutSyncs(t *testing.T) {
	ctx := t.Context()
	root, ffs := t.TempDir(), faultfs.New()
	var dirs []string
	ffs.Hook(faultfs.OpSyncDir, func(p string) error {
		rel, _ := filepath.Rel(root, p)
		dirs = append(dirs, filepath.ToSlash(rel))
		return nil
	})
	s := openStore(t, root, ffs)
	dirs = nil // opening syncs the root
	data := []byte(`{"schemaVersion":2}`)
	d := digest.FromBytes(data)
	blobDir := "blobs/sha256/" + d.Encoded()[:2]

	syncs, creates := ffs.Count(faultfs.OpSync), ffs.Count(faultfs.OpCreate)
	if err := s.Put(ctx, d, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if n, c := ffs.Count(faultfs.OpSync)-syncs, ffs.Count(faultfs.OpCreate)-creates; n != 1 || c != 1 {
		t.Fatalf("put of new content synced its file %d times and created %d files, want 1 and 1", n, c)
	}
	if want := []string{"blobs/sha256", "blobs", blobDir}; !slices.Equal(dirs, want) {
		t.Fatalf("put of new content synced directories %v, want %v", dirs, want)
	}
	syncs, creates, dirs = ffs.Count(faultfs.OpSync), ffs.Count(faultfs.OpCreate), nil
	if err := s.Put(ctx, d, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if n, c := ffs.Count(faultfs.OpSync)-syncs, ffs.Count(faultfs.OpCreate)-creates; n != 0 || c != 0 {
		t.Fatalf("put of content in place synced %d files and created %d, want none", n, c)
	}
	if want := []string{blobDir}; !slices.Equal(dirs, want) {
		t.Fatalf("put of content in place synced directories %v, want %v", dirs, want)
	}
}

// A temporary file a crash left beside a blob is a stray: Walk reports it
// without a digest and Sweep removes it.
func TestPutLeftoverIsAStray(t *testing.T) {
	ctx := t.Context()
	root := t.TempDir()
	s := openStore(t, root, nil)
	data := []byte("a blob beside a leftover")
	d := digest.FromBytes(data)
	if err := s.Put(ctx, d, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	leftover := filepath.Join(filepath.Dir(blobPath(root, d)), ".put-123456")
	if err := os.WriteFile(leftover, data[:5], 0o600); err != nil {
		t.Fatal(err)
	}
	name := "blobs/sha256/" + d.Encoded()[:2] + "/.put-123456"
	var found bool
	err := s.Walk(ctx, func(e blob.Entry) error {
		if e.Name == name {
			found = true
			if e.Digest != "" || e.Irregular != "" || e.Size != 5 {
				t.Errorf("leftover reported as %+v, want a stray of 5 bytes", e)
			}
		}
		return nil
	})
	if err != nil || !found {
		t.Fatalf("walk: %v; leftover found: %v", err, found)
	}
	if err := s.Sweep(ctx, name); err != nil {
		t.Fatalf("sweep: %v", err)
	}
	if _, err := os.Lstat(leftover); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("leftover after the sweep: %v", err)
	}
	if got, err := os.ReadFile(blobPath(root, d)); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the blob beside it: %v", err)
	}
}
