package conformance_test

import (
	"bufio"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/berth-registry/berth/conformance/internal/berthtest"
)

// filesServer is a berth with authentication: builder may pull and push
// under apps/**, deployer may pull there, admin may do anything; tags
// v* are immutable.
type filesServer struct {
	*berthtest.Server
	pw map[string]string
}

func startFilesServer(t *testing.T) *filesServer {
	t.Helper()
	dir := t.TempDir()
	pw := map[string]string{"builder": "builder-pw-1", "deployer": "deployer-pw-2", "admin": "admin-pw-3"}
	var lines []string
	for _, u := range []string{"builder", "deployer", "admin"} {
		h, err := bcrypt.GenerateFromPassword([]byte(pw[u]), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, u+":"+string(h))
	}
	writeTestFile(t, filepath.Join(dir, "htpasswd"), strings.Join(lines, "\n")+"\n")
	writeTestFile(t, filepath.Join(dir, "berth.yaml"), fmt.Sprintf(`auth:
  htpasswd: %s
  admins: [admin]
  rules:
    - repositories: ["apps/**"]
      grants:
        user:builder: [pull, push]
        user:deployer: [pull]
tags:
  immutable:
    - repositories: ["**"]
      tags: ["v*"]
`, filepath.Join(dir, "htpasswd")))
	srv := berthtest.Start(t, berthtest.WithArgs("--config", filepath.Join(dir, "berth.yaml")))
	return &filesServer{Server: srv, pw: pw}
}

// curlResult is what one curl command got: the status, headers and body.
type curlResult struct {
	status int
	header http.Header
	body   string
}

// code is the OCI error code of an error answer.
func (r curlResult) code() string {
	var b struct {
		Errors []struct{ Code, Message string }
	}
	if json.Unmarshal([]byte(r.body), &b) != nil || len(b.Errors) == 0 {
		return ""
	}
	return b.Errors[0].Code
}

// curl runs curl in dir with args, which must not write the body or
// headers elsewhere, and returns what it got. curl's own failure (not an
// HTTP error) fails the test.
func curl(t *testing.T, dir string, args ...string) curlResult {
	t.Helper()
	tmp := t.TempDir()
	bodyFile, headerFile := filepath.Join(tmp, "body"), filepath.Join(tmp, "header")
	full := append([]string{"-sS", "--max-time", "120", "-D", headerFile, "-w", "%{http_code}"}, args...)
	if !slices.Contains(args, "-O") && !slices.Contains(args, "-o") {
		full = append(full, "-o", bodyFile)
	}
	r := execClient(t, dir, clientEnv(t), "curl", full...)
	if r.err != nil {
		t.Fatalf("curl %s: %v\n%s", strings.Join(args, " "), r.err, r.stderr)
	}
	status, err := strconv.Atoi(strings.TrimSpace(r.stdout))
	if err != nil {
		t.Fatalf("curl %s: status %q", strings.Join(args, " "), r.stdout)
	}
	body, _ := os.ReadFile(bodyFile)
	raw, _ := os.ReadFile(headerFile)
	return curlResult{status: status, header: parseHeaders(string(raw)), body: string(body)}
}

// parseHeaders reads the headers of the last response curl dumped.
func parseHeaders(raw string) http.Header {
	h := http.Header{}
	blocks := strings.Split(strings.TrimSpace(raw), "\r\n\r\n")
	for _, line := range strings.Split(blocks[len(blocks)-1], "\r\n")[1:] {
		if k, v, ok := strings.Cut(line, ":"); ok {
			h.Add(strings.TrimSpace(k), strings.TrimSpace(v))
		}
	}
	return h
}

func wantCurl(t *testing.T, what string, r curlResult, status int, code string) {
	t.Helper()
	if r.status != status || (code != "" && r.code() != code) {
		t.Fatalf("%s: %d %s, want %d %s", what, r.status, r.body, status, code)
	}
}

// storeFiles counts the files of the store's blobs/ and uploads/.
func storeFiles(t *testing.T, dataDir string) (blobs, uploads int) {
	t.Helper()
	count := func(sub string) int {
		n := 0
		_ = filepath.WalkDir(filepath.Join(dataDir, sub), func(_ string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				n++
			}
			return nil
		})
		return n
	}
	return count("blobs"), count("uploads")
}

