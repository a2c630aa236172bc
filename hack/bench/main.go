// Command bench measures a real berth process over loopback and prints a
// summary table, each figure next to the limit this machine sets for it.
//
//	go run ./hack/bench [-berth PATH] [-data DIR] [-quick] [-out FILE] [-peer PATH] [-repeat N]
//
// It first measures the machine (sha256 on one core, sequential
// write+fsync and page-cache read in the data directory's filesystem), then
// starts "berth serve --addr 127.0.0.1:0" on a fresh data directory and
// measures blob push and pull throughput, manifest PUT and GET-by-tag
// operations per second at several concurrencies, tag list and catalog
// latency on large listings, and the server's peak RSS during the largest
// push. Request bodies are streamed from a deterministic pseudo-random
// generator, so no blob is ever held in memory.
//
// With -peer it also runs another registry (CNCF Distribution, whose
// "registry" binary the Makefile installs pinned) with a generated
// configuration, measures its blob push and pull and manifest PUT and GET
// with the same client, and prints berth's figure, the peer's and their
// ratio. With -repeat N those measurements are made N times on each
// server, alternating the servers, each time on a new server over an empty
// directory, and each figure is printed as its median and its spread
// (range over median), the run-to-run noise. "make bench" runs it with the
// peer; the results of a run are kept in docs/benchmarks.md.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/berth-registry/berth/registry"
)

const (
	modulePath = "github.com/berth-registry/berth"

	kib = 1 << 10
	mib = 1 << 20
	gib = 1 << 30

	startTimeout = 30 * time.Second
	stopTimeout  = 30 * time.Second

	manifestType = "application/vnd.oci.image.manifest.v1+json"
	emptyType    = "application/vnd.oci.empty.v1+json"
)

// config is what one run measures, and how much.
type config struct {
	LimitBytes   int64         // bytes hashed, written and read for the machine limits
	BlobSizes    []int64       // blob sizes pushed and pulled
	BlobConc     []int         // concurrencies of the blob runs
	PushBytes    int64         // at least this many bytes (and one blob per worker) per push run
	PullMinDur   time.Duration // a pull run lasts at least this long (and reads every blob once)
	ManifestConc []int         // concurrencies of the manifest runs; the first is the baseline
	ManifestDur  time.Duration // length of each manifest run
	Tags         int           // tags on the tag-list repository
	Repos        int           // repositories for the catalog
	PageSize     int           // n of the listing requests
	SetupConc    int           // concurrency of the tag and repository setup
	Samples      int           // timed requests per latency figure
	MirrorSize   int64         // the single layer of the image pulled through the mirror
}

func fullConfig() config {
	return config{
		LimitBytes:   1 * gib,
		BlobSizes:    []int64{1 * mib, 64 * mib, 1 * gib},
		BlobConc:     []int{1, 8},
		PushBytes:    512 * mib,
		PullMinDur:   2 * time.Second,
		ManifestConc: []int{1, 16, 64},
		ManifestDur:  3 * time.Second,
		Tags:         10000,
		Repos:        10000,
		PageSize:     1000,
		SetupConc:    16,
		Samples:      20,
		MirrorSize:   1 * gib,
	}
}

func quickConfig() config {
	return config{
		LimitBytes:   256 * mib,
		BlobSizes:    []int64{1 * mib, 16 * mib},
		BlobConc:     []int{1, 2},
		PushBytes:    64 * mib,
		PullMinDur:   500 * time.Millisecond,
		ManifestConc: []int{1, 2},
		ManifestDur:  time.Second,
		Tags:         200,
		Repos:        200,
		PageSize:     50,
		SetupConc:    8,
		Samples:      10,
		MirrorSize:   64 * mib,
	}
}

// Targets of issue 6, item 6.
const (
	pushTarget    = 0.85 // of min(sha256 on one core, write+fsync)
	pullTarget    = 0.90 // of page-cache read
	scalingTarget = 1.5  // ops/s at higher concurrency over concurrency 1, on a 2-core machine
	rssGrowthMax  = 64 * mib
)

// options are the choices of the command line.
type options struct {
	Berth  string // berth binary; empty: build one
	Data   string // berth's data directory for the first round; empty: a temporary one
	Peer   string // the peer registry's binary; empty: berth alone
	Out    string // Markdown report file; empty: none
	Quick  bool
	Repeat int // rounds of the compared measurements
	// WebhooksOnly skips everything but the webhook measurement.
	WebhooksOnly bool
	// MirrorOnly measures only the pull-through cache against a direct
	// pull, at the full size even with -quick.
	MirrorOnly bool
	// ScaleOut adds the scale-out run (scaleout.go); ScaleOutOnly runs
	// nothing else. ScaleIndex is berth's index there.
	ScaleOut, ScaleOutOnly bool
	ScaleIndex             string
}

