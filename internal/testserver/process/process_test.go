package process

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// outcome records what Need did to a test, without ending the real one.
type outcome struct {
	testing.TB
	skipped, failed string
}

func (o *outcome) Helper()                          {}
func (o *outcome) Skipf(format string, args ...any) { o.skipped = fmt.Sprintf(format, args...) }
func (o *outcome) Fatalf(format string, args ...any) {
	o.failed = fmt.Sprintf(format, args...)
}

// TestNeed: a missing server skips a test outside CI and fails it in CI,
// naming the server; any other failure fails it everywhere; no error does
// nothing.
func TestNeed(t *testing.T) {
	missing := errors.New("pg is not installed")
	broken := errors.New("pg would not start")
	for _, c := range []struct {
		ci         string
		err        error
		skip, fail bool
	}{
		{"", nil, false, false},
		{"", fmt.Errorf("start: %w", missing), true, false},
		{"true", fmt.Errorf("start: %w", missing), false, true},
		{"", broken, false, true},
		{"true", broken, false, true},
	} {
		t.Run(fmt.Sprintf("CI=%q/%v", c.ci, c.err), func(t *testing.T) {
			t.Setenv("CI", c.ci)
			o := &outcome{TB: t}
			Need(o, "pg", c.err, missing)
			if (o.skipped != "") != c.skip || (o.failed != "") != c.fail {
				t.Fatalf("skipped %q, failed %q; want skip %v, fail %v", o.skipped, o.failed, c.skip, c.fail)
			}
			for _, msg := range []string{o.skipped, o.failed} {
				if msg != "" && !strings.Contains(msg, "testserver/pg") {
					t.Errorf("%q does not name the server", msg)
				}
			}
		})
	}
}