// TestFilesOverCurl is the deploy flow of the seeds through curl: a build
// uploads its outputs with -T and -F, with their metadata; a deploy target
// downloads them with -O (and wget), checks them with sha256sum -c, and
// oras pulls the same bytes; the commit finds them; an immutable version
// refuses more; the credentials are those of the API (users, robot
// secrets, tokens).
func TestFilesOverCurl(t *testing.T) {
	t.Parallel()
	srv := startFilesServer(t)
	work := t.TempDir()
	builder := "builder:" + srv.pw["builder"]
	deployer := "deployer:" + srv.pw["deployer"]
	const commit = "3f2a9c1e3f2a9c1e3f2a9c1e3f2a9c1e3f2a9c1e"
	files := map[string][]byte{
		"myapp-1.2.3.jar":      append([]byte("PK\x03\x04"), randomBytes(t, 300_000)...),
		"myapp-1.2.3.jar.spdx": []byte(`{"spdxVersion":"SPDX-2.3","name":"myapp"}`),
		"RELEASE NOTES.txt":    []byte("Fixed the thing.\n"),
	}
	writeFiles(t, work, files)
	base := srv.URL + "/artifacts/apps/myapp/1.2.3"

	// The build machine: the jar with -T, the rest with -F, metadata with
	// both.
	r := curl(t, work, "-u", builder, "-T", "myapp-1.2.3.jar",
		base+"/myapp-1.2.3.jar?revision="+commit+"&created=2024-05-01T12:00:00Z&source=https://git.example/myapp&annotation=ci.trigger=tag-push")
	wantCurl(t, "upload with -T", r, http.StatusCreated, "")
	r = curl(t, work, "-u", builder, "-F", "file=@myapp-1.2.3.jar.spdx", "-F", "file=@RELEASE NOTES.txt",
		"-F", "annotation=ci.pipeline=4242", base)
	wantCurl(t, "upload with -F", r, http.StatusCreated, "")
	var l struct {
		Digest      string
		Tags        []string
		Annotations map[string]string
		Files       []struct{ Name, Digest string }
	}
	if err := json.Unmarshal([]byte(r.body), &l); err != nil || len(l.Files) != 3 ||
		l.Annotations["org.opencontainers.image.revision"] != commit || l.Annotations["ci.pipeline"] != "4242" ||
		l.Annotations["ci.trigger"] != "tag-push" || l.Annotations["org.opencontainers.image.version"] != "1.2.3" {
		t.Fatalf("the version after both uploads: %v\n%s", err, r.body)
	}

	// The deploy target: -O, the checksum, sha256sum -c.
	dl := t.TempDir()
	r = curl(t, dl, "-f", "-u", deployer, "-O", base+"/myapp-1.2.3.jar")
	wantCurl(t, "download with -O", r, http.StatusOK, "")
	r = curl(t, dl, "-f", "-u", deployer, "-O", base+"/myapp-1.2.3.jar.sha256")
	wantCurl(t, "the checksum", r, http.StatusOK, "")
	if out := runClientIn(t, dl, nil, "sha256sum", "-c", "myapp-1.2.3.jar.sha256"); strings.TrimSpace(out) != "myapp-1.2.3.jar: OK" {
		t.Errorf("sha256sum -c: %q", out)
	}
	if got, _ := os.ReadFile(filepath.Join(dl, "myapp-1.2.3.jar")); string(got) != string(files["myapp-1.2.3.jar"]) {
		t.Error("the downloaded jar differs")
	}
	// The headers a deploy script checks.
	r = curl(t, dl, "-u", deployer, "-I", base+"/myapp-1.2.3.jar")
	sum := sha256.Sum256(files["myapp-1.2.3.jar"])
	for k, v := range map[string]string{
		"Docker-Content-Digest": "sha256:" + hex.EncodeToString(sum[:]),
		"Repr-Digest":           "sha-256=:" + base64.StdEncoding.EncodeToString(sum[:]) + ":",
		"Etag":                  `"sha256:` + hex.EncodeToString(sum[:]) + `"`,
		"Content-Length":        strconv.Itoa(len(files["myapp-1.2.3.jar"])),
		"Content-Disposition":   "attachment; filename=myapp-1.2.3.jar",
	} {
		if got := r.header.Get(k); got != v {
			t.Errorf("HEAD %s = %q, want %q", k, got, v)
		}
	}
	if _, err := http.ParseTime(r.header.Get("Last-Modified")); err != nil {
		t.Errorf("Last-Modified %q", r.header.Get("Last-Modified"))
	}
	r = curl(t, dl, "-u", deployer, "-r", "0-3", base+"/myapp-1.2.3.jar")
	if r.status != http.StatusPartialContent || r.body != "PK\x03\x04" {
		t.Errorf("a range: %d %q", r.status, r.body)
	}
	// A file name with a space, escaped in the URL.
	r = curl(t, dl, "-f", "-u", deployer, base+"/RELEASE%20NOTES.txt")
	if r.body != string(files["RELEASE NOTES.txt"]) {
		t.Errorf("RELEASE NOTES.txt: %q", r.body)
	}
	// wget answers the Basic challenge.
	wget := execClient(t, dl, clientEnv(t), "wget", "-q", "-O", "wget.jar", "--user", "deployer", "--password", srv.pw["deployer"], base+"/myapp-1.2.3.jar")
	if wget.err != nil {
		t.Errorf("wget: %v %s", wget.err, wget.stderr)
	} else if hashFile(t, filepath.Join(dl, "wget.jar")) != hex.EncodeToString(sum[:]) {
		t.Error("wget downloaded other bytes")
	}

	// oras pulls the same version, byte for byte.
	env := clientEnv(t)
	pulled := t.TempDir()
	if r := execClientInput(t, pulled, env, srv.pw["deployer"]+"\n", "oras", "login", "--plain-http", "-u", "deployer", "--password-stdin", srv.Addr); r.err != nil {
		t.Fatalf("oras login: %v %s", r.err, r.stderr)
	}
	runClientIn(t, pulled, env, "oras", "pull", "--plain-http", "-o", "out", srv.Addr+"/apps/myapp:1.2.3")
	compareFiles(t, filepath.Join(pulled, "out"), files)

	// An artifact oras pushed downloads here.
	if r := execClientInput(t, work, env, srv.pw["builder"]+"\n", "oras", "login", "--plain-http", "-u", "builder", "--password-stdin", srv.Addr); r.err != nil {
		t.Fatalf("oras login: %v %s", r.err, r.stderr)
	}
	runClientIn(t, work, env, "oras", "push", "--plain-http", srv.Addr+"/apps/tool:2.0", "RELEASE NOTES.txt")
	r = curl(t, dl, "-f", "-u", deployer, srv.URL+"/artifacts/apps/tool/2.0/RELEASE%20NOTES.txt")
	if r.body != string(files["RELEASE NOTES.txt"]) {
		t.Errorf("the oras-pushed file: %q", r.body)
	}

	// The commit finds the version: its manifest now, tagged 1.2.3, and
	// the one the first upload made, which the second replaced (untagged,
	// until retention removes it).
	found := berthFindJSON(t, srv.Server, "deployer", srv.pw["deployer"], "--annotation", "org.opencontainers.image.revision="+commit)
	tagged := slices.IndexFunc(found, func(r findResult) bool { return slices.Contains(r.Tags, "1.2.3") })
	if len(found) != 2 || tagged < 0 || string(found[tagged].Digest) != l.Digest || len(found[1-tagged].Tags) != 0 ||
		found[0].Repository != "apps/myapp" || found[1].Repository != "apps/myapp" {
		t.Errorf("search by commit: %+v", found)
	}

	// An immutable version takes its files once.
	vbase := srv.URL + "/artifacts/apps/myapp/v1.2.3"
	wantCurl(t, "immutable create", curl(t, work, "-u", builder, "-F", "file=@myapp-1.2.3.jar", "-F", "file=@RELEASE NOTES.txt", vbase), http.StatusCreated, "")
	blobs, _ := storeFiles(t, srv.DataDir)
	r = curl(t, work, "-u", builder, "-T", "myapp-1.2.3.jar.spdx", vbase+"/myapp-1.2.3.jar.spdx")
	wantCurl(t, "a re-upload to an immutable version", r, http.StatusConflict, "TAG_IMMUTABLE")
	if !strings.Contains(r.body, "immutable") {
		t.Errorf("the refusal: %s", r.body)
	}
	if b, u := storeFiles(t, srv.DataDir); b != blobs || u != 0 {
		t.Errorf("the refused upload stored something: %d -> %d blobs, %d uploads", blobs, b, u)
	}

	// The credentials of the API, and nothing else.
	r = curl(t, work, "-T", "RELEASE NOTES.txt", base+"/x.txt")
	wantCurl(t, "anonymous upload", r, http.StatusUnauthorized, "UNAUTHORIZED")
	if !strings.HasPrefix(r.header.Get("Www-Authenticate"), "Basic ") {
		t.Errorf("challenge: %v", r.header.Values("Www-Authenticate"))
	}
	wantCurl(t, "anonymous download", curl(t, work, base+"/myapp-1.2.3.jar"), http.StatusUnauthorized, "UNAUTHORIZED")
	wantCurl(t, "a wrong password", curl(t, work, "-u", "deployer:nope", base+"/myapp-1.2.3.jar"), http.StatusUnauthorized, "UNAUTHORIZED")
	wantCurl(t, "a deployer's upload", curl(t, work, "-u", deployer, "-T", "RELEASE NOTES.txt", base+"/x.txt"), http.StatusForbidden, "DENIED")
	wantCurl(t, "outside the rules", curl(t, work, "-u", builder, "-T", "RELEASE NOTES.txt", srv.URL+"/artifacts/other/1.0/x.txt"), http.StatusForbidden, "DENIED")
	// A robot secret as the password, and a Bearer token.
	r = curl(t, work, "-u", "admin:"+srv.pw["admin"], "-H", "Content-Type: application/json",
		"-d", `{"name":"deploy-bot","scopes":["repository:apps/myapp:pull"],"expires":"1h"}`, srv.URL+"/_berth/admin/robots")
	wantCurl(t, "create a robot", r, http.StatusCreated, "")
	var robot struct{ Secret string }
	if err := json.Unmarshal([]byte(r.body), &robot); err != nil || robot.Secret == "" {
		t.Fatalf("robot: %s", r.body)
	}
	r = curl(t, dl, "-u", "deploy-bot:"+robot.Secret, base+"/myapp-1.2.3.jar")
	if r.status != http.StatusOK || r.body != string(files["myapp-1.2.3.jar"]) {
		t.Errorf("download with a robot secret: %d", r.status)
	}
	wantCurl(t, "the robot uploads", curl(t, work, "-u", "deploy-bot:"+robot.Secret, "-T", "RELEASE NOTES.txt", base+"/x.txt"), http.StatusForbidden, "DENIED")
	r = curl(t, work, "-u", deployer, srv.URL+"/auth/token?service=berth&scope=repository:apps/myapp:pull")
	var tok struct{ Token string }
	if err := json.Unmarshal([]byte(r.body), &tok); err != nil || tok.Token == "" {
		t.Fatalf("token: %s", r.body)
	}
	r = curl(t, dl, "-H", "Authorization: Bearer "+tok.Token, base+"/myapp-1.2.3.jar")
	if r.status != http.StatusOK {
		t.Errorf("download with a Bearer token: %d %s", r.status, r.body)
	}
}

