package files_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/files"
	"github.com/berth-registry/berth/storage"
	blobfs "github.com/berth-registry/berth/storage/blob/fs"
	"github.com/berth-registry/berth/storage/manifest"
	"github.com/berth-registry/berth/storage/meta/bolt"
)

// immutableVersions makes tags that start with "v" immutable.
type immutableVersions struct{}

func (immutableVersions) Immutable(_, tag string) bool { return strings.HasPrefix(tag, "v") }

// pullLog records the pulls the handler reports.
type pullLog struct {
	mu    sync.Mutex
	pulls []string
}

func (p *pullLog) Record(_ context.Context, repo string, d digest.Digest) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pulls = append(p.pulls, repo+"@"+string(d))
}

func (p *pullLog) list() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.pulls)
}

// env is the file handler over a real store in a temporary directory.
type env struct {
	t     *testing.T
	svc   *storage.Service
	srv   *httptest.Server
	dir   string
	pulls *pullLog
}

func newEnv(t *testing.T, opts files.Options) *env {
	t.Helper()
	dir := t.TempDir()
	index, err := bolt.Open(filepath.Join(dir, "index.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = index.Close() })
	blobs, err := blobfs.Open(context.Background(), dir, blobfs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	svc := storage.New(index, blobs, storage.Options{Tags: immutableVersions{}})
	e := &env{t: t, svc: svc, dir: dir, pulls: &pullLog{}}
	opts.Pulls = e.pulls
	e.srv = httptest.NewServer(files.New(svc, opts))
	t.Cleanup(e.srv.Close)
	return e
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (e *env) do(method, path string, body io.Reader, hdr ...string) response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, b}
}

func (e *env) put(path string, data []byte, hdr ...string) response {
	e.t.Helper()
	return e.do(http.MethodPut, path, bytes.NewReader(data), hdr...)
}

// part is one part of a multipart form.
type part struct {
	field, filename, contentType string
	data                         []byte
}

func fileField(name string, data []byte) part { return part{field: "file", filename: name, data: data} }
func field(name, value string) part           { return part{field: name, data: []byte(value)} }

// post sends parts as a multipart form. A raw filename is written as is.
func (e *env) post(path string, parts ...part) response {
	e.t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	for _, p := range parts {
		h := textproto.MIMEHeader{}
		cd := fmt.Sprintf(`form-data; name=%q`, p.field)
		if p.filename != "" || p.field == "file" {
			cd += fmt.Sprintf(`; filename=%q`, p.filename)
		}
		h.Set("Content-Disposition", cd)
		if p.contentType != "" {
			h.Set("Content-Type", p.contentType)
		}
		pw, err := w.CreatePart(h)
		if err != nil {
			e.t.Fatal(err)
		}
		_, _ = pw.Write(p.data)
	}
	_ = w.Close()
	return e.do(http.MethodPost, path, &buf, "Content-Type", w.FormDataContentType())
}

func wantStatus(t *testing.T, what string, r response, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s: status %d, want %d: %s", what, r.status, status, r.body)
	}
}

// wantError checks an OCI error answer and returns its message.
func wantError(t *testing.T, what string, r response, status int, code string) string {
	t.Helper()
	var body struct {
		Errors []struct{ Code, Message string }
	}
	if r.status != status || json.Unmarshal(r.body, &body) != nil || len(body.Errors) != 1 || body.Errors[0].Code != code ||
		body.Errors[0].Message == "" {
		t.Fatalf("%s: %d %s, want %d with code %s", what, r.status, r.body, status, code)
	}
	return body.Errors[0].Message
}

// listing is a version's listing as a client reads it.
type listing struct {
	Repository, Version string
	Digest              digest.Digest
	ArtifactType        string
	Tags                []string
	Annotations         map[string]string
	Files               []struct {
		Name, MediaType, URL string
		Size                 int64
		Digest               digest.Digest
	}
}

func (e *env) list(repo, version string) listing {
	e.t.Helper()
	r := e.do(http.MethodGet, "/artifacts/"+repo+"/"+version+"/", nil)
	wantStatus(e.t, "listing", r, http.StatusOK)
	var l listing
	if err := json.Unmarshal(r.body, &l); err != nil {
		e.t.Fatal(err)
	}
	return l
}

// contents is what the store holds on disk: committed blobs and upload
// sessions in flight.
func (e *env) contents() (blobs, uploads []string) {
	e.t.Helper()
	walk := func(sub string) []string {
		var out []string
		_ = filepath.WalkDir(filepath.Join(e.dir, sub), func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				out = append(out, filepath.Base(p))
			}
			return nil
		})
		slices.Sort(out)
		return out
	}
	return walk("blobs"), walk("uploads")
}

