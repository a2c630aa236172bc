package conformance_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/berth-registry/berth/conformance/internal/berthtest"
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