func main() {
	var o options
	flag.StringVar(&o.Berth, "berth", "", "berth binary (default: build ./cmd/berth into a temporary directory)")
	flag.StringVar(&o.Data, "data", "", "berth's data directory, which must be empty or absent and is kept afterwards\n(default: a temporary directory under the OS temp dir, removed at the end)")
	flag.BoolVar(&o.Quick, "quick", false, "small sizes and counts, for a smoke run")
	flag.StringVar(&o.Out, "out", "", "also write the results as Markdown to `FILE`")
	flag.StringVar(&o.Peer, "peer", "", "also measure the registry binary at `PATH` (CNCF Distribution's \"registry\"),\nside by side with berth, and print the ratio berth/peer (default: berth alone)")
	flag.BoolVar(&o.MirrorOnly, "mirror-only", false, "measure only the pull through the pull-through cache against a direct pull")
	flag.IntVar(&o.Repeat, "repeat", 1, "measure blob push and pull and manifest PUT and GET `N` times on each server,\nalternating the servers, and print each figure's median and spread")
	flag.BoolVar(&o.WebhooksOnly, "webhooks-only", false, "measure only manifest PUT latency with and without webhook endpoints")
	flag.BoolVar(&o.ScaleOut, "scale-out", true, "also run the scale-out comparison: berth on an S3-compatible bucket (versitygw)\nbeside the peer on its S3 driver")
	flag.BoolVar(&o.ScaleOutOnly, "scale-out-only", false, "run only the scale-out comparison")
	flag.StringVar(&o.ScaleIndex, "scale-index", defaultScaleIndex, "berth's index in the scale-out run: "+indexBolt+" (in its data directory) or "+indexPostgres)
	flag.Parse()
	if flag.NArg() > 0 || o.Repeat < 1 {
		fmt.Fprintf(os.Stderr, "bench: unexpected arguments %q or -repeat %d below 1\n", flag.Args(), o.Repeat)
		os.Exit(2)
	}
	if _, err := newIndexChoice(o.ScaleIndex); err != nil && (o.ScaleOut || o.ScaleOutOnly) {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) (err error) {
	began := time.Now()
	cfg := fullConfig()
	if o.Quick {
		cfg = quickConfig()
	}
	scratch, err := os.MkdirTemp("", "berth-bench-")
	if err != nil {
		return err
	}
	defer func() {
		if rerr := os.RemoveAll(scratch); rerr != nil && err == nil {
			err = rerr
		}
	}()
	dataDir := o.Data
	if dataDir == "" {
		dataDir = filepath.Join(scratch, "data")
	} else if err := checkEmptyDir(dataDir); err != nil {
		return err
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return err
	}
	if dataDir, err = filepath.Abs(dataDir); err != nil {
		return err
	}

	berthBin := o.Berth
	if berthBin == "" {
		root, err := repoRoot()
		if err != nil {
			return err
		}
		berthBin = filepath.Join(scratch, "berth")
		fmt.Printf("bench: building %s\n", berthBin)
		if err := goBuild(ctx, root, berthBin); err != nil {
			return err
		}
	}

	m := describeMachine(ctx, berthBin, dataDir)
	m.Command = commandLine()
	targets := []target{berthTarget(berthBin)}
	if o.Peer != "" {
		m.Peer = peerVersion(ctx, o.Peer)
		targets = append(targets, peerTarget(o.Peer))
	}
	m.print(os.Stdout)

	if o.MirrorOnly {
		rows, err := mirrorBench(ctx, berthBin, scratch, fullConfig().MirrorSize, o.Repeat)
		if err != nil {
			return err
		}
		fmt.Printf("\n%s:\n\n", mirrorTitle)
		printTable(os.Stdout, rowTable(rows))
		return nil
	}
	if o.ScaleOutOnly {
		rep := report{Machine: m, Config: cfg, Rounds: o.Repeat}
		rep.Scale, err = runScaleOut(ctx, o, berthBin, scratch, limits{})
		rep.Machine.LoadEnd = loadAverage()
		fmt.Printf("bench: load average at end: %s\n", rep.Machine.LoadEnd)
		if rep.Scale != nil && len(rep.Scale.Results) > 0 {
			rep.print(os.Stdout)
			if o.Out != "" {
				if werr := os.WriteFile(o.Out, rep.markdown(), 0o644); werr != nil {
					err = errors.Join(err, werr)
				}
			}
		}
		if err != nil {
			return err
		}
		fmt.Printf("bench: done in %.0fs\n", time.Since(began).Seconds())
		return nil
	}
	fmt.Println("bench: measuring the machine's limits")
	lim, err := measureLimits(ctx, dataDir, cfg.LimitBytes)
	if err != nil {
		return fmt.Errorf("machine limits: %w", err)
	}
	lim.print(os.Stdout)

	var plan [][]blobRun
	if !o.WebhooksOnly {
		fmt.Println("bench: computing the digests of the blobs")
		if plan, err = planBlobs(ctx, cfg); err != nil {
			return err
		}
	}
	s := &session{cfg: cfg, lim: lim, plan: plan, dataDir: dataDir, keepData: o.Data != ""}
	rep := report{Machine: m, Limits: lim, Config: cfg, Rounds: o.Repeat}
	for _, t := range targets {
		rep.Targets = append(rep.Targets, t.Name)
	}
	if o.Peer != "" {
		rep.Peer = peerName + ": " + peerSettings
	}
	if !o.WebhooksOnly {
		rep.Results, err = s.rounds(ctx, targets, o.Repeat, s.steps())
	}
	if err == nil {
		fmt.Println("bench: manifest PUT latency with webhook endpoints")
		rep.Webhooks, err = webhookRuns(ctx, berthBin, scratch, cfg)
	}
	if err == nil && !o.WebhooksOnly {
		fmt.Println("bench: a cold pull through the pull-through cache against a direct pull")
		var mrows []row
		if mrows, err = mirrorBench(ctx, berthBin, scratch, cfg.MirrorSize, o.Repeat); err == nil {
			rep.Mirror = mrows
		}
	}
	if err == nil && o.ScaleOut && !o.WebhooksOnly {
		rep.Scale, err = runScaleOut(ctx, o, berthBin, scratch, lim)
	}
	rep.Machine.LoadEnd = loadAverage()
	fmt.Printf("bench: load average at end: %s\n", rep.Machine.LoadEnd)
	if len(rep.Results) > 0 || len(rep.Webhooks) > 0 || len(rep.Mirror) > 0 || rep.Scale != nil {
		rep.print(os.Stdout)
		if o.Out != "" {
			if werr := os.WriteFile(o.Out, rep.markdown(), 0o644); werr != nil {
				err = errors.Join(err, werr)
			}
		}
	}
	if err != nil {
		return err
	}
	fmt.Printf("bench: done in %.0fs\n", time.Since(began).Seconds())
	return nil
}

// ---------------------------------------------------------------------------
// Results.

// row is one line of the summary table. Ratio is NaN when the figure has no
// limit to compare with; Met is "yes", "no" or "-" (no target).
type row struct {
	Name   string
	Value  float64
	Unit   string
	Limit  string
	Ratio  float64
	Target string
	Met    string
}

func met(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}

func (r row) cells() []string {
	ratio := "-"
	if !math.IsNaN(r.Ratio) {
		ratio = fmt.Sprintf("%.2f", r.Ratio)
	}
	limit, target := r.Limit, r.Target
	if limit == "" {
		limit = "-"
	}
	if target == "" {
		target = "-"
	}
	return []string{r.Name, formatValue(r.Value), r.Unit, limit, ratio, target, r.Met}
}

// table is a header and lines of cells.
type table struct {
	Header []string
	Cells  [][]string
}

// rowTable lays out rows: each figure against its limit and target.
func rowTable(rows []row) table {
	t := table{Header: []string{"measurement", "value", "unit", "limit", "ratio", "target", "met"}}
	for _, r := range rows {
		t.Cells = append(t.Cells, r.cells())
	}
	return t
}

func formatValue(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func printTable(w io.Writer, t table) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(t.Header, "\t"))
	for _, line := range t.Cells {
		fmt.Fprintln(tw, strings.Join(line, "\t"))
	}
	_ = tw.Flush()
}

func markdownTable(w io.Writer, t table) {
	fmt.Fprintf(w, "| %s |\n", strings.Join(t.Header, " | "))
	fmt.Fprintf(w, "|%s\n", strings.Repeat("---|", len(t.Header)))
	for _, line := range t.Cells {
		escaped := make([]string, len(line))
		for i, c := range line {
			escaped[i] = strings.ReplaceAll(c, "|", `\|`)
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(escaped, " | "))
	}
}

// report is what a run prints at its end and writes to -out.
type report struct {
	Machine machine
	Limits  limits
	Config  config
	Targets []string      // names of the targets, berth first
	Peer    string        // how the peer is configured, if one is measured
	Rounds  int           // -repeat
	Results []roundResult // in the order the rounds ran
	// Webhooks are berth's manifest PUT latencies with and without
	// webhook endpoints (webhooks.go).
	Webhooks []webhookResult
	// Mirror compares a cold pull through the pull-through cache with a
	// direct pull from its upstream.
	Mirror []row
	// Scale is the scale-out run, if it ran.
	Scale *scaleReport
}

// firstRound is the first target's first round: every figure against this
// machine's limits.
func (r report) firstRound() []row {
	for _, res := range r.Results {
		if res.Target == r.Targets[0] && res.Round == 1 {
			return res.Rows
		}
	}
	return nil
}

// compared says whether there is more than the main table to show.
func (r report) compared() bool { return len(r.Targets) > 1 || r.Rounds > 1 }

// titles are the lines above the main table and above the comparison.
func (r report) titles() (main, cmp string) {
	main = fmt.Sprintf("%s against this machine's limits", r.Targets[0])
	if r.Rounds > 1 {
		main += fmt.Sprintf(" (round 1 of %d)", r.Rounds)
	}
	cmp = fmt.Sprintf("%s, the same client, a new server on an empty directory in each round", strings.Join(r.Targets, " and "))
	if r.Rounds > 1 {
		cmp += fmt.Sprintf("; median of %d rounds, spread = (max - min) / median", r.Rounds)
		if len(r.Targets) > 1 {
			cmp += "; the ratio is taken in each round, its median and range shown"
		}
	}
	return main, cmp
}

