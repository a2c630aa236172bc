package health_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-registry/berth/registry/health"
)

// A probe that hangs is waited for no longer than the timeout and not
// started again while it runs; a failing one says only "failed"; Drain
// makes the server unready; only GET and HEAD are answered.
func TestChecker(t *testing.T) {
	var starts atomic.Int64
	release := make(chan struct{})
	defer close(release)
	var fail atomic.Bool
	c := health.New(50*time.Millisecond, nil,
		health.Probe{Name: "slow", Check: func(ctx context.Context) error {
			starts.Add(1)
			<-release
			return nil
		}},
		health.Probe{Name: "flaky", Check: func(context.Context) error {
			if fail.Load() {
				return errors.New("disk /secret/path unreadable")
			}
			return nil
		}},
	)
	serve := func(method, path string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h := c.ReadyHandler()
		if path == health.LivePath {
			h = c.Live()
		}
		h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
		return rec
	}
	for range 3 {
		rec := serve(http.MethodGet, health.ReadyPath)
		if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), `"slow":"timeout"`) {
			t.Errorf("/readyz with a hung probe: %d %s", rec.Code, rec.Body)
		}
	}
	if n := starts.Load(); n != 1 {
		t.Errorf("the hung probe was started %d times", n)
	}
	fail.Store(true)
	rec := serve(http.MethodGet, health.ReadyPath)
	if !strings.Contains(rec.Body.String(), `"flaky":"failed"`) || strings.Contains(rec.Body.String(), "secret") {
		t.Errorf("/readyz with a failing probe: %s", rec.Body)
	}
	if rec := serve(http.MethodHead, health.LivePath); rec.Code != http.StatusOK || rec.Body.Len() != 0 {
		t.Errorf("HEAD /healthz: %d %q", rec.Code, rec.Body)
	}
	if rec := serve(http.MethodPost, health.LivePath); rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /healthz: %d", rec.Code)
	}
	c.Drain()
	if !c.Draining() {
		t.Error("Draining after Drain is false")
	}
}

// With every probe passing and no drain, the server is ready.
func TestReady(t *testing.T) {
	c := health.New(0, nil, health.Probe{Name: "ok", Check: func(context.Context) error { return nil }})
	if ok, res := c.Ready(context.Background()); !ok || res["ok"] != nil {
		t.Errorf("Ready = %v, %v", ok, res)
	}
	c.Drain()
	if ok, _ := c.Ready(context.Background()); ok {
		t.Error("ready while draining")
	}
}
