package glob

import "testing"

func TestMatch(t *testing.T) {
	cases := []struct {
		pattern, name string
		want          bool
	}{
		{"**", "a/b/c", true},
		{"apps/**", "apps/web", true},
		{"apps/**", "apps/web/api", true},
		{"apps/**", "apps", false},
		{"apps/*", "apps/web", true},
		{"apps/*", "apps/web/api", false},
		{"v*.*.*", "v1.2.3", true},
		{"v*.*.*", "v1.2", false},
		{"v*.*.*", "latest", false},
		{"sha-*", "sha-abc123", true},
		{"a?c", "abc", true},
		{"a?c", "a/c", false},
		{"a.c", "abc", false}, // "." is literal
		{"prod", "production", false},
	}
	for _, c := range cases {
		p, err := Compile(c.pattern)
		if err != nil {
			t.Fatalf("Compile(%q): %v", c.pattern, err)
		}
		if got := p.Match(c.name); got != c.want {
			t.Errorf("%q.Match(%q) = %v, want %v", c.pattern, c.name, got, c.want)
		}
	}
	if _, err := Compile(""); err == nil {
		t.Error("Compile(\"\") succeeded")
	}
	var zero Pattern
	if zero.Match("") || zero.Match("x") {
		t.Error("the zero Pattern matched")
	}
	s, err := CompileSet("tags", []string{"latest", "v*"})
	if err != nil {
		t.Fatal(err)
	}
	if !s.Match("v2") || !s.Match("latest") || s.Match("stable") {
		t.Errorf("Set match wrong")
	}
	if _, err := CompileSet("tags", []string{"ok", ""}); err == nil || err.Error() != "tags[1]: empty pattern" {
		t.Errorf("CompileSet error = %v", err)
	}
}
