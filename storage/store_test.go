package storage

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage/manifest"
)

func openStore(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(context.Background(), dir, Options{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	return s
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func readBlob(t *testing.T, s *Store, repo string, d digest.Digest) []byte {
	t.Helper()
	f, _, err := s.OpenBlob(context.Background(), repo, d)
	if err != nil {
		t.Fatalf("open blob %s in %s: %v", d, repo, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			names = append(names, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func TestConcurrentPushesOfOneBlob(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	defer s.Close()
	content := randomBytes(t, 256<<10)
	d := digest.FromBytes(content)

	const workers = 24
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			repo := fmt.Sprintf("team/repo%d", i%4)
			if i%2 == 0 {
				_, err := s.PutBlob(ctx, repo, d, bytes.NewReader(content), int64(len(content)))
				errs <- err
				return
			}
			// Chunked: three chunks through an upload session.
			up, err := s.StartUpload(ctx, repo, "")
			if err != nil {
				errs <- err
				return
			}
			third := len(content) / 3
			for off := 0; off < len(content); off += third {
				end := min(off+third, len(content))
				if _, err := s.AppendUpload(ctx, repo, up.ID, int64(off), bytes.NewReader(content[off:end]), int64(end-off)); err != nil {
					errs <- err
					return
				}
			}
			_, err = s.CommitUpload(ctx, repo, up.ID, d, -1, nil, 0)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent push: %v", err)
		}
	}
	for i := range 4 {
		repo := fmt.Sprintf("team/repo%d", i)
		if got := readBlob(t, s, repo, d); !bytes.Equal(got, content) {
			t.Fatalf("%s: content differs after concurrent pushes", repo)
		}
	}
	// One copy on disk, whatever the number of pushes.
	if files := dirEntries(t, filepath.Join(s.root, "blobs")); len(files) != 1 {
		t.Fatalf("want one blob file, got %d: %v", len(files), files)
	}
	if files := dirEntries(t, filepath.Join(s.root, "uploads")); len(files) != 0 {
		t.Fatalf("upload files left behind: %v", files)
	}
}

// A crash after the content file is renamed into place but before the index
// transaction commits must leave no visible blob, and a later push of the
// same content must succeed.
func TestCrashBetweenRenameAndCommit(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openStore(t, dir)
	content := []byte("content whose index entry never committed")
	d := digest.FromBytes(content)

	// Do exactly what PutBlob does up to the index transaction, then "crash".
	path, got, _, err := s.writeContent(ctx, bytes.NewReader(content), d.Algorithm(), int64(len(content)))
	if err != nil || got != d {
		t.Fatalf("write content: %v (digest %s)", err, got)
	}
	if err := s.place(path, d); err != nil {
		t.Fatal(err)
	}
	// A temporary file of another in-flight request, also cut off.
	if err := os.WriteFile(filepath.Join(dir, "tmp", "content-dead"), []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir)
	defer s.Close()
	if _, err := s.StatBlob(ctx, "app", d); !errors.Is(err, ErrBlobUnknown) {
		t.Fatalf("blob without index entry is visible: err=%v", err)
	}
	if _, _, err := s.OpenBlob(ctx, "app", d); !errors.Is(err, ErrBlobUnknown) {
		t.Fatalf("blob without index entry can be opened: err=%v", err)
	}
	if _, err := s.MountBlob(ctx, "app", "", d); !errors.Is(err, ErrBlobUnknown) {
		t.Fatalf("blob without index entry can be mounted: err=%v", err)
	}
	if files := dirEntries(t, filepath.Join(dir, "tmp")); len(files) != 0 {
		t.Fatalf("stale temporary files survived a restart: %v", files)
	}
	if _, err := s.PutBlob(ctx, "app", d, bytes.NewReader(content), int64(len(content))); err != nil {
		t.Fatalf("push after crash: %v", err)
	}
	if got := readBlob(t, s, "app", d); !bytes.Equal(got, content) {
		t.Fatal("content differs after re-push")
	}
}

// Everything acknowledged before a restart is there after it, and an
// upload session in progress resumes from where it stood.
func TestRestartKeepsAcknowledgedContent(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openStore(t, dir)

	config := []byte(`{"architecture":"amd64","os":"linux"}`)
	layer := randomBytes(t, 64<<10)
	big := randomBytes(t, 300<<10)
	for _, b := range [][]byte{config, layer} {
		if _, err := s.PutBlob(ctx, "apps/web", digest.FromBytes(b), bytes.NewReader(b), int64(len(b))); err != nil {
			t.Fatal(err)
		}
	}
	body := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},`+
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%d}]}`,
		digest.FromBytes(config), len(config), digest.FromBytes(layer), len(layer)))
	m, err := manifest.Parse(manifest.MediaTypeOCIManifest, body)
	if err != nil {
		t.Fatal(err)
	}
	md := digest.FromBytes(body)
	if err := s.PutManifest(ctx, "apps/web", md, body, m, []string{"v1", "production"}); err != nil {
		t.Fatal(err)
	}
	// A sha512 blob, pushed through a session announced as sha512.
	up512, err := s.StartUpload(ctx, "apps/web", digest.SHA512)
	if err != nil {
		t.Fatal(err)
	}
	d512 := digest.SHA512.FromBytes(layer)
	if _, err := s.CommitUpload(ctx, "apps/web", up512.ID, d512, 0, bytes.NewReader(layer), int64(len(layer))); err != nil {
		t.Fatal(err)
	}
	// An upload half done when the process stops.
	up, err := s.StartUpload(ctx, "apps/web", "")
	if err != nil {
		t.Fatal(err)
	}
	half := len(big) / 2
	if _, err := s.AppendUpload(ctx, "apps/web", up.ID, 0, bytes.NewReader(big[:half]), int64(half)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir)
	defer s.Close()
	info, got, err := s.GetManifest(ctx, "apps/web", "production")
	if err != nil {
		t.Fatalf("manifest by tag after restart: %v", err)
	}
	if info.Digest != md || !bytes.Equal(got, body) || info.MediaType != manifest.MediaTypeOCIManifest {
		t.Fatalf("manifest changed across restart: %+v", info)
	}
	if got := readBlob(t, s, "apps/web", digest.FromBytes(layer)); !bytes.Equal(got, layer) {
		t.Fatal("layer changed across restart")
	}
	if got := readBlob(t, s, "apps/web", d512); !bytes.Equal(got, layer) {
		t.Fatal("sha512 blob changed across restart")
	}
	tags, more, err := s.ListTags(ctx, "apps/web", "", 10)
	if err != nil || more || fmt.Sprint(tags) != "[production v1]" {
		t.Fatalf("tags after restart: %v more=%v err=%v", tags, more, err)
	}
	st, err := s.UploadStatus(ctx, "apps/web", up.ID)
	if err != nil || st.Offset != int64(half) {
		t.Fatalf("upload status after restart: %+v, %v", st, err)
	}
	if _, err := s.AppendUpload(ctx, "apps/web", up.ID, int64(half), bytes.NewReader(big[half:]), int64(len(big)-half)); err != nil {
		t.Fatalf("resume upload: %v", err)
	}
	if _, err := s.CommitUpload(ctx, "apps/web", up.ID, digest.FromBytes(big), -1, nil, 0); err != nil {
		t.Fatalf("commit resumed upload: %v", err)
	}
	if got := readBlob(t, s, "apps/web", digest.FromBytes(big)); !bytes.Equal(got, big) {
		t.Fatal("resumed upload content differs")
	}
}

// A chunk that ends early is rolled back: the session keeps its offset and
// hash, so the client can resend the chunk and finish with the right digest.
func TestShortChunkRollsBack(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	defer s.Close()
	content := randomBytes(t, 10000)
	up, err := s.StartUpload(ctx, "r", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendUpload(ctx, "r", up.ID, 0, bytes.NewReader(content[:4000]), 4000); err != nil {
		t.Fatal(err)
	}
	// Declares 6000 bytes, delivers 100.
	_, err = s.AppendUpload(ctx, "r", up.ID, 4000, bytes.NewReader(content[4000:4100]), 6000)
	if !errors.Is(err, ErrSizeInvalid) {
		t.Fatalf("short chunk: want ErrSizeInvalid, got %v", err)
	}
	st, err := s.UploadStatus(ctx, "r", up.ID)
	if err != nil || st.Offset != 4000 {
		t.Fatalf("offset after failed chunk: %+v %v", st, err)
	}
	if fi, err := os.Stat(s.uploadPath(up.ID)); err != nil || fi.Size() != 4000 {
		t.Fatalf("upload file not truncated back: %v %v", fi, err)
	}
	// Out-of-order chunk is refused without changing anything.
	if _, err := s.AppendUpload(ctx, "r", up.ID, 5000, bytes.NewReader(content[5000:]), 5000); !errors.Is(err, ErrRangeInvalid) {
		t.Fatalf("out of order chunk: want ErrRangeInvalid, got %v", err)
	}
	if _, err := s.CommitUpload(ctx, "r", up.ID, digest.FromBytes(content), 4000, bytes.NewReader(content[4000:]), 6000); err != nil {
		t.Fatalf("commit after rollback: %v", err)
	}
	if got := readBlob(t, s, "r", digest.FromBytes(content)); !bytes.Equal(got, content) {
		t.Fatal("content differs after rollback and resend")
	}
}

func TestDigestMismatchLeavesNothing(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	defer s.Close()
	content := []byte("the real content")
	wrong := digest.FromString("something else")
	if _, err := s.PutBlob(ctx, "r", wrong, bytes.NewReader(content), int64(len(content))); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("monolithic: want ErrDigestMismatch, got %v", err)
	}
	up, err := s.StartUpload(ctx, "r", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CommitUpload(ctx, "r", up.ID, wrong, 0, bytes.NewReader(content), int64(len(content))); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("session: want ErrDigestMismatch, got %v", err)
	}
	if _, err := s.UploadStatus(ctx, "r", up.ID); !errors.Is(err, ErrUploadUnknown) {
		t.Fatalf("failed session still open: %v", err)
	}
	for _, sub := range []string{"blobs", "uploads", "tmp"} {
		if files := dirEntries(t, filepath.Join(s.root, sub)); len(files) != 0 {
			t.Fatalf("%s not empty after digest mismatch: %v", sub, files)
		}
	}
	for _, d := range []digest.Digest{wrong, digest.FromBytes(content)} {
		if _, err := s.StatBlob(ctx, "r", d); !errors.Is(err, ErrBlobUnknown) {
			t.Fatalf("%s visible after mismatch: %v", d, err)
		}
	}
}

func TestManifestReferencesCheckedAtomically(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	defer s.Close()
	config := []byte(`{}`)
	if _, err := s.PutBlob(ctx, "a", digest.FromBytes(config), bytes.NewReader(config), 2); err != nil {
		t.Fatal(err)
	}
	missing := digest.FromString("never pushed")
	body := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"%s","size":2},`+
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":5}]}`,
		digest.FromBytes(config), missing))
	m, err := manifest.Parse("", body)
	if err != nil {
		t.Fatal(err)
	}
	md := digest.FromBytes(body)
	err = s.PutManifest(ctx, "a", md, body, m, []string{"latest"})
	var de *DetailError
	if !errors.Is(err, ErrManifestBlobUnknown) || !errors.As(err, &de) || de.Detail["digest"] != string(missing) {
		t.Fatalf("want ErrManifestBlobUnknown naming %s, got %v", missing, err)
	}
	if _, err := s.StatManifest(ctx, "a", "latest"); !errors.Is(err, ErrManifestUnknown) {
		t.Fatalf("tag created by a refused manifest: %v", err)
	}
	if _, err := os.Stat(s.blobPath(md)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("refused manifest left its content on disk: %v", err)
	}
	// The blob is linked in "a" only; "b" cannot reference it.
	if _, err := s.MountBlob(ctx, "b", "c", digest.FromBytes(config)); !errors.Is(err, ErrBlobUnknown) {
		t.Fatalf("mount from a repository without the blob: %v", err)
	}
}

