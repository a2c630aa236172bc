package conformance_test

import (
	"bytes"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/berth-registry/berth/conformance/internal/berthtest"
	"github.com/berth-registry/berth/notify"
	"github.com/berth-registry/berth/registry"
)

// readmeConfigHeader opens the README's configuration block, which claims
// to show every key with its default.
const readmeConfigHeader = "```yaml\n# berth.yaml: every key, with its default\n"

// TestReadmeConfigIsTheDefault loads the README's configuration block as a
// config file: every key in it must still exist (unknown keys are an
// error), and the values it shows must be exactly registry.DefaultConfig,
// so the README cannot drift from the code.
func TestReadmeConfigIsTheDefault(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(berthtest.RepoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(readme), readmeConfigHeader)
	if !ok {
		t.Fatalf("README.md has no block starting %q", readmeConfigHeader)
	}
	block, _, ok = strings.Cut(block, "```")
	if !ok {
		t.Fatal("README.md: the configuration block is not closed")
	}
	path := filepath.Join(t.TempDir(), "berth.yaml")
	if err := os.WriteFile(path, []byte(block), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := registry.LoadConfig(path, func(string) string { return "" })
	if err != nil {
		t.Fatalf("the README's configuration block does not load: %v", err)
	}
	// "[]" in YAML is an empty list, the default a nil one: the same.
	if len(got.Tags.Immutable) == 0 {
		got.Tags.Immutable = nil
	}
	if len(got.Retention.Policies) == 0 {
		got.Retention.Policies = nil
	}
	if len(got.Metrics.Repositories) == 0 {
		got.Metrics.Repositories = nil
	}
	if len(got.Notifications.Endpoints) == 0 {
		got.Notifications.Endpoints = nil
	}
	if len(got.Proxy.Upstreams) == 0 {
		got.Proxy.Upstreams = nil
	}
	if len(got.Sync.Rules) == 0 {
		got.Sync.Rules = nil
	}
	if want := registry.DefaultConfig(); !reflect.DeepEqual(got, want) {
		t.Errorf("the README's configuration block is not the default:\nREADME:  %+v\ndefault: %+v", got, want)
	}
}

// TestOperationsReceiverExample builds the webhook receiver of
// docs/operations.md and runs it on loopback: a request signed as Berth
// signs is accepted, one with a wrong or no signature is refused.
func TestOperationsReceiverExample(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(berthtest.RepoRoot(t), "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "<!-- receiver:")
	if !ok {
		t.Fatal("docs/operations.md has no receiver example")
	}
	_, code, ok := strings.Cut(rest, "```go\n")
	if !ok {
		t.Fatal("docs/operations.md: the receiver example is not a go block")
	}
	code, _, _ = strings.Cut(code, "```")
	dir := t.TempDir()
	writeTestFile(t, filepath.Join(dir, "main.go"), code)
	writeTestFile(t, filepath.Join(dir, "go.mod"), "module receiver\n\ngo 1.22\n")
	bin := filepath.Join(dir, "receiver")
	if err := berthtest.GoBuild(dir, bin, ".", "GOFLAGS=-mod=mod", "GOWORK=off"); err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "ADDR="+addr, "BERTH_WEBHOOK_SECRET=doc-secret")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	body := []byte(`{"specversion":"1.0","id":"e1"}`)
	post := func(sig string) int {
		req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/hook", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if sig != "" {
			req.Header.Set(notify.SignatureHeader, sig)
		}
		req.Header.Set(notify.EventIDHeader, "e1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	eventually(t, "the example receiver listening", func() bool { return post("") != 0 })
	if got := post(notify.Sign([]byte("doc-secret"), body)); got != http.StatusNoContent {
		t.Errorf("signed request: %d, want 204\n%s", got, out.String())
	}
	for _, bad := range []string{"", notify.Sign([]byte("other"), body), "sha256=00"} {
		if got := post(bad); got != http.StatusUnauthorized {
			t.Errorf("request signed %q: %d, want 401", bad, got)
		}
	}
}

// TestScaleOutConfigLoads loads docs/scale-out.md's complete configuration,
// with the secrets its environment gives: every key in it must exist and
// every value be valid, so the page cannot drift from the code.
func TestScaleOutConfigLoads(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(berthtest.RepoRoot(t), "docs", "scale-out.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := bytes.Cut(doc, []byte("```yaml\n"))
	if !ok {
		t.Fatal("docs/scale-out.md has no yaml block")
	}
	block, _, ok := bytes.Cut(rest, []byte("```"))
	if !ok {
		t.Fatal("docs/scale-out.md: the yaml block is not closed")
	}
	path := filepath.Join(t.TempDir(), "berth.yaml")
	if err := os.WriteFile(path, block, 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"BERTH_S3_ACCESS_KEY": "access", "BERTH_S3_SECRET_KEY": "secret",
		"BERTH_POSTGRES_DSN": "postgres://berth:pw@db.internal.example:5432/berth?sslmode=verify-full",
		"BERTH_HTTP_SECRET":  "sixteen or more random characters",
	}
	cfg, err := registry.LoadConfig(path, func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("load docs/scale-out.md's configuration: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("docs/scale-out.md's configuration: %v", err)
	}
	if cfg.Storage.Index.Postgres == nil || cfg.Storage.Blobs.S3 == nil || cfg.HTTP.Secret == "" {
		t.Errorf("docs/scale-out.md's configuration does not set the index, the bucket and the secret: %+v", cfg.Storage)
	}
}
