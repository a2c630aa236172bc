package replication

import (
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/remote"
)

// TestCompile: every setting that cannot work is refused with a message
// naming it; a good rule compiles.
func TestCompile(t *testing.T) {
	good := func() RuleConfig {
		return RuleConfig{Name: "base", Direction: Pull, Remote: remote.Config{URL: "https://registry.example.com"},
			Repositories: []string{"base/*"}}
	}
	for _, tc := range []struct {
		name string
		edit func(*RuleConfig)
		want string // in the error; empty: no error
	}{
		{"a good rule", func(*RuleConfig) {}, ""},
		{"a push rule", func(r *RuleConfig) { r.Direction = Push; r.Prefix = "/dr/" }, ""},
		{"no name", func(r *RuleConfig) { r.Name = "" }, "name"},
		{"a name with a space", func(r *RuleConfig) { r.Name = "my rule" }, "name"},
		{"upper case", func(r *RuleConfig) { r.Name = "Base" }, "name"},
		{"no direction", func(r *RuleConfig) { r.Direction = "" }, "direction"},
		{"a sideways direction", func(r *RuleConfig) { r.Direction = "both" }, "direction"},
		{"no url", func(r *RuleConfig) { r.Remote.URL = "" }, "url"},
		{"a url with a path", func(r *RuleConfig) { r.Remote.URL = "https://h/v2/" }, "url"},
		{"no repositories", func(r *RuleConfig) { r.Repositories = nil }, "repositories"},
		{"an empty pattern", func(r *RuleConfig) { r.Repositories = []string{""} }, "repositories"},
		{"an empty tag pattern", func(r *RuleConfig) { r.Tags = []string{""} }, "tags"},
		{"a bad range", func(r *RuleConfig) { r.Semver = ">=banana" }, "semver"},
		{"a bad prefix", func(r *RuleConfig) { r.Prefix = "Up/Case" }, "prefix"},
		{"a negative interval", func(r *RuleConfig) { r.Interval = -time.Second }, "interval"},
		{"a push rule on a schedule", func(r *RuleConfig) { r.Direction = Push; r.Interval = time.Hour }, "interval"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := good()
			tc.edit(&r)
			err := Config{Rules: []RuleConfig{r}}.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("error %v; want one about %s", err, tc.want)
			}
		})
	}
	if err := (Config{Rules: []RuleConfig{good(), good()}}).Validate(); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("two rules of one name: %v", err)
	}
}

// TestWantTag: the tags a rule selects by its tag patterns and semver
// range; cosign's tags never count on their own.
func TestWantTag(t *testing.T) {
	sig := "sha256-" + strings.Repeat("a", 64) + ".sig"
	for _, tc := range []struct {
		name   string
		tags   []string
		semver string
		yes    []string
		no     []string
	}{
		{name: "no filter takes every tag", yes: []string{"latest", "1.0", "v2.3.4", "main"}, no: []string{sig}},
		{name: "globs", tags: []string{"v*", "stable"}, yes: []string{"v1", "v2.0.0", "stable"}, no: []string{"latest", "stable-1", "1.0.0", sig}},
		{name: "a range takes the versions within it", semver: ">=1.2.0, <2.0.0",
			yes: []string{"1.2.0", "1.9.9", "v1.5.3", "1.4", "1.3"},
			no:  []string{"1.1.9", "2.0.0", "v2.1.0", "latest", "1.6.0-rc.1", "main", sig}},
		{name: "a range naming a pre-release takes the pre-releases within it", semver: ">=1.6.0-rc.0, <1.7.0",
			yes: []string{"1.6.0-rc.1", "1.6.0", "1.6.5", "1.7.0-rc.1"}, no: []string{"1.7.0", "1.5.0", "1.6.0-alpha"}},
		{name: "tilde", semver: "~1.4", yes: []string{"1.4.0", "1.4.9"}, no: []string{"1.5.0", "1.3.9"}},
		{name: "globs and a range together", tags: []string{"v*"}, semver: "^2", yes: []string{"v2.0.0", "v2.9"}, no: []string{"2.1.0", "v3.0.0", "v1.0.0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rules, err := compile(Config{Rules: []RuleConfig{{Name: "r", Direction: Pull, Remote: remote.Config{URL: "http://127.0.0.1:1"},
				Repositories: []string{"a"}, Tags: tc.tags, Semver: tc.semver}}})
			if err != nil {
				t.Fatal(err)
			}
			for _, tag := range tc.yes {
				if !rules[0].wantTag(tag) {
					t.Errorf("%s is left out", tag)
				}
			}
			for _, tag := range tc.no {
				if rules[0].wantTag(tag) {
					t.Errorf("%s is taken", tag)
				}
			}
		})
	}
}

// TestDestination: the prefix goes before the name; literal patterns need
// no catalog.
func TestDestination(t *testing.T) {
	rules, err := compile(Config{Rules: []RuleConfig{{Name: "r", Direction: Pull, Remote: remote.Config{URL: "http://127.0.0.1:1"},
		Repositories: []string{"team/app", "base/**"}, Prefix: "/mirror/"}}})
	if err != nil {
		t.Fatal(err)
	}
	r := rules[0]
	if got := r.destination("team/app"); got != "mirror/team/app" {
		t.Errorf("destination = %s", got)
	}
	if !r.wild || len(r.literal) != 1 || r.literal[0] != "team/app" {
		t.Errorf("literal %v, wild %v; want [team/app] and a wildcard", r.literal, r.wild)
	}
}
