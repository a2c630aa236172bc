package distribution_test

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/distribution"
)

// TestMonolithicUpload pushes whole blobs in one request, by POST and by
// POST then PUT, and reads them back.
func TestMonolithicUpload(t *testing.T) {
	t.Parallel()
	e := newEnv(t, distribution.Options{})
	const repo = "mono/lith"

	check := func(t *testing.T, r *response, data []byte, d digest.Digest) {
		t.Helper()
		wantStatus(t, r, http.StatusCreated)
		wantHeader(t, r, "Location", "/v2/"+repo+"/blobs/"+string(d))
		wantHeader(t, r, "Docker-Content-Digest", string(d))
		wantHeader(t, r, "Content-Length", "0")
		got := e.do(http.MethodGet, r.Header.Get("Location"), nil)
		wantStatus(t, got, http.StatusOK)
		wantHeader(t, got, "Docker-Content-Digest", string(d))
		wantHeader(t, got, "Content-Type", "application/octet-stream")
		wantHeader(t, got, "Content-Length", fmt.Sprint(len(data)))
		if !bytes.Equal(got.Body, data) {
			t.Errorf("GET %s returned different content", d)
		}
		head := e.do(http.MethodHead, r.Header.Get("Location"), nil)
		wantStatus(t, head, http.StatusOK)
		wantHeader(t, head, "Content-Length", fmt.Sprint(len(data)))
		wantHeader(t, head, "Docker-Content-Digest", string(d))
		if len(head.Body) != 0 {
			t.Errorf("HEAD returned a body")
		}
		e.wantBlobFile(d, data)
	}

	t.Run("POST", func(t *testing.T) {
		data := content("monolithic post", 10000)
		d := digest.FromBytes(data)
		check(t, e.do(http.MethodPost, "/v2/"+repo+"/blobs/uploads/?digest="+string(d), data, "Content-Type", "application/octet-stream"), data, d)
	})
	t.Run("POST streamed", func(t *testing.T) {
		data := content("monolithic streamed", 70000)
		d := digest.FromBytes(data)
		check(t, e.doReader(http.MethodPost, "/v2/"+repo+"/blobs/uploads/?digest="+string(d), hideLength(data)), data, d)
	})
	t.Run("POST empty blob", func(t *testing.T) {
		d := digest.FromBytes(nil)
		check(t, e.do(http.MethodPost, "/v2/"+repo+"/blobs/uploads/?digest="+string(d), []byte{}), []byte{}, d)
	})
	t.Run("POST sha512", func(t *testing.T) {
		data := content("monolithic sha512", 4000)
		d := digest.SHA512.FromBytes(data)
		check(t, e.do(http.MethodPost, "/v2/"+repo+"/blobs/uploads/?digest="+string(d), data), data, d)
	})
	t.Run("POST then PUT", func(t *testing.T) {
		data := content("post then put", 5000)
		d := digest.FromBytes(data)
		loc := e.startUpload(repo)
		check(t, e.do(http.MethodPut, withQuery(loc, "digest", string(d)), data, "Content-Type", "application/octet-stream"), data, d)
		e.wantSessionEnded(loc)
	})
	t.Run("POST then PUT sha512 into a sha256 session", func(t *testing.T) {
		data := content("post then put sha512", 5000)
		d := digest.SHA512.FromBytes(data)
		loc := e.startUpload(repo)
		check(t, e.do(http.MethodPut, withQuery(loc, "digest", string(d)), data), data, d)
	})
	t.Run("same blob again", func(t *testing.T) {
		data := content("monolithic post", 10000)
		d := digest.FromBytes(data)
		check(t, e.do(http.MethodPost, "/v2/"+repo+"/blobs/uploads/?digest="+string(d), data), data, d)
	})
	e.wantEmptyDir("tmp")
	e.wantEmptyDir("uploads")
}