func TestPaginationWalksTheIndex(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	defer s.Close()
	content := []byte("x")
	d := digest.FromBytes(content)
	want := []string{}
	for i := range 25 {
		repo := fmt.Sprintf("ns/r%02d", i)
		want = append(want, repo)
		if _, err := s.PutBlob(ctx, repo, d, bytes.NewReader(content), 1); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	last := ""
	for range 10 { // bounded: 25 repositories in pages of 7 need 4 pages
		page, more, err := s.ListRepositories(ctx, last, 7)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, page...)
		if !more {
			break
		}
		last = page[len(page)-1]
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("paged catalog:\n got %v\nwant %v", got, want)
	}
	if page, more, _ := s.ListRepositories(ctx, "", 0); len(page) != 0 || more {
		t.Fatalf("n=0: %v more=%v", page, more)
	}
	if page, _, _ := s.ListRepositories(ctx, "ns/r10x", 2); fmt.Sprint(page) != "[ns/r11 ns/r12]" {
		t.Fatalf("last between keys: %v", page)
	}
}

func TestSecondOpenFailsWhileLocked(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	defer s.Close()
	inFlight := filepath.Join(dir, "tmp", "content-in-flight")
	if err := os.WriteFile(inFlight, []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(context.Background(), dir, Options{OpenTimeout: 100 * time.Millisecond})
	if err == nil {
		t.Fatal("a second process could open a store that is in use")
	}
	if _, err := os.Stat(inFlight); err != nil {
		t.Fatalf("a refused second open removed the running store's temporary file: %v", err)
	}
}

// A session whose file is gone (the content was moved into place just
// before a crash, ahead of the index commit) answers as unknown and is
// dropped, rather than failing every request.
func TestUploadRecordWithoutFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openStore(t, dir)
	up, err := s.StartUpload(ctx, "r", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "uploads", up.ID)); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	defer s.Close()
	if _, err := s.UploadStatus(ctx, "r", up.ID); !errors.Is(err, ErrUploadUnknown) {
		t.Fatalf("status of a session without its file: %v", err)
	}
	if _, err := s.lookupUpload(context.Background(), "r", up.ID); !errors.Is(err, ErrUploadUnknown) {
		t.Fatalf("the record survived: %v", err)
	}
}

// A manifest pushed again, tagged or not, keeps its first push time, which
// retention ages untagged manifests by and search reports as Pushed.
func TestPushAgainKeepsPushTime(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	cfg := putTestBlob(t, s, "app", ocispec.MediaTypeImageConfig, []byte(`{}`))
	m := ocispec.Manifest{Config: cfg}
	d, _ := putTestManifest(t, s, "app", m)
	first, err := s.StatManifest(ctx, "app", string(d))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Millisecond)
	putTestManifest(t, s, "app", m, "v1")
	again, err := s.StatManifest(ctx, "app", "v1")
	if err != nil {
		t.Fatal(err)
	}
	if !again.Created.Equal(first.Created) {
		t.Fatalf("push time moved from %s to %s", first.Created, again.Created)
	}
}
