package registry

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRetentionConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "berth.yaml")
	yaml := `retention:
  interval: 24h
  policies:
    - repositories: ["apps/critical"]
    - repositories: ["apps/**"]
      keepLast: 10
      keepTags: ["production", "staging*"]
      deleteTagsOlderThan: 2160h
      deleteUntaggedAfter: 168h
      keepPulledWithin: 720h
      evictUnpulledAfter: 720h
`
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	r := cfg.Retention
	if r.Interval != 24*time.Hour || r.HistoryWindow != DefaultHistoryWindow || len(r.Policies) != 2 {
		t.Fatalf("retention = %+v", r)
	}
	policies, err := compileRetention(r)
	if err != nil {
		t.Fatal(err)
	}
	p := policies[1]
	if !p.Repositories.Match("apps/web") || !p.KeepTags.Match("staging-eu") || p.KeepTags.Match("dev") ||
		p.KeepLast != 10 || p.DeleteTagsOlderThan != 2160*time.Hour || p.DeleteUntaggedAfter != 168*time.Hour ||
		p.KeepPulledWithin != 720*time.Hour || p.EvictUnpulledAfter != 720*time.Hour {
		t.Fatalf("compiled policy = %+v", p)
	}

	for bad, want := range map[string]string{
		"keepLast":   `{policies: [{repositories: ["a"], keepLast: -1}]}`,
		"no repos":   `{policies: [{keepLast: 1}]}`,
		"pattern":    `{policies: [{repositories: [""], keepLast: 1}]}`,
		"interval":   `{interval: -1s}`,
		"window":     `{historyWindow: -1h}`,
		"older than": `{policies: [{repositories: ["a"], deleteTagsOlderThan: -1h}]}`,
		"pulled":     `{policies: [{repositories: ["a"], keepPulledWithin: -1h}]}`,
		"unpulled":   `{policies: [{repositories: ["a"], evictUnpulledAfter: -1h}]}`,
	} {
		if err := os.WriteFile(path, []byte("retention: "+want+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := LoadConfig(path, env(nil))
		if err == nil {
			err = cfg.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), "retention") {
			t.Errorf("%s: %v, want a retention error", bad, err)
		}
	}
}
