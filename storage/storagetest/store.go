package storagetest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/blob"
	"github.com/berth-registry/berth/storage/manifest"
	"github.com/berth-registry/berth/storage/meta"
)

// Pushes of one blob at once, monolithic and chunked, into several
// repositories, all succeed, and the store keeps one copy of the content
// and nothing in flight.
func testConcurrentPushesOfOneBlob(t *testing.T, b Backends) {
	s := open(t, b)
	content := randomBytes(t, 256<<10)
	d := digest.FromBytes(content)

	const workers = 24
	err := parallel(workers, func(i int) error {
		repo := fmt.Sprintf("team/repo%d", i%4)
		if i%2 == 0 {
			_, err := s.PutBlob(ctx(), repo, d, bytes.NewReader(content), int64(len(content)))
			return err
		}
		// Chunked: three chunks through an upload session.
		up, err := s.StartUpload(ctx(), repo, "")
		if err != nil {
			return err
		}
		third := len(content) / 3
		for off := 0; off < len(content); off += third {
			end := min(off+third, len(content))
			if _, err := s.AppendUpload(ctx(), repo, up.ID, int64(off), bytes.NewReader(content[off:end]), int64(end-off)); err != nil {
				return err
			}
		}
		_, err = s.CommitUpload(ctx(), repo, up.ID, d, -1, nil, 0)
		return err
	})
	if err != nil {
		t.Fatalf("concurrent push: %v", err)
	}
	for i := range 4 {
		repo := fmt.Sprintf("team/repo%d", i)
		if got := readBlob(t, s, repo, d); !bytes.Equal(got, content) {
			t.Fatalf("%s: content differs after concurrent pushes", repo)
		}
	}
	// One copy, whatever the number of pushes, and nothing in flight.
	blobs, staged := stored(t, s)
	if !slices.Equal(blobs, []digest.Digest{d}) || len(staged) != 0 {
		t.Fatalf("blob store holds %v and staged %v, want only %s", blobs, staged, d)
	}
}

