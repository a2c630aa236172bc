package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/berth-registry/berth/internal/testserver/versitygw"
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
// real berth, twice over two targets (berth again stands in for the peer),
// so the harness cannot rot. It asserts only that each figure is
// positive, never how fast anything is.
func TestMeasurements(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real berth")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := testBerth(t, ctx)
	parent := t.TempDir()
	data := filepath.Join(parent, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}

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

	plan, err := planBlobs(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := &session{cfg: cfg, lim: lim, plan: plan, dataDir: data, keepData: true}
	other := berthTarget(bin)
	other.Name = "other"
	results, err := s.rounds(ctx, []target{berthTarget(bin), other}, 2, s.steps())
	if err != nil {
		t.Fatal(err)
	}

	// The order of targets alternates between rounds.
	var order []string
	for _, r := range results {
		order = append(order, fmt.Sprintf("%s/%d", r.Target, r.Round))
	}
	if got, want := strings.Join(order, " "), "berth/1 other/1 other/2 berth/2"; got != want {
		t.Errorf("rounds ran as %s, want %s", got, want)
	}
	// The first round of berth measures everything: 2 sizes x 2
	// concurrencies x push and pull, one RSS figure, 2 operations x 2
	// concurrencies of manifests, 3 tag-list and 3 catalog latencies. The
	// others measure blobs and manifests only.
	compared := 2*2*2 + 2*2
	for _, r := range results {
		want := compared
		if r.Target == "berth" && r.Round == 1 {
			want = compared + 1 + 3 + 3
		}
		if len(r.Rows) != want {
			t.Errorf("%s, round %d: got %d rows, want %d", r.Target, r.Round, len(r.Rows), want)
		}
		for _, row := range r.Rows {
			if !(row.Value > 0) || math.IsInf(row.Value, 0) {
				t.Errorf("%s, round %d, %s: value %v, want a positive figure", r.Target, r.Round, row.Name, row.Value)
			}
			if !math.IsNaN(row.Ratio) && !(row.Ratio > 0) {
				t.Errorf("%s, round %d, %s: ratio %v, want a positive figure", r.Target, r.Round, row.Name, row.Ratio)
			}
		}
	}
	cmp := compare(results, []string{"berth", "other"})
	if len(cmp) != compared {
		t.Errorf("compared %d figures, want %d", len(cmp), compared)
	}
	for _, c := range cmp {
		if c.Rounds != 2 || len(c.Of) != 2 || !(c.Ratio.Median > 0) {
			t.Errorf("%s: %+v, want 2 rounds of 2 targets and a positive ratio", c.Name, c)
		}
	}

	// The kept data directory holds berth's store; the other rounds'
	// directories are gone.
	if entries, err := os.ReadDir(data); err != nil || len(entries) == 0 {
		t.Errorf("data directory: %d entries, %v; want berth's store", len(entries), err)
	}
	if entries, err := os.ReadDir(parent); err != nil || len(entries) != 1 {
		t.Errorf("beside the data directory: %v, %v; want only it", entries, err)
	}

	rep := report{Limits: lim, Config: cfg, Targets: []string{"berth", "other"}, Rounds: 2, Results: results}
	var out strings.Builder
	rep.print(&out)
	t.Logf("\n%s", out.String())
}

// testBerth is $BERTH_BIN, or a berth built for the test.
func testBerth(t *testing.T, ctx context.Context) string {
	t.Helper()
	if bin := os.Getenv("BERTH_BIN"); bin != "" {
		return bin
	}
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "berth")
	if err := goBuild(ctx, root, bin); err != nil {
		t.Fatal(err)
	}
	return bin
}

