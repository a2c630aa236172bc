package registry

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-registry/berth/storage/meta"
)

// unreachableIndex is an index whose Views hang until released, or fail,
// as a database that does not answer would.
type unreachableIndex struct {
	meta.Store
	release chan struct{}
	fail    atomic.Bool
}

func (s *unreachableIndex) View(ctx context.Context, fn func(meta.Tx) error) error {
	if s.fail.Load() {
		return errors.New("connection refused")
	}
	select {
	case <-s.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.Store.View(ctx, fn)
}

// TestReadinessFollowsTheIndex: /readyz answers 503 within its timeout
// while the index does not answer, and while it fails, and 200 again once
// it answers; /healthz stays 200 throughout.
func TestReadinessFollowsTheIndex(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Data = t.TempDir()
	cfg.Health.Timeout = 200 * time.Millisecond
	srv, err := New(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	backend := srv.store.Index
	t.Cleanup(func() { _ = backend.Close() })
	probe := func(path string) (int, map[string]string) {
		t.Helper()
		rec := httptest.NewRecorder()
		srv.http.Handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		var body struct {
			Checks map[string]string `json:"checks"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("%s: %v: %s", path, err, rec.Body.String())
		}
		return rec.Code, body.Checks
	}
	if code, checks := probe("/readyz"); code != http.StatusOK || checks["index"] != "ok" {
		t.Fatalf("/readyz with the index answering: %d %v", code, checks)
	}

	hung := &unreachableIndex{Store: backend, release: make(chan struct{})}
	srv.store.Index = hung
	start := time.Now()
	code, checks := probe("/readyz")
	if code != http.StatusServiceUnavailable || checks["index"] != "timeout" || checks["blobs"] != "ok" {
		t.Errorf("/readyz with the index hung: %d %v", code, checks)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("/readyz took %s with a timeout of %s", took, cfg.Health.Timeout)
	}
	// A probe still running is joined, not started again.
	if code, _ := probe("/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz again with the index hung: %d", code)
	}
	if code, _ := probe("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz with the index hung: %d", code)
	}
	// The hung runs end at their timeout; the next probe runs afresh.
	time.Sleep(2 * cfg.Health.Timeout)
	hung.fail.Store(true)
	if code, checks := probe("/readyz"); code != http.StatusServiceUnavailable || checks["index"] != "failed" {
		t.Errorf("/readyz with the index failing: %d %v", code, checks)
	}
	hung.fail.Store(false)
	close(hung.release)
	if code, checks := probe("/readyz"); code != http.StatusOK || checks["index"] != "ok" {
		t.Errorf("/readyz with the index back: %d %v", code, checks)
	}
	srv.health.Drain()
	if code, checks := probe("/readyz"); code != http.StatusServiceUnavailable || checks["server"] != "shutting down" {
		t.Errorf("/readyz while draining: %d %v", code, checks)
	}
}
