package conformance_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/conformance/internal/berthtest"
)

// startLimited starts berth with a config file of small limits.
func startLimited(t *testing.T, yaml string) *berthtest.Server {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "berth.yaml")
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return berthtest.Start(t, berthtest.WithArgs("--config", cfg))
}

// startUpload opens an upload session and returns its Location.
func startUpload(t *testing.T, base, repo string) string {
	t.Helper()
	resp, err := http.Post(base+"/v2/"+repo+"/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start upload: status %d", resp.StatusCode)
	}
	return resp.Header.Get("Location")
}

// stalledPatch sends the headers of a PATCH declaring 1000 bytes and only
// 10 of them, then waits. The caller closes the connection.
func stalledPatch(t *testing.T, addr, location string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "PATCH %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n0123456789", location, addr)
	return conn
}

// readResponse reads one HTTP response from conn within a bounded time.
func readResponse(t *testing.T, conn net.Conn, within time.Duration) (*http.Response, []byte) {
	t.Helper()
	if err := conn.SetReadDeadline(time.Now().Add(within)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no response within %s: %v", within, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

func errorCode(t *testing.T, body []byte) string {
	t.Helper()
	var e struct {
		Errors []struct{ Code string } `json:"errors"`
	}
	if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) == 0 {
		t.Fatalf("not an OCI error body: %q (%v)", body, err)
	}
	return e.Errors[0].Code
}

// A client that sends half its headers and stops is dropped after the
// header timeout rather than holding a connection forever.
func TestSlowLorisHeadersDropped(t *testing.T) {
	srv := startLimited(t, "http:\n  readHeaderTimeout: 1s\n")
	conn, err := net.Dial("tcp", srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: "); err != nil {
		t.Fatal(err)
	}
	if err := conn.SetReadDeadline(time.Now().Add(15 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	n, err := conn.Read(buf)
	// The server either closes at once or answers 408 and closes.
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("server still holds a connection whose headers never completed")
	}
	if n > 0 && !strings.Contains(string(buf[:n]), "408") {
		t.Fatalf("unexpected answer to incomplete headers: %q", buf[:n])
	}
}

// A body that stalls is cut off with 408 and the chunk is rolled back, so
// the session stays usable.
func TestStalledBodyCutOff(t *testing.T) {
	srv := startLimited(t, "http:\n  bodyReadTimeout: 1s\n")
	loc := startUpload(t, srv.URL, "limits/stall")
	conn := stalledPatch(t, srv.Addr, loc)
	defer conn.Close()
	resp, body := readResponse(t, conn, 15*time.Second)
	if resp.StatusCode != http.StatusRequestTimeout || errorCode(t, body) != "BLOB_UPLOAD_INVALID" {
		t.Fatalf("stalled body: status %d, body %s", resp.StatusCode, body)
	}
	st, err := http.Get(srv.URL + loc)
	if err != nil {
		t.Fatal(err)
	}
	st.Body.Close()
	if st.StatusCode != http.StatusNoContent || st.Header.Get("Range") != "0-0" {
		t.Fatalf("session after a stalled chunk: status %d, Range %q", st.StatusCode, st.Header.Get("Range"))
	}
}

// Uploads beyond the configured bound are refused with 429 and Retry-After
// while the bound is full, and accepted again once it frees.
func TestUploadConcurrencyBound(t *testing.T) {
	srv := startLimited(t, "limits:\n  maxConcurrentUploads: 1\nhttp:\n  bodyReadTimeout: 30s\n")
	loc := startUpload(t, srv.URL, "limits/busy")
	conn := stalledPatch(t, srv.Addr, loc) // holds the only slot
	defer conn.Close()
	// The PATCH holds the slot once its handler runs, which shows as its
	// first 10 bytes reaching the upload file. Wait for that (bounded), so
	// no probe below can take the slot first.
	upload := filepath.Join(srv.DataDir, "uploads", loc[strings.LastIndex(loc, "/")+1:])
	for i := 0; ; i++ {
		if fi, err := os.Stat(upload); err == nil && fi.Size() == 10 {
			break
		}
		if i == 1000 {
			t.Fatal("the stalled PATCH never reached its handler")
		}
		time.Sleep(10 * time.Millisecond)
	}
	var refused *http.Response
	for range 5 {
		resp, err := http.Post(srv.URL+"/v2/limits/other/blobs/uploads/", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusTooManyRequests {
			if errorCode(t, body) != "TOO_MANY_REQUESTS" || resp.Header.Get("Retry-After") == "" {
				t.Fatalf("429 without the spec's code or Retry-After: %v %s", resp.Header, body)
			}
			refused = resp
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if refused == nil {
		t.Fatal("a second upload was never refused while the only slot was held")
	}
	// Finish the held request; the slot frees and uploads work again.
	if _, err := io.WriteString(conn, strings.Repeat("x", 990)); err != nil {
		t.Fatal(err)
	}
	if resp, _ := readResponse(t, conn, 15*time.Second); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("held PATCH: status %d", resp.StatusCode)
	}
	startUpload(t, srv.URL, "limits/other")
}

// A session that receives nothing for the idle timeout is removed, with
// its file.
func TestIdleUploadSessionsExpire(t *testing.T) {
	srv := startLimited(t, "limits:\n  uploadIdleTimeout: 2s\n")
	loc := startUpload(t, srv.URL, "limits/idle")
	id := loc[strings.LastIndex(loc, "/")+1:]
	if _, err := os.Stat(filepath.Join(srv.DataDir, "uploads", id)); err != nil {
		t.Fatalf("upload file: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(srv.URL + loc)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("idle session still answers %d after 20s", resp.StatusCode)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(srv.DataDir, "uploads", id)); !os.IsNotExist(err) {
		t.Fatalf("expired session left its file: %v", err)
	}
}
