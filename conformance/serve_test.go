package conformance_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/conformance/internal/berthtest"
)

// ping checks that a server answers the API version check.
func ping(t *testing.T, url string) {
	t.Helper()
	resp, err := http.Get(url + "/v2/")
	if err != nil {
		t.Fatalf("GET /v2/: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
		t.Fatalf("GET /v2/: status %d, API version %q", resp.StatusCode, resp.Header.Get("Docker-Distribution-API-Version"))
	}
}

func requireIndex(t *testing.T, dataDir string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dataDir, "index.db")); err != nil {
		t.Fatalf("no index in %s: %v", dataDir, err)
	}
}

// With no configuration at all, berth serve listens on 127.0.0.1:5000 and
// keeps its data under ./data.
func TestServeDefaults(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:5000")
	if err != nil {
		t.Skipf("127.0.0.1:5000 is in use on this machine, so the default address cannot be tested: %v", err)
	}
	ln.Close()
	cwd := t.TempDir()
	srv := berthtest.Start(t, berthtest.WithCommandLine("serve"), berthtest.WithWorkDir(cwd))
	if srv.Addr != "127.0.0.1:5000" {
		t.Fatalf("default address %s, want 127.0.0.1:5000", srv.Addr)
	}
	ping(t, srv.URL)
	requireIndex(t, filepath.Join(cwd, "data"))
}

// BERTH_ADDR and BERTH_DATA work exactly like --addr and --data.
func TestServeEnvironment(t *testing.T) {
	data := filepath.Join(t.TempDir(), "from-env")
	srv := berthtest.Start(t, berthtest.WithCommandLine("serve"),
		berthtest.WithEnv("BERTH_ADDR=127.0.0.1:0", "BERTH_DATA="+data))
	ping(t, srv.URL)
	requireIndex(t, data)
}

// Flags beat environment variables, which beat the config file.
func TestServePrecedence(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "berth.yaml")
	yaml := fmt.Sprintf("addr: 127.0.0.1:0\ndata: %s\nlimits:\n  maxManifestBytes: 100\n", filepath.Join(dir, "from-file"))
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	flagData := filepath.Join(dir, "from-flag")
	srv := berthtest.Start(t,
		berthtest.WithCommandLine("serve", "--config", cfg, "--data", flagData),
		berthtest.WithEnv("BERTH_DATA="+filepath.Join(dir, "from-env")))
	ping(t, srv.URL)
	requireIndex(t, flagData)
	for _, other := range []string{"from-file", "from-env"} {
		if _, err := os.Stat(filepath.Join(dir, other)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("data directory %s was used despite the --data flag", other)
		}
	}
	// The file's manifest limit still applies: a 200-byte manifest is refused.
	req, _ := http.NewRequest(http.MethodPut, srv.URL+"/v2/limits/test/manifests/v1", strings.NewReader(strings.Repeat(" ", 200)))
	req.Header.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("manifest over the configured limit: status %d, want 413", resp.StatusCode)
	}
}