func (r report) print(w io.Writer) {
	if len(r.Targets) > 0 {
		r.printMain(w)
	}
	if r.Scale != nil && len(r.Scale.Results) > 0 {
		r.Scale.write(w, printTable, func(s string) string { return s })
	}
}

// printMain prints the tables of the main rounds, the webhooks and the
// mirror.
func (r report) printMain(w io.Writer) {
	mainTitle, cmpTitle := r.titles()
	fmt.Fprintf(w, "\n%s:\n\n", mainTitle)
	printTable(w, rowTable(r.firstRound()))
	if len(r.Webhooks) > 0 {
		fmt.Fprintf(w, "\n%s:\n\n", webhookTitle)
		printTable(w, webhookTable(r.Webhooks))
	}
	if len(r.Mirror) > 0 {
		fmt.Fprintf(w, "\n%s:\n\n", mirrorTitle)
		printTable(w, rowTable(r.Mirror))
	}
	if !r.compared() {
		return
	}
	if r.Peer != "" {
		fmt.Fprintf(w, "\n%s\n", r.Peer)
	}
	fmt.Fprintf(w, "\n%s:\n\n", cmpTitle)
	printTable(w, comparisonTable(compare(r.Results, r.Targets), r.Targets, r.Rounds))
	fmt.Fprintln(w)
	printTable(w, roundsTable(r.Results))
}

func (r report) markdown() []byte {
	var b bytes.Buffer
	m := r.Machine
	fmt.Fprintf(&b, "Command: `%s`\n\n", m.Command)
	fmt.Fprintln(&b, "| machine | |")
	fmt.Fprintln(&b, "|---|---|")
	for _, kv := range m.pairs() {
		fmt.Fprintf(&b, "| %s | %s |\n", kv[0], kv[1])
	}
	if len(r.Targets) > 0 {
		r.markdownMain(&b)
	}
	if r.Scale != nil && len(r.Scale.Results) > 0 {
		r.Scale.write(&b, markdownTable, upperFirst)
	}
	return b.Bytes()
}

// markdownMain writes the machine's limits and the tables of the main
// rounds, the webhooks and the mirror.
func (r report) markdownMain(b *bytes.Buffer) {
	fmt.Fprintln(b)
	fmt.Fprintf(b, "Machine limits (%s each):\n\n", sizeName(r.Config.LimitBytes))
	fmt.Fprintln(b, "| limit | MB/s |")
	fmt.Fprintln(b, "|---|---|")
	for _, kv := range r.Limits.pairs() {
		fmt.Fprintf(b, "| %s | %s |\n", kv[0], kv[1])
	}
	mainTitle, cmpTitle := r.titles()
	fmt.Fprintf(b, "\n%s:\n\n", upperFirst(mainTitle))
	markdownTable(b, rowTable(r.firstRound()))
	if len(r.Webhooks) > 0 {
		fmt.Fprintf(b, "\n%s:\n\n", upperFirst(webhookTitle))
		markdownTable(b, webhookTable(r.Webhooks))
	}
	if len(r.Mirror) > 0 {
		fmt.Fprintf(b, "\n%s:\n\n", upperFirst(mirrorTitle))
		markdownTable(b, rowTable(r.Mirror))
	}
	if r.compared() {
		if r.Peer != "" {
			fmt.Fprintf(b, "\n%s\n", r.Peer)
		}
		fmt.Fprintf(b, "\n%s:\n\n", upperFirst(cmpTitle))
		markdownTable(b, comparisonTable(compare(r.Results, r.Targets), r.Targets, r.Rounds))
		fmt.Fprintln(b)
		markdownTable(b, roundsTable(r.Results))
	}
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// ---------------------------------------------------------------------------
// The machine.

type machine struct {
	CPU, Cores, Memory, Filesystem, GoVersion, Berth, Source, Command string
	Peer                                                              string // the peer's version, if one is measured
	LoadStart, LoadEnd                                                string // /proc/loadavg
}

// pairs lists the machine's description; the load average at end comes last.
func (m machine) pairs() [][2]string {
	p := [][2]string{
		{"CPU", m.CPU}, {"cores", m.Cores}, {"memory", m.Memory},
		{"data filesystem", m.Filesystem}, {"Go", m.GoVersion},
		{"berth", m.Berth}, {"source", m.Source},
	}
	if m.Peer != "" {
		p = append(p, [2]string{peerName, m.Peer})
	}
	return append(p, [2]string{"load average (1, 5, 15 min) at start", m.LoadStart}, [2]string{"load average at end", m.LoadEnd})
}

func (m machine) print(w io.Writer) {
	fmt.Fprintf(w, "bench: command: %s\n", m.Command)
	for _, kv := range m.pairs()[:len(m.pairs())-1] {
		fmt.Fprintf(w, "bench: %-16s %s\n", kv[0]+":", kv[1])
	}
}

// loadAverage is the first three fields of /proc/loadavg: other work on
// the machine during a run makes every figure lower.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(data)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}

func describeMachine(ctx context.Context, berthBin, dataDir string) machine {
	m := machine{CPU: "unknown", Memory: "unknown", Filesystem: "unknown", Berth: "unknown", Source: "unknown", LoadStart: loadAverage()}
	m.Cores = strconv.Itoa(runtime.NumCPU())
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if kb, err := procField("/proc/meminfo", "MemTotal"); err == nil {
		m.Memory = fmt.Sprintf("%.1f GiB", float64(kb)*kib/gib)
	}
	if fs, err := filesystemOf(dataDir); err == nil {
		m.Filesystem = fs
	}
	if out, err := exec.CommandContext(ctx, "go", "version").Output(); err == nil {
		m.GoVersion = strings.TrimSpace(string(out))
	} else {
		m.GoVersion = runtime.Version()
	}
	if out, err := exec.CommandContext(ctx, berthBin, "version").Output(); err == nil {
		m.Berth = strings.TrimSpace(string(out))
	}
	if root, err := repoRoot(); err == nil {
		cmd := exec.CommandContext(ctx, "git", "describe", "--tags", "--always", "--dirty")
		cmd.Dir = root
		if out, err := cmd.Output(); err == nil {
			m.Source = "git " + strings.TrimSpace(string(out))
		}
	}
	return m
}

// filesystemOf names the mount holding dir, from /proc/mounts.
func filesystemOf(dir string) (string, error) {
	dir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", err
	}
	data, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return "", err
	}
	best, desc := -1, ""
	for line := range strings.SplitSeq(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		mnt := unescapeMount(f[1])
		if (dir == mnt || strings.HasPrefix(dir, strings.TrimSuffix(mnt, "/")+"/")) && len(mnt) > best {
			best, desc = len(mnt), fmt.Sprintf("%s on %s (%s)", f[2], mnt, f[0])
		}
	}
	if best < 0 {
		return "", errors.New("no mount found")
	}
	return desc, nil
}