func sha(b []byte) digest.Digest { return digest.FromBytes(b) }

// A PUT and a multipart POST store versions as OCI artifacts: the layout
// docs/files.md gives, the metadata in annotations, the files back byte
// for byte with every header a deploy script checks.
func TestUploadAndDownload(t *testing.T) {
	e := newEnv(t, files.Options{})
	jar := []byte("PK\x03\x04 the jar's bytes")
	sbom := []byte(`{"spdxVersion":"SPDX-2.3"}`)
	r := e.put("/artifacts/apps/myapp/1.2.3/myapp.jar?revision=3f2a9c1&created=2024-05-01T12:00:00Z&source=https://git.example/app&annotation=ci.trigger=tag-push",
		jar, "Content-Type", "application/java-archive")
	wantStatus(t, "PUT", r, http.StatusCreated)
	if loc := r.header.Get("Location"); loc != "/artifacts/apps/myapp/1.2.3/myapp.jar" {
		t.Errorf("Location %q", loc)
	}
	r = e.post("/artifacts/apps/myapp/1.2.3", part{field: "file", filename: "myapp.sbom.json", contentType: "application/spdx+json", data: sbom})
	wantStatus(t, "POST", r, http.StatusCreated)

	l := e.list("apps/myapp", "1.2.3")
	if l.ArtifactType != files.ArtifactType || len(l.Files) != 2 || l.Files[0].Name != "myapp.jar" || l.Files[1].Name != "myapp.sbom.json" ||
		l.Files[0].Digest != sha(jar) || l.Files[0].MediaType != "application/java-archive" || l.Files[1].MediaType != "application/spdx+json" {
		t.Fatalf("listing = %+v", l)
	}
	for k, v := range map[string]string{ocispec.AnnotationVersion: "1.2.3", ocispec.AnnotationRevision: "3f2a9c1",
		ocispec.AnnotationCreated: "2024-05-01T12:00:00Z", ocispec.AnnotationSource: "https://git.example/app", "ci.trigger": "tag-push"} {
		if l.Annotations[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, l.Annotations[k], v)
		}
	}
	// The manifest as OCI clients read it.
	info, body, err := e.svc.GetManifest(context.Background(), "apps/myapp", "1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	if info.Digest != l.Digest || m.MediaType != ocispec.MediaTypeImageManifest || m.ArtifactType != files.ArtifactType ||
		m.Config.MediaType != ocispec.MediaTypeEmptyJSON || m.Config.Digest != ocispec.DescriptorEmptyJSON.Digest ||
		len(m.Layers) != 2 || m.Layers[0].Annotations[ocispec.AnnotationTitle] != "myapp.jar" {
		t.Fatalf("manifest = %s", body)
	}

	// The download.
	r = e.do(http.MethodGet, "/artifacts/apps/myapp/1.2.3/myapp.jar", nil)
	wantStatus(t, "GET", r, http.StatusOK)
	sum := sha256.Sum256(jar)
	for k, v := range map[string]string{
		"Content-Type":          "application/java-archive",
		"Content-Length":        fmt.Sprint(len(jar)),
		"ETag":                  `"` + string(sha(jar)) + `"`,
		"Docker-Content-Digest": string(sha(jar)),
		"Repr-Digest":           "sha-256=:" + base64.StdEncoding.EncodeToString(sum[:]) + ":",
		"Content-Disposition":   "attachment; filename=myapp.jar",
		"Accept-Ranges":         "bytes",
	} {
		if got := r.header.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if _, err := http.ParseTime(r.header.Get("Last-Modified")); err != nil {
		t.Errorf("Last-Modified %q: %v", r.header.Get("Last-Modified"), err)
	}
	if !bytes.Equal(r.body, jar) {
		t.Errorf("downloaded %q, want %q", r.body, jar)
	}
	if got := e.pulls.list(); len(got) != 1 || got[0] != "apps/myapp@"+string(l.Digest) {
		t.Errorf("pulls recorded = %q, want one of the version's manifest", got)
	}
	// HEAD: the same headers, no body, no pull.
	r = e.do(http.MethodHead, "/artifacts/apps/myapp/1.2.3/myapp.jar", nil)
	if r.status != http.StatusOK || len(r.body) != 0 || r.header.Get("Content-Length") != fmt.Sprint(len(jar)) {
		t.Errorf("HEAD: %d %q %v", r.status, r.body, r.header)
	}
	if len(e.pulls.list()) != 1 {
		t.Error("a HEAD was recorded as a pull")
	}
	// Ranges and conditional requests.
	r = e.do(http.MethodGet, "/artifacts/apps/myapp/1.2.3/myapp.jar", nil, "Range", "bytes=2-5")
	if r.status != http.StatusPartialContent || string(r.body) != string(jar[2:6]) {
		t.Errorf("range: %d %q", r.status, r.body)
	}
	wantError(t, "unsatisfiable range", e.do(http.MethodGet, "/artifacts/apps/myapp/1.2.3/myapp.jar", nil, "Range", "bytes=999-"),
		http.StatusRequestedRangeNotSatisfiable, "SIZE_INVALID")
	r = e.do(http.MethodGet, "/artifacts/apps/myapp/1.2.3/myapp.jar", nil, "If-None-Match", `"`+string(sha(jar))+`"`)
	if r.status != http.StatusNotModified {
		t.Errorf("If-None-Match: %d", r.status)
	}
	// The checksum, as sha256sum -c reads it.
	r = e.do(http.MethodGet, "/artifacts/apps/myapp/1.2.3/myapp.jar.sha256", nil)
	if r.status != http.StatusOK || string(r.body) != hex.EncodeToString(sum[:])+"  myapp.jar\n" ||
		!strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") {
		t.Errorf("checksum: %d %q %v", r.status, r.body, r.header)
	}
	// A browser gets HTML.
	r = e.do(http.MethodGet, "/artifacts/apps/myapp/1.2.3/", nil, "Accept", "text/html,application/xhtml+xml,*/*;q=0.8")
	if r.status != http.StatusOK || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") ||
		!strings.Contains(string(r.body), `href="/artifacts/apps/myapp/1.2.3/myapp.jar"`) {
		t.Errorf("HTML listing: %d %s", r.status, r.body)
	}
	// What is not there.
	msg := wantError(t, "missing file", e.do(http.MethodGet, "/artifacts/apps/myapp/1.2.3/other.jar", nil), http.StatusNotFound, "BLOB_UNKNOWN")
	if !strings.Contains(msg, `"myapp.jar"`) {
		t.Errorf("missing file message %q does not list the files", msg)
	}
	wantError(t, "missing version", e.do(http.MethodGet, "/artifacts/apps/myapp/9.9.9/myapp.jar", nil), http.StatusNotFound, "MANIFEST_UNKNOWN")
	wantError(t, "missing repository", e.do(http.MethodGet, "/artifacts/apps/none/1.0/x", nil), http.StatusNotFound, "MANIFEST_UNKNOWN")
	wantError(t, "no file named", e.do(http.MethodGet, "/artifacts/myapp/1.2.3", nil), http.StatusBadRequest, "NAME_INVALID")
	wantError(t, "DELETE", e.do(http.MethodDelete, "/artifacts/apps/myapp/1.2.3/myapp.jar", nil), http.StatusMethodNotAllowed, "UNSUPPORTED")
}

