package registry

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/storage"
)

func TestGCConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "berth.yaml")
	if err := os.WriteFile(path, []byte("gc:\n  interval: 6h\n  grace: 2h\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.GC != (GCConfig{Interval: 6 * time.Hour, Grace: 2 * time.Hour, SeenRefresh: storage.DefaultSeenRefresh}) {
		t.Fatalf("gc config %+v", cfg.GC)
	}
	if def := DefaultConfig().GC; def.Interval != time.Hour || def.Grace != time.Hour {
		t.Fatalf("default gc config %+v", def)
	}
	r := storage.DefaultSeenRefresh
	for _, bad := range []GCConfig{
		{Interval: -time.Second, Grace: time.Hour, SeenRefresh: r},
		{Interval: time.Second, Grace: time.Hour, SeenRefresh: r},
		{Interval: time.Hour, Grace: time.Second, SeenRefresh: r},
		{Interval: 0, Grace: -time.Second, SeenRefresh: r},
		{Interval: time.Hour, Grace: time.Hour, SeenRefresh: 0},
		// A lookup could not protect its link for long enough.
		{Interval: time.Hour, Grace: 3 * time.Minute, SeenRefresh: time.Minute},
	} {
		cfg := DefaultConfig()
		cfg.GC = bad
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "gc.") {
			t.Fatalf("%+v: %v", bad, err)
		}
	}
	cfg = DefaultConfig()
	cfg.GC = GCConfig{Interval: 0, Grace: 0, SeenRefresh: r}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("schedule off, grace 0: %v", err)
	}
}