func unescapeMount(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

func commandLine() string {
	args := append([]string{"go run ./hack/bench"}, os.Args[1:]...)
	return strings.Join(args, " ")
}

// ---------------------------------------------------------------------------
// Machine limits.

type limits struct {
	SHA256    float64 // MB/s on one core
	Write     float64 // sequential write+fsync MB/s
	CacheRead float64 // page-cache read MB/s
	Loopback  float64 // the cached file sent over loopback TCP with sendfile, MB/s (for reference)
}

func (l limits) push() float64 { return min(l.SHA256, l.Write) }

func (l limits) pairs() [][2]string {
	return [][2]string{
		{"sha256, one core", fmt.Sprintf("%.0f", l.SHA256)},
		{"sequential write+fsync", fmt.Sprintf("%.0f", l.Write)},
		{"page-cache read", fmt.Sprintf("%.0f", l.CacheRead)},
		{"page cache over loopback (sendfile, reference)", fmt.Sprintf("%.0f", l.Loopback)},
	}
}

func (l limits) print(w io.Writer) {
	for _, kv := range l.pairs() {
		fmt.Fprintf(w, "bench: limit %-48s %8s MB/s\n", kv[0]+":", kv[1])
	}
}

func mbps(bytes int64, d time.Duration) float64 {
	return float64(bytes) / 1e6 / d.Seconds()
}

// measureLimits measures what this machine allows: sha256 on one core over
// an in-memory buffer, a sequential write with a final fsync of size bytes
// to a file in dir, and reading that file back once it is cached.
func measureLimits(ctx context.Context, dir string, size int64) (limits, error) {
	var l limits
	buf := pool[:mib]

	h := sha256.New()
	start := time.Now()
	for n := int64(0); n < size; n += int64(len(buf)) {
		h.Write(buf)
	}
	h.Sum(nil)
	l.SHA256 = mbps(size, time.Since(start))
	if err := ctx.Err(); err != nil {
		return l, err
	}

	path := filepath.Join(dir, "bench-limits.tmp")
	defer os.Remove(path)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return l, err
	}
	start = time.Now()
	for n := int64(0); n < size; n += int64(len(buf)) {
		if _, err := f.Write(buf); err != nil {
			f.Close()
			return l, err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return l, err
	}
	l.Write = mbps(size, time.Since(start))
	if err := f.Close(); err != nil {
		return l, err
	}
	if err := ctx.Err(); err != nil {
		return l, err
	}

	// The first read makes sure every page is cached; the second is timed.
	for range 2 {
		f, err := os.Open(path)
		if err != nil {
			return l, err
		}
		start = time.Now()
		n, err := io.CopyBuffer(writerOnly{io.Discard}, readerOnly{f}, make([]byte, mib))
		f.Close()
		if err != nil {
			return l, err
		}
		if n != size {
			return l, fmt.Errorf("read back %d bytes of %d", n, size)
		}
		l.CacheRead = mbps(n, time.Since(start))
	}
	if err := ctx.Err(); err != nil {
		return l, err
	}

	// Not a limit the targets use, but the floor of any pull: the same
	// cached file sent with sendfile over a loopback TCP connection to a
	// reader with a 1 MiB buffer. The second of two passes is kept.
	for range 2 {
		n, d, err := loopbackSend(path)
		if err != nil {
			return l, fmt.Errorf("loopback: %w", err)
		}
		if n != size {
			return l, fmt.Errorf("loopback: received %d bytes of %d", n, size)
		}
		l.Loopback = mbps(n, d)
	}
	return l, nil
}

// loopbackSend serves the file at path to one loopback TCP connection
// (net.TCPConn.ReadFrom uses sendfile) and reads it, timing the transfer.
func loopbackSend(path string) (int64, time.Duration, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, 0, err
	}
	defer ln.Close()
	served := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		defer conn.Close()
		f, err := os.Open(path)
		if err != nil {
			served <- err
			return
		}
		defer f.Close()
		_, err = conn.(*net.TCPConn).ReadFrom(f)
		served <- err
	}()
	start := time.Now()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	n, err := io.CopyBuffer(writerOnly{io.Discard}, readerOnly{conn}, make([]byte, mib))
	d := time.Since(start)
	if serr := <-served; err == nil {
		err = serr
	}
	return n, d, err
}

// writerOnly and readerOnly hide ReadFrom and WriteTo, so that io.CopyBuffer
// uses the buffer it is given.
type writerOnly struct{ io.Writer }
type readerOnly struct{ io.Reader }

// ---------------------------------------------------------------------------
// Deterministic pseudo-random content.

const (
	poolSize  = 1 * mib
	blockSize = 64 * kib
)

// pool is a fixed block of pseudo-random bytes. A blob's content is a
// 16-byte header naming its seed followed by 64 KiB slices of the pool at
// offsets drawn from a generator seeded by it: distinct for every seed,
// reproducible, and produced by copying memory, so that the client spends
// next to nothing of the CPU the server is measured on.
var pool = func() []byte {
	b := make([]byte, poolSize+blockSize)
	r := rand.NewChaCha8([32]byte{'b', 'e', 'r', 't', 'h'})
	_, _ = r.Read(b)
	return b
}()

type blobReader struct {
	rng       *rand.PCG
	remaining int64
	cur       []byte
	hdr       [16]byte
}

func newBlobReader(seed uint64, size int64) *blobReader {
	r := &blobReader{rng: rand.NewPCG(seed, 0x6265727468), remaining: size}
	binary.BigEndian.PutUint64(r.hdr[:8], seed)
	binary.BigEndian.PutUint64(r.hdr[8:], uint64(size))
	r.cur = r.hdr[:]
	return r
}

// chunk returns the next bytes of the blob without consuming them.
func (r *blobReader) chunk() []byte {
	if r.remaining == 0 {
		return nil
	}
	if len(r.cur) == 0 {
		off := r.rng.Uint64() % poolSize
		r.cur = pool[off : off+blockSize]
	}
	if int64(len(r.cur)) > r.remaining {
		r.cur = r.cur[:r.remaining]
	}
	return r.cur
}

func (r *blobReader) advance(n int) {
	r.cur = r.cur[n:]
	r.remaining -= int64(n)
}

func (r *blobReader) Read(p []byte) (int, error) {
	if len(p) > 0 && r.remaining == 0 {
		return 0, io.EOF
	}
	total := 0
	for total < len(p) {
		c := r.chunk()
		if c == nil {
			break
		}
		n := copy(p[total:], c)
		r.advance(n)
		total += n
	}
	return total, nil
}

func (r *blobReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		c := r.chunk()
		if c == nil {
			return total, nil
		}
		n, err := w.Write(c)
		r.advance(n)
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
}

