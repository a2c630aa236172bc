package storage_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/blob/fs/faultfs"
	"github.com/berth-registry/berth/storage/manifest"
)

// faultCases are the storage errors a disk can throw at the write path.
var faultCases = []struct {
	name string
	op   string
	err  error
}{
	{"disk full while writing", faultfs.OpWrite, syscall.ENOSPC},
	{"fsync fails", faultfs.OpSync, syscall.EIO},
	{"permission denied creating", faultfs.OpCreate, syscall.EACCES},
	{"rename refused", faultfs.OpRename, syscall.EACCES},
	{"directory fsync fails", faultfs.OpSyncDir, syscall.EIO},
	{"blob directory cannot be made", faultfs.OpMkdir, syscall.EACCES},
}

// openFaulty opens a store whose blob store writes through a file system
// that fails on demand.
func openFaulty(t *testing.T) (*storage.Service, *faultfs.FS, string) {
	t.Helper()
	dir := t.TempDir()
	ffs := faultfs.New()
	s, _, _ := openService(t, dir, ffs, storage.Options{})
	return s, ffs, dir
}

// files lists the regular files under dir/sub.
func files(t *testing.T, dir, sub string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(filepath.Join(dir, sub), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// blobFile is the path of the file of d.
func blobFile(dir string, d digest.Digest) string {
	return filepath.Join(dir, "blobs", string(d.Algorithm()), d.Encoded()[:2], d.Encoded())
}

func readAll(t *testing.T, s *storage.Service, repo string, d digest.Digest) []byte {
	t.Helper()
	f, _, err := s.OpenBlob(context.Background(), repo, d)
	if err != nil {
		t.Fatalf("open %s: %v", d, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A monolithic push that hits a storage fault fails with the fault, leaves
// no blob visible and no temporary file, and succeeds once the fault clears.
func TestPutBlobFaults(t *testing.T) {
	for _, fc := range faultCases {
		t.Run(fc.name, func(t *testing.T) {
			ctx := context.Background()
			s, ffs, dir := openFaulty(t)
			content := bytes.Repeat([]byte("berth "), 20000)
			d := digest.FromBytes(content)
			ffs.Fail(fc.op, fc.err)
			_, err := s.PutBlob(ctx, "r", d, bytes.NewReader(content), int64(len(content)))
			if !errors.Is(err, fc.err) {
				t.Fatalf("want %v, got %v", fc.err, err)
			}
			if _, err := s.StatBlob(ctx, "r", d); !errors.Is(err, storage.ErrBlobUnknown) {
				t.Fatalf("blob visible after a failed push: %v", err)
			}
			if left := files(t, dir, "tmp"); len(left) != 0 {
				t.Fatalf("temporary files left behind: %v", left)
			}
			ffs.Clear()
			if _, err := s.PutBlob(ctx, "r", d, bytes.NewReader(content), int64(len(content))); err != nil {
				t.Fatalf("push after the fault cleared: %v", err)
			}
			if !bytes.Equal(readAll(t, s, "r", d), content) {
				t.Fatal("content differs")
			}
		})
	}
}

// A chunk that hits a fault is rolled back; the session stays usable, and a
// commit that hits one can be retried.
func TestUploadFaults(t *testing.T) {
	for _, fc := range faultCases {
		t.Run(fc.name, func(t *testing.T) {
			ctx := context.Background()
			s, ffs, dir := openFaulty(t)
			content := bytes.Repeat([]byte("0123456789"), 10000)
			d := digest.FromBytes(content)
			up, err := s.StartUpload(ctx, "r", "")
			if err != nil {
				t.Fatal(err)
			}
			half := int64(len(content) / 2)
			ffs.Fail(fc.op, fc.err)
			_, appendErr := s.AppendUpload(ctx, "r", up.ID, 0, bytes.NewReader(content[:half]), half)
			if appendErr != nil {
				if !errors.Is(appendErr, fc.err) {
					t.Fatalf("append: want %v, got %v", fc.err, appendErr)
				}
				ffs.Clear()
				st, err := s.UploadStatus(ctx, "r", up.ID)
				if err != nil || st.Offset != 0 {
					t.Fatalf("after a failed chunk: %+v %v", st, err)
				}
				if _, err := s.AppendUpload(ctx, "r", up.ID, 0, bytes.NewReader(content[:half]), half); err != nil {
					t.Fatalf("append after the fault cleared: %v", err)
				}
				ffs.Fail(fc.op, fc.err)
			}
			_, err = s.CommitUpload(ctx, "r", up.ID, d, half, bytes.NewReader(content[half:]), int64(len(content))-half)
			ffs.Clear()
			switch {
			case err == nil:
				// The fault is not on the commit path (file creation).
			case !errors.Is(err, fc.err):
				t.Fatalf("commit: want %v, got %v", fc.err, err)
			default:
				if _, err := s.StatBlob(ctx, "r", d); !errors.Is(err, storage.ErrBlobUnknown) {
					t.Fatalf("blob visible after a failed commit: %v", err)
				}
				st, err := s.UploadStatus(ctx, "r", up.ID)
				switch {
				case err == nil:
					// Still there: finish it from where it stands.
					if _, err := s.CommitUpload(ctx, "r", up.ID, d, st.Offset, bytes.NewReader(content[st.Offset:]), int64(len(content))-st.Offset); err != nil {
						t.Fatalf("commit after the fault cleared: %v", err)
					}
				case errors.Is(err, storage.ErrUploadUnknown):
					// Ended because its content had already moved: push again.
					if _, err := s.PutBlob(ctx, "r", d, bytes.NewReader(content), int64(len(content))); err != nil {
						t.Fatalf("push again after an ended session: %v", err)
					}
				default:
					t.Fatalf("session after a failed commit: %v", err)
				}
			}
			if !bytes.Equal(readAll(t, s, "r", d), content) {
				t.Fatal("content differs")
			}
			if left := files(t, dir, "uploads"); len(left) != 0 {
				t.Fatalf("upload files left behind: %v", left)
			}
		})
	}
}

// A manifest push that hits a fault records nothing, not even its tag, and
// leaves no file; it succeeds once the fault clears.
func TestPutManifestFaults(t *testing.T) {
	for _, fc := range faultCases {
		t.Run(fc.name, func(t *testing.T) {
			ctx := context.Background()
			s, ffs, dir := openFaulty(t)
			config := []byte(`{}`)
			if _, err := s.PutBlob(ctx, "r", digest.FromBytes(config), bytes.NewReader(config), 2); err != nil {
				t.Fatal(err)
			}
			body := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
				`"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"%s","size":2},"layers":[]}`, digest.FromBytes(config)))
			m, err := manifest.Parse("", body)
			if err != nil {
				t.Fatal(err)
			}
			d := digest.FromBytes(body)
			ffs.Fail(fc.op, fc.err)
			if _, err := s.PutManifest(ctx, "r", d, body, m, []string{"v1"}); !errors.Is(err, fc.err) {
				t.Fatalf("want %v, got %v", fc.err, err)
			}
			if _, err := s.StatManifest(ctx, "r", "v1"); !errors.Is(err, storage.ErrManifestUnknown) {
				t.Fatalf("tag recorded by a failed push: %v", err)
			}
			if _, err := s.StatManifest(ctx, "r", string(d)); !errors.Is(err, storage.ErrManifestUnknown) {
				t.Fatalf("manifest recorded by a failed push: %v", err)
			}
			if left := files(t, dir, "tmp"); len(left) != 0 {
				t.Fatalf("temporary files left behind: %v", left)
			}
			ffs.Clear()
			if _, err := s.PutManifest(ctx, "r", d, body, m, []string{"v1"}); err != nil {
				t.Fatalf("push after the fault cleared: %v", err)
			}
			if _, got, err := s.GetManifest(ctx, "r", "v1"); err != nil || !bytes.Equal(got, body) {
				t.Fatalf("manifest after retry: %v", err)
			}
		})
	}
}