// Adding a file to a version moves its tag (recorded in its history) and
// keeps the other files; a file of the same name replaces the old one.
// An immutable version refuses any upload with 409 before reading it,
// and stores nothing.
func TestVersionsGrowAndImmutableOnesRefuse(t *testing.T) {
	e := newEnv(t, files.Options{})
	wantStatus(t, "first", e.put("/artifacts/app/1.0/a.txt", []byte("a")), http.StatusCreated)
	first := e.list("app", "1.0").Digest
	wantStatus(t, "second", e.put("/artifacts/app/1.0/b.txt", []byte("b")), http.StatusCreated)
	wantStatus(t, "replace", e.put("/artifacts/app/1.0/a.txt?revision=abc", []byte("A")), http.StatusCreated)
	l := e.list("app", "1.0")
	if len(l.Files) != 2 || l.Files[0].Name != "a.txt" || l.Files[0].Digest != sha([]byte("A")) || l.Annotations[ocispec.AnnotationRevision] != "abc" {
		t.Fatalf("after adding and replacing: %+v", l)
	}
	moves, _, err := e.svc.TagHistory(context.Background(), "app", "1.0", 0, 10)
	if err != nil || len(moves) != 3 || moves[2].Digest != first || moves[0].Digest != l.Digest {
		t.Fatalf("history of app:1.0 = %+v, %v; want three pushes", moves, err)
	}

	// v1.0 is immutable: created once, then refused.
	wantStatus(t, "immutable create", e.post("/artifacts/app/v1.0", fileField("a.txt", []byte("a")), fileField("b.txt", []byte("b"))), http.StatusCreated)
	blobs, _ := e.contents()
	for _, try := range []response{
		e.put("/artifacts/app/v1.0/c.txt", []byte("new bytes c")),
		e.put("/artifacts/app/v1.0/a.txt", []byte("a")),
		e.post("/artifacts/app/v1.0", fileField("d.txt", []byte("new bytes d"))),
	} {
		msg := wantError(t, "immutable", try, http.StatusConflict, "TAG_IMMUTABLE")
		if !strings.Contains(msg, "immutable") || !strings.Contains(msg, "new version") {
			t.Errorf("immutable refusal says %q", msg)
		}
	}
	after, uploads := e.contents()
	if !slices.Equal(blobs, after) || len(uploads) != 0 {
		t.Errorf("refused uploads changed the store: blobs %v -> %v, uploads %v", blobs, after, uploads)
	}
	if l := e.list("app", "v1.0"); len(l.Files) != 2 {
		t.Errorf("the immutable version changed: %+v", l)
	}
}

