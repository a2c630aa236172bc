package distribution_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/distribution"
	"github.com/berth-registry/berth/storage"
	blobfs "github.com/berth-registry/berth/storage/blob/fs"
	"github.com/berth-registry/berth/storage/meta/bolt"
)

// env is one registry under test: the real API over a real store in a
// temporary directory, served over real HTTP.
type env struct {
	t   *testing.T
	srv *httptest.Server
	dir string
	// store is the core the server serves, which another server (a
	// replica) may serve too.
	store *storage.Service
}

// newEnv starts a registry for the test; it is stopped and its store closed
// when the test ends.
func newEnv(t *testing.T, opts distribution.Options) *env {
	t.Helper()
	return newEnvWithStore(t, opts, storage.Options{}, nil)
}

// newEnvWithStore is newEnv with the core's own options, and a file system
// for the blob store (nil: the operating system's), for instance one that
// fails on demand.
func newEnvWithStore(t *testing.T, opts distribution.Options, sopts storage.Options, fsys blobfs.FS) *env {
	t.Helper()
	dir := t.TempDir()
	store := openStore(t, dir, sopts, fsys)
	srv := httptest.NewServer(distribution.New(store, opts).Handler())
	t.Cleanup(srv.Close)
	return &env{t: t, srv: srv, dir: dir, store: store}
}

// openStore opens the store of dir over the embedded backends, bbolt and
// files, as the registry does; it is closed when the test ends.
func openStore(t *testing.T, dir string, sopts storage.Options, fsys blobfs.FS) *storage.Service {
	t.Helper()
	index, err := bolt.Open(filepath.Join(dir, "index.db"), bolt.Options{})
	if err != nil {
		t.Fatalf("open index: %v", err)
	}
	t.Cleanup(func() {
		if err := index.Close(); err != nil {
			t.Errorf("close index: %v", err)
		}
	})
	blobs, err := blobfs.Open(context.Background(), dir, blobfs.Options{FS: fsys})
	if err != nil {
		t.Fatalf("open blob store: %v", err)
	}
	return storage.New(index, blobs, sopts)
}

// response is a fully read HTTP response.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// url resolves a path, or a Location the server returned, against the
// server. Paths are kept exactly as given, escapes included.
func (e *env) url(ref string) string {
	if strings.HasPrefix(ref, "http://") {
		return ref
	}
	return e.srv.URL + ref
}

// req sends one request and reads the whole response. hdr holds header
// name and value pairs. It reports transport errors instead of failing the
// test, so that goroutines can use it.
func (e *env) req(method, path string, body []byte, hdr ...string) (*response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	return e.reqReader(method, path, rd, hdr...)
}

func (e *env) reqReader(method, path string, body io.Reader, hdr ...string) (*response, error) {
	if len(hdr)%2 != 0 {
		return nil, fmt.Errorf("odd number of header arguments %q", hdr)
	}
	req, err := http.NewRequest(method, e.url(path), body)
	if err != nil {
		return nil, err
	}
	for i := 0; i < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read response body: %w", err)
	}
	if v := resp.Header.Get("Docker-Distribution-API-Version"); v != "registry/2.0" {
		return nil, fmt.Errorf("%s %s: Docker-Distribution-API-Version = %q, want registry/2.0", method, path, v)
	}
	return &response{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

// do is req that fails the test on a transport error.
func (e *env) do(method, path string, body []byte, hdr ...string) *response {
	e.t.Helper()
	r, err := e.req(method, path, body, hdr...)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

// doReader is do with a streamed body of unknown length (chunked encoding).
func (e *env) doReader(method, path string, body io.Reader, hdr ...string) *response {
	e.t.Helper()
	r, err := e.reqReader(method, path, body, hdr...)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

// errorEntry is one entry of an OCI error body.
type errorEntry struct {
	Code    string         `json:"code"`
	Message string         `json:"message"`
	Detail  map[string]any `json:"detail"`
}

// wantError checks that r is an OCI error response with the given status
// and code, and returns its entry for further checks.
func wantError(t *testing.T, r *response, status int, code string) errorEntry {
	t.Helper()
	if r.Status != status {
		t.Errorf("status = %d, want %d (body %s)", r.Status, status, r.Body)
	}
	entry, err := parseError(r)
	if err != nil {
		t.Errorf("error body: %v", err)
		return entry
	}
	if entry.Code != code {
		t.Errorf("error code = %q, want %q (body %s)", entry.Code, code, r.Body)
	}
	return entry
}

// parseError checks the shape every error response must have: JSON content
// type, a Content-Length that matches, and a body holding at least one error
// with a code and a non-empty message. It returns the first error.
func parseError(r *response) (errorEntry, error) {
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		return errorEntry{}, fmt.Errorf("Content-Type = %q, want application/json", ct)
	}
	if cl := r.Header.Get("Content-Length"); cl != fmt.Sprint(len(r.Body)) {
		return errorEntry{}, fmt.Errorf("Content-Length = %q, body has %d bytes", cl, len(r.Body))
	}
	if r.Header.Get("Docker-Content-Digest") != "" {
		return errorEntry{}, fmt.Errorf("error response carries Docker-Content-Digest %q", r.Header.Get("Docker-Content-Digest"))
	}
	var body struct {
		Errors []errorEntry `json:"errors"`
	}
	dec := json.NewDecoder(bytes.NewReader(r.Body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		return errorEntry{}, fmt.Errorf("not an OCI error body: %v: %s", err, r.Body)
	}
	if dec.More() {
		return errorEntry{}, fmt.Errorf("trailing data after the error body: %s", r.Body)
	}
	if len(body.Errors) == 0 {
		return errorEntry{}, fmt.Errorf("no errors in body %s", r.Body)
	}
	for _, e := range body.Errors {
		if e.Code == "" || strings.TrimSpace(e.Message) == "" {
			return errorEntry{}, fmt.Errorf("error without code or message: %s", r.Body)
		}
	}
	return body.Errors[0], nil
}

// wantStatus checks a response's status.
func wantStatus(t *testing.T, r *response, status int) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status = %d, want %d (body %s)", r.Status, status, r.Body)
	}
}

// wantHeader checks one response header.
func wantHeader(t *testing.T, r *response, name, want string) {
	t.Helper()
	if got := r.Header.Get(name); got != want {
		t.Errorf("%s = %q, want %q", name, got, want)
	}
}

// content returns distinct test content of n bytes, derived from seed.
func content(seed string, n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "%s-%d;", seed, i)
	}
	return b.Bytes()[:n]
}

