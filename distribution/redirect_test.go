package distribution_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/distribution"
	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/blob"
	blobfs "github.com/berth-registry/berth/storage/blob/fs"
	"github.com/berth-registry/berth/storage/meta/bolt"
)

// newEnvOverBlobs is newEnv over the embedded index and the file blob
// store seen through wrap.
func newEnvOverBlobs(t *testing.T, wrap func(blob.Store) blob.Store) (*env, *blobfs.Store) {
	t.Helper()
	dir := t.TempDir()
	index, err := bolt.Open(filepath.Join(dir, "index.db"), bolt.Options{})
	if err != nil {
		t.Fatalf("open index: %v", err)
	}
	t.Cleanup(func() { _ = index.Close() })
	files, err := blobfs.Open(context.Background(), dir, blobfs.Options{})
	if err != nil {
		t.Fatalf("open blob store: %v", err)
	}
	srv := httptest.NewServer(distribution.New(storage.New(index, wrap(files), storage.Options{}), distribution.Options{}).Handler())
	t.Cleanup(srv.Close)
	return &env{t: t, srv: srv, dir: dir}, files
}

// redirecting is a blob store whose content is served by another server,
// as an object store's is.
type redirecting struct {
	blob.Store
	base string
}

func (r redirecting) RedirectURL(_ context.Context, d digest.Digest) (string, error) {
	return r.base + "/content/" + d.String() + "?signature=x", nil
}

// TestBlobRedirect: with a blob store that hands out URLs, a GET of a blob
// is answered 307 to its URL, which a real client follows to the bytes
// (and to a range of them); a HEAD is answered by the registry; an unknown
// blob is 404, never a redirect.
func TestBlobRedirect(t *testing.T) {
	var fetched atomic.Int64
	var files *blobfs.Store
	objects := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetched.Add(1)
		d := digest.Digest(strings.TrimPrefix(r.URL.Path, "/content/"))
		f, err := files.Open(r.Context(), d)
		if err != nil || r.URL.Query().Get("signature") != "x" {
			http.NotFound(w, r)
			return
		}
		defer f.Close()
		http.ServeContent(w, r, "", time.Time{}, f)
	}))
	defer objects.Close()
	e, fs := newEnvOverBlobs(t, func(s blob.Store) blob.Store { return redirecting{s, objects.URL} })
	files = fs
	data := content("redirected", 100_000)
	d := e.pushBlob("r/app", data)
	path := "/v2/r/app/blobs/" + d.String()

	// The registry's answer, unfollowed.
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(e.url(path))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect || resp.Header.Get("Location") != objects.URL+"/content/"+d.String()+"?signature=x" ||
		resp.Header.Get("Docker-Content-Digest") != d.String() {
		t.Fatalf("GET: %s, Location %q, Docker-Content-Digest %q", resp.Status, resp.Header.Get("Location"), resp.Header.Get("Docker-Content-Digest"))
	}
	if fetched.Load() != 0 {
		t.Fatal("the content server was asked before the client followed")
	}

	// A client that follows gets the bytes from the content server, a
	// range as well.
	follow := func(rng string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, e.url(path), nil)
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, b
	}
	if status, body := follow(""); status != http.StatusOK || !bytes.Equal(body, data) || fetched.Load() != 1 {
		t.Fatalf("followed GET: %d, %d bytes, %d fetches", status, len(body), fetched.Load())
	}
	if status, body := follow("bytes=10-19"); status != http.StatusPartialContent || !bytes.Equal(body, data[10:20]) {
		t.Fatalf("followed ranged GET: %d, %q", status, body)
	}

	// HEAD is the registry's.
	fetched.Store(0)
	r := e.do(http.MethodHead, path, nil)
	wantStatus(t, r, http.StatusOK)
	wantHeader(t, r, "Content-Length", fmt.Sprint(len(data)))
	wantHeader(t, r, "Docker-Content-Digest", d.String())
	wantHeader(t, r, "Location", "")
	if fetched.Load() != 0 {
		t.Fatal("a HEAD reached the content server")
	}

	// Unknown: not redirected.
	unknown := digest.FromString("never pushed")
	resp, err = noFollow.Get(e.url("/v2/r/app/blobs/" + unknown.String()))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Location") != "" {
		t.Fatalf("GET of an unknown blob: %s, Location %q: %s", resp.Status, resp.Header.Get("Location"), body)
	}
	// Nor a blob of another repository.
	resp, err = noFollow.Get(e.url("/v2/other/app/blobs/" + d.String()))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Location") != "" {
		t.Fatalf("GET of a blob through another repository: %s, Location %q", resp.Status, resp.Header.Get("Location"))
	}
}

// unavailable is a blob store that is out of reach while down is set.
type unavailable struct {
	blob.Store
	down *atomic.Bool
}

func (u unavailable) fail() error {
	if u.down.Load() {
		return fmt.Errorf("GET http://10.9.8.7/bucket/blobs/x: %w: SlowDown", blob.ErrUnavailable)
	}
	return nil
}

func (u unavailable) Stat(ctx context.Context, d digest.Digest) (int64, error) {
	if err := u.fail(); err != nil {
		return 0, err
	}
	return u.Store.Stat(ctx, d)
}

func (u unavailable) Open(ctx context.Context, d digest.Digest) (io.ReadSeekCloser, error) {
	if err := u.fail(); err != nil {
		return nil, err
	}
	return u.Store.Open(ctx, d)
}

func (u unavailable) Put(ctx context.Context, d digest.Digest, r io.Reader, n int64) error {
	if err := u.fail(); err != nil {
		return err
	}
	return u.Store.Put(ctx, d, r, n)
}

func (u unavailable) Stage(ctx context.Context, id string) (blob.Staged, error) {
	if err := u.fail(); err != nil {
		return nil, err
	}
	return u.Store.Stage(ctx, id)
}

// TestBlobStoreUnavailable: a blob store out of reach for a moment is
// answered 503 with the specification's error body and Retry-After, the
// cause is not shown, and service resumes by itself.
func TestBlobStoreUnavailable(t *testing.T) {
	var down atomic.Bool
	e, _ := newEnvOverBlobs(t, func(s blob.Store) blob.Store { return unavailable{s, &down} })
	data := content("unavailable", 5000)
	d := e.pushBlob("u/app", data)
	down.Store(true)
	for _, r := range []*response{
		e.do(http.MethodGet, "/v2/u/app/blobs/"+d.String(), nil),
		e.do(http.MethodPost, "/v2/u/app/blobs/uploads/?digest="+digest.FromString("x").String(), []byte("x")),
		e.do(http.MethodPost, "/v2/u/app/blobs/uploads/", nil),
	} {
		entry := wantError(t, r, http.StatusServiceUnavailable, "UNAVAILABLE")
		wantHeader(t, r, "Retry-After", "2")
		if strings.Contains(entry.Message, "10.9.8.7") || strings.Contains(entry.Message, "SlowDown") {
			t.Errorf("the 503 shows its cause: %q", entry.Message)
		}
	}
	down.Store(false)
	if r := e.do(http.MethodGet, "/v2/u/app/blobs/"+d.String(), nil); r.Status != http.StatusOK || !bytes.Equal(r.Body, data) {
		t.Fatalf("GET once the store is back: %d", r.Status)
	}
	e.pushBlob("u/app", []byte("x"))
}
