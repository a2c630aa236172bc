package proxy_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/distribution"
	"github.com/berth-registry/berth/proxy"
	"github.com/berth-registry/berth/registry"
	"github.com/berth-registry/berth/remote"
	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/manifest"
)

// The tests of the cache run an upstream in the test process: Berth's own
// distribution API over a store of its own (a real registry), behind a
// handler that counts requests and can fail them, hold a blob's body back
// or corrupt it. The mirror is a proxy.Cache over another store, served
// as registry.New serves it: Route in front of the distribution API.

// openStore opens a store in a temporary directory.
func openStore(t *testing.T) *storage.Service {
	t.Helper()
	s, err := registry.OpenStore(t.Context(), t.TempDir(), registry.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s.Service
}

// upstream is a registry in the test process.
type upstream struct {
	svc *storage.Service
	srv *httptest.Server

	mu       sync.Mutex
	requests map[string]int // "METHOD path" -> count
	// fail, when not zero, is the status every request is answered with.
	fail int
	// gate, when set, holds every blob body back after its first 64 KiB
	// until it is closed.
	gate chan struct{}
	// corrupt makes the blob bodies of these digests lie (one byte
	// flipped in the middle).
	corrupt map[digest.Digest]bool
	// cut, for a digest, breaks the connection of the next GET of its
	// blob after that many bytes (once).
	cut map[digest.Digest]int
	// ranges lists the Range headers of the blob GETs.
	ranges []string
}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{svc: openStore(t), requests: map[string]int{}, corrupt: map[digest.Digest]bool{}, cut: map[digest.Digest]int{}}
	api := distribution.New(u.svc, distribution.Options{}).Handler()
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.requests[r.Method+" "+r.URL.Path]++
		fail, gate := u.fail, u.gate
		u.mu.Unlock()
		if fail != 0 {
			w.Header().Set("Content-Type", "application/json")
			if fail == http.StatusTooManyRequests {
				w.Header().Set("Retry-After", "30")
			}
			w.WriteHeader(fail)
			fmt.Fprintf(w, `{"errors":[{"code":"TEST","message":"the upstream fails with %d"}]}`, fail)
			return
		}
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
			_, ds, _ := strings.Cut(r.URL.Path, "/blobs/")
			u.mu.Lock()
			bad := u.corrupt[digest.Digest(ds)]
			_, cut := u.cut[digest.Digest(ds)]
			u.ranges = append(u.ranges, r.Header.Get("Range"))
			u.mu.Unlock()
			if gate != nil || bad || cut {
				u.serveBlob(w, r, gate)
				return
			}
		}
		api.ServeHTTP(w, r)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

// serveBlob serves a blob itself, to hold it back or corrupt it.
func (u *upstream) serveBlob(w http.ResponseWriter, r *http.Request, gate chan struct{}) {
	repo, ds, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v2/"), "/blobs/")
	d := digest.Digest(ds)
	rc, info, err := u.svc.OpenBlob(r.Context(), repo, d)
	if err != nil {
		http.Error(w, `{"errors":[{"code":"BLOB_UNKNOWN","message":"no"}]}`, http.StatusNotFound)
		return
	}
	defer rc.Close()
	body, err := io.ReadAll(rc)
	if err != nil {
		panic(err)
	}
	u.mu.Lock()
	if u.corrupt[d] {
		body = bytes.Clone(body)
		body[len(body)/2] ^= 0xff
	}
	cut, cutting := u.cut[d]
	delete(u.cut, d)
	u.mu.Unlock()
	start := int64(0)
	if rng := r.Header.Get("Range"); rng != "" {
		start, _ = strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(rng, "bytes="), "-"), 10, 64)
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, info.Size-1, info.Size))
		body = body[start:]
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Header().Set("Docker-Content-Digest", string(d))
	if start > 0 {
		w.WriteHeader(http.StatusPartialContent)
	}
	if cutting {
		_, _ = w.Write(body[:cut])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // the connection breaks
	}
	first := min(len(body), 64<<10)
	_, _ = w.Write(body[:first])
	w.(http.Flusher).Flush()
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
	}
	_, _ = w.Write(body[first:])
}

// count returns how many requests of method reached path.
func (u *upstream) count(method, path string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.requests[method+" "+path]
}

