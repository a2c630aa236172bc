package conformance_test

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/conformance/internal/berthtest"
)

const (
	// envSuiteBin names a prebuilt OCI conformance suite binary (the
	// Makefile builds it into bin/tools/oci-conformance).
	envSuiteBin = "OCI_CONFORMANCE_BIN"
	// suitePkg is the main package of the pinned suite; see suite/go.mod.
	suitePkg = "github.com/opencontainers/distribution-spec/conformance"

	// suiteTimeout bounds one run of the suite.
	suiteTimeout = 10 * time.Minute
	// maxFailureLines caps how much of the report is logged on failure.
	maxFailureLines = 400
)

// TestOCIConformance runs the official OCI distribution-spec conformance
// suite against a fresh berth process, once with OCI_VERSION=1.1 (with every
// API switch turned on) and once with the "dev" defaults, both again
// against a berth whose blobs are in an S3 bucket (with the embedded
// index), and both again against a berth whose index is in PostgreSQL and
// whose blobs are in an S3 bucket, as replicas run. Data switches are left at the suite's defaults; the registry must
// pass everything that runs and nothing may be skipped.
func TestOCIConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the OCI conformance suite in -short mode")
	}
	root := berthtest.RepoRoot(t)
	suite := suiteBinary(t, root)
	berthtest.Build(t) // build once up front so its time is not charged to a subtest

	tests := []struct {
		name    string
		version string
		// env holds extra OCI_* settings passed to the suite.
		env []string
	}{
		// For OCI_VERSION=1.1 the suite defaults these API switches to
		// false ("dev" turns them on); turn them all on so that every API
		// test runs, including the "post cancel" blob tests. Nothing may
		// be disabled.
		//
		// OCI_DATA_SPARSE is deliberately left at its default (false):
		// Berth refuses sparse manifests (ones referencing blobs or
		// manifests that were never pushed) with MANIFEST_BLOB_UNKNOWN.
		{name: "v1.1", version: "1.1", env: []string{
			"OCI_API_BLOBS_UPLOAD_CANCEL=true",
			"OCI_API_BLOBS_DIGEST_HEADER=true",
			"OCI_API_MANIFESTS_DIGEST_HEADER=true",
			"OCI_API_MANIFESTS_TAG_PARAM=true",
		}},
		{name: "dev", version: "dev"},
	}
	stores := []struct {
		name string
		// opts start berth on that store.
		opts func(t *testing.T) []berthtest.Option
	}{
		{"", func(*testing.T) []berthtest.Option { return nil }},
		{"s3", func(t *testing.T) []berthtest.Option {
			return []berthtest.Option{berthtest.WithArgs("--config", s3ConfigFile(t, false))}
		}},
		{"postgres-s3", func(t *testing.T) []berthtest.Option {
			return []berthtest.Option{berthtest.WithArgs("--config", postgresS3ConfigFile(t))}
		}},
	}
	for _, store := range stores {
		for _, tc := range tests {
			name := tc.name
			if store.name != "" {
				name = store.name + "-" + tc.name
			}
			t.Run(name, func(t *testing.T) { runConformance(t, root, suite, name, tc.version, tc.env, store.opts(t)) })
		}
	}
}

// runConformance runs the suite with OCI_VERSION=version and the extra
// settings env against a berth started with opts, keeping its results in
// conformance/results/<name>.
func runConformance(t *testing.T, root, suite, name, version string, env []string, opts []berthtest.Option) {
	srv := berthtest.Start(t, opts...)
	resultsDir := filepath.Join(root, "conformance", "results", name)
	if err := os.RemoveAll(resultsDir); err != nil {
		t.Fatalf("clean results dir: %v", err)
	}
	if err := os.MkdirAll(resultsDir, 0o755); err != nil {
		t.Fatalf("create results dir: %v", err)
	}

	timeout := suiteTimeout
	if dl, ok := t.Deadline(); ok {
		timeout = min(timeout, time.Until(dl)-30*time.Second)
	}
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, suite)
	cmd.Dir = t.TempDir() // keep a stray oci-conformance.yaml from being picked up
	cmd.Env = append(environWithoutOCI(),
		"OCI_REGISTRY="+srv.Addr,
		"OCI_TLS=disabled",
		"OCI_VERSION="+version,
		"OCI_RESULTS_DIR="+resultsDir,
		"OCI_LOG=warn",
	)
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.WaitDelay = 10 * time.Second
	start := time.Now()
	runErr := cmd.Run()
	t.Logf("conformance suite (OCI_VERSION=%s) ran in %s against %s; results in %s",
		version, time.Since(start).Round(time.Millisecond), srv.Addr, resultsDir)

	for file, data := range map[string][]byte{"report.txt": stdout.Bytes(), "suite-stderr.log": stderr.Bytes()} {
		if err := os.WriteFile(filepath.Join(resultsDir, file), data, 0o644); err != nil {
			t.Errorf("save %s: %v", file, err)
		}
	}
	if ctx.Err() != nil {
		t.Errorf("conformance suite did not finish within %s: %v", timeout, ctx.Err())
	}

	rep, err := parseReport(stdout.String())
	if err != nil {
		t.Fatalf("parse conformance report: %v (suite exit: %v)\nstderr (tail):\n%s\nstdout (tail):\n%s",
			err, runErr, tail(stderr.String(), 50), tail(stdout.String(), 50))
	}
	t.Logf("OCI conformance summary (OCI_VERSION=%s):\n%s", version, rep.Summary)

	if runErr != nil {
		t.Errorf("conformance suite exited with error: %v", runErr)
	}
	rep.check(t)
	// A backend failure the suite did not notice (a retried request, a
	// clean-up that failed) still shows in the server's log.
	for line := range strings.SplitSeq(srv.Logs(), "\n") {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
			t.Errorf("berth logged: %s", line)
		}
	}

	if t.Failed() {
		t.Logf("failing conformance tests:\n%s", rep.failureDetails(filepath.Join(resultsDir, "junit.xml")))
		if s := strings.TrimSpace(stderr.String()); s != "" {
			t.Logf("conformance suite stderr (tail):\n%s", tail(s, 60))
		}
		// The berth server log tail is logged by berthtest's cleanup.
	}
}

