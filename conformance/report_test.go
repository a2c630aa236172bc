package conformance_test

import (
	"os"
	"strings"
	"testing"
)

// sampleReport mirrors the layout of runner.Report in the pinned suite.
const sampleReport = `Test results
OCI Conformance Test: FAIL
  OCI Conformance Test/ping: Pass
  OCI Conformance Test/sha256 blobs: FAIL
    OCI Conformance Test/sha256 blobs/post cancel: Disabled
      OCI Conformance Test/sha256 blobs/post cancel/blob-post-cancel: Disabled
    OCI Conformance Test/sha256 blobs/stream: FAIL
      OCI Conformance Test/sha256 blobs/stream/blob-patch-stream: FAIL
       - blob post failed: unexpected status
second line of the error
    OCI Conformance Test/sha256 blobs/get-missing: Skip

Configuration:
  registry: 127.0.0.1:1
  
OCI Conformance Result: FAIL
  Disabled......................:          1
  Skip..........................:          1
  Pass..........................:          1
  FAIL..........................:          1
  Error.........................:          0
  Total.........................:          4

Errors:
something broke

API conformance:
  Ping..........................:       Pass

Data conformance:
  Blobs sha256..................:       FAIL

trailing
`

func TestParseReport(t *testing.T) {
	rep, err := parseReport(sampleReport)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Result != "FAIL" {
		t.Errorf("Result = %q", rep.Result)
	}
	want := map[string]int{"Disabled": 1, "Skip": 1, "Pass": 1, "FAIL": 1, "Error": 0, "Total": 4}
	for k, v := range want {
		if rep.Counts[k] != v {
			t.Errorf("Counts[%s] = %d, want %d", k, rep.Counts[k], v)
		}
	}
	if rep.Errors != "something broke" {
		t.Errorf("Errors = %q", rep.Errors)
	}
	if !strings.HasPrefix(rep.Summary, "OCI Conformance Result: FAIL") || !strings.HasSuffix(rep.Summary, "Blobs sha256..................:       FAIL") {
		t.Errorf("Summary = %q", rep.Summary)
	}
	if len(rep.Nodes) != 8 {
		t.Fatalf("got %d nodes, want 8", len(rep.Nodes))
	}
	leaf := map[string]bool{}
	for _, n := range rep.Nodes {
		leaf[n.Name[strings.LastIndex(n.Name, "/")+1:]] = n.Leaf
	}
	for name, want := range map[string]bool{"ping": true, "sha256 blobs": false, "blob-post-cancel": true, "stream": false, "blob-patch-stream": true, "get-missing": true} {
		if leaf[name] != want {
			t.Errorf("leaf[%s] = %v, want %v", name, leaf[name], want)
		}
	}
	details := rep.failureDetails([]string{"/blob-post-cancel"}, "")
	for _, s := range []string{"blob-patch-stream: FAIL", "  - blob post failed: unexpected status\n    second line of the error", "get-missing: Skip"} {
		if !strings.Contains(details, s) {
			t.Errorf("failure details lack %q:\n%s", s, details)
		}
	}
	if strings.Contains(details, "blob-post-cancel") || strings.Contains(details, "ping") {
		t.Errorf("failure details list passing or allowed tests:\n%s", details)
	}
}

// TestParseReportFile parses a saved report, for checking the parser
// against real suite output: CONFORMANCE_REPORT=path go test -run ParseReportFile.
func TestParseReportFile(t *testing.T) {
	path := os.Getenv("CONFORMANCE_REPORT")
	if path == "" {
		t.Skip("CONFORMANCE_REPORT not set")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := parseReport(string(data))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("result %s counts %v nodes %d\n%s", rep.Result, rep.Counts, len(rep.Nodes), rep.Summary)
	t.Logf("details:\n%s", tail(rep.failureDetails([]string{"/blob-post-cancel"}, ""), 20))
}