// blobDigest is the sha256 digest of the blob of seed and size.
func blobDigest(seed uint64, size int64) string {
	h := sha256.New()
	_, _ = newBlobReader(seed, size).WriteTo(h)
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// blobDigests computes the digests of the blobs seeds[0..n), in parallel.
func blobDigests(ctx context.Context, seed0 uint64, n int, size int64) ([]string, error) {
	out := make([]string, n)
	err := parallel(ctx, runtime.NumCPU(), n, func(i int) error {
		out[i] = blobDigest(seed0+uint64(i), size)
		return nil
	})
	return out, err
}

// parallel runs f(0..n) on conc workers and returns the first error.
func parallel(ctx context.Context, conc, n int, f func(i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(conc, n) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					cancel(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}

func sizeName(size int64) string {
	switch {
	case size >= gib && size%gib == 0:
		return fmt.Sprintf("%d GiB", size/gib)
	case size >= mib && size%mib == 0:
		return fmt.Sprintf("%d MiB", size/mib)
	case size >= kib && size%kib == 0:
		return fmt.Sprintf("%d KiB", size/kib)
	}
	return fmt.Sprintf("%d B", size)
}

// ---------------------------------------------------------------------------
// HTTP client.

type client struct {
	base *url.URL
	http *http.Client
}

func newClient(base string) *client {
	u, err := url.Parse(base)
	if err != nil {
		panic(err)
	}
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		MaxIdleConns:        512,
		MaxIdleConnsPerHost: 512,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
		WriteBufferSize:     256 * kib,
		ReadBufferSize:      256 * kib,
	}
	return &client{base: u, http: &http.Client{Transport: tr}}
}

func (c *client) url(path string, query url.Values) string {
	u := c.base.ResolveReference(&url.URL{Path: path})
	if query != nil {
		u.RawQuery = query.Encode()
	}
	return u.String()
}

// do sends a request and checks its status. The body of the response is
// returned open when keep is true, and otherwise drained and closed.
func (c *client) do(ctx context.Context, method, target string, body io.Reader, size int64, hdr map[string]string, want int, keep bool) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.ContentLength = size
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != want {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4*kib))
		resp.Body.Close()
		return nil, fmt.Errorf("%s %s: status %d, want %d: %s", method, req.URL.Path, resp.StatusCode, want, bytes.TrimSpace(msg))
	}
	if !keep {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return resp, nil
}

// location resolves the Location header of resp.
func (c *client) location(resp *http.Response) (*url.URL, error) {
	loc := resp.Header.Get("Location")
	if loc == "" {
		return nil, errors.New("response has no Location")
	}
	u, err := url.Parse(loc)
	if err != nil {
		return nil, err
	}
	return c.base.ResolveReference(u), nil
}

// pushBlob uploads a blob as most clients do: POST opens a session, one
// PATCH streams the whole content, PUT ?digest= completes it.
func (c *client) pushBlob(ctx context.Context, repo string, seed uint64, size int64, dgst string) error {
	resp, err := c.do(ctx, http.MethodPost, c.url("/v2/"+repo+"/blobs/uploads/", nil), nil, 0, nil, http.StatusAccepted, false)
	if err != nil {
		return err
	}
	loc, err := c.location(resp)
	if err != nil {
		return err
	}
	resp, err = c.do(ctx, http.MethodPatch, loc.String(), newBlobReader(seed, size), size,
		map[string]string{"Content-Type": "application/octet-stream"}, http.StatusAccepted, false)
	if err != nil {
		return err
	}
	if loc, err = c.location(resp); err != nil {
		return err
	}
	q := loc.Query()
	q.Set("digest", dgst)
	loc.RawQuery = q.Encode()
	_, err = c.do(ctx, http.MethodPut, loc.String(), http.NoBody, 0, nil, http.StatusCreated, false)
	return err
}

// putBlob uploads content in a POST that opens a session and a PUT
// ?digest= that carries the whole content, the monolithic upload every
// registry accepts.
func (c *client) putBlob(ctx context.Context, repo string, content []byte) error {
	resp, err := c.do(ctx, http.MethodPost, c.url("/v2/"+repo+"/blobs/uploads/", nil), nil, 0, nil, http.StatusAccepted, false)
	if err != nil {
		return err
	}
	loc, err := c.location(resp)
	if err != nil {
		return err
	}
	d := sha256.Sum256(content)
	q := loc.Query()
	q.Set("digest", "sha256:"+hex.EncodeToString(d[:]))
	loc.RawQuery = q.Encode()
	_, err = c.do(ctx, http.MethodPut, loc.String(), bytes.NewReader(content), int64(len(content)),
		map[string]string{"Content-Type": "application/octet-stream"}, http.StatusCreated, false)
	return err
}

// putSmallBlob uploads content in one monolithic POST ?digest=.
func (c *client) putSmallBlob(ctx context.Context, repo string, content []byte) error {
	d := sha256.Sum256(content)
	q := url.Values{"digest": {"sha256:" + hex.EncodeToString(d[:])}}
	_, err := c.do(ctx, http.MethodPost, c.url("/v2/"+repo+"/blobs/uploads/", q), bytes.NewReader(content), int64(len(content)),
		map[string]string{"Content-Type": "application/octet-stream"}, http.StatusCreated, false)
	return err
}

// pullBlob reads a blob into buf, discarding it, and returns its length. If
// h is not nil the content is also written to it.
func (c *client) pullBlob(ctx context.Context, repo, dgst string, buf []byte, h io.Writer) (int64, error) {
	resp, err := c.do(ctx, http.MethodGet, c.url("/v2/"+repo+"/blobs/"+dgst, nil), nil, 0, nil, http.StatusOK, true)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	dst := io.Writer(writerOnly{io.Discard})
	if h != nil {
		dst = writerOnly{h}
	}
	return io.CopyBuffer(dst, readerOnly{resp.Body}, buf)
}

func (c *client) putManifest(ctx context.Context, repo, ref string, body []byte) error {
	_, err := c.do(ctx, http.MethodPut, c.url("/v2/"+repo+"/manifests/"+ref, nil), bytes.NewReader(body), int64(len(body)),
		map[string]string{"Content-Type": manifestType}, http.StatusCreated, false)
	return err
}

func (c *client) getManifest(ctx context.Context, repo, ref string) error {
	_, err := c.do(ctx, http.MethodGet, c.url("/v2/"+repo+"/manifests/"+ref, nil), nil, 0,
		map[string]string{"Accept": manifestType}, http.StatusOK, false)
	return err
}

// list fetches one page of a listing and returns its entries and the URL of
// the next page, if any.
func (c *client) list(ctx context.Context, target string, field string) ([]string, string, error) {
	resp, err := c.do(ctx, http.MethodGet, target, nil, 0, nil, http.StatusOK, true)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	var page map[string]json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		return nil, "", err
	}
	var items []string
	if err := json.Unmarshal(page[field], &items); err != nil {
		return nil, "", fmt.Errorf("decode %s: %w", field, err)
	}
	next := ""
	if link := resp.Header.Get("Link"); link != "" {
		start, end := strings.IndexByte(link, '<'), strings.IndexByte(link, '>')
		if start < 0 || end < start {
			return nil, "", fmt.Errorf("malformed Link header %q", link)
		}
		u, err := url.Parse(link[start+1 : end])
		if err != nil {
			return nil, "", err
		}
		next = c.base.ResolveReference(u).String()
	}
	return items, next, nil
}

// ---------------------------------------------------------------------------
// Blob push and pull.

const blobRepo = "bench/blobs"

// blobRun is one timed push of blobs of one size at one concurrency,
// followed by pulls of the same blobs. The blobs and their digests are the
// same for every server and every round of a bench run.
type blobRun struct {
	Size    int64
	Conc    int
	Seed0   uint64   // the blobs' seeds are Seed0, Seed0+1, ...
	Digests []string // one per blob
}

// planBlobs lays out the blob runs, indexed by size then concurrency: each
// pushes at least cfg.PushBytes and one blob per worker, a multiple of the
// concurrency, and no two runs share a blob. It computes every digest,
// which takes a few seconds for a full run.
func planBlobs(ctx context.Context, cfg config) ([][]blobRun, error) {
	var plan [][]blobRun
	seed := uint64(1)
	for _, size := range cfg.BlobSizes {
		var runs []blobRun
		for _, conc := range cfg.BlobConc {
			n := int(max(int64(conc), (cfg.PushBytes+size-1)/size))
			n = (n + conc - 1) / conc * conc
			digests, err := blobDigests(ctx, seed, n, size)
			if err != nil {
				return nil, err
			}
			runs = append(runs, blobRun{Size: size, Conc: conc, Seed0: seed, Digests: digests})
			seed += uint64(n)
		}
		plan = append(plan, runs)
	}
	return plan, nil
}