// TestChunkedUpload pushes a blob in chunks and follows the session's
// state through Location and Range.
func TestChunkedUpload(t *testing.T) {
	t.Parallel()
	e := newEnv(t, distribution.Options{})
	const repo = "chunked"
	data := content("chunked upload", 2500)
	d := digest.FromBytes(data)

	r := e.do(http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil)
	wantStatus(t, r, http.StatusAccepted)
	loc := r.Header.Get("Location")
	id := uploadID(loc)
	if !strings.HasPrefix(loc, "/v2/"+repo+"/blobs/uploads/") || len(id) != 32 {
		t.Fatalf("Location = %q", loc)
	}
	wantHeader(t, r, "Docker-Upload-UUID", id)
	wantHeader(t, r, "Range", "0-0")
	wantHeader(t, r, "Content-Length", "0")

	r = patch(t, e, loc, data[:1000], 0)
	wantHeader(t, r, "Location", loc)
	wantHeader(t, r, "Docker-Upload-UUID", id)

	st := e.do(http.MethodGet, loc, nil)
	wantStatus(t, st, http.StatusNoContent)
	wantHeader(t, st, "Location", loc)
	wantHeader(t, st, "Range", "0-999")
	wantHeader(t, st, "Docker-Upload-UUID", id)

	// A chunk streamed without Content-Range is appended where the upload
	// stands.
	r = e.doReader(http.MethodPatch, loc, hideLength(data[1000:2000]), "Content-Type", "application/octet-stream")
	wantStatus(t, r, http.StatusAccepted)
	wantHeader(t, r, "Range", "0-1999")
	// An empty chunk changes nothing.
	r = e.do(http.MethodPatch, loc, nil)
	wantStatus(t, r, http.StatusAccepted)
	wantHeader(t, r, "Range", "0-1999")
	e.wantUploadSize(loc, 2000)

	// Nothing is visible before the upload completes.
	e.wantBlobAbsent(repo, d)

	r = e.do(http.MethodPut, withQuery(loc, "digest", string(d)), data[2000:],
		"Content-Type", "application/octet-stream", "Content-Range", "2000-2499")
	wantStatus(t, r, http.StatusCreated)
	wantHeader(t, r, "Location", "/v2/"+repo+"/blobs/"+string(d))
	wantHeader(t, r, "Docker-Content-Digest", string(d))
	if got := e.blobContent(repo, d); !bytes.Equal(got, data) {
		t.Error("chunked blob differs from what was sent")
	}
	e.wantSessionEnded(loc)
	e.wantBlobFile(d, data)
	e.wantEmptyDir("tmp")
	e.wantEmptyDir("uploads")
}

