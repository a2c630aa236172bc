package storage_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/blob/fs/faultfs"
	"github.com/berth-registry/berth/storage/manifest"
	"github.com/berth-registry/berth/storage/meta"
	"github.com/berth-registry/berth/storage/meta/bolt"
)

// crashAfterPlacing runs push in a goroutine that dies, as the process
// would in a crash, right after the content of d is renamed into place:
// at the sync of its directory, before the index records it.
func crashAfterPlacing(t *testing.T, ffs *faultfs.FS, dir string, d digest.Digest, push func()) {
	t.Helper()
	blobDir := filepath.Dir(blobFile(dir, d))
	crashed := false
	ffs.Hook(faultfs.OpSyncDir, func(path string) error {
		if path == blobDir {
			crashed = true
			runtime.Goexit()
		}
		return nil
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		push()
		t.Error("the push returned: it did not reach the crash")
	}()
	<-done
	ffs.Clear()
	if !crashed {
		t.Fatal("the push never synced the directory of its content")
	}
	if _, err := os.Stat(blobFile(dir, d)); err != nil {
		t.Fatalf("the crash came before the content was in place: %v", err)
	}
}

// A crash after content is renamed into place but before the index
// transaction commits leaves no visible blob, manifest or tag, and no
// temporary file after the restart; a session whose content moved ends;
// and pushing the same content again succeeds.
func TestCrashBetweenRenameAndCommit(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ffs := faultfs.New()
	index, blobs := openBackends(t, dir, ffs)
	s := storage.New(index, blobs, storage.Options{})

	blobContent := []byte("content whose index entry never committed")
	bd := digest.FromBytes(blobContent)
	crashAfterPlacing(t, ffs, dir, bd, func() {
		_, _ = s.PutBlob(ctx, "app", bd, bytes.NewReader(blobContent), int64(len(blobContent)))
	})

	config := []byte(`{}`)
	if _, err := s.PutBlob(ctx, "app", digest.FromBytes(config), bytes.NewReader(config), 2); err != nil {
		t.Fatal(err)
	}
	body := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"%s","size":2},"layers":[]}`, digest.FromBytes(config)))
	m, err := manifest.Parse("", body)
	if err != nil {
		t.Fatal(err)
	}
	md := digest.FromBytes(body)
	crashAfterPlacing(t, ffs, dir, md, func() { _, _ = s.PutManifest(ctx, "app", md, body, m, []string{"v1"}) })

	sessionContent := []byte("content of a session whose commit never recorded it")
	sd := digest.FromBytes(sessionContent)
	up, err := s.StartUpload(ctx, "app", "")
	if err != nil {
		t.Fatal(err)
	}
	crashAfterPlacing(t, ffs, dir, sd, func() {
		_, _ = s.CommitUpload(ctx, "app", up.ID, sd, 0, bytes.NewReader(sessionContent), int64(len(sessionContent)))
	})

	// A temporary file of another request in flight, also cut off.
	if err := os.WriteFile(filepath.Join(dir, "tmp", "content-dead"), []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := index.Close(); err != nil {
		t.Fatal(err)
	}

	s, index, _ = openService(t, dir, nil, storage.Options{})
	if left := files(t, dir, "tmp"); len(left) != 0 {
		t.Fatalf("stale temporary files survived a restart: %v", left)
	}
	for _, d := range []digest.Digest{bd, sd} {
		if _, err := s.StatBlob(ctx, "app", d); !errors.Is(err, storage.ErrBlobUnknown) {
			t.Fatalf("blob without index entry is visible: err=%v", err)
		}
		if _, _, err := s.OpenBlob(ctx, "app", d); !errors.Is(err, storage.ErrBlobUnknown) {
			t.Fatalf("blob without index entry can be opened: err=%v", err)
		}
		if _, err := s.MountBlob(ctx, "app", "", d); !errors.Is(err, storage.ErrBlobUnknown) {
			t.Fatalf("blob without index entry can be mounted: err=%v", err)
		}
	}
	for _, ref := range []string{string(md), "v1"} {
		if _, err := s.StatManifest(ctx, "app", ref); !errors.Is(err, storage.ErrManifestUnknown) {
			t.Fatalf("manifest %s without index entry is visible: %v", ref, err)
		}
	}
	// The session's content moved: it cannot go on, and its record goes.
	if _, err := s.UploadStatus(ctx, "app", up.ID); !errors.Is(err, storage.ErrUploadUnknown) {
		t.Fatalf("session whose content moved: %v", err)
	}
	err = index.View(ctx, func(tx meta.Tx) error {
		if _, ok, err := tx.Upload(up.ID); err != nil || ok {
			t.Errorf("record of the ended session: %v, %v", ok, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	for _, c := range [][]byte{blobContent, sessionContent} {
		d := digest.FromBytes(c)
		if _, err := s.PutBlob(ctx, "app", d, bytes.NewReader(c), int64(len(c))); err != nil {
			t.Fatalf("push after crash: %v", err)
		}
		if got := readAll(t, s, "app", d); !bytes.Equal(got, c) {
			t.Fatal("content differs after re-push")
		}
	}
	if _, err := s.PutManifest(ctx, "app", md, body, m, []string{"v1"}); err != nil {
		t.Fatalf("manifest push after crash: %v", err)
	}
	if _, got, err := s.GetManifest(ctx, "app", "v1"); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("manifest after re-push: %v", err)
	}
	if left := files(t, dir, "uploads"); len(left) != 0 {
		t.Fatalf("upload files left: %v", left)
	}
}

// A second process cannot open a store in use: opening the index fails
// with ErrInUse once its timeout passes, while the first goes on. (That
// the blob store, whose opening clears the content in flight of dead
// processes, is opened only after the index is registry.OpenStore's
// order, and its test's.)
func TestSecondOpenFailsWhileLocked(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	first, _, _ := openService(t, dir, nil, storage.Options{})
	second, err := bolt.Open(filepath.Join(dir, "index.db"), bolt.Options{Timeout: 100 * time.Millisecond})
	if err == nil {
		_ = second.Close()
		t.Fatal("a second process could open a store that is in use")
	}
	if !errors.Is(err, bolt.ErrInUse) {
		t.Errorf("second open: %v, want ErrInUse", err)
	}
	// The first store still works.
	c := []byte("still served")
	if _, err := first.PutBlob(ctx, "app", digest.FromBytes(c), bytes.NewReader(c), int64(len(c))); err != nil {
		t.Fatal(err)
	}
}
