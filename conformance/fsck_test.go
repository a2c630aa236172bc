package conformance_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/conformance/internal/berthtest"
)

// fsckReport is the part of `berth fsck --json` these tests read.
type fsckReport struct {
	Inconsistencies int           `json:"inconsistencies"`
	Blobs           int           `json:"blobs"`
	BytesVerified   int64         `json:"bytesVerified"`
	Manifests       int           `json:"manifests"`
	Problems        []fsckFinding `json:"problems"`
	Orphans         []fsckFinding `json:"orphans"`
	Repaired        []fsckFinding `json:"repaired"`
	Remaining       []fsckFinding `json:"remaining"`
}

type fsckFinding struct {
	Kind     string `json:"kind"`
	Digest   string `json:"digest"`
	Repo     string `json:"repo"`
	Path     string `json:"path"`
	Detail   string `json:"detail"`
	Harmless bool   `json:"harmless"`
	Action   string `json:"action"`
}

// runFsck runs berth fsck ARGS and returns its stdout, stderr and exit status.
func runFsck(t *testing.T, bin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"fsck"}, args...)...)
	cmd.Dir = t.TempDir()
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "BERTH_") })
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatalf("berth fsck %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errOut.String(), code
}

// fsckJSON runs berth fsck --json ARGS, requires exit status want and
// returns the report.
func fsckJSON(t *testing.T, bin string, want int, args ...string) fsckReport {
	t.Helper()
	args = append([]string{"--json"}, args...)
	stdout, stderr, code := runFsck(t, bin, args...)
	if code != want {
		t.Fatalf("berth fsck %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, want, stdout, stderr)
	}
	var r fsckReport
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatalf("berth fsck %s: output is not a JSON report: %v\n%s", strings.Join(args, " "), err, stdout)
	}
	return r
}

func fsckDigest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// fsckPush pushes blobs and an image manifest tagged v1 to repo over HTTP.
func fsckPush(t *testing.T, base, repo string, config []byte, layers ...[]byte) string {
	t.Helper()
	do := func(method, url, contentType string, body []byte, want int) {
		t.Helper()
		req, err := http.NewRequest(method, url, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", contentType)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		got, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			t.Fatalf("%s %s: %d, want %d: %s", method, url, resp.StatusCode, want, got)
		}
	}
	type desc struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
		Size      int    `json:"size"`
	}
	push := func(b []byte, mt string) desc {
		d := fsckDigest(b)
		do(http.MethodPost, base+"/v2/"+repo+"/blobs/uploads/?digest="+d, "application/octet-stream", b, http.StatusCreated)
		return desc{mt, d, len(b)}
	}
	m := struct {
		SchemaVersion int    `json:"schemaVersion"`
		MediaType     string `json:"mediaType"`
		Config        desc   `json:"config"`
		Layers        []desc `json:"layers"`
	}{2, "application/vnd.oci.image.manifest.v1+json", push(config, "application/vnd.oci.image.config.v1+json"), []desc{}}
	for _, l := range layers {
		m.Layers = append(m.Layers, push(l, "application/vnd.oci.image.layer.v1.tar"))
	}
	body, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	do(http.MethodPut, base+"/v2/"+repo+"/manifests/v1", m.MediaType, body, http.StatusCreated)
	return fsckDigest(body)
}

