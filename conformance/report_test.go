package conformance_test

import (
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
	details := rep.failureDetails("")
	for _, s := range []string{"blob-patch-stream: FAIL", "  - blob post failed: unexpected status\n    second line of the error", "get-missing: Skip", "blob-post-cancel: Disabled"} {
		if !strings.Contains(details, s) {
			t.Errorf("failure details lack %q:\n%s", s, details)
		}
	}
	if strings.Contains(details, "ping") {
		t.Errorf("failure details list passing tests:\n%s", details)
	}
}
