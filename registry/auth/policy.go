package auth

import (
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/berth-registry/berth/registry/glob"
)

// Kind is the kind of caller a request comes from.
type Kind int

// The kinds of caller.
const (
	Anonymous Kind = iota
	User
	Robot
)

func (k Kind) String() string {
	switch k {
	case User:
		return "user"
	case Robot:
		return "robot"
	}
	return "anonymous"
}

// Identity is who a request comes from.
type Identity struct {
	Kind Kind
	// Name is the user or robot name; empty for anonymous.
	Name string
	// Scopes bound what a robot may do, whatever the rules say.
	Scopes []Scope
}

// String names the identity as it appears in logs and history:
// "user:alice", "robot:ci", "anonymous".
func (id Identity) String() string {
	if id.Kind == Anonymous {
		return "anonymous"
	}
	return id.Kind.String() + ":" + id.Name
}

// Scope is one access request or grant in the token format:
// repository:<name-or-pattern>:<actions>, or registry:catalog:*.
type Scope struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

func (s Scope) String() string {
	return s.Type + ":" + s.Name + ":" + strings.Join(s.Actions, ",")
}

// ParseScope reads "repository:apps/web:pull,push". The name may itself
// contain colons only as a registry host:port prefix, which Berth does not
// use, so the first and last colons split the parts.
func ParseScope(s string) (Scope, error) {
	first := strings.Index(s, ":")
	last := strings.LastIndex(s, ":")
	if first < 0 || first == last {
		return Scope{}, fmt.Errorf("scope %q: want type:name:actions", s)
	}
	sc := Scope{Type: s[:first], Name: s[first+1 : last]}
	for _, a := range strings.Split(s[last+1:], ",") {
		if a = strings.TrimSpace(a); a != "" {
			sc.Actions = append(sc.Actions, a)
		}
	}
	switch sc.Type {
	case "repository":
		if err := validActions(sc.Actions); err != nil {
			return Scope{}, fmt.Errorf("scope %q: %w", s, err)
		}
	case "registry":
		if sc.Name != "catalog" {
			return Scope{}, fmt.Errorf("scope %q: only registry:catalog:* is known", s)
		}
	default:
		return Scope{}, fmt.Errorf("scope %q: unknown type %q", s, sc.Type)
	}
	return sc, nil
}

func validSubject(s string) error {
	switch {
	case s == "anonymous", s == "authenticated":
		return nil
	case strings.HasPrefix(s, "user:"), strings.HasPrefix(s, "group:"):
		if strings.TrimSpace(s[strings.Index(s, ":")+1:]) == "" {
			return fmt.Errorf("subject %q has no name", s)
		}
		return nil
	}
	return fmt.Errorf("unknown subject %q (want user:NAME, group:NAME, authenticated or anonymous)", s)
}

type compiledRule struct {
	patterns []glob.Pattern
	grants   map[string][]string
}

// Policy decides what an identity may do on a repository. It is built once
// from the configuration and never changes; a reload builds a new one.
type Policy struct {
	// patterns caches compiled robot scope patterns: a robot's scopes are
	// checked on every request it makes.
	patterns sync.Map // pattern -> glob
	rules    []compiledRule
	admins   map[string]bool
	groups   map[string][]string // user -> groups
	dflt     []string
	enabled  bool
}

// NewPolicy compiles the rules of cfg.
func NewPolicy(cfg Config) (*Policy, error) {
	p := &Policy{admins: map[string]bool{}, groups: map[string][]string{}, dflt: cfg.Default, enabled: cfg.Enabled()}
	for _, a := range cfg.Admins {
		p.admins[a] = true
	}
	for g, members := range cfg.Groups {
		for _, m := range members {
			p.groups[m] = append(p.groups[m], g)
		}
	}
	for i, r := range cfg.Rules {
		cr := compiledRule{grants: r.Grants}
		for _, pat := range r.Repositories {
			g, err := glob.Compile(pat)
			if err != nil {
				return nil, fmt.Errorf("auth.rules[%d]: repository %w", i, err)
			}
			cr.patterns = append(cr.patterns, g)
		}
		p.rules = append(p.rules, cr)
	}
	return p, nil
}

// IsAdmin reports whether id is an administrator.
func (p *Policy) IsAdmin(id Identity) bool { return id.Kind == User && p.admins[id.Name] }

// Allowed reports whether id may do action on repository repo.
func (p *Policy) Allowed(id Identity, repo, action string) bool {
	if !p.enabled {
		return true
	}
	if p.IsAdmin(id) {
		return true
	}
	if id.Kind == Robot {
		// A robot may do exactly what its scopes say (an admin chose them
		// when creating it): not what the rules give anonymous callers,
		// which would widen every robot whenever a rule opens a
		// repository to anyone.
		return p.scopesAllow(id.Scopes, repo, action)
	}
	return slices.ContainsFunc(p.actions(id, repo), func(a string) bool { return a == action || a == "*" })
}

// actions lists what the rules give id on repo.
func (p *Policy) actions(id Identity, repo string) []string {
	for _, r := range p.rules {
		if !slices.ContainsFunc(r.patterns, func(g glob.Pattern) bool { return g.Match(repo) }) {
			continue
		}
		var out []string
		out = append(out, r.grants["anonymous"]...)
		switch id.Kind {
		case User:
			out = append(out, r.grants["authenticated"]...)
			out = append(out, r.grants["user:"+id.Name]...)
			for _, g := range p.groups[id.Name] {
				out = append(out, r.grants["group:"+g]...)
			}
		}
		return out
	}
	if id.Kind == Anonymous {
		return nil
	}
	return p.dflt
}

// Grant narrows a requested scope to what id may do: the token service
// puts the result in the token it issues.
func (p *Policy) Grant(id Identity, want Scope) Scope {
	got := Scope{Type: want.Type, Name: want.Name}
	switch want.Type {
	case "registry":
		// Anyone may list the catalog; the listing is filtered to what
		// the caller may pull.
		got.Actions = slices.Clone(want.Actions)
	case "repository":
		for _, a := range want.Actions {
			if p.Allowed(id, want.Name, a) {
				got.Actions = append(got.Actions, a)
			}
		}
	}
	return got
}

// scopesAllow reports whether any scope grants action on repo; scope names
// may be patterns.
func (p *Policy) scopesAllow(scopes []Scope, repo, action string) bool {
	for _, s := range scopes {
		if s.Type != "repository" {
			continue
		}
		g, ok := p.pattern(s.Name)
		if !ok || !g.Match(repo) {
			continue
		}
		if slices.Contains(s.Actions, action) || slices.Contains(s.Actions, "*") {
			return true
		}
	}
	return false
}

// pattern returns the compiled form of a scope pattern, compiling it once.
func (p *Policy) pattern(pat string) (glob.Pattern, bool) {
	if g, ok := p.patterns.Load(pat); ok {
		return g.(glob.Pattern), true
	}
	g, err := glob.Compile(pat)
	if err != nil {
		return glob.Pattern{}, false
	}
	p.patterns.Store(pat, g)
	return g, true
}
