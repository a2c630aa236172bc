package conformance_test

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	// largeFileSize is the size of the one file in the large layer.
	largeFileSize = 1 << 30
	// maxLargeRSS bounds berth's peak resident memory over a 1 GiB push and
	// pull: Berth streams blobs, so it must stay far below the blob size.
	maxLargeRSS = 256 << 20
)

// TestCraneLargeBlob pushes an image with a 1 GiB layer with crane, pulls it
// back and checks its digest, and checks that berth's peak memory stayed
// far below the size of the blob.
//
// Unlike the rest of the interoperability suite it runs only against an
// anonymous berth: authentication changes nothing in how a blob is
// streamed, and a second 1 GiB round trip would cost CI twice the disk
// and time. TestCraneCLI covers crane under authentication.
func TestCraneLargeBlob(t *testing.T) {
	if testing.Short() {
		t.Skip("pushes and pulls 1 GiB; skipped with -short")
	}
	t.Parallel()
	srv := startRegistry(t, anonymousMode)
	env := clientEnv(t)
	crane := func(args ...string) string {
		t.Helper()
		return runClientIn(t, "", env, "crane", append(args, "--insecure")...)
	}

	src := filepath.Join(t.TempDir(), "layout")
	start := time.Now()
	layer, manifest := writeLargeLayout(t, src)
	t.Logf("wrote a %d-byte layer %s in %s", layer.Size, layer.Digest, time.Since(start).Round(time.Millisecond))

	ref := srv.Addr + "/large/image:v1"
	start = time.Now()
	if out := strings.TrimSpace(crane("push", src, ref)); out != srv.Addr+"/large/image@"+manifest.String() {
		t.Errorf("crane push printed %q, want %s", out, srv.Addr+"/large/image@"+manifest.String())
	}
	pushTime := time.Since(start)
	// Free the source before the copy comes back.
	if err := os.RemoveAll(src); err != nil {
		t.Fatalf("remove source layout: %v", err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), interopTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, srv.URL+"/v2/large/image/blobs/"+layer.Digest.String(), nil)
	if err != nil {
		t.Fatalf("HEAD request: %v", err)
	}
	resp, err := (&http.Client{Transport: newTransport(t)}).Do(req)
	if err != nil {
		t.Fatalf("HEAD %s: %v", req.URL, err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Length") != strconv.FormatInt(layer.Size, 10) {
		t.Errorf("HEAD layer: status %d, Content-Length %q, want 200 and %d", resp.StatusCode, resp.Header.Get("Content-Length"), layer.Size)
	}

	pulled := filepath.Join(t.TempDir(), "pulled")
	start = time.Now()
	crane("pull", "--format", "oci", ref, pulled)
	pullTime := time.Since(start)
	blob := filepath.Join(pulled, "blobs", layer.Digest.Algorithm, layer.Digest.Hex)
	if fi, err := os.Stat(blob); err != nil || fi.Size() != layer.Size {
		t.Fatalf("pulled layer: stat %v, want %d bytes", err, layer.Size)
	}
	if got := hashFile(t, blob); got != layer.Digest.Hex {
		t.Errorf("pulled layer hashes to sha256:%s, want %s", got, layer.Digest)
	}
	if err := os.RemoveAll(pulled); err != nil {
		t.Fatalf("remove pulled layout: %v", err)
	}

	t.Logf("1 GiB layer: push %s, pull %s", pushTime.Round(time.Millisecond), pullTime.Round(time.Millisecond))
	if runtime.GOOS != "linux" {
		t.Logf("berth's peak RSS is read from /proc, which %s lacks: not checked", runtime.GOOS)
		return
	}
	rss := peakRSS(t, srv.Pid())
	t.Logf("berth peak RSS during 1 GiB push+pull: %d MiB", rss>>20)
	if rss > maxLargeRSS {
		t.Errorf("berth peak RSS %d MiB exceeds %d MiB: blobs are not streamed", rss>>20, maxLargeRSS>>20)
	}
}

// writeLargeLayout writes an OCI layout at dir holding one image whose one
// uncompressed layer is a tar of a single 1 GiB file of deterministic
// pseudo-random bytes. The layer is streamed to disk while it is hashed,
// never held in memory. It returns the layer's descriptor and the
// manifest's digest.
func writeLargeLayout(t *testing.T, dir string) (v1.Descriptor, v1.Hash) {
	t.Helper()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatalf("create layout: %v", err)
	}
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		t.Fatalf("create blobs directory: %v", err)
	}
	f, err := os.CreateTemp(blobs, "layer-")
	if err != nil {
		t.Fatalf("create layer file: %v", err)
	}
	h := sha256.New()
	cw := &countWriter{}
	bw := bufio.NewWriterSize(io.MultiWriter(f, h, cw), 1<<20)
	tw := tar.NewWriter(bw)
	hdr := &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     "large.bin",
		Size:     largeFileSize,
		Mode:     0o644,
		ModTime:  time.Unix(1_700_000_000, 0),
		Format:   tar.FormatPAX,
	}
	err = tw.WriteHeader(hdr)
	if err == nil {
		_, err = io.CopyN(tw, rand.NewChaCha8([32]byte{'b', 'e', 'r', 't', 'h'}), largeFileSize)
	}
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = f.Close()
	} else {
		_ = f.Close()
	}
	if err != nil {
		t.Fatalf("write layer: %v", err)
	}
	layerDigest := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
	if err := os.Rename(f.Name(), filepath.Join(blobs, layerDigest.Hex)); err != nil {
		t.Fatalf("name layer file: %v", err)
	}
	layer := v1.Descriptor{MediaType: types.OCIUncompressedLayer, Size: cw.n, Digest: layerDigest}

	cfg, err := json.Marshal(v1.ConfigFile{
		Architecture: "amd64",
		OS:           "linux",
		RootFS:       v1.RootFS{Type: "layers", DiffIDs: []v1.Hash{layerDigest}},
		Config:       v1.Config{Cmd: []string{"/large.bin"}},
	})
	if err != nil {
		t.Fatalf("encode config: %v", err)
	}
	cfgDesc := writeLayoutBlob(t, p, types.OCIConfigJSON, cfg)
	m, err := json.Marshal(v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        cfgDesc,
		Layers:        []v1.Descriptor{layer},
	})
	if err != nil {
		t.Fatalf("encode manifest: %v", err)
	}
	mDesc := writeLayoutBlob(t, p, types.OCIManifestSchema1, m)
	if err := p.AppendDescriptor(mDesc); err != nil {
		t.Fatalf("add manifest to layout: %v", err)
	}
	return layer, mDesc.Digest
}

// writeLayoutBlob writes a small blob into a layout and describes it.
func writeLayoutBlob(t *testing.T, p layout.Path, mt types.MediaType, data []byte) v1.Descriptor {
	t.Helper()
	sum := sha256.Sum256(data)
	d := v1.Descriptor{MediaType: mt, Size: int64(len(data)), Digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}}
	if err := p.WriteBlob(d.Digest, io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatalf("write %s blob: %v", mt, err)
	}
	return d
}

// countWriter counts the bytes written through it.
type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

// peakRSS reads a process's peak resident set size (VmHWM) from /proc.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	status, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		t.Fatalf("read berth's memory use: %v", err)
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("parse %q: %v", line, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}