// TestCancelUpload deletes an upload session and checks it is gone.
func TestCancelUpload(t *testing.T) {
	t.Parallel()
	e := newEnv(t, distribution.Options{})
	data := content("cancelled", 1500)
	d := digest.FromBytes(data)
	loc := e.startUpload("cancel")
	patch(t, e, loc, data[:1000], 0)

	r := e.do(http.MethodDelete, loc, nil)
	wantStatus(t, r, http.StatusNoContent)
	e.wantSessionEnded(loc)
	wantError(t, e.do(http.MethodDelete, loc, nil), http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")
	wantError(t, e.do(http.MethodPatch, loc, data[1000:], "Content-Range", "1000-1499"), http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")
	wantError(t, e.do(http.MethodPut, withQuery(loc, "digest", string(d)), data[1000:]), http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")
	e.wantBlobAbsent("cancel", d)
	e.wantNoBlobFile(d)
	e.wantEmptyDir("uploads")
	e.wantEmptyDir("tmp")
}

// TestCrossRepoMount mounts blobs between repositories, and falls back to
// an upload session when the source does not have the blob.
func TestCrossRepoMount(t *testing.T) {
	t.Parallel()
	e := newEnv(t, distribution.Options{})
	data := content("mounted", 3000)
	d := e.pushBlob("src/repo", data)

	t.Run("mounted", func(t *testing.T) {
		r := e.do(http.MethodPost, "/v2/dst/repo/blobs/uploads/?mount="+string(d)+"&from=src/repo", nil)
		wantStatus(t, r, http.StatusCreated)
		wantHeader(t, r, "Location", "/v2/dst/repo/blobs/"+string(d))
		wantHeader(t, r, "Docker-Content-Digest", string(d))
		if got := e.blobContent("dst/repo", d); !bytes.Equal(got, data) {
			t.Error("mounted blob differs")
		}
		// Mounting again is harmless.
		wantStatus(t, e.do(http.MethodPost, "/v2/dst/repo/blobs/uploads/?mount="+string(d)+"&from=src/repo", nil), http.StatusCreated)
	})

	fallback := func(t *testing.T, query string, missing digest.Digest) {
		t.Helper()
		r := e.do(http.MethodPost, "/v2/fallback/blobs/uploads/?"+query, nil)
		wantStatus(t, r, http.StatusAccepted)
		loc := r.Header.Get("Location")
		if !strings.HasPrefix(loc, "/v2/fallback/blobs/uploads/") {
			t.Fatalf("Location = %q, want a new upload in fallback", loc)
		}
		wantHeader(t, r, "Range", "0-0")
		if r.Header.Get("Docker-Content-Digest") != "" {
			t.Errorf("fallback answered Docker-Content-Digest %q", r.Header.Get("Docker-Content-Digest"))
		}
		e.wantBlobAbsent("fallback", missing)
		st := e.do(http.MethodGet, loc, nil)
		wantStatus(t, st, http.StatusNoContent)
		wantStatus(t, e.do(http.MethodDelete, loc, nil), http.StatusNoContent)
	}
	e.pushBlob("empty/source", []byte("something else"))
	t.Run("source lacks the blob", func(t *testing.T) {
		fallback(t, "mount="+string(d)+"&from=empty/source", d)
	})
	t.Run("source does not exist", func(t *testing.T) {
		fallback(t, "mount="+string(d)+"&from=no/such/repo", d)
	})
	t.Run("blob exists nowhere", func(t *testing.T) {
		nowhere := digest.FromBytes([]byte("nowhere"))
		fallback(t, "mount="+string(nowhere)+"&from=src/repo", nowhere)
	})
	t.Run("fallback session completes", func(t *testing.T) {
		other := content("uploaded after fallback", 100)
		od := digest.FromBytes(other)
		r := e.do(http.MethodPost, "/v2/fallback/blobs/uploads/?mount="+string(od)+"&from=src/repo", nil)
		wantStatus(t, r, http.StatusAccepted)
		wantStatus(t, e.do(http.MethodPut, withQuery(r.Header.Get("Location"), "digest", string(od)), other), http.StatusCreated)
		if got := e.blobContent("fallback", od); !bytes.Equal(got, other) {
			t.Error("blob uploaded after fallback differs")
		}
	})
	t.Run("without from the registry mounts any blob it holds", func(t *testing.T) {
		r := e.do(http.MethodPost, "/v2/anywhere/blobs/uploads/?mount="+string(d), nil)
		wantStatus(t, r, http.StatusCreated)
		wantHeader(t, r, "Docker-Content-Digest", string(d))
	})
	e.wantEmptyDir("uploads")
}

// TestBlobDelete unlinks a blob from one repository and checks the others
// that have it still serve it.
func TestBlobDelete(t *testing.T) {
	t.Parallel()
	e := newEnv(t, distribution.Options{})
	data := content("deleted blob", 800)
	d := e.pushBlob("one", data)
	e.pushBlob("two", data)

	r := e.do(http.MethodDelete, "/v2/one/blobs/"+string(d), nil)
	wantStatus(t, r, http.StatusAccepted)
	e.wantBlobAbsent("one", d)
	wantError(t, e.do(http.MethodDelete, "/v2/one/blobs/"+string(d), nil), http.StatusNotFound, "BLOB_UNKNOWN")
	if got := e.blobContent("two", d); !bytes.Equal(got, data) {
		t.Error("blob in the other repository differs")
	}
	// A manifest in the first repository can no longer reference it.
	body := imageManifest(t, descriptor(ocispec.MediaTypeImageConfig, data), nil, "")
	ent := wantError(t, e.do(http.MethodPut, "/v2/one/manifests/v1", body, "Content-Type", ocispec.MediaTypeImageManifest),
		http.StatusBadRequest, "MANIFEST_BLOB_UNKNOWN")
	if ent.Detail["digest"] != string(d) {
		t.Errorf("detail = %v", ent.Detail)
	}
	// Pushing it again makes it visible again.
	e.pushBlob("one", data)
	if got := e.blobContent("one", d); !bytes.Equal(got, data) {
		t.Error("re-pushed blob differs")
	}
}

// TestConcurrentUploads pushes the same blob from 16 clients at once, by
// every flow, into one shared and several distinct repositories.
func TestConcurrentUploads(t *testing.T) {
	t.Parallel()
	e := newEnv(t, distribution.Options{})
	data := content("concurrent", 200_000)
	d := digest.FromBytes(data)
	repos := []string{"shared", "shared", "conc/a", "conc/b"}

	const clients = 16
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make(chan error, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			repo := repos[i%len(repos)]
			var err error
			switch i % 3 {
			case 0:
				err = uploadMonolithic(e, repo, data)
			case 1:
				err = uploadChunked(e, repo, data, 3)
			default:
				err = uploadPostPut(e, repo, data)
			}
			if err != nil {
				errs <- fmt.Errorf("client %d (%s): %w", i, repo, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	for _, repo := range []string{"shared", "conc/a", "conc/b"} {
		if got := e.blobContent(repo, d); !bytes.Equal(got, data) {
			t.Errorf("%s: content read back differs", repo)
		}
	}
	e.wantBlobFile(d, data)
	e.wantEmptyDir("tmp")
	e.wantEmptyDir("uploads")
	r := e.do(http.MethodGet, "/v2/_catalog", nil)
	wantStatus(t, r, http.StatusOK)
	if string(r.Body) != `{"repositories":["conc/a","conc/b","shared"]}` {
		t.Errorf("catalog = %s", r.Body)
	}
}

func uploadMonolithic(e *env, repo string, data []byte) error {
	r, err := e.req(http.MethodPost, "/v2/"+repo+"/blobs/uploads/?digest="+string(digest.FromBytes(data)), data)
	if err != nil {
		return err
	}
	return wantCreated(r, data)
}

func uploadPostPut(e *env, repo string, data []byte) error {
	loc, err := startSession(e, repo)
	if err != nil {
		return err
	}
	r, err := e.req(http.MethodPut, withQuery(loc, "digest", string(digest.FromBytes(data))), data)
	if err != nil {
		return err
	}
	return wantCreated(r, data)
}

func uploadChunked(e *env, repo string, data []byte, chunks int) error {
	loc, err := startSession(e, repo)
	if err != nil {
		return err
	}
	size := len(data) / chunks
	for off := 0; off < len(data); off += size {
		end := min(off+size, len(data))
		r, err := e.req(http.MethodPatch, loc, data[off:end], "Content-Range", fmt.Sprintf("%d-%d", off, end-1))
		if err != nil {
			return err
		}
		if r.Status != http.StatusAccepted || r.Header.Get("Range") != fmt.Sprintf("0-%d", end-1) {
			return fmt.Errorf("PATCH %d-%d: status %d, Range %q: %s", off, end-1, r.Status, r.Header.Get("Range"), r.Body)
		}
		loc = r.Header.Get("Location")
	}
	r, err := e.req(http.MethodPut, withQuery(loc, "digest", string(digest.FromBytes(data))), nil)
	if err != nil {
		return err
	}
	return wantCreated(r, data)
}

func startSession(e *env, repo string) (string, error) {
	r, err := e.req(http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil)
	if err != nil {
		return "", err
	}
	if r.Status != http.StatusAccepted {
		return "", fmt.Errorf("POST: status %d: %s", r.Status, r.Body)
	}
	return r.Header.Get("Location"), nil
}

func wantCreated(r *response, data []byte) error {
	d := digest.FromBytes(data)
	if r.Status != http.StatusCreated {
		return fmt.Errorf("status %d: %s", r.Status, r.Body)
	}
	if got := r.Header.Get("Docker-Content-Digest"); got != string(d) {
		return fmt.Errorf("Docker-Content-Digest %q, want %s", got, d)
	}
	return nil
}
