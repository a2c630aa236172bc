package registry

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestDefaultsWithNothingSet(t *testing.T) {
	cfg, err := LoadConfig("", env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Addr != "127.0.0.1:5000" || cfg.Data != "./data" {
		t.Fatalf("defaults: addr %q data %q", cfg.Addr, cfg.Data)
	}
	if cfg.Limits.MaxManifestBytes != 4<<20 {
		t.Fatalf("default manifest limit %d", cfg.Limits.MaxManifestBytes)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
}

func TestFileThenEnvironment(t *testing.T) {
	path := filepath.Join(t.TempDir(), "berth.yaml")
	yaml := `addr: 127.0.0.1:6000
data: /srv/berth
log:
  level: debug
  format: json
limits:
  maxManifestBytes: 1048576
http:
  readHeaderTimeout: 3s
  shutdownTimeout: 1m
`
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Addr != "127.0.0.1:6000" || cfg.Data != "/srv/berth" || cfg.Log.Level != "debug" || cfg.Log.Format != "json" {
		t.Fatalf("file values not applied: %+v", cfg)
	}
	if cfg.Limits.MaxManifestBytes != 1<<20 || cfg.HTTP.ReadHeaderTimeout != 3*time.Second || cfg.HTTP.ShutdownTimeout != time.Minute {
		t.Fatalf("file limits/timeouts not applied: %+v", cfg)
	}
	if cfg.HTTP.IdleTimeout != DefaultConfig().HTTP.IdleTimeout {
		t.Fatalf("unset key lost its default: %v", cfg.HTTP.IdleTimeout)
	}
	cfg, err = LoadConfig(path, env(map[string]string{
		"BERTH_ADDR": "127.0.0.1:7000", "BERTH_DATA": "/tmp/x", "BERTH_MAX_MANIFEST_BYTES": "2048",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Addr != "127.0.0.1:7000" || cfg.Data != "/tmp/x" || cfg.Limits.MaxManifestBytes != 2048 {
		t.Fatalf("environment does not override the file: %+v", cfg)
	}
	if cfg.Log.Level != "debug" {
		t.Fatalf("file value lost when env does not set it: %q", cfg.Log.Level)
	}
}

func TestEmptyFileMeansDefaults(t *testing.T) {
	path := filepath.Join(t.TempDir(), "empty.yaml")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, DefaultConfig()) {
		t.Fatalf("empty file changed the defaults: %+v", cfg)
	}
}

func TestBadConfiguration(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name string
		path string
		env  map[string]string
		want string
	}{
		{"unknown key", write("typo.yaml", "adr: 127.0.0.1:1\n"), nil, "adr"},
		{"not yaml", write("bad.yaml", "addr: [\n"), nil, "parse config"},
		{"missing file", filepath.Join(dir, "nope.yaml"), nil, "read config"},
		{"bad env number", "", map[string]string{"BERTH_MAX_MANIFEST_BYTES": "lots"}, "BERTH_MAX_MANIFEST_BYTES"},
		{"bad addr", "", map[string]string{"BERTH_ADDR": "localhost"}, "addr"},
		{"bad level", "", map[string]string{"BERTH_LOG_LEVEL": "loud"}, "log.level"},
		{"bad format", "", map[string]string{"BERTH_LOG_FORMAT": "xml"}, "log.format"},
		{"zero limit", write("zero.yaml", "limits:\n  maxManifestBytes: 0\n"), nil, "maxManifestBytes"},
		{"short secret", "", map[string]string{"BERTH_HTTP_SECRET": "hunter2"}, "http.secret"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := LoadConfig(tc.path, env(tc.env))
			if err == nil {
				err = cfg.Validate()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an error mentioning %q, got %v", tc.want, err)
			}
		})
	}
}

func TestBareNumberDurationNamesTheFix(t *testing.T) {
	path := filepath.Join(t.TempDir(), "berth.yaml")
	if err := os.WriteFile(path, []byte("gc:\n  interval: 0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadConfig(path, env(nil))
	if err == nil || !strings.Contains(err.Error(), "write durations with a unit: 0s") {
		t.Fatalf("LoadConfig with interval: 0 = %v, want an error naming the fix", err)
	}
}

func TestUIConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "berth.yaml")
	if err := os.WriteFile(path, []byte("ui:\n  enabled: false\n  environments: [qa, live]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.UI.Enabled || !reflect.DeepEqual(cfg.UI.Environments, []string{"qa", "live"}) {
		t.Errorf("ui = %+v, want off with columns qa, live", cfg.UI)
	}
	cfg.UI.Environments = []string{"qa", "qa"}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "ui.environments") {
		t.Errorf("a column listed twice: %v", err)
	}
	if d := DefaultConfig().UI; !d.Enabled || len(d.Environments) != 3 {
		t.Errorf("default ui = %+v, want on with three columns", d)
	}
}
