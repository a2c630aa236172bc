package s3_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/blob"
	blobs3 "github.com/berth-registry/berth/storage/blob/s3"
	"github.com/berth-registry/berth/storage/meta"
	"github.com/berth-registry/berth/storage/meta/bolt"
	"github.com/berth-registry/berth/storage/storagetest"
)

// TestStorageSuite runs the core's behavioural suite over the embedded
// index and this store: the index in the suite's directory, the blobs in
// a bucket the suite's tests share, under a prefix named after the
// test's directory, so that a store opened again on the same directory (a
// restart) finds its blobs.
func TestStorageSuite(t *testing.T) {
	shared := options(t)
	storagetest.Run(t, storagetest.Backends{
		Open: func(t *testing.T, dir string) (meta.Store, blob.Store) {
			opts := shared
			sum := sha256.Sum256([]byte(dir))
			opts.Prefix = hex.EncodeToString(sum[:8])
			index, err := bolt.Open(filepath.Join(dir, "index.db"), bolt.Options{})
			if err != nil {
				t.Fatalf("open index: %v", err)
			}
			return index, openStore(t, opts)
		},
	})
}

// TestUploadResumesFromHashState: a process that has not seen an upload
// session (here, after a restart) goes on hashing it from the hash state
// the store keeps, without reading the content back; the blob commits
// under its digest.
func TestUploadResumesFromHashState(t *testing.T) {
	opts := options(t)
	counter := &countingTransport{}
	opts.HTTPClient = &http.Client{Transport: counter}
	dir := t.TempDir()
	open := func() (*storage.Service, func()) {
		index, err := bolt.Open(filepath.Join(dir, "index.db"), bolt.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return storage.New(index, openStore(t, opts), storage.Options{}), func() { _ = index.Close() }
	}
	ctx := t.Context()
	svc, closeIndex := open()
	up, err := svc.StartUpload(ctx, "r", "")
	if err != nil {
		t.Fatal(err)
	}
	first := random(t, 20<<20)
	if _, err := svc.AppendUpload(ctx, "r", up.ID, 0, bytes.NewReader(first), int64(len(first))); err != nil {
		t.Fatal(err)
	}
	closeIndex()

	svc, closeIndex = open()
	defer closeIndex()
	counter.n.Store(0)
	last := []byte("the last chunk")
	all := append(bytes.Clone(first), last...)
	info, err := svc.CommitUpload(ctx, "r", up.ID, digest.FromBytes(all), int64(len(first)), bytes.NewReader(last), int64(len(last)))
	if err != nil {
		t.Fatalf("commit after the restart: %v", err)
	}
	if info.Size != int64(len(all)) {
		t.Fatalf("committed %d bytes, want %d", info.Size, len(all))
	}
	// The commit reads back the small pieces, less than a part; reading
	// the whole content back to rehash it would be 20 MiB.
	if n := counter.n.Load(); n > blobs3.DefaultPartSize+1<<20 {
		t.Fatalf("resuming the upload read %d bytes from the bucket", n)
	}
	r, _, err := svc.OpenBlob(ctx, "r", info.Digest)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, all) {
		t.Fatalf("read back %d bytes, %v", len(got), err)
	}
}