// pushBlob uploads data monolithically into repo and returns its digest.
func (e *env) pushBlob(repo string, data []byte) digest.Digest {
	e.t.Helper()
	d := digest.FromBytes(data)
	r := e.do(http.MethodPost, "/v2/"+repo+"/blobs/uploads/?digest="+string(d), data,
		"Content-Type", "application/octet-stream")
	if r.Status != http.StatusCreated {
		e.t.Fatalf("push blob to %s: status %d: %s", repo, r.Status, r.Body)
	}
	return d
}

// startUpload opens an upload session in repo and returns its Location.
func (e *env) startUpload(repo string) string {
	e.t.Helper()
	r := e.do(http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil)
	if r.Status != http.StatusAccepted {
		e.t.Fatalf("start upload in %s: status %d: %s", repo, r.Status, r.Body)
	}
	loc := r.Header.Get("Location")
	if loc == "" {
		e.t.Fatalf("start upload in %s: no Location", repo)
	}
	return loc
}

// withQuery appends a query parameter to a Location, which may already
// carry a query.
func withQuery(loc, key, value string) string {
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	return loc + sep + url.QueryEscape(key) + "=" + url.QueryEscape(value)
}

// blobContent GETs a blob and checks its digest header.
func (e *env) blobContent(repo string, d digest.Digest) []byte {
	e.t.Helper()
	r := e.do(http.MethodGet, "/v2/"+repo+"/blobs/"+string(d), nil)
	if r.Status != http.StatusOK {
		e.t.Fatalf("GET blob %s in %s: status %d: %s", d, repo, r.Status, r.Body)
	}
	wantHeader(e.t, r, "Docker-Content-Digest", string(d))
	return r.Body
}

// descriptor describes data as content of the given media type.
func descriptor(mediaType string, data []byte) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
}

// imageManifest builds an OCI image manifest body.
func imageManifest(t *testing.T, config ocispec.Descriptor, subject *ocispec.Descriptor, artifactType string, layers ...ocispec.Descriptor) []byte {
	t.Helper()
	if layers == nil {
		layers = []ocispec.Descriptor{}
	}
	return mustJSON(t, ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: artifactType,
		Config:       config,
		Layers:       layers,
		Subject:      subject,
	})
}

// imageIndex builds an OCI image index body.
func imageIndex(t *testing.T, children ...ocispec.Descriptor) []byte {
	t.Helper()
	if children == nil {
		children = []ocispec.Descriptor{}
	}
	return mustJSON(t, ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: children,
	})
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// image is a pushed image: its manifest body, digest and blobs.
type image struct {
	Body   []byte
	Digest digest.Digest
	Config ocispec.Descriptor
	Layer  ocispec.Descriptor
}

// pushImage pushes a config, one layer and a manifest referencing them to
// repo, under ref (a tag or a digest; empty means by digest).
func (e *env) pushImage(repo, ref, seed string) image {
	e.t.Helper()
	cfg := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","seed":%q}`, seed))
	layer := content("layer-"+seed, 300)
	e.pushBlob(repo, cfg)
	e.pushBlob(repo, layer)
	img := image{Config: descriptor(ocispec.MediaTypeImageConfig, cfg), Layer: descriptor(ocispec.MediaTypeImageLayer, layer)}
	img.Body = imageManifest(e.t, img.Config, nil, "", img.Layer)
	img.Digest = e.pushManifest(repo, ref, ocispec.MediaTypeImageManifest, img.Body)
	return img
}

