package conformance_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/conformance/internal/berthtest"
)

const (
	// hugeFileSize is the size of the file TestFilesHugeFileFlatMemory
	// uploads and downloads with curl.
	hugeFileSize = 2 << 30
	// maxHugeRSSGrowth bounds how much berth's resident memory may grow
	// over that round trip: the file streams through, it is never held.
	maxHugeRSSGrowth = 128 << 20
)

// TestFilesHugeFileFlatMemory uploads a 2 GiB file with curl -T (from a
// pipe: chunked, no length) and with curl -F (a multipart form, from a
// file), downloads it with curl, checking its digest against the one
// computed while it was generated, and checks that berth's resident memory
// grew by far less than the file.
func TestFilesHugeFileFlatMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("uploads and downloads 2 GiB; skipped with -short")
	}
	if runtime.GOOS != "linux" {
		t.Skip("reads berth's memory use from /proc")
	}
	srv := berthtest.Start(t)
	url := srv.URL + "/artifacts/huge/file/1.0/huge.bin"
	before := procStatus(t, srv.Pid(), "VmRSS")

	// Upload: the bytes are made as curl reads them, and hashed.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	up := exec.CommandContext(ctx, clientPath(t, "curl"), "-sS", "-f", "-T", "-", "-o", os.DevNull, "-w", "%{http_code}", url)
	up.Env = append(os.Environ(), clientEnv(t)...)
	stdin, err := up.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var upOut, upErr strings.Builder
	up.Stdout, up.Stderr = &upOut, &upErr
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	start := time.Now()
	_, werr := io.CopyN(io.MultiWriter(stdin, h), rand.NewChaCha8([32]byte{'h', 'u', 'g', 'e'}), hugeFileSize)
	_ = stdin.Close()
	if err := up.Wait(); err != nil || werr != nil || strings.TrimSpace(upOut.String()) != "201" {
		t.Fatalf("curl -T: %v %v %s %s", err, werr, upOut.String(), upErr.String())
	}
	upTime := time.Since(start)
	want := h.Sum(nil)
	afterUp := procStatus(t, srv.Pid(), "VmHWM")

	// The same bytes as a multipart form, from a file.
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "huge.bin"))
	if err != nil {
		t.Fatal(err)
	}
	_, werr = io.CopyN(f, rand.NewChaCha8([32]byte{'h', 'u', 'g', 'e'}), hugeFileSize)
	if cerr := f.Close(); werr != nil || cerr != nil {
		t.Fatalf("write the file: %v %v", werr, cerr)
	}
	start = time.Now()
	form := exec.CommandContext(ctx, clientPath(t, "curl"), "-sS", "-f", "-F", "file=@huge.bin", "-o", os.DevNull, "-w", "%{http_code}",
		srv.URL+"/artifacts/huge/file/1.1")
	form.Dir, form.Env = dir, append(os.Environ(), clientEnv(t)...)
	if out, err := form.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "201" {
		t.Fatalf("curl -F: %v %s", err, out)
	}
	formTime := time.Since(start)
	if err := os.Remove(f.Name()); err != nil {
		t.Fatal(err)
	}
	afterForm := procStatus(t, srv.Pid(), "VmHWM")

	// Download: curl writes to a pipe, hashed here.
	headers := filepath.Join(t.TempDir(), "headers")
	down := exec.CommandContext(ctx, clientPath(t, "curl"), "-sS", "-f", "-D", headers, url)
	down.Env = append(os.Environ(), clientEnv(t)...)
	stdout, err := down.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var downErr strings.Builder
	down.Stderr = &downErr
	if err := down.Start(); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	got := sha256.New()
	n, rerr := io.Copy(got, stdout)
	if err := down.Wait(); err != nil || rerr != nil {
		t.Fatalf("curl download: %v %v %s", err, rerr, downErr.String())
	}
	downTime := time.Since(start)
	if n != hugeFileSize || hex.EncodeToString(got.Sum(nil)) != hex.EncodeToString(want) {
		t.Fatalf("downloaded %d bytes hashing to %x, want %d hashing to %x", n, got.Sum(nil), int64(hugeFileSize), want)
	}
	raw, _ := os.ReadFile(headers)
	if hdr := parseHeaders(string(raw)); hdr.Get("Repr-Digest") != "sha-256=:"+base64.StdEncoding.EncodeToString(want)+":" {
		t.Errorf("Repr-Digest %q", hdr.Get("Repr-Digest"))
	}
	peak := procStatus(t, srv.Pid(), "VmHWM")
	t.Logf("2 GiB: curl -T %s, curl -F %s, curl download %s; berth RSS %d MiB before, peak %d MiB after -T, %d MiB after -F, %d MiB after the download",
		upTime.Round(time.Millisecond), formTime.Round(time.Millisecond), downTime.Round(time.Millisecond), before>>20, afterUp>>20, afterForm>>20, peak>>20)
	if growth := peak - before; growth > maxHugeRSSGrowth {
		t.Errorf("berth's resident memory grew by %d MiB over a 2 GiB round trip, over %d MiB: the file is not streamed",
			growth>>20, maxHugeRSSGrowth>>20)
	}
}

// procStatus reads a memory figure (VmRSS, VmHWM) of a process from
// /proc, in bytes.
func procStatus(t *testing.T, pid int, field string) int64 {
	t.Helper()
	status, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		t.Fatalf("read berth's memory use: %v", err)
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("parse %q: %v", line, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}