// TestFilesBadInputs sends every kind of bad upload through curl (and a
// body shorter than its length through a socket): each gets a clear error
// with the OCI code, and the store keeps nothing of it.
func TestFilesBadInputs(t *testing.T) {
	t.Parallel()
	srv := startFilesServer(t)
	work := t.TempDir()
	builder := "builder:" + srv.pw["builder"]
	writeFiles(t, work, map[string][]byte{"app.jar": []byte("the jar"), "notes.txt": []byte("notes")})
	base := srv.URL + "/artifacts/apps/myapp"
	wantCurl(t, "the version", curl(t, work, "-u", builder, "-T", "app.jar", base+"/1.0/app.jar"), http.StatusCreated, "")
	blobs, _ := storeFiles(t, srv.DataDir)
	jar := sha256.Sum256([]byte("the jar"))
	other := sha256.Sum256([]byte("other"))
	cases := []struct {
		name   string
		args   []string
		status int
		code   string
		says   string
	}{
		{"a missing file field", []string{"-F", "revision=abc", base + "/1.0"}, 400, "BLOB_UPLOAD_INVALID", "no file field"},
		{"a file name with ..", []string{"-F", "file=@notes.txt;filename=../../etc/passwd", base + "/1.0"}, 400, "BLOB_UPLOAD_INVALID", "may not contain"},
		{"a file name that is ..", []string{"--path-as-is", "-X", "PUT", "--data-binary", "@notes.txt", base + "/1.0/.."}, 400, "BLOB_UPLOAD_INVALID", "may not be"},
		{"a file name with /", []string{"-F", "file=@notes.txt;filename=dir/notes.txt", base + "/1.0"}, 400, "BLOB_UPLOAD_INVALID", "may not contain"},
		{"an escaped / in the path", []string{"-T", "notes.txt", base + "/1.0/dir%2Fnotes.txt"}, 400, "NAME_INVALID", "one segment"},
		{"a version that is no tag", []string{"-T", "notes.txt", base + "/-1.0/notes.txt"}, 400, "MANIFEST_INVALID", "not a valid tag"},
		{"a version with a space", []string{"-F", "file=@notes.txt", base + "/1.0%20beta"}, 400, "MANIFEST_INVALID", "not a valid tag"},
		{"a wrong client digest", []string{"-T", "app.jar", base + "/1.0/app2.jar?digest=sha256:" + hex.EncodeToString(other[:])}, 400, "DIGEST_INVALID", "hash to"},
		{"a wrong Repr-Digest", []string{"-T", "app.jar", "-H", "Repr-Digest: sha-256=:" + base64.StdEncoding.EncodeToString(other[:]) + ":", base + "/1.0/app2.jar"}, 400, "DIGEST_INVALID", "hash to"},
		{"a wrong sha256 line", []string{"-F", "file=@app.jar", "-F", "sha256=" + hex.EncodeToString(other[:]) + "  app.jar", base + "/1.1"}, 400, "DIGEST_INVALID", "hash to"},
		{"an unknown field", []string{"-F", "file=@app.jar", "-F", "revison=abc", base + "/1.1"}, 400, "BLOB_UPLOAD_INVALID", "unknown field"},
		{"a created time that is no time", []string{"-F", "file=@app.jar", "-F", "created=yesterday", base + "/1.1"}, 400, "MANIFEST_INVALID", "RFC 3339"},
		{"a POST without a form", []string{"--data-binary", "@app.jar", base + "/1.1"}, 415, "UNSUPPORTED", "multipart/form-data"},
	}
	for _, c := range cases {
		r := curl(t, work, append([]string{"-u", builder}, c.args...)...)
		if r.status != c.status || r.code() != c.code || !strings.Contains(r.body, c.says) {
			t.Errorf("%s: %d %s, want %d %s saying %q", c.name, r.status, r.body, c.status, c.code, c.says)
		}
		if b, u := storeFiles(t, srv.DataDir); b != blobs || u != 0 {
			t.Errorf("%s: the store changed: %d -> %d blobs, %d uploads", c.name, blobs, b, u)
		}
	}
	// A body shorter than its Content-Length, and then the end.
	conn, err := net.Dial("tcp", srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	auth := base64.StdEncoding.EncodeToString([]byte(builder))
	fmt.Fprintf(conn, "PUT /artifacts/apps/myapp/1.0/short.bin HTTP/1.1\r\nHost: %s\r\nAuthorization: Basic %s\r\nContent-Length: 100000\r\n\r\nonly this much", srv.Addr, auth)
	_ = conn.(*net.TCPConn).CloseWrite()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if r := (curlResult{status: resp.StatusCode, body: string(body)}); r.status != http.StatusBadRequest || r.code() != "SIZE_INVALID" {
		t.Errorf("a short body: %d %s", r.status, body)
	}
	if b, u := storeFiles(t, srv.DataDir); b != blobs || u != 0 {
		t.Errorf("a short body: the store changed: %d -> %d blobs, %d uploads", blobs, b, u)
	}
	// Still one version, with its one file; and a right digest passes.
	r := curl(t, work, "-u", builder, base+"/1.0/")
	if !strings.Contains(r.body, `"app.jar"`) || strings.Count(r.body, `"name"`) != 1 {
		t.Errorf("the version after the refusals: %s", r.body)
	}
	r = curl(t, work, "-u", builder, "-T", "app.jar", base+"/1.2/app.jar?sha256="+hex.EncodeToString(jar[:]))
	wantCurl(t, "a right digest", r, http.StatusCreated, "")
	r = curl(t, work, "-u", builder, srv.URL+"/v2/apps/myapp/tags/list")
	if !strings.Contains(r.body, `["1.0","1.2"]`) {
		t.Errorf("tags after the refusals: %s", r.body)
	}
}