// Every bad input gets a clear error and stores nothing.
func TestBadUploadsStoreNothing(t *testing.T) {
	e := newEnv(t, files.Options{})
	wantStatus(t, "seed", e.put("/artifacts/app/1.0/seed.txt", []byte("seed")), http.StatusCreated)
	blobs, _ := e.contents()
	data := []byte("some new bytes")
	other := sha([]byte("other"))
	sum := sha256.Sum256(data)
	cases := []struct {
		name   string
		r      func() response
		status int
		code   string
	}{
		{"a version that is no tag", func() response { return e.put("/artifacts/app/bad%20version/f.txt", data) }, 400, "MANIFEST_INVALID"},
		{"a version too long", func() response { return e.put("/artifacts/app/"+strings.Repeat("v", 129)+"/f.txt", data) }, 400, "MANIFEST_INVALID"},
		{"a repository name in capitals", func() response { return e.put("/artifacts/App/1.0/f.txt", data) }, 400, "NAME_INVALID"},
		{"a file name ..", func() response { return e.put("/artifacts/app/1.0/..", data) }, 400, "BLOB_UPLOAD_INVALID"},
		{"a file name with an escaped slash", func() response { return e.put("/artifacts/app/1.0/a%2Fb", data) }, 400, "NAME_INVALID"},
		{"a file name with a backslash", func() response { return e.put("/artifacts/app/1.0/a%5Cb", data) }, 400, "BLOB_UPLOAD_INVALID"},
		{"a file name with a newline", func() response { return e.put("/artifacts/app/1.0/a%0Ab", data) }, 400, "BLOB_UPLOAD_INVALID"},
		{"a multipart file name with ..", func() response {
			return e.post("/artifacts/app/1.0", fileField("../../etc/passwd", data))
		}, 400, "BLOB_UPLOAD_INVALID"},
		{"a multipart file name with /", func() response { return e.post("/artifacts/app/1.0", fileField("dir/f.txt", data)) }, 400, "BLOB_UPLOAD_INVALID"},
		{"a file field without a file name", func() response { return e.post("/artifacts/app/1.0", fileField("", data)) }, 400, "BLOB_UPLOAD_INVALID"},
		{"no file field", func() response { return e.post("/artifacts/app/1.0", field("revision", "abc")) }, 400, "BLOB_UPLOAD_INVALID"},
		{"an unknown field", func() response {
			return e.post("/artifacts/app/1.0", fileField("f.txt", data), field("revison", "abc"))
		}, 400, "BLOB_UPLOAD_INVALID"},
		{"a file in another field", func() response {
			return e.post("/artifacts/app/1.0", part{field: "upload", filename: "f.txt", data: data})
		}, 400, "BLOB_UPLOAD_INVALID"},
		{"the same file twice", func() response {
			return e.post("/artifacts/app/1.0", fileField("f.txt", data), fileField("f.txt", data))
		}, 400, "BLOB_UPLOAD_INVALID"},
		{"an unknown query parameter", func() response { return e.put("/artifacts/app/1.0/f.txt?tag=x", data) }, 400, "MANIFEST_INVALID"},
		{"a created time that is no time", func() response { return e.put("/artifacts/app/1.0/f.txt?created=yesterday", data) }, 400, "MANIFEST_INVALID"},
		{"an annotation without =", func() response { return e.put("/artifacts/app/1.0/f.txt?annotation=novalue", data) }, 400, "MANIFEST_INVALID"},
		{"an annotation setting the version", func() response {
			return e.put("/artifacts/app/1.0/f.txt?annotation=org.opencontainers.image.version=2.0", data)
		}, 400, "MANIFEST_INVALID"},
		{"a wrong digest parameter", func() response { return e.put("/artifacts/app/1.0/f.txt?digest="+string(other), data) }, 400, "DIGEST_INVALID"},
		{"a malformed digest parameter", func() response { return e.put("/artifacts/app/1.0/f.txt?digest=sha256:xyz", data) }, 400, "DIGEST_INVALID"},
		{"a wrong Repr-Digest", func() response {
			other := sha256.Sum256([]byte("other"))
			return e.put("/artifacts/app/1.0/f.txt", data, "Repr-Digest", "sha-256=:"+base64.StdEncoding.EncodeToString(other[:])+":")
		}, 400, "DIGEST_INVALID"},
		{"a malformed Content-Digest", func() response {
			return e.put("/artifacts/app/1.0/f.txt", data, "Content-Digest", "sha-256=:bm90:")
		}, 400, "DIGEST_INVALID"},
		{"a wrong sha256 line", func() response {
			return e.post("/artifacts/app/1.0", fileField("f.txt", data), fileField("g.txt", []byte("g")),
				field("sha256", hex.EncodeToString(sum[:])+"  f.txt\n"+other.Encoded()+"  g.txt\n"))
		}, 400, "DIGEST_INVALID"},
		{"a sha256 line for a file not sent", func() response {
			return e.post("/artifacts/app/1.0", fileField("f.txt", data), field("sha256", hex.EncodeToString(sum[:])+"  h.txt"))
		}, 400, "MANIFEST_INVALID"},
		{"a POST that is no form", func() response { return e.put("/artifacts/app/1.0/", data) }, 400, "NAME_INVALID"},
		{"a POST with a JSON body", func() response {
			return e.do(http.MethodPost, "/artifacts/app/1.0", bytes.NewReader(data), "Content-Type", "application/json")
		}, 415, "UNSUPPORTED"},
		{"a truncated multipart body", func() response {
			return e.do(http.MethodPost, "/artifacts/app/1.0", strings.NewReader("--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\nabc"),
				"Content-Type", "multipart/form-data; boundary=b")
		}, 400, "SIZE_INVALID"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := c.r()
			wantError(t, c.name, r, c.status, c.code)
			after, uploads := e.contents()
			if !slices.Equal(after, blobs) || len(uploads) != 0 {
				t.Errorf("the store changed: blobs %v -> %v, uploads %v", blobs, after, uploads)
			}
			tags, _, err := e.svc.ListTags(context.Background(), "app", "", 10)
			if err != nil || !slices.Equal(tags, []string{"1.0"}) {
				t.Errorf("tags = %v, %v", tags, err)
			}
			if l := e.list("app", "1.0"); len(l.Files) != 1 {
				t.Errorf("version changed: %+v", l)
			}
		})
	}
	// Right digests are accepted, every way they can be given.
	wantStatus(t, "digest=", e.put("/artifacts/app/2.0/f.txt?digest="+string(sha(data)), data), http.StatusCreated)
	wantStatus(t, "Repr-Digest", e.put("/artifacts/app/2.1/f.txt", data, "Repr-Digest", "sha-512=:AAAA:, sha-256=:"+base64.StdEncoding.EncodeToString(sum[:])+":"), http.StatusCreated)
	wantStatus(t, "sha256 lines", e.post("/artifacts/app/2.2", fileField("f.txt", data), field("sha256", hex.EncodeToString(sum[:])+" *f.txt\n")), http.StatusCreated)
	wantStatus(t, "bare sha256", e.put("/artifacts/app/2.3/f.txt?sha256="+hex.EncodeToString(sum[:]), data), http.StatusCreated)
}

