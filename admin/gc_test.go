package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

func TestAdminGC(t *testing.T) {
	ctx := context.Background()
	s := adminStore(t)
	h := adminHandler(s, nil)
	content := []byte("a blob no manifest references")
	d := digest.FromBytes(content)
	if _, err := s.PutBlob(ctx, "app", d, bytes.NewReader(content), int64(len(content))); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"?grace=soon", "?grace=-1h", "?dryRun=maybe"} {
		if code := adminErrorCode(t, adminDo(t, h, http.MethodPost, GCPath+q, ""), http.StatusBadRequest); code != codeGraceInvalid {
			t.Fatalf("%s: code %s", q, code)
		}
	}
	adminErrorCode(t, adminDo(t, h, http.MethodGet, GCPath, ""), http.StatusMethodNotAllowed)

	run := func(q string) GCResult {
		t.Helper()
		rec := adminDo(t, h, http.MethodPost, GCPath+q, "")
		if rec.Code != http.StatusOK {
			t.Fatalf("POST %s: %d %s", q, rec.Code, rec.Body)
		}
		var res GCResult
		if err := json.Unmarshal(rec.Body.Bytes(), &res); err != nil {
			t.Fatal(err)
		}
		return res
	}
	// The default grace (none configured here: 0) would collect it; an
	// hour's grace keeps it.
	if res := run("?grace=1h"); res.BlobsRemoved != 0 || res.Grace != "1h0m0s" {
		t.Fatalf("grace 1h: %+v", res)
	}
	if res := run("?grace=0s&dryRun=true"); res.BlobsRemoved != 1 || !res.DryRun || res.BytesReclaimed != int64(len(content)) {
		t.Fatalf("dry run: %+v", res)
	}
	if res := run("?grace=0s"); res.BlobsRemoved != 1 || res.LinksRemoved != 1 || res.RepositoriesRemoved != 1 ||
		res.BytesReclaimed != int64(len(content)) || res.Took == "" {
		t.Fatalf("gc: %+v", res)
	}
}

func TestGCConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "berth.yaml")
	if err := os.WriteFile(path, []byte("gc:\n  interval: 6h\n  grace: 2h\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.GC != (GCConfig{Interval: 6 * time.Hour, Grace: 2 * time.Hour}) {
		t.Fatalf("gc config %+v", cfg.GC)
	}
	if def := DefaultConfig().GC; def.Interval != time.Hour || def.Grace != time.Hour {
		t.Fatalf("default gc config %+v", def)
	}
	for _, bad := range []GCConfig{
		{Interval: -time.Second, Grace: time.Hour},
		{Interval: time.Second, Grace: time.Hour},
		{Interval: time.Hour, Grace: time.Second},
		{Interval: 0, Grace: -time.Second},
	} {
		cfg := DefaultConfig()
		cfg.GC = bad
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "gc.") {
			t.Fatalf("%+v: %v", bad, err)
		}
	}
	cfg = DefaultConfig()
	cfg.GC = GCConfig{Interval: 0, Grace: 0}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("schedule off, grace 0: %v", err)
	}
}