// Content committed to the blob store whose record never committed (a
// crash between the two) is invisible: it cannot be looked up, read or
// mounted, and a later push of the same content succeeds.
func testContentWithoutRecordIsInvisible(t *testing.T, b Backends) {
	s := open(t, b)
	content := []byte("content whose index entry never committed")
	d := digest.FromBytes(content)
	// Do what a push does up to the index transaction, then "crash".
	st, err := s.blobs.Stage(ctx(), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Append(ctx(), bytes.NewReader(content), int64(len(content)), nil); err != nil {
		t.Fatal(err)
	}
	if err := st.Commit(ctx(), d); err != nil {
		t.Fatal(err)
	}
	s = s.restart(t)
	if _, err := s.StatBlob(ctx(), "app", d); !errors.Is(err, storage.ErrBlobUnknown) {
		t.Fatalf("blob without index entry is visible: err=%v", err)
	}
	if _, _, err := s.OpenBlob(ctx(), "app", d); !errors.Is(err, storage.ErrBlobUnknown) {
		t.Fatalf("blob without index entry can be opened: err=%v", err)
	}
	if _, err := s.MountBlob(ctx(), "app", "", d); !errors.Is(err, storage.ErrBlobUnknown) {
		t.Fatalf("blob without index entry can be mounted: err=%v", err)
	}
	if _, err := s.PutBlob(ctx(), "app", d, bytes.NewReader(content), int64(len(content))); err != nil {
		t.Fatalf("push after crash: %v", err)
	}
	if got := readBlob(t, s, "app", d); !bytes.Equal(got, content) {
		t.Fatal("content differs after re-push")
	}
}

// Everything acknowledged before a restart is there after it, and an
// upload session in progress resumes from where it stood.
func testRestartKeepsAcknowledgedContent(t *testing.T, b Backends) {
	s := open(t, b)
	config := []byte(`{"architecture":"amd64","os":"linux"}`)
	layer := randomBytes(t, 64<<10)
	big := randomBytes(t, 300<<10)
	for _, c := range [][]byte{config, layer} {
		if _, err := s.PutBlob(ctx(), "apps/web", digest.FromBytes(c), bytes.NewReader(c), int64(len(c))); err != nil {
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
	if _, err := s.PutManifest(ctx(), "apps/web", md, body, m, []string{"v1", "production"}); err != nil {
		t.Fatal(err)
	}
	// A sha512 blob, pushed through a session announced as sha512.
	up512, err := s.StartUpload(ctx(), "apps/web", digest.SHA512)
	if err != nil {
		t.Fatal(err)
	}
	d512 := digest.SHA512.FromBytes(layer)
	if _, err := s.CommitUpload(ctx(), "apps/web", up512.ID, d512, 0, bytes.NewReader(layer), int64(len(layer))); err != nil {
		t.Fatal(err)
	}
	// An upload half done when the process stops.
	up, err := s.StartUpload(ctx(), "apps/web", "")
	if err != nil {
		t.Fatal(err)
	}
	half := len(big) / 2
	if _, err := s.AppendUpload(ctx(), "apps/web", up.ID, 0, bytes.NewReader(big[:half]), int64(half)); err != nil {
		t.Fatal(err)
	}

	s = s.restart(t)
	info, got, err := s.GetManifest(ctx(), "apps/web", "production")
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
	tags, more, err := s.ListTags(ctx(), "apps/web", "", 10)
	if err != nil || more || fmt.Sprint(tags) != "[production v1]" {
		t.Fatalf("tags after restart: %v more=%v err=%v", tags, more, err)
	}
	st, err := s.UploadStatus(ctx(), "apps/web", up.ID)
	if err != nil || st.Offset != int64(half) {
		t.Fatalf("upload status after restart: %+v, %v", st, err)
	}
	if _, err := s.AppendUpload(ctx(), "apps/web", up.ID, int64(half), bytes.NewReader(big[half:]), int64(len(big)-half)); err != nil {
		t.Fatalf("resume upload: %v", err)
	}
	if _, err := s.CommitUpload(ctx(), "apps/web", up.ID, digest.FromBytes(big), -1, nil, 0); err != nil {
		t.Fatalf("commit resumed upload: %v", err)
	}
	if got := readBlob(t, s, "apps/web", digest.FromBytes(big)); !bytes.Equal(got, big) {
		t.Fatal("resumed upload content differs")
	}
	if _, staged := stored(t, s); len(staged) != 0 {
		t.Fatalf("content in flight after every upload ended: %v", staged)
	}
}

// A chunk that ends early is rolled back: the session keeps its offset and
// hash, so the client can resend the chunk and finish with the right digest.
func testShortChunkRollsBack(t *testing.T, b Backends) {
	s := open(t, b)
	content := randomBytes(t, 10000)
	up, err := s.StartUpload(ctx(), "r", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendUpload(ctx(), "r", up.ID, 0, bytes.NewReader(content[:4000]), 4000); err != nil {
		t.Fatal(err)
	}
	// Declares 6000 bytes, delivers 100.
	_, err = s.AppendUpload(ctx(), "r", up.ID, 4000, bytes.NewReader(content[4000:4100]), 6000)
	if !errors.Is(err, storage.ErrSizeInvalid) {
		t.Fatalf("short chunk: want ErrSizeInvalid, got %v", err)
	}
	st, err := s.UploadStatus(ctx(), "r", up.ID)
	if err != nil || st.Offset != 4000 {
		t.Fatalf("offset after failed chunk: %+v %v", st, err)
	}
	if _, staged := stored(t, s); staged[up.ID] != 4000 {
		t.Fatalf("staged content not rolled back to 4000 bytes: %v", staged)
	}
	// A chunk that says more than it carries is refused alike, and so is
	// one that carries more.
	if _, err := s.AppendUpload(ctx(), "r", up.ID, 4000, bytes.NewReader(content[4000:]), 100); !errors.Is(err, storage.ErrSizeInvalid) {
		t.Fatalf("long chunk: want ErrSizeInvalid, got %v", err)
	}
	// Out-of-order chunk is refused without changing anything.
	if _, err := s.AppendUpload(ctx(), "r", up.ID, 5000, bytes.NewReader(content[5000:]), 5000); !errors.Is(err, storage.ErrRangeInvalid) {
		t.Fatalf("out of order chunk: want ErrRangeInvalid, got %v", err)
	}
	if _, staged := stored(t, s); staged[up.ID] != 4000 {
		t.Fatalf("staged content not rolled back to 4000 bytes: %v", staged)
	}
	if _, err := s.CommitUpload(ctx(), "r", up.ID, digest.FromBytes(content), 4000, bytes.NewReader(content[4000:]), 6000); err != nil {
		t.Fatalf("commit after rollback: %v", err)
	}
	if got := readBlob(t, s, "r", digest.FromBytes(content)); !bytes.Equal(got, content) {
		t.Fatal("content differs after rollback and resend")
	}
}

// Content that does not hash to its digest is refused, monolithic or
// through a session, and leaves nothing: no blob, no session, no content.
func testDigestMismatchLeavesNothing(t *testing.T, b Backends) {
	s := open(t, b)
	content := []byte("the real content")
	wrong := digest.FromString("something else")
	if _, err := s.PutBlob(ctx(), "r", wrong, bytes.NewReader(content), int64(len(content))); !errors.Is(err, storage.ErrDigestMismatch) {
		t.Fatalf("monolithic: want ErrDigestMismatch, got %v", err)
	}
	up, err := s.StartUpload(ctx(), "r", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CommitUpload(ctx(), "r", up.ID, wrong, 0, bytes.NewReader(content), int64(len(content))); !errors.Is(err, storage.ErrDigestMismatch) {
		t.Fatalf("session: want ErrDigestMismatch, got %v", err)
	}
	if _, err := s.UploadStatus(ctx(), "r", up.ID); !errors.Is(err, storage.ErrUploadUnknown) {
		t.Fatalf("failed session still open: %v", err)
	}
	// A digest that is not one is refused too.
	if _, err := s.PutBlob(ctx(), "r", "sha256:nothex", bytes.NewReader(content), int64(len(content))); !errors.Is(err, storage.ErrDigestMismatch) {
		t.Fatalf("malformed digest: want ErrDigestMismatch, got %v", err)
	}
	wantNoContent(t, s)
	for _, d := range []digest.Digest{wrong, digest.FromBytes(content)} {
		if _, err := s.StatBlob(ctx(), "r", d); !errors.Is(err, storage.ErrBlobUnknown) {
			t.Fatalf("%s visible after mismatch: %v", d, err)
		}
	}
	view(t, s, func(tx meta.Tx) error {
		return tx.Uploads(func(id string, _ meta.Upload) error {
			t.Errorf("session %s left in the index", id)
			return nil
		})
	})
}

// A blob or manifest whose content went (garbage collection removed it
// after the lookup) is unknown, not an error of the store, on a replica
// that reads it from the blob store. The replica that pushed the manifest
// keeps its small body in memory (a body never changes) and serves it for
// as long as the index records the manifest.
func testOpenBlobWhoseContentIsGone(t *testing.T, b Backends) {
	s, r := openReplicas(t, b)
	desc := putBlob(t, s, "app", ocispec.MediaTypeImageConfig, []byte(`{"about":"to vanish"}`))
	body := imageBody(t, ocispec.Manifest{Config: desc, Layers: []ocispec.Descriptor{}})
	m, _ := putBody(t, s, "app", body, "v1")
	for _, d := range []digest.Digest{desc.Digest, m} {
		if err := s.blobs.Delete(ctx(), d); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := r.OpenBlob(ctx(), "app", desc.Digest); !errors.Is(err, storage.ErrBlobUnknown) {
		t.Fatalf("open of a collected blob: %v; want ErrBlobUnknown", err)
	}
	for _, ref := range []string{string(m), "v1"} {
		if _, _, err := r.GetManifest(ctx(), "app", ref); !errors.Is(err, storage.ErrManifestUnknown) {
			t.Fatalf("get of a collected manifest by %s: %v; want ErrManifestUnknown", ref, err)
		}
		if _, got, err := s.GetManifest(ctx(), "app", ref); err != nil || !bytes.Equal(got, body) {
			t.Fatalf("get by %s from the replica that pushed the manifest: %v; want its kept body", ref, err)
		}
	}
	// Once the index no longer records it, no replica serves it.
	if err := s.DeleteManifest(ctx(), "app", m); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.GetManifest(ctx(), "app", string(m)); !errors.Is(err, storage.ErrManifestUnknown) {
		t.Fatalf("get of a deleted manifest: %v; want ErrManifestUnknown", err)
	}
}

// Mounting links a blob into a repository without its content moving:
// from a repository that holds it, or from the whole store.
func testMountBlob(t *testing.T, b Backends) {
	s := open(t, b)
	desc := putBlob(t, s, "a", "application/octet-stream", []byte("mounted"))
	before, _ := stored(t, s)
	if info, err := s.MountBlob(ctx(), "b", "a", desc.Digest); err != nil || info.Digest != desc.Digest || info.Size != desc.Size {
		t.Fatalf("mount from a: %+v, %v", info, err)
	}
	if info, err := s.MountBlob(ctx(), "c", "", desc.Digest); err != nil || info.Size != desc.Size {
		t.Fatalf("mount from the store: %+v, %v", info, err)
	}
	for _, repo := range []string{"b", "c"} {
		if got := readBlob(t, s, repo, desc.Digest); string(got) != "mounted" {
			t.Fatalf("%s reads %q", repo, got)
		}
	}
	if after, staged := stored(t, s); !slices.Equal(before, after) || len(staged) != 0 {
		t.Fatalf("mounting changed the blob store: %v -> %v, staged %v", before, after, staged)
	}
	// Not from a repository that lacks it; nor what the store lacks.
	if _, err := s.MountBlob(ctx(), "d", "nope", desc.Digest); !errors.Is(err, storage.ErrBlobUnknown) {
		t.Fatalf("mount from a repository without the blob: %v", err)
	}
	if _, err := s.MountBlob(ctx(), "d", "", digest.FromString("absent")); !errors.Is(err, storage.ErrBlobUnknown) {
		t.Fatalf("mount of an absent blob: %v", err)
	}
	if _, err := s.StatBlob(ctx(), "d", desc.Digest); !errors.Is(err, storage.ErrBlobUnknown) {
		t.Fatalf("refused mounts linked the blob: %v", err)
	}
	if _, err := s.MountBlob(ctx(), "d", "", "sha256:short"); !errors.Is(err, storage.ErrDigestMismatch) {
		t.Fatalf("mount of a malformed digest: %v", err)
	}
}

// Deleting a blob unlinks it from one repository; others keep it, and so
// does the blob store, for garbage collection to decide.
func testDeleteBlob(t *testing.T, b Backends) {
	s := open(t, b)
	desc := putBlob(t, s, "a", "application/octet-stream", []byte("shared"))
	if _, err := s.MountBlob(ctx(), "b", "a", desc.Digest); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteBlob(ctx(), "a", desc.Digest); err != nil {
		t.Fatal(err)
	}
	if _, err := s.StatBlob(ctx(), "a", desc.Digest); !errors.Is(err, storage.ErrBlobUnknown) {
		t.Fatalf("deleted blob still in a: %v", err)
	}
	if got := readBlob(t, s, "b", desc.Digest); string(got) != "shared" {
		t.Fatalf("b reads %q", got)
	}
	if err := s.DeleteBlob(ctx(), "a", desc.Digest); !errors.Is(err, storage.ErrBlobUnknown) {
		t.Fatalf("second delete: %v, want ErrBlobUnknown", err)
	}
	if _, err := s.blobs.Stat(ctx(), desc.Digest); err != nil {
		t.Fatalf("content went with one link: %v", err)
	}
}

// Repositories are listed in pages, in order, from any name.
func testPaginationWalksTheIndex(t *testing.T, b Backends) {
	s := open(t, b)
	c := []byte("x")
	d := digest.FromBytes(c)
	want := []string{}
	for i := range 25 {
		repo := fmt.Sprintf("ns/r%02d", i)
		want = append(want, repo)
		if _, err := s.PutBlob(ctx(), repo, d, bytes.NewReader(c), 1); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	last := ""
	for range 10 { // bounded: 25 repositories in pages of 7 need 4 pages
		page, more, err := s.ListRepositories(ctx(), last, 7)
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
	if page, more, _ := s.ListRepositories(ctx(), "", 0); len(page) != 0 || more {
		t.Fatalf("n=0: %v more=%v", page, more)
	}
	if page, _, _ := s.ListRepositories(ctx(), "ns/r10x", 2); fmt.Sprint(page) != "[ns/r11 ns/r12]" {
		t.Fatalf("last between keys: %v", page)
	}
	if page, more, _ := s.ListRepositories(ctx(), "ns/r24", 2); len(page) != 0 || more {
		t.Fatalf("after the last: %v more=%v", page, more)
	}
}

// A session whose content is gone (committed just before a crash, ahead
// of the index commit) answers as unknown and is dropped, rather than
// failing every request.
func testUploadRecordWithoutContent(t *testing.T, b Backends) {
	s := open(t, b)
	up, err := s.StartUpload(ctx(), "r", "")
	if err != nil {
		t.Fatal(err)
	}
	s = s.restart(t)
	st, err := s.blobs.Resume(ctx(), up.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Cancel(ctx()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.blobs.Resume(ctx(), up.ID); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("content of a cancelled session resumes: %v", err)
	}
	if _, err := s.UploadStatus(ctx(), "r", up.ID); !errors.Is(err, storage.ErrUploadUnknown) {
		t.Fatalf("status of a session without its content: %v", err)
	}
	view(t, s, func(tx meta.Tx) error {
		if _, ok, err := tx.Upload(up.ID); err != nil || ok {
			t.Errorf("the record survived: %v, %v", ok, err)
		}
		return nil
	})
}