// pushManifest PUTs a manifest and checks the 201 answer. An empty ref
// pushes by digest.
func (e *env) pushManifest(repo, ref, mediaType string, body []byte) digest.Digest {
	e.t.Helper()
	d := digest.FromBytes(body)
	if ref == "" {
		ref = string(d)
	}
	r := e.do(http.MethodPut, "/v2/"+repo+"/manifests/"+ref, body, "Content-Type", mediaType)
	if r.Status != http.StatusCreated {
		e.t.Fatalf("PUT manifest %s:%s: status %d: %s", repo, ref, r.Status, r.Body)
	}
	wantHeader(e.t, r, "Docker-Content-Digest", string(d))
	wantHeader(e.t, r, "Location", "/v2/"+repo+"/manifests/"+string(d))
	return d
}

// blobFile is where the store keeps the content of d.
func (e *env) blobFile(d digest.Digest) string {
	return filepath.Join(e.dir, "blobs", string(d.Algorithm()), d.Encoded()[:2], d.Encoded())
}

// wantNoBlobFile checks that the store holds no file for any of ds.
func (e *env) wantNoBlobFile(ds ...digest.Digest) {
	e.t.Helper()
	for _, d := range ds {
		if _, err := os.Stat(e.blobFile(d)); !errors.Is(err, os.ErrNotExist) {
			e.t.Errorf("blob file for %s: stat error %v, want it absent", d, err)
		}
	}
}

// wantBlobFile checks that the store holds exactly data under d.
func (e *env) wantBlobFile(d digest.Digest, data []byte) {
	e.t.Helper()
	got, err := os.ReadFile(e.blobFile(d))
	if err != nil {
		e.t.Errorf("blob file: %v", err)
		return
	}
	if !bytes.Equal(got, data) {
		e.t.Errorf("blob file for %s holds different content", d)
	}
}

// wantEmptyDir checks that a directory of the store holds no file.
func (e *env) wantEmptyDir(sub string) {
	e.t.Helper()
	entries, err := os.ReadDir(filepath.Join(e.dir, sub))
	if err != nil {
		e.t.Fatalf("read %s: %v", sub, err)
	}
	for _, ent := range entries {
		e.t.Errorf("%s/ holds leftover %s", sub, ent.Name())
	}
}

// wantNoUploadFile checks that the session named by an upload Location has
// no file left in uploads/.
func (e *env) wantNoUploadFile(loc string) {
	e.t.Helper()
	id := uploadID(loc)
	if id == "" {
		e.t.Fatalf("no upload id in Location %q", loc)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "uploads", id)); !errors.Is(err, os.ErrNotExist) {
		e.t.Errorf("upload file %s: stat error %v, want it absent", id, err)
	}
}

// uploadID is the last path segment of an upload Location.
func uploadID(loc string) string {
	u, err := url.Parse(loc)
	if err != nil {
		return ""
	}
	return u.Path[strings.LastIndex(u.Path, "/")+1:]
}

// wantBlobAbsent checks that HEAD and GET of a blob both answer 404.
func (e *env) wantBlobAbsent(repo string, d digest.Digest) {
	e.t.Helper()
	head := e.do(http.MethodHead, "/v2/"+repo+"/blobs/"+string(d), nil)
	if head.Status != http.StatusNotFound {
		e.t.Errorf("HEAD blob %s in %s: status %d, want 404", d, repo, head.Status)
	}
	wantError(e.t, e.do(http.MethodGet, "/v2/"+repo+"/blobs/"+string(d), nil), http.StatusNotFound, "BLOB_UNKNOWN")
}

// wantSessionEnded checks that an upload session is gone.
func (e *env) wantSessionEnded(loc string) {
	e.t.Helper()
	wantError(e.t, e.do(http.MethodGet, loc, nil), http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")
	e.wantNoUploadFile(loc)
}

// rawRequest sends a request over a plain TCP connection, writing the head
// as given and then body, closes the write side and reads the response. It
// lets a test send what net/http refuses to, such as a body shorter than its
// Content-Length.
func (e *env) rawRequest(head string, body []byte) *response {
	e.t.Helper()
	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		e.t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		e.t.Fatal(err)
	}
	if _, err := io.WriteString(conn, head); err != nil {
		e.t.Fatalf("write head: %v", err)
	}
	if _, err := conn.Write(body); err != nil {
		e.t.Fatalf("write body: %v", err)
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		e.t.Fatalf("close write side: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		e.t.Fatalf("read response: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("read response body: %v", err)
	}
	return &response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// decode unmarshals a JSON response body, refusing unknown fields.
func decode(t *testing.T, body []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
}