func (u *upstream) set(fn func(u *upstream)) {
	u.mu.Lock()
	defer u.mu.Unlock()
	fn(u)
}

// image is an image pushed to the upstream.
type image struct {
	digest digest.Digest
	body   []byte
	layer  []byte
	ld     digest.Digest
	config ocispec.Descriptor
}

// push stores an image of one layer of size random bytes in repo under
// tag on the upstream.
func (u *upstream) push(t *testing.T, repo, tag string, size int) image {
	t.Helper()
	ctx := context.Background()
	layer := make([]byte, size)
	if _, err := rand.Read(layer); err != nil {
		t.Fatal(err)
	}
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"seed":"` + rand.Text() + `"}`)
	var descs []ocispec.Descriptor
	for _, b := range [][]byte{cfg, layer} {
		d := digest.FromBytes(b)
		if _, err := u.svc.PutBlob(ctx, repo, d, bytes.NewReader(b), int64(len(b))); err != nil {
			t.Fatal(err)
		}
		descs = append(descs, ocispec.Descriptor{Digest: d, Size: int64(len(b))})
	}
	descs[0].MediaType, descs[1].MediaType = ocispec.MediaTypeImageConfig, ocispec.MediaTypeImageLayer
	body, err := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: descs[0], Layers: descs[1:]})
	if err != nil {
		t.Fatal(err)
	}
	m, err := manifest.Parse(ocispec.MediaTypeImageManifest, body)
	if err != nil {
		t.Fatal(err)
	}
	d, err := u.svc.PutManifest(ctx, repo, "", body, m, []string{tag})
	if err != nil {
		t.Fatal(err)
	}
	return image{digest: d, body: body, layer: layer, ld: descs[1].Digest, config: descs[0]}
}

// mirror is a pull-through cache of an upstream, served over HTTP.
type mirror struct {
	cache *proxy.Cache
	svc   *storage.Service
	srv   *httptest.Server
	clock *clock
}

// clock is a clock a test moves.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// startMirror starts a cache of u under the namespace hub (the default
// upstream, also for ns=docker.io), with tagTTL ttl.
func startMirror(t *testing.T, u *upstream, ttl time.Duration) *mirror {
	t.Helper()
	return startMirrorWith(t, u, func(uc *proxy.UpstreamConfig) { uc.TagTTL = ttl })
}

// startMirrorWith starts a cache of u whose upstream's configuration edit
// changes.
func startMirrorWith(t *testing.T, u *upstream, edit func(*proxy.UpstreamConfig)) *mirror {
	t.Helper()
	m := &mirror{svc: openStore(t), clock: &clock{now: time.Now()}}
	uc := proxy.UpstreamConfig{Name: "up", Config: remote.Config{URL: u.srv.URL}, Namespace: "hub",
		Hosts: []string{"docker.io"}, Default: true}
	edit(&uc)
	cfg := proxy.Config{Upstreams: []proxy.UpstreamConfig{uc}}
	var err error
	m.cache, err = proxy.New(m.svc, cfg, proxy.Options{Now: m.clock.Now, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	m.srv = httptest.NewServer(m.cache.Route(distribution.New(m.cache, distribution.Options{Logger: testLogger(t)}).Handler()))
	t.Cleanup(m.srv.Close)
	return m
}

// answer is a response read whole.
type answer struct {
	status int
	hdr    http.Header
	body   []byte
	err    error // of reading the body
}

// code is the first error code of the body.
func (a answer) code() string {
	var e struct {
		Errors []struct {
			Code string `json:"code"`
		} `json:"errors"`
	}
	if json.Unmarshal(a.body, &e) != nil || len(e.Errors) == 0 {
		return ""
	}
	return e.Errors[0].Code
}

// do sends method to path of the mirror and reads the answer whole.
func (m *mirror) do(t *testing.T, method, path string) answer {
	t.Helper()
	return m.doBody(t, method, path, nil)
}

// doBody is do with a manifest as the request's body.
func (m *mirror) doBody(t *testing.T, method, path string, body []byte) answer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, m.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", ocispec.MediaTypeImageManifest)
	if body != nil {
		req.Header.Set("Content-Type", ocispec.MediaTypeImageManifest)
	}
	resp, err := m.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, rerr := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, hdr: resp.Header, body: body, err: rerr}
}

// testLogger logs warnings and errors to the test's log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