func fsckGet(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
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

func TestFsckFindsAndQuarantinesCorruptBlob(t *testing.T) {
	bin := berthtest.Build(t)
	srv := berthtest.Start(t)
	dir := srv.DataDir
	const repo = "fsck/app"
	config := []byte(`{"architecture":"amd64","os":"linux"}`)
	intact := bytes.Repeat([]byte("an intact layer "), 4096)
	victim := bytes.Repeat([]byte("a layer that rots "), 4096)
	md := fsckPush(t, srv.URL, repo, config, intact, victim)
	srv.Stop()

	// A clean store: exit 0, nothing found, in JSON and in text.
	r := fsckJSON(t, bin, 0, "--data", dir, "--verify-content")
	if r.Inconsistencies != 0 || len(r.Problems) != 0 || len(r.Orphans) != 0 || r.Blobs != 4 || r.Manifests != 1 {
		t.Fatalf("clean store: %+v", r)
	}
	if want := int64(len(config) + len(intact) + len(victim)); r.BytesVerified <= want {
		t.Fatalf("bytes verified %d, want more than the blobs' %d", r.BytesVerified, want)
	}
	stdout, stderr, code := runFsck(t, bin, "--data", dir)
	if code != 0 || !strings.Contains(stdout, "0 inconsistencies") || strings.Count(stdout, "\n") != 1 {
		t.Fatalf("text report of a clean store: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}

	// Flip one byte of the victim layer: same size, so only the content check sees it.
	vd := fsckDigest(victim)
	path := filepath.Join(dir, "blobs", "sha256", vd[7:9], vd[7:])
	rotted := bytes.Clone(victim)
	rotted[100] ^= 0x20
	if err := os.WriteFile(path, rotted, 0o600); err != nil {
		t.Fatal(err)
	}
	fsckJSON(t, bin, 0, "--data", dir)
	r = fsckJSON(t, bin, 1, "--data", dir, "--verify-content")
	if r.Inconsistencies != 1 || len(r.Problems) != 1 || r.Problems[0].Kind != "corrupt" || r.Problems[0].Digest != vd {
		t.Fatalf("corrupt blob: want one corrupt problem naming %s, got %+v", vd, r.Problems)
	}
	stdout, stderr, code = runFsck(t, bin, "--data", dir, "--verify-content")
	if code != 1 || !strings.Contains(stdout, "corrupt "+vd) || !strings.Contains(stderr, "1 inconsistencies") {
		t.Fatalf("text report of a corrupt blob: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}

	r = fsckJSON(t, bin, 0, "--data", dir, "--repair", "--verify-content")
	if len(r.Repaired) != 1 || r.Repaired[0].Digest != vd || !strings.Contains(r.Repaired[0].Action, "quarantine") {
		t.Fatalf("repair: %+v", r.Repaired)
	}
	r = fsckJSON(t, bin, 0, "--data", dir, "--verify-content")
	if r.Inconsistencies != 0 || len(r.Orphans) != 0 || len(r.Problems) != 1 ||
		r.Problems[0].Kind != "incomplete-manifest" || r.Problems[0].Digest != md || !r.Problems[0].Harmless {
		t.Fatalf("after repair: want only the manifest reported incomplete, got %+v", r)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "quarantine", "sha256-"+vd[7:])); err != nil || !bytes.Equal(got, rotted) {
		t.Fatalf("quarantined blob: %v", err)
	}

	// The restarted server no longer has the blob, and serves the rest.
	srv = berthtest.Start(t, berthtest.WithDataDir(dir))
	if status, _ := fsckGet(t, srv.URL+"/v2/"+repo+"/blobs/"+vd); status != http.StatusNotFound {
		t.Fatalf("quarantined blob: GET %d, want 404", status)
	}
	for _, b := range [][]byte{config, intact} {
		if status, got := fsckGet(t, srv.URL+"/v2/"+repo+"/blobs/"+fsckDigest(b)); status != http.StatusOK || !bytes.Equal(got, b) {
			t.Fatalf("intact blob %s: GET %d (content equal %v)", fsckDigest(b), status, bytes.Equal(got, b))
		}
	}

	// fsck refuses a store a server is using.
	stdout, stderr, code = runFsck(t, bin, "--data", dir, "--json")
	if code != 2 || !strings.Contains(stderr, "in use") || !strings.Contains(stderr, "stop the server first") || stdout != "" {
		t.Fatalf("fsck of a running server's store: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if status, _ := fsckGet(t, srv.URL+"/v2/"+repo+"/manifests/v1"); status != http.StatusOK {
		t.Fatalf("server after a refused fsck: manifest GET %d", status)
	}
}

func TestFsckOperationalErrors(t *testing.T) {
	bin := berthtest.Build(t)
	missing := filepath.Join(t.TempDir(), "nowhere")
	_, stderr, code := runFsck(t, bin, "--data", missing)
	if code != 2 || !strings.Contains(stderr, "does not exist") {
		t.Fatalf("fsck of a missing directory: exit %d: %s", code, stderr)
	}
	empty := t.TempDir()
	_, stderr, code = runFsck(t, bin, "--data", empty)
	if code != 2 || !strings.Contains(stderr, "no Berth store") {
		t.Fatalf("fsck of a directory without a store: exit %d: %s", code, stderr)
	}
	if entries, err := os.ReadDir(empty); err != nil || len(entries) != 0 {
		t.Fatalf("fsck wrote into a directory without a store: %v %v", entries, err)
	}
}