// blobSteps are the blob measurements of plan: for each size and
// concurrency, one step pushes the run's blobs and then pulls them, so
// that the pulls read what the same server just wrote, whatever another
// server wrote since. The push at the first concurrency of the largest
// size also records the peak RSS of a server whose process is watched,
// which a later step reports.
func blobSteps(cfg config, plan [][]blobRun, lim limits) []step {
	largest := int64(0)
	for _, runs := range plan {
		largest = max(largest, runs[0].Size)
	}
	var steps []step
	for _, runs := range plan {
		for ci, run := range runs {
			name := fmt.Sprintf("blob push and pull %s, c=%d", sizeName(run.Size), run.Conc)
			steps = append(steps, step{Name: name, Run: func(ctx context.Context, m *running) ([]row, error) {
				rows, err := pushStep(ctx, m, run, ci == 0, run.Size == largest && ci == 0, lim)
				if err != nil {
					return rows, err
				}
				pull, err := pullStep(ctx, m, run, cfg.PullMinDur, lim)
				return append(rows, pull...), err
			}})
		}
	}
	// Reported after the blob figures, as measured by the push.
	return append(steps, step{Name: "server peak RSS", Full: true, Run: func(_ context.Context, m *running) ([]row, error) {
		return m.rss, nil
	}})
}

// pushStep pushes run's blobs to m's server and measures the throughput.
// With rss it records the server's peak RSS during the push, if its
// process is watched; with verify it then pulls the first blob, untimed,
// and checks its length and digest.
func pushStep(ctx context.Context, m *running, run blobRun, verify, rss bool, lim limits) ([]row, error) {
	size, conc, n, digests := run.Size, run.Conc, len(run.Digests), run.Digests
	var probe *rssProbe
	if rss && m.pid > 0 {
		probe = startRSSProbe(m.pid)
	}
	start := time.Now()
	err := parallel(ctx, conc, n, func(i int) error {
		return m.c.pushBlob(ctx, blobRepo, run.Seed0+uint64(i), size, digests[i])
	})
	elapsed := time.Since(start)
	if probe != nil {
		r, rerr := probe.stop()
		if err == nil && rerr != nil {
			err = rerr
		}
		if err == nil {
			m.rss = r.rows(size)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("push %s at concurrency %d: %w", sizeName(size), conc, err)
	}
	v := mbps(int64(n)*size, elapsed)
	fmt.Printf("bench:   %s: push %s x%d at concurrency %d: %.0f MB/s in %.2fs\n", m.name, sizeName(size), n, conc, v, elapsed.Seconds())
	rows := []row{{
		Name: fmt.Sprintf("blob push %s, c=%d", sizeName(size), conc), Value: v, Unit: "MB/s",
		Limit: fmt.Sprintf("%.0f min(sha256,write)", lim.push()), Ratio: v / lim.push(),
		Target: fmt.Sprintf(">= %.2f", pushTarget), Met: met(v/lim.push() >= pushTarget),
	}}
	if verify {
		h := sha256.New()
		got, err := m.c.pullBlob(ctx, blobRepo, digests[0], make([]byte, mib), h)
		if err != nil {
			return rows, fmt.Errorf("verify pull: %w", err)
		}
		if sum := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != size || sum != digests[0] {
			return rows, fmt.Errorf("pulled %d bytes hashing to %s, want %d bytes of %s", got, sum, size, digests[0])
		}
	}
	return rows, nil
}

// pullStep pulls run's blobs from m's server (see pullRun) and measures
// the throughput.
func pullStep(ctx context.Context, m *running, run blobRun, minDur time.Duration, lim limits) ([]row, error) {
	bytes, elapsed, err := pullRun(ctx, m.c, run.Conc, run.Digests, run.Size, minDur)
	if err != nil {
		return nil, fmt.Errorf("pull %s at concurrency %d: %w", sizeName(run.Size), run.Conc, err)
	}
	v := mbps(bytes, elapsed)
	fmt.Printf("bench:   %s: pull %s at concurrency %d: %.0f MB/s (%s in %.2fs)\n", m.name, sizeName(run.Size), run.Conc, v, sizeName(bytes), elapsed.Seconds())
	return []row{{
		Name: fmt.Sprintf("blob pull %s, c=%d", sizeName(run.Size), run.Conc), Value: v, Unit: "MB/s",
		Limit: fmt.Sprintf("%.0f page-cache read", lim.CacheRead), Ratio: v / lim.CacheRead,
		Target: fmt.Sprintf(">= %.2f", pullTarget), Met: met(v/lim.CacheRead >= pullTarget),
	}}, nil
}

// pullRun pulls the blobs round-robin on conc workers, until every blob
// was read once and at least minDur has passed. Content is not hashed.
func pullRun(ctx context.Context, c *client, conc int, digests []string, size int64, minDur time.Duration) (int64, time.Duration, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next, total atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Go(func() {
			buf := make([]byte, mib)
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(len(digests)) && time.Since(start) >= minDur {
					return
				}
				n, err := c.pullBlob(ctx, blobRepo, digests[i%int64(len(digests))], buf, nil)
				if err == nil && n != size {
					err = fmt.Errorf("pulled %d bytes, want %d", n, size)
				}
				if err != nil {
					cancel(err)
					return
				}
				total.Add(n)
			}
		})
	}
	wg.Wait()
	return total.Load(), time.Since(start), context.Cause(ctx)
}

// rssProbe samples a process's resident set while a measurement runs.
type rssProbe struct {
	pid      int
	before   int64 // VmRSS when the probe started, bytes
	reset    bool  // the peak (VmHWM) was reset at the start
	done     chan struct{}
	finished chan struct{}
	peak     atomic.Int64 // highest VmRSS sampled, bytes
}

type rssResult struct {
	Before, Peak int64
	Reset        bool
}

func startRSSProbe(pid int) *rssProbe {
	p := &rssProbe{pid: pid, done: make(chan struct{}), finished: make(chan struct{})}
	status := fmt.Sprintf("/proc/%d/status", pid)
	if kb, err := procField(status, "VmRSS"); err == nil {
		p.before = kb * kib
		p.peak.Store(p.before)
	}
	// Writing 5 to clear_refs resets the peak resident set size (VmHWM).
	p.reset = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0) == nil
	go func() {
		defer close(p.finished)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.done:
				return
			case <-t.C:
				if kb, err := procField(status, "VmRSS"); err == nil && kb*kib > p.peak.Load() {
					p.peak.Store(kb * kib)
				}
			}
		}
	}()
	return p
}

func (p *rssProbe) stop() (rssResult, error) {
	close(p.done)
	<-p.finished
	hwm, err := procField(fmt.Sprintf("/proc/%d/status", p.pid), "VmHWM")
	if err != nil {
		return rssResult{}, fmt.Errorf("read peak RSS: %w", err)
	}
	return rssResult{Before: p.before, Peak: max(hwm*kib, p.peak.Load()), Reset: p.reset}, nil
}

