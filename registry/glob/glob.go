// Package glob matches repository and tag names against the patterns of
// Berth's configuration: access rules, immutable tags and retention.
//
// A pattern is literal text with three wildcards: "**" matches any run of
// characters including "/", "*" any run of characters other than "/", and
// "?" one character other than "/". A pattern matches a whole name, never
// a part of one.
package glob

import (
	"fmt"
	"regexp"
	"strings"
)

// Pattern is a compiled pattern. The zero Pattern matches nothing.
type Pattern struct {
	text string
	re   *regexp.Regexp
}

// Compile compiles a pattern; the empty pattern is an error.
func Compile(p string) (Pattern, error) {
	if p == "" {
		return Pattern{}, fmt.Errorf("empty pattern")
	}
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(p); i++ {
		switch {
		case strings.HasPrefix(p[i:], "**"):
			b.WriteString(".*")
			i++
		case p[i] == '*':
			b.WriteString("[^/]*")
		case p[i] == '?':
			b.WriteString("[^/]")
		default:
			b.WriteString(regexp.QuoteMeta(p[i : i+1]))
		}
	}
	b.WriteString("$")
	re, err := regexp.Compile(b.String())
	if err != nil {
		return Pattern{}, fmt.Errorf("pattern %q: %w", p, err)
	}
	return Pattern{text: p, re: re}, nil
}

// Match reports whether name matches the whole pattern.
func (p Pattern) Match(name string) bool { return p.re != nil && p.re.MatchString(name) }

// String returns the pattern as written.
func (p Pattern) String() string { return p.text }

// Set is a list of patterns that matches a name when any of them does.
type Set []Pattern

// CompileSet compiles each pattern; what names the configuration field
// they come from, for the error.
func CompileSet(what string, patterns []string) (Set, error) {
	out := make(Set, 0, len(patterns))
	for i, s := range patterns {
		p, err := Compile(s)
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %w", what, i, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// Match reports whether any pattern of the set matches name.
func (s Set) Match(name string) bool {
	for _, p := range s {
		if p.Match(name) {
			return true
		}
	}
	return false
}
