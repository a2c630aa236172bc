package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBlobReader checks that the generated content is reproducible, has
// the requested length, distinct per seed, and the same through Read and
// WriteTo.
func TestBlobReader(t *testing.T) {
	const size = 3*blockSize + 12345
	read := func(seed uint64) string {
		h := sha256.New()
		buf := make([]byte, 1000)
		n, err := io.CopyBuffer(writerOnly{h}, readerOnly{newBlobReader(seed, size)}, buf)
		if err != nil || n != size {
			t.Fatalf("read %d bytes, %v; want %d", n, err, size)
		}
		return "sha256:" + hex.EncodeToString(h.Sum(nil))
	}
	if a, b := read(1), blobDigest(1, size); a != b {
		t.Errorf("Read gives %s, WriteTo %s", a, b)
	}
	if a, b := read(1), read(1); a != b {
		t.Error("same seed, different content")
	}
	if read(1) == read(2) {
		t.Error("different seeds, same content")
	}
}

// TestMeasurements runs every measurement in a very small form against a
// real berth, so the harness cannot rot. It asserts only that each figure
// is positive, never how fast anything is.
func TestMeasurements(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real berth")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	bin := os.Getenv("BERTH_BIN")
	if bin == "" {
		root, err := repoRoot()
		if err != nil {
			t.Fatal(err)
		}
		bin = filepath.Join(t.TempDir(), "berth")
		if err := goBuild(ctx, root, bin); err != nil {
			t.Fatal(err)
		}
	}
	data := t.TempDir()

	cfg := quickConfig()
	cfg.LimitBytes = 16 * mib
	cfg.BlobSizes = []int64{1 * mib, 2 * mib}
	cfg.BlobConc = []int{1, 2}
	cfg.PushBytes = 4 * mib
	cfg.PullMinDur = 100 * time.Millisecond
	cfg.ManifestConc = []int{1, 2}
	cfg.ManifestDur = 200 * time.Millisecond
	cfg.Tags, cfg.Repos, cfg.PageSize = 25, 25, 10
	cfg.SetupConc = 4
	cfg.Samples = 3

	lim, err := measureLimits(ctx, data, cfg.LimitBytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range lim.pairs() {
		t.Logf("limit %s: %s MB/s", kv[0], kv[1])
	}
	if lim.SHA256 <= 0 || lim.Write <= 0 || lim.CacheRead <= 0 || lim.Loopback <= 0 {
		t.Fatalf("limits not all positive: %+v", lim)
	}

	srv, err := startBerth(ctx, bin, data)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := measureAll(ctx, newClient(srv.url), srv.pid(), cfg, lim)
	if serr := srv.stop(); serr != nil {
		t.Error(serr)
	}
	if err != nil {
		t.Fatalf("%v\nberth log:\n%s", err, srv.logTail())
	}

	// 2 sizes x 2 concurrencies x push and pull, one RSS figure, 2
	// operations x 2 concurrencies of manifests, 3 tag-list and 3 catalog
	// latencies.
	if want := 2*2*2 + 1 + 2*2 + 3 + 3; len(rows) != want {
		t.Errorf("got %d rows, want %d", len(rows), want)
	}
	for _, r := range rows {
		if !(r.Value > 0) || math.IsInf(r.Value, 0) {
			t.Errorf("%s: value %v, want a positive figure", r.Name, r.Value)
		}
		if !math.IsNaN(r.Ratio) && !(r.Ratio > 0) {
			t.Errorf("%s: ratio %v, want a positive figure", r.Name, r.Ratio)
		}
	}
	var table strings.Builder
	printTable(&table, rows)
	t.Logf("\n%s", table.String())
}