// suiteBinary returns OCI_CONFORMANCE_BIN if set, else builds the pinned
// suite from conformance/suite into a temporary directory.
func suiteBinary(t *testing.T, root string) string {
	t.Helper()
	if bin := os.Getenv(envSuiteBin); bin != "" {
		if !filepath.IsAbs(bin) {
			bin = filepath.Join(root, bin)
		}
		fi, err := os.Stat(bin)
		if err != nil {
			t.Fatalf("%s: %v", envSuiteBin, err)
		}
		if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			t.Fatalf("%s: %s is not an executable file", envSuiteBin, bin)
		}
		return bin
	}
	out := filepath.Join(t.TempDir(), "oci-conformance")
	// The suite is its own module; never let a go.work pull it into another.
	if err := berthtest.GoBuild(filepath.Join(root, "conformance", "suite"), out, suitePkg, "GOWORK=off"); err != nil {
		t.Fatalf("build conformance suite: %v", err)
	}
	return out
}

// environWithoutOCI returns the environment minus any OCI_* variables, so
// that settings in the caller's shell cannot disable parts of the suite.
func environWithoutOCI() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OCI_") {
			env = append(env, kv)
		}
	}
	return env
}

// Statuses as printed by the suite (results.go, status.String).
const (
	statusPass     = "Pass"
	statusFail     = "FAIL"
	statusError    = "Error"
	statusSkip     = "Skip"
	statusDisabled = "Disabled"
)

// report is the parsed stdout of the conformance suite (runner.Report).
type report struct {
	Result  string         // overall status from "OCI Conformance Result: X"
	Counts  map[string]int // Disabled, Skip, Pass, FAIL, Error, Total
	Summary string         // from "OCI Conformance Result:" through "Data conformance:"
	Errors  string         // the top-level "Errors:" section, if any
	Nodes   []node         // the "Test results" tree, in order
}

// node is one line of the "Test results" tree with its error lines.
type node struct {
	Name   string
	Depth  int
	Status string
	Errs   []string
	Leaf   bool
}

var (
	nodeRE  = regexp.MustCompile(`^( *)(OCI Conformance Test.*): (Pass|FAIL|Error|Skip|Disabled|Unknown)$`)
	errRE   = regexp.MustCompile(`^ * - (.*)$`)
	countRE = regexp.MustCompile(`^ +([A-Za-z]+)\.*: +(\d+)$`)
)