func TestServeRejectsBadConfiguration(t *testing.T) {
	bin := berthtest.Build(t)
	cfg := filepath.Join(t.TempDir(), "berth.yaml")
	if err := os.WriteFile(cfg, []byte("adress: 127.0.0.1:0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"serve", "--config", cfg},
		{"serve", "--addr", "no-port", "--data", t.TempDir()},
		{"serve", "--log-level", "chatty", "--addr", "127.0.0.1:0", "--data", t.TempDir()},
	} {
		out, err := exec.Command(bin, args...).CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 {
			t.Errorf("berth %v: want a non-zero exit, got %v\n%s", args, err, out)
			continue
		}
		if !strings.Contains(string(out), "berth:") {
			t.Errorf("berth %v: no clear error message:\n%s", args, out)
		}
	}
}

func TestVersion(t *testing.T) {
	out, err := exec.Command(berthtest.Build(t), "version").CombinedOutput()
	if err != nil {
		t.Fatalf("berth version: %v\n%s", err, out)
	}
	if !regexp.MustCompile(`^berth \S+ \(commit \S+\)\n$`).Match(out) {
		t.Fatalf("berth version printed %q", out)
	}
}

// SIGTERM lets an in-flight upload finish before the process exits cleanly,
// and what it received is there after a restart.
func TestGracefulShutdownFinishesInFlightRequests(t *testing.T) {
	data := t.TempDir()
	srv := berthtest.Start(t, berthtest.WithDataDir(data))
	client := &http.Client{Transport: &http.Transport{}, Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()

	resp, err := client.Post(srv.URL+"/v2/shutdown/test/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusAccepted || loc == "" {
		t.Fatalf("start upload: status %d, Location %q", resp.StatusCode, loc)
	}

	content := []byte(strings.Repeat("berth graceful shutdown ", 4096))
	half := len(content) / 2
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodPatch, srv.URL+loc, pr)
	req.ContentLength = int64(len(content))
	req.Header.Set("Content-Type", "application/octet-stream")
	done := make(chan *http.Response, 1)
	go func() {
		resp, err := client.Do(req)
		if err != nil {
			t.Errorf("in-flight PATCH failed: %v", err)
			done <- nil
			return
		}
		resp.Body.Close()
		done <- resp
	}()
	if _, err := pw.Write(content[:half]); err != nil {
		t.Fatal(err)
	}
	// Signal only once the handler is mid-request: the upload file grows
	// as the body streams in. (A connection the server has not accepted
	// yet is not in flight.)
	upload := filepath.Join(data, "uploads", loc[strings.LastIndex(loc, "/")+1:])
	for i := 0; ; i++ {
		if fi, err := os.Stat(upload); err == nil && fi.Size() > 0 {
			break
		}
		if i == 500 {
			t.Fatal("the server never started receiving the upload body")
		}
		time.Sleep(10 * time.Millisecond)
	}
	stopped := make(chan struct{})
	go func() {
		srv.Stop() // SIGTERM; fails the test unless berth exits 0
		close(stopped)
	}()
	// Wait (bounded) until berth says it is shutting down while the request
	// is still open, then finish the body: the server must wait for it. A
	// fixed pause here would, on a slow machine, let the body finish before
	// the signal arrived and test nothing.
	deadline := time.After(15 * time.Second)
	for !strings.Contains(srv.Logs(), "shutting down") {
		select {
		case <-stopped:
			t.Fatal("berth exited while a request was still in flight")
		case <-deadline:
			t.Fatalf("berth did not log that it is shutting down within 15s of SIGTERM\n%s", srv.LogTail(20))
		case <-time.After(10 * time.Millisecond):
		}
	}
	if _, err := pw.Write(content[half:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	patched := <-done
	if patched == nil {
		return
	}
	if patched.StatusCode != http.StatusAccepted {
		t.Fatalf("in-flight PATCH: status %d, want 202", patched.StatusCode)
	}
	<-stopped

	// Restart on the same data and finish the upload.
	srv = berthtest.Start(t, berthtest.WithDataDir(data))
	d := digest.FromBytes(content)
	put, _ := http.NewRequest(http.MethodPut, srv.URL+loc+"?digest="+d.String(), nil)
	resp, err = client.Do(put)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("finish upload after restart: status %d, want 201", resp.StatusCode)
	}
	resp, err = client.Get(srv.URL + "/v2/shutdown/test/blobs/" + d.String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || digest.FromBytes(got) != d {
		t.Fatalf("blob after restart: status %d, %d bytes", resp.StatusCode, len(got))
	}
}

// Without authentication there is nothing to reload, and a SIGHUP (sent by
// many service managers on reload) must not stop the server.
func TestSIGHUPWithoutAuth(t *testing.T) {
	srv := berthtest.Start(t)
	if err := syscall.Kill(srv.Pid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// Give a default SIGHUP time to kill the process, then check it lives.
	time.Sleep(300 * time.Millisecond)
	ping(t, srv.URL)
}