// A body shorter than its Content-Length is refused and leaves nothing.
func TestShortBody(t *testing.T) {
	e := newEnv(t, files.Options{})
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(conn, "PUT /artifacts/app/1.0/f.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nonly forty bytes of a thousand, then EOF")
	_ = conn.(*net.TCPConn).CloseWrite()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	wantError(t, "short body", response{resp.StatusCode, resp.Header, body}, http.StatusBadRequest, "SIZE_INVALID")
	if blobs, uploads := e.contents(); len(blobs) != 0 || len(uploads) != 0 {
		t.Errorf("a short body left blobs %v, uploads %v", blobs, uploads)
	}
}

// A version pushed by an OCI client as files (oras: titled layers) is
// downloadable and can take more files; one that is a container image
// is neither.
func TestArtifactsOfOCIClients(t *testing.T) {
	e := newEnv(t, files.Options{})
	ctx := context.Background()
	put := func(repo string, b []byte, mt string) ocispec.Descriptor {
		d := sha(b)
		if _, err := e.svc.PutBlob(ctx, repo, d, bytes.NewReader(b), int64(len(b))); err != nil {
			t.Fatal(err)
		}
		return ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(b))}
	}
	push := func(repo, tag string, m ocispec.Manifest) {
		m.Versioned, m.MediaType = specs.Versioned{SchemaVersion: 2}, ocispec.MediaTypeImageManifest
		body, _ := json.Marshal(m)
		parsed, err := manifest.Parse("", body)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.svc.PutManifest(ctx, repo, "", body, parsed, []string{tag}); err != nil {
			t.Fatal(err)
		}
	}
	notes := []byte("release notes\n")
	layer := put("tools/cli", notes, ocispec.MediaTypeImageLayer)
	layer.Annotations = map[string]string{ocispec.AnnotationTitle: "notes.txt"}
	push("tools/cli", "1.0", ocispec.Manifest{ArtifactType: "application/vnd.unknown.artifact.v1",
		Config: put("tools/cli", []byte("{}"), ocispec.MediaTypeEmptyJSON), Layers: []ocispec.Descriptor{layer}})
	r := e.do(http.MethodGet, "/artifacts/tools/cli/1.0/notes.txt", nil)
	if r.status != http.StatusOK || !bytes.Equal(r.body, notes) || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") {
		t.Errorf("oras file: %d %q %q", r.status, r.body, r.header.Get("Content-Type"))
	}
	wantStatus(t, "add to an oras artifact", e.put("/artifacts/tools/cli/1.0/cli.tar.gz", []byte("gz")), http.StatusCreated)
	if l := e.list("tools/cli", "1.0"); len(l.Files) != 2 || l.ArtifactType != "application/vnd.unknown.artifact.v1" {
		t.Errorf("after adding: %+v", l)
	}

	// A container image: its layers have no title.
	cfg := put("tools/img", []byte(`{"architecture":"amd64","os":"linux"}`), ocispec.MediaTypeImageConfig)
	push("tools/img", "1.0", ocispec.Manifest{Config: cfg, Layers: []ocispec.Descriptor{put("tools/img", []byte("tar"), ocispec.MediaTypeImageLayer)}})
	msg := wantError(t, "image download", e.do(http.MethodGet, "/artifacts/tools/img/1.0/", nil), http.StatusNotFound, "MANIFEST_INVALID")
	if !strings.Contains(msg, "not a set of files") {
		t.Errorf("image listing says %q", msg)
	}
	wantError(t, "add to an image", e.put("/artifacts/tools/img/1.0/x", []byte("x")), http.StatusConflict, "MANIFEST_INVALID")
}