// TestSpreadOf checks the median and range of odd and even counts.
func TestSpreadOf(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want spread
	}{
		{[]float64{5}, spread{5, 5, 5}},
		{[]float64{3, 1, 2}, spread{2, 1, 3}},
		{[]float64{4, 1, 3, 2}, spread{2.5, 1, 4}},
	} {
		if got := spreadOf(tc.in); got != tc.want {
			t.Errorf("spreadOf(%v) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
	if got := (spread{Median: 200, Min: 180, Max: 220}).relative(); got != 0.2 {
		t.Errorf("relative spread %v, want 0.2", got)
	}
}

// TestCompare checks that figures are paired by round, that the ratio is
// taken within each round, and that a figure missing from any result
// (here the first round's extra one) is left out.
func TestCompare(t *testing.T) {
	r := func(target string, round int, vals ...float64) roundResult {
		res := roundResult{Target: target, Round: round}
		for i, v := range vals {
			res.Rows = append(res.Rows, row{Name: fmt.Sprintf("f%d", i), Unit: "ops/s", Value: v})
		}
		return res
	}
	results := []roundResult{
		r("a", 1, 100, 10, 7), r("b", 1, 50, 20),
		r("b", 2, 100, 20), r("a", 2, 150, 40),
		r("a", 3, 120, 20), r("b", 3, 40, 10),
	}
	cmp := compare(results, []string{"a", "b"})
	if len(cmp) != 2 {
		t.Fatalf("got %d figures, want 2: %+v", len(cmp), cmp)
	}
	// f0: a = 100, 150, 120; b = 50, 100, 40; ratios 2, 1.5, 3.
	want := comparison{Name: "f0", Unit: "ops/s", Rounds: 3,
		Of: []spread{{120, 100, 150}, {50, 40, 100}}, Ratio: spread{2, 1.5, 3}}
	if got := cmp[0]; got.Name != want.Name || got.Rounds != want.Rounds || got.Ratio != want.Ratio ||
		len(got.Of) != 2 || got.Of[0] != want.Of[0] || got.Of[1] != want.Of[1] {
		t.Errorf("f0: got %+v, want %+v", got, want)
	}
	// f1: ratios 0.5, 2, 2.
	if got := cmp[1].Ratio; got != (spread{2, 0.5, 2}) {
		t.Errorf("f1 ratio: got %+v", got)
	}

	tab := comparisonTable(cmp, []string{"a", "b"}, 3)
	if got, want := strings.Join(tab.Header, ","), "measurement,unit,a,a spread,b,b spread,a/b,ratio range"; got != want {
		t.Errorf("header %s, want %s", got, want)
	}
	if got, want := strings.Join(tab.Cells[0], ","), "f0,ops/s,120,42%,50.0,120%,2.00,1.50-3.00"; got != want {
		t.Errorf("first line %s, want %s", got, want)
	}
	if got := comparisonTable(cmp, []string{"a", "b"}, 1).Header; len(got) != 5 {
		t.Errorf("one round: header %v, want measurement, unit, a, b, a/b", got)
	}
}

// TestPeerConfig checks the generated configuration of the peer.
func TestPeerConfig(t *testing.T) {
	root := filepath.Join(t.TempDir(), `odd "dir": x`)
	data, err := peerConfig(fsDriver(root), "127.0.0.1:5999")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Log struct {
			Level     string
			AccessLog struct{ Disabled bool } `yaml:"accesslog"`
		}
		Storage struct {
			Filesystem struct{ RootDirectory string } `yaml:"filesystem"`
			Cache      map[string]string
			Delete     struct{ Enabled bool }
			Redirect   struct{ Disable bool }
		}
		HTTP struct {
			Addr         string
			DrainTimeout string `yaml:"draintimeout"`
		} `yaml:"http"`
	}
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	if cfg.Storage.Filesystem.RootDirectory != root || cfg.HTTP.Addr != "127.0.0.1:5999" ||
		!cfg.Storage.Delete.Enabled || !cfg.Storage.Redirect.Disable || !cfg.Log.AccessLog.Disabled ||
		cfg.Log.Level != "error" || cfg.HTTP.DrainTimeout == "" || cfg.Storage.Cache["blobdescriptor"] != "inmemory" {
		t.Errorf("unexpected configuration:\n%s", data)
	}
	for _, kv := range peerEnv() {
		if strings.HasPrefix(kv, "REGISTRY_") || strings.HasPrefix(kv, "OTEL_") && kv != "OTEL_TRACES_EXPORTER=none" {
			t.Errorf("peer environment has %s", kv)
		}
	}
}

// TestScaleOut runs the scale-out steps in a very small form against
// berth on versitygw, twice (berth again stands in for the peer, unless
// BERTH_BENCH_PEER names Distribution's registry binary, which then runs
// on its S3 driver), so that the seeding, the page checks and the tables
// cannot rot. It asserts only
// that each figure is positive and that the tables hold every figure,
// never how fast anything is. Without versitygw it skips, except in CI.
func TestScaleOut(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real berth and versitygw")
	}
	if _, err := versitygw.Binary(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("versitygw: %v", err)
		}
		t.Skipf("versitygw: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := testBerth(t, ctx)

	gw := versitygw.New()
	t.Cleanup(func() {
		if err := gw.Stop(); err != nil {
			t.Error(err)
		}
	})
	cfg := scaleOutConfig(true)
	cfg.BlobSizes, cfg.BlobConc, cfg.PushBytes = []int64{1 * mib}, []int{2}, 2*mib
	cfg.PullMinDur, cfg.ManifestConc, cfg.ManifestDur = 100*time.Millisecond, []int{2}, 200*time.Millisecond
	cfg.Tags, cfg.Repos, cfg.PageSize, cfg.SetupConc, cfg.Samples = 100, 120, 5, 4, 3
	if err := cfg.checkPages(); err != nil {
		t.Fatal(err)
	}
	plan, err := planBlobs(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The index make bench gives berth.
	idx, err := newIndexChoice(defaultScaleIndex)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	t.Cleanup(func() {
		if err := idx.stop(); err != nil {
			t.Error(err)
		}
	})
	data := filepath.Join(t.TempDir(), "berth")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	other := berthS3Target(bin, gw, idx)
	if peer := os.Getenv("BERTH_BENCH_PEER"); peer != "" {
		other = peerS3Target(peer, gw)
	}
	other.Name = "other"
	s := &session{cfg: cfg, plan: plan, dataDir: data, label: "scale-out "}
	results, err := s.rounds(ctx, []target{berthS3Target(bin, gw, idx), other}, 1, scaleSteps(cfg, plan, limits{}))
	if err != nil {
		t.Fatal(err)
	}

	// Both measure push and pull, PUT and GET, 2 x 2 seeding rates and
	// 2 listings x 3 positions x 2 lengths of page times; berth, the full
	// target, also its peak RSS.
	compared := 2 + 2 + 4 + 12
	for _, r := range results {
		want := compared
		if r.Target == "berth" {
			want++
		}
		if len(r.Rows) != want {
			t.Errorf("%s: got %d rows, want %d", r.Target, len(r.Rows), want)
		}
		for _, row := range r.Rows {
			if !(row.Value > 0) || math.IsInf(row.Value, 0) {
				t.Errorf("%s, %s: value %v, want a positive figure", r.Target, row.Name, row.Value)
			}
		}
	}
	// Every bucket is gone with its server (versitygw keeps its own
	// dot-directories beside them).
	entries, err := os.ReadDir(gw.Dir())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") {
			t.Errorf("versitygw holds the bucket %s after the round", e.Name())
		}
	}

	rep := scaleReport{Index: idx.Name, Targets: []string{"berth", "other"}, Rounds: 1, Config: cfg, Results: results}
	if got := len(rep.comparisonTable().Cells); got != compared {
		t.Errorf("comparison table has %d lines, want %d", got, compared)
	}
	flat := rep.flatnessTable()
	if len(flat.Cells) != 4 {
		t.Fatalf("flatness table has %d lines, want 4 (2 listings x 2 servers)", len(flat.Cells))
	}
	for _, line := range flat.Cells {
		for _, c := range line {
			if c == "NaN" || strings.Contains(c, "NaN") {
				t.Errorf("flatness line %v has a missing figure", line)
			}
		}
	}
	var out strings.Builder
	rep.write(&out, markdownTable, upperFirst)
	t.Logf("\n%s", out.String())
}