func (r rssResult) rows(size int64) []row {
	name := fmt.Sprintf("server peak RSS, %s push", sizeName(size))
	if !r.Reset {
		name += " (VmHWM since start)"
	}
	fmt.Printf("bench:   server RSS before the %s push %.1f MiB, peak during it %.1f MiB\n", sizeName(size), float64(r.Before)/mib, float64(r.Peak)/mib)
	return []row{{
		Name: name, Value: float64(r.Peak) / mib, Unit: "MiB",
		Limit: fmt.Sprintf("%.1f MiB before push", float64(r.Before)/mib), Ratio: float64(r.Peak) / float64(max(r.Before, 1)),
		Target: fmt.Sprintf("<= +%d MiB", rssGrowthMax/mib), Met: met(r.Peak-r.Before <= rssGrowthMax),
	}}
}

// procField reads a "Name: value kB" line of a /proc file, in kB.
func procField(path, name string) (int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && k == name {
			f := strings.Fields(v)
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("%s: no field %s", path, name)
}

// ---------------------------------------------------------------------------
// Manifests.

const manifestRepo = "bench/manifests"

var emptyConfig = []byte("{}")

// manifestBody is an image manifest with the empty config and no layers,
// made distinct by an annotation.
func manifestBody(note string) []byte {
	d := sha256.Sum256(emptyConfig)
	return fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":%q,"digest":"sha256:%s","size":%d},"layers":[],"annotations":{"bench":%q}}`,
		manifestType, emptyType, hex.EncodeToString(d[:]), len(emptyConfig), note)
}

// manifestSteps are the manifest measurements: an untimed setup (the
// config blob and the tag every GET reads), then PUT (a new manifest to a
// new tag each time) and GET by tag, for a fixed duration at each
// concurrency. Each rate is compared with the same server's rate at the
// first concurrency.
func manifestSteps(cfg config) []step {
	steps := []step{{Name: "manifest setup", Run: func(ctx context.Context, m *running) ([]row, error) {
		if err := m.c.putBlob(ctx, manifestRepo, emptyConfig); err != nil {
			return nil, err
		}
		return nil, m.c.putManifest(ctx, manifestRepo, "latest", manifestBody("latest"))
	}}}
	for _, op := range []string{"PUT", "GET by tag"} {
		for i, conc := range cfg.ManifestConc {
			name := fmt.Sprintf("manifest %s, c=%d", op, conc)
			steps = append(steps, step{Name: name, Run: func(ctx context.Context, m *running) ([]row, error) {
				v, err := opsRun(ctx, conc, cfg.ManifestDur, m.manifestOp(ctx, op))
				if err != nil {
					return nil, fmt.Errorf("manifest %s at concurrency %d: %w", op, conc, err)
				}
				fmt.Printf("bench:   %s: manifest %s at concurrency %d: %.0f ops/s\n", m.name, op, conc, v)
				r := row{Name: name, Value: v, Unit: "ops/s", Ratio: math.NaN(), Met: "-"}
				if i == 0 {
					m.base[op] = v
					r.Target = "baseline"
				} else {
					base := m.base[op]
					r.Limit = fmt.Sprintf("%.0f at c=%d", base, cfg.ManifestConc[0])
					r.Ratio = v / base
					r.Target = fmt.Sprintf(">= %.1fx", scalingTarget)
					r.Met = met(r.Ratio >= scalingTarget)
				}
				return []row{r}, nil
			}})
		}
	}
	return steps
}

// manifestOp is one manifest operation on m's server: "PUT" pushes a new
// manifest to a new tag, "GET by tag" reads the tag "latest".
func (m *running) manifestOp(ctx context.Context, op string) func() error {
	if op == "PUT" {
		return func() error {
			n := m.seq.Add(1)
			return m.c.putManifest(ctx, manifestRepo, fmt.Sprintf("put-%d", n), manifestBody(strconv.FormatInt(n, 10)))
		}
	}
	return func() error { return m.c.getManifest(ctx, manifestRepo, "latest") }
}

// opsRun runs op on conc workers for dur and returns operations per second.
// Each worker first runs op twice untimed, so connections are open.
func opsRun(ctx context.Context, conc int, dur time.Duration, op func() error) (float64, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var ready, wg sync.WaitGroup
	var count atomic.Int64
	begin := make(chan struct{})
	var deadline time.Time
	ready.Add(conc)
	for range conc {
		wg.Go(func() {
			for range 2 {
				if err := op(); err != nil {
					cancel(err)
					break
				}
			}
			ready.Done()
			<-begin
			for ctx.Err() == nil && time.Now().Before(deadline) {
				if err := op(); err != nil {
					cancel(err)
					return
				}
				count.Add(1)
			}
		})
	}
	ready.Wait()
	start := time.Now()
	deadline = start.Add(dur)
	close(begin)
	wg.Wait()
	elapsed := time.Since(start)
	if err := context.Cause(ctx); err != nil {
		return 0, err
	}
	return float64(count.Load()) / elapsed.Seconds(), nil
}

// ---------------------------------------------------------------------------
// Tag list and catalog.

const (
	tagRepo     = "bench/tags"
	catalogRepo = "bench/cat/r"
)

func tagName(i int) string     { return fmt.Sprintf("t%05d", i) }
func catalogName(i int) string { return fmt.Sprintf("%s%05d", catalogRepo, i) }

// listRuns creates cfg.Tags tags on one repository and cfg.Repos
// repositories, then times the first page, a page in the middle and a walk
// of every page, of the tag list and of the catalog.
func listRuns(ctx context.Context, c *client, cfg config) ([]row, error) {
	var rows []row

	start := time.Now()
	if err := c.putSmallBlob(ctx, tagRepo, emptyConfig); err != nil {
		return nil, err
	}
	body := manifestBody("tags")
	if err := parallel(ctx, cfg.SetupConc, cfg.Tags, func(i int) error {
		return c.putManifest(ctx, tagRepo, tagName(i), body)
	}); err != nil {
		return nil, fmt.Errorf("create tags: %w", err)
	}
	fmt.Printf("bench:   created %d tags (one manifest PUT each) in %.1fs\n", cfg.Tags, time.Since(start).Seconds())

	tagsURL := func(last string) string {
		q := url.Values{"n": {strconv.Itoa(cfg.PageSize)}}
		if last != "" {
			q.Set("last", last)
		}
		return c.url("/v2/"+tagRepo+"/tags/list", q)
	}
	r, err := listLatency(ctx, c, cfg, "tags", "tag list", cfg.Tags, tagsURL, tagName(cfg.Tags/2-1), cfg.Tags)
	rows = append(rows, r...)
	if err != nil {
		return rows, err
	}

	start = time.Now()
	if err := parallel(ctx, cfg.SetupConc, cfg.Repos, func(i int) error {
		return c.putSmallBlob(ctx, catalogName(i), emptyConfig)
	}); err != nil {
		return rows, fmt.Errorf("create repositories: %w", err)
	}
	fmt.Printf("bench:   created %d repositories (one blob POST each) in %.1fs\n", cfg.Repos, time.Since(start).Seconds())

	catalogURL := func(last string) string {
		q := url.Values{"n": {strconv.Itoa(cfg.PageSize)}}
		if last != "" {
			q.Set("last", last)
		}
		return c.url("/v2/_catalog", q)
	}
	// The catalog also holds the few other repositories of the run.
	r, err = listLatency(ctx, c, cfg, "repositories", "catalog", cfg.Repos, catalogURL, catalogName(cfg.Repos/2-1), cfg.Repos)
	rows = append(rows, r...)
	return rows, err
}