// Uploads beyond the bound are answered 429 at once.
func TestUploadBound(t *testing.T) {
	e := newEnv(t, files.Options{MaxConcurrentUploads: 1})
	pr, pw := io.Pipe()
	done := make(chan response, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPut, e.srv.URL+"/artifacts/app/1.0/slow.bin", pr)
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			done <- response{}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- response{resp.StatusCode, resp.Header, b}
	}()
	_, _ = pw.Write([]byte("first bytes"))
	var r response
	for range 200 {
		if r = e.put("/artifacts/app/1.1/f.txt", []byte("x")); r.status == http.StatusTooManyRequests {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	wantError(t, "second upload", r, http.StatusTooManyRequests, "TOO_MANY_REQUESTS")
	_ = pw.Close()
	if first := <-done; first.status != http.StatusCreated {
		t.Errorf("the first upload: %d %s", first.status, first.body)
	}
}

// A file over a megabyte streams through a PUT and a POST unchanged.
func TestLargerFiles(t *testing.T) {
	e := newEnv(t, files.Options{})
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<17) // 2 MiB
	wantStatus(t, "PUT", e.put("/artifacts/app/1.0/big.bin", big), http.StatusCreated)
	wantStatus(t, "POST", e.post("/artifacts/app/1.1", fileField("big.bin", big), fileField("small.txt", []byte("s"))), http.StatusCreated)
	for _, v := range []string{"1.0", "1.1"} {
		r := e.do(http.MethodGet, "/artifacts/app/"+v+"/big.bin", nil)
		if r.status != http.StatusOK || !bytes.Equal(r.body, big) {
			t.Errorf("%s: %d, %d bytes", v, r.status, len(r.body))
		}
	}
	// The same content once on disk.
	blobs, _ := e.contents()
	n := 0
	for _, b := range blobs {
		if b == sha(big).Encoded() {
			n++
		}
	}
	if n != 1 {
		t.Errorf("the 2 MiB file is stored %d times", n)
	}
}