// TestScaleOutConfigs checks the configurations the scale-out run writes:
// berth's S3 blobs (and the index section only when one is given), and the
// peer's S3 driver with redirects off.
func TestScaleOutConfigs(t *testing.T) {
	var b struct {
		Storage struct {
			Blobs struct {
				S3 struct {
					Endpoint, Region, Bucket string
					AccessKey                string `yaml:"accessKey"`
					SecretKey                string `yaml:"secretKey"`
					ForcePathStyle           bool   `yaml:"forcePathStyle"`
				} `yaml:"s3"`
			}
			Index map[string]map[string]string
		}
	}
	data, err := berthScaleConfig("http://127.0.0.1:9", "bkt", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &b); err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	s3 := b.Storage.Blobs.S3
	if s3.Endpoint != "http://127.0.0.1:9" || s3.Bucket != "bkt" || s3.Region != versitygw.Region || !s3.ForcePathStyle ||
		s3.AccessKey != versitygw.AccessKey || s3.SecretKey != versitygw.SecretKey || b.Storage.Index != nil {
		t.Errorf("berth's configuration:\n%s", data)
	}
	data, err = berthScaleConfig("http://127.0.0.1:9", "bkt", map[string]any{"postgres": map[string]any{"dsn": "postgres://x"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &b); err != nil || b.Storage.Index["postgres"]["dsn"] != "postgres://x" {
		t.Errorf("berth's configuration with an index (%v):\n%s", err, data)
	}

	data, err = peerConfig(s3Driver("http://127.0.0.1:9", "bkt"), "127.0.0.1:5999")
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Storage struct {
			S3       map[string]any `yaml:"s3"`
			Redirect struct{ Disable bool }
		}
	}
	if err := yaml.Unmarshal(data, &p); err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	want := map[string]any{"regionendpoint": "http://127.0.0.1:9", "bucket": "bkt", "region": versitygw.Region,
		"accesskey": versitygw.AccessKey, "secretkey": versitygw.SecretKey, "forcepathstyle": true, "secure": false, "v4auth": true}
	for k, v := range want {
		if p.Storage.S3[k] != v {
			t.Errorf("peer's s3.%s = %v, want %v", k, p.Storage.S3[k], v)
		}
	}
	if !p.Storage.Redirect.Disable {
		t.Errorf("peer's redirects are on:\n%s", data)
	}
	if _, err := peerConfig(map[string]any{}, "127.0.0.1:5999"); err == nil {
		t.Error("a configuration without a storage driver was accepted")
	}
	if _, err := newIndexChoice("sqlite"); err == nil {
		t.Error("-scale-index sqlite was accepted")
	}
}

// TestMedianWithin: the median of the timed calls, after one untimed
// call; at least n of them; and the first error.
func TestMedianWithin(t *testing.T) {
	calls := 0
	d, k, err := medianWithin(context.Background(), 5, time.Minute, func() error { calls++; return nil })
	if err != nil || k < 5 || k > pageMaxSamples || calls != k+1 || d < 0 {
		t.Errorf("median %v of %d samples in %d calls, %v; want at least 5 samples and one untimed call", d, k, calls, err)
	}
	boom := errors.New("boom")
	calls = 0
	if _, _, err := medianWithin(context.Background(), 5, time.Minute, func() error {
		calls++
		if calls == 3 {
			return boom
		}
		return nil
	}); !errors.Is(err, boom) {
		t.Errorf("got %v, want the third call's error", err)
	}
}