func parseReport(out string) (*report, error) {
	lines := strings.Split(strings.ReplaceAll(out, "\r\n", "\n"), "\n")
	rep := &report{Counts: map[string]int{}}

	// Test result tree: after "Test results" up to the first blank line.
	i := 0
	for i < len(lines) && lines[i] != "Test results" {
		i++
	}
	if i == len(lines) {
		return nil, errors.New(`no "Test results" section in the suite output`)
	}
	for i++; i < len(lines) && lines[i] != ""; i++ {
		if m := nodeRE.FindStringSubmatch(lines[i]); m != nil {
			rep.Nodes = append(rep.Nodes, node{Name: m[2], Depth: len(m[1]) / 2, Status: m[3]})
			continue
		}
		if len(rep.Nodes) == 0 {
			return nil, fmt.Errorf("unexpected line in test results: %q", lines[i])
		}
		n := &rep.Nodes[len(rep.Nodes)-1]
		if m := errRE.FindStringSubmatch(lines[i]); m != nil {
			n.Errs = append(n.Errs, m[1])
		} else if len(n.Errs) > 0 {
			n.Errs[len(n.Errs)-1] += "\n" + lines[i] // multi-line error text
		} else {
			n.Errs = append(n.Errs, lines[i])
		}
	}
	for j := range rep.Nodes {
		rep.Nodes[j].Leaf = j+1 == len(rep.Nodes) || rep.Nodes[j+1].Depth <= rep.Nodes[j].Depth
	}

	// Summary: "OCI Conformance Result: X", the counts, optional "Errors:",
	// "API conformance:" and "Data conformance:" sections.
	start := -1
	for ; i < len(lines); i++ {
		if r, ok := strings.CutPrefix(lines[i], "OCI Conformance Result: "); ok {
			start = i
			rep.Result = strings.TrimSpace(r)
			break
		}
	}
	if start < 0 {
		return nil, errors.New(`no "OCI Conformance Result:" line in the suite output`)
	}
	for i++; i < len(lines) && lines[i] != ""; i++ {
		m := countRE.FindStringSubmatch(lines[i])
		if m == nil {
			return nil, fmt.Errorf("unexpected line in result counts: %q", lines[i])
		}
		n, err := strconv.Atoi(m[2])
		if err != nil {
			return nil, fmt.Errorf("parse count %q: %w", lines[i], err)
		}
		rep.Counts[m[1]] = n
	}
	for _, s := range []string{statusDisabled, statusSkip, statusPass, statusFail, statusError, "Total"} {
		if _, ok := rep.Counts[s]; !ok {
			return nil, fmt.Errorf("count for %q missing from the suite output", s)
		}
	}
	end := -1
	for ; i < len(lines); i++ {
		if lines[i] == "Errors:" {
			var errLines []string
			for i++; i < len(lines) && !strings.HasSuffix(lines[i], " conformance:"); i++ {
				errLines = append(errLines, lines[i])
			}
			rep.Errors = strings.TrimSpace(strings.Join(errLines, "\n"))
			i--
			continue
		}
		if lines[i] == "Data conformance:" {
			for i++; i < len(lines) && lines[i] != ""; i++ {
			}
			end = i
			break
		}
	}
	if end < 0 {
		return nil, errors.New(`no "Data conformance:" section in the suite output`)
	}
	rep.Summary = strings.Join(lines[start:end], "\n")
	return rep, nil
}

// check asserts that everything passed: no failures, errors, skips or
// disabled tests.
func (r *report) check(t *testing.T) {
	t.Helper()
	if r.Result != statusPass {
		t.Errorf("OCI Conformance Result = %s, want %s", r.Result, statusPass)
	}
	for _, s := range []string{statusFail, statusError, statusSkip, statusDisabled} {
		if r.Counts[s] != 0 {
			t.Errorf("%s count = %d, want 0", s, r.Counts[s])
		}
	}
	if r.Counts[statusPass] == 0 {
		t.Errorf("Pass count = 0, want > 0")
	}
	sum := 0
	for _, s := range []string{statusDisabled, statusSkip, statusPass, statusFail, statusError} {
		sum += r.Counts[s]
	}
	if sum != r.Counts["Total"] {
		t.Errorf("status counts add up to %d, but Total = %d", sum, r.Counts["Total"])
	}
	for _, n := range r.Nodes {
		if n.Leaf && n.Status == statusDisabled {
			t.Errorf("test disabled: %s", n.Name)
		}
	}
	if r.Errors != "" {
		t.Errorf("suite reported errors:\n%s", r.Errors)
	}
}

// failureDetails lists the leaf tests that did not pass, with their error
// lines. Reasons for skipped tests are taken from the suite's junit.xml.
func (r *report) failureDetails(junitPath string) string {
	skipOut := junitOutput(junitPath)
	var b strings.Builder
	lines := 0
	for _, n := range r.Nodes {
		if !n.Leaf || n.Status == statusPass {
			continue
		}
		if lines >= maxFailureLines {
			fmt.Fprintf(&b, "... (truncated; see the full report)\n")
			break
		}
		fmt.Fprintf(&b, "%s: %s\n", n.Name, n.Status)
		lines++
		errs := n.Errs
		if len(errs) == 0 && n.Status == statusSkip {
			if out := strings.TrimSpace(skipOut[n.Name]); out != "" {
				errs = []string{tail(out, 5)}
			}
		}
		for _, e := range errs {
			fmt.Fprintf(&b, "  - %s\n", strings.ReplaceAll(e, "\n", "\n    "))
			lines += 1 + strings.Count(e, "\n")
		}
	}
	if b.Len() == 0 {
		return "(no failing leaf tests in the report)"
	}
	return strings.TrimRight(b.String(), "\n")
}

// junitOutput maps test names to their captured output (system-err) from
// the suite's junit.xml. Errors are ignored: it is only used for diagnostics.
func junitOutput(path string) map[string]string {
	out := map[string]string{}
	data, err := os.ReadFile(path)
	if err != nil {
		return out
	}
	var doc struct {
		Suites []struct {
			Cases []struct {
				Name      string `xml:"name,attr"`
				SystemErr string `xml:"system-err"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if xml.Unmarshal(data, &doc) != nil {
		return out
	}
	for _, s := range doc.Suites {
		for _, c := range s.Cases {
			out[c.Name] = c.SystemErr
		}
	}
	return out
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[... %d earlier lines ...]", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