// listLatency times a listing: its first page, the page after middle, and
// a walk of every page, each the median of cfg.Samples requests (walks).
func listLatency(ctx context.Context, c *client, cfg config, field, what string, count int, pageURL func(last string) string, middle string, atLeast int) ([]row, error) {
	firstPage := func() error {
		items, _, err := c.list(ctx, pageURL(""), field)
		if err == nil && len(items) != min(cfg.PageSize, count) && len(items) != cfg.PageSize {
			err = fmt.Errorf("first page has %d entries, want %d", len(items), cfg.PageSize)
		}
		return err
	}
	middlePage := func() error {
		items, _, err := c.list(ctx, pageURL(middle), field)
		if err == nil && (len(items) == 0 || items[0] <= middle) {
			err = fmt.Errorf("page after %s starts wrong: %d entries", middle, len(items))
		}
		return err
	}
	walk := func() error {
		n, next := 0, pageURL("")
		for next != "" {
			items, nextURL, err := c.list(ctx, next, field)
			if err != nil {
				return err
			}
			n += len(items)
			next = nextURL
		}
		if n < atLeast {
			return fmt.Errorf("walk listed %d entries, want at least %d", n, atLeast)
		}
		return nil
	}
	// A first walk counts the pages (the catalog also holds the few other
	// repositories of the run).
	pages := 0
	for next := pageURL(""); next != ""; pages++ {
		_, nextURL, err := c.list(ctx, next, field)
		if err != nil {
			return nil, err
		}
		next = nextURL
	}
	cases := []struct {
		name string
		f    func() error
	}{
		{fmt.Sprintf("%s, first page (n=%d of %d)", what, cfg.PageSize, count), firstPage},
		{fmt.Sprintf("%s, middle page (last=%s)", what, middle), middlePage},
		{fmt.Sprintf("%s, walk of all %d pages", what, pages), walk},
	}
	var rows []row
	for _, cs := range cases {
		d, err := medianLatency(cfg.Samples, cs.f)
		if err != nil {
			return rows, fmt.Errorf("%s: %w", cs.name, err)
		}
		ms := float64(d) / float64(time.Millisecond)
		fmt.Printf("bench:   %s: %.2f ms median\n", cs.name, ms)
		rows = append(rows, row{Name: cs.name, Value: ms, Unit: "ms (median)", Ratio: math.NaN(), Met: "-"})
	}
	return rows, nil
}

// medianLatency runs f twice untimed, then n times, and returns the median.
func medianLatency(n int, f func() error) (time.Duration, error) {
	for range 2 {
		if err := f(); err != nil {
			return 0, err
		}
	}
	ds := make([]time.Duration, n)
	for i := range ds {
		start := time.Now()
		if err := f(); err != nil {
			return 0, err
		}
		ds[i] = time.Since(start)
	}
	slices.Sort(ds)
	return ds[n/2], nil
}

// ---------------------------------------------------------------------------
// Server processes.

// server is a registry process under measurement.
type server struct {
	name   string // as in messages: "berth", or the peer's name
	cmd    *exec.Cmd
	addr   string
	url    string
	exited chan struct{}
	err    error // from Wait, once exited is closed
	// after, if not nil, removes what the server kept outside its
	// directory (a bucket, a database) once it has exited.
	after func() error

	mu   sync.Mutex
	tail []string // last lines of the log
}

const logTailLines = 100

// startProcess starts cmd with its standard output and error collected
// into the server's log tail; onLine, if not nil, sees every line.
func startProcess(cmd *exec.Cmd, name string, onLine func(line string)) (*server, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	// A harness that dies (interrupted, or its output closed) leaves no
	// server running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	pw.Close()
	s := &server{name: name, cmd: cmd, exited: make(chan struct{})}
	go func() {
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*kib), mib)
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			s.tail = append(s.tail, line)
			if len(s.tail) > logTailLines {
				s.tail = s.tail[len(s.tail)-logTailLines:]
			}
			s.mu.Unlock()
			if onLine != nil {
				onLine(line)
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	go func() {
		s.err = cmd.Wait()
		close(s.exited)
	}()
	return s, nil
}

// environWithout is this process's environment less the variables whose
// names start with one of prefixes.
func environWithout(prefixes ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(kv, p) }) {
			env = append(env, kv)
		}
	}
	return env
}

// startBerth runs "berth serve --addr 127.0.0.1:0 --data dataDir" with args
// and waits for its msg=listening log line.
func startBerth(ctx context.Context, bin, dataDir string, args ...string) (*server, error) {
	cmd := exec.Command(bin, append([]string{"serve", "--addr", "127.0.0.1:0", "--data", dataDir}, args...)...)
	// BERTH_* variables of the caller's shell must not change the server;
	// no access log, as the peer writes none.
	cmd.Env = append(environWithout("BERTH_"), "BERTH_LOG_ACCESS=false")
	listening := make(chan string, 1)
	found := false // only the log reader goroutine touches it
	s, err := startProcess(cmd, "berth", func(line string) {
		if !found {
			if addr, ok := registry.ListeningAddr(line); ok {
				found = true
				listening <- addr
			}
		}
	})
	if err != nil {
		return nil, err
	}
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case addr := <-listening:
		s.addr, s.url = addr, "http://"+addr
		return s, nil
	case <-s.exited:
		return nil, fmt.Errorf("berth exited before listening: %v\n%s", s.err, s.logTail())
	case <-timer.C:
		s.kill()
		return nil, fmt.Errorf("berth did not log msg=listening within %s\n%s", startTimeout, s.logTail())
	case <-ctx.Done():
		s.kill()
		return nil, ctx.Err()
	}
}

func (s *server) pid() int { return s.cmd.Process.Pid }

func (s *server) logTail() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.tail, "\n")
}

func (s *server) kill() {
	_ = s.cmd.Process.Kill()
	<-s.exited
}

// stop sends SIGTERM and waits for a clean exit, killing the process if it
// does not exit in time, then runs the server's after hook.
func (s *server) stop() error {
	err := s.terminate()
	if s.after != nil {
		err = errors.Join(err, s.after())
	}
	return err
}

func (s *server) terminate() error {
	select {
	case <-s.exited:
		return fmt.Errorf("%s exited during the run: %v", s.name, s.err)
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		s.kill()
		return fmt.Errorf("send SIGTERM to %s: %w", s.name, err)
	}
	select {
	case <-s.exited:
		if s.err != nil {
			return fmt.Errorf("%s did not exit cleanly after SIGTERM: %w", s.name, s.err)
		}
		return nil
	case <-time.After(stopTimeout):
		s.kill()
		return fmt.Errorf("%s did not exit within %s of SIGTERM; killed it", s.name, stopTimeout)
	}
}

// ---------------------------------------------------------------------------
// Building berth.

// repoRoot is the nearest directory at or above the working directory whose
// go.mod declares Berth's module.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if data, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil {
			for line := range strings.SplitSeq(string(data), "\n") {
				if f := strings.Fields(line); len(f) >= 2 && f[0] == "module" && strings.Trim(f[1], `"`) == modulePath {
					return dir, nil
				}
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod for %s above the working directory", modulePath)
		}
		dir = parent
	}
}

func goBuild(ctx context.Context, root, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/berth")
	cmd.Dir = root
	if output, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/berth: %w\n%s", err, output)
	}
	return nil
}

func checkEmptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(entries) > 0 {
		return fmt.Errorf("-data %s: directory is not empty", dir)
	}
	return nil
}
