package registry

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestImmutableTagRules(t *testing.T) {
	path := filepath.Join(t.TempDir(), "berth.yaml")
	yaml := `tags:
  immutable:
    - repositories: ["apps/**"]
      tags: ["v*.*.*", "sha-*"]
      except: ["v0.*.*"]
    - repositories: ["base/*"]
      tags: ["**"]
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
	rules, err := compileTagRules(cfg.Tags.Immutable)
	if err != nil {
		t.Fatal(err)
	}
	sig := "sha256-" + strings.Repeat("ab", 32)
	cases := []struct {
		repo, tag string
		want      bool
	}{
		{"apps/web", "v1.2.3", true},
		{"apps/web/api", "sha-0123abc", true},
		{"apps/web", "v0.9.1", false}, // excepted
		{"apps/web", "latest", false},
		{"apps/web", "production", false},
		{"apps/web", "v1.2", false},
		{"other/web", "v1.2.3", false},
		{"base/debian", "bookworm", true},
		{"base/debian", sig + ".sig", false}, // signature tags always move
		{"base/debian", sig + ".att", false},
		{"base/debian", sig + ".sbom", false},
		{"base/debian", sig + ".other", true},
	}
	for _, c := range cases {
		if got := rules.Immutable(c.repo, c.tag); got != c.want {
			t.Errorf("Immutable(%s, %s) = %v, want %v", c.repo, c.tag, got, c.want)
		}
	}
}

func TestImmutableTagRulesRejected(t *testing.T) {
	for _, c := range []struct {
		rule ImmutableRule
		want string
	}{
		{ImmutableRule{Tags: []string{"v*"}}, "tags.immutable[0]: no repositories"},
		{ImmutableRule{Repositories: []string{"**"}}, "tags.immutable[0]: no tags"},
		{ImmutableRule{Repositories: []string{""}, Tags: []string{"v*"}}, "tags.immutable[0].repositories[0]: empty pattern"},
		{ImmutableRule{Repositories: []string{"**"}, Tags: []string{"v*"}, Except: []string{""}}, "tags.immutable[0].except[0]: empty pattern"},
	} {
		cfg := DefaultConfig()
		cfg.Tags.Immutable = []ImmutableRule{c.rule}
		if err := cfg.Validate(); err == nil || err.Error() != c.want {
			t.Errorf("Validate(%+v) = %v, want %q", c.rule, err, c.want)
		}
	}
}
