package auth

import (
	"errors"
	"fmt"
	"time"

	"github.com/berth-registry/berth/registry/glob"
)

// Actions a rule can grant on a repository.
const (
	ActionPull   = "pull"
	ActionPush   = "push"
	ActionDelete = "delete"
)

// Config is the auth section of Berth's configuration. Authentication is
// on when Htpasswd is set; with it unset every request is anonymous and
// allowed, which is how Berth runs on a developer's loopback.
type Config struct {
	// Htpasswd is the path of the users file: one "name:bcrypt-hash" line
	// per user. Hashes other than bcrypt are refused at start.
	Htpasswd string `yaml:"htpasswd"`
	// Groups maps a group name to its members.
	Groups map[string][]string `yaml:"groups"`
	// Admins may do everything, everywhere, including the catalog.
	Admins []string `yaml:"admins"`
	// Rules grant actions on repositories; the first rule whose pattern
	// matches a repository decides for it.
	Rules []Rule `yaml:"rules"`
	// Default is what authenticated users may do on a repository that no
	// rule matches; anonymous callers get nothing there.
	Default []string `yaml:"default"`
	// Token configures the token service.
	Token TokenConfig `yaml:"token"`
	// Login bounds failed logins.
	Login LoginConfig `yaml:"login"`
}

// Rule grants actions on the repositories matching any of its patterns.
type Rule struct {
	// Repositories are glob patterns: "*" matches within one path
	// segment, "**" across segments ("team-a/**").
	Repositories []string `yaml:"repositories"`
	// Grants maps a subject to the actions it gets: "user:NAME",
	// "group:NAME", "authenticated" or "anonymous". Robots are not named
	// here: a robot token carries its own scopes.
	Grants map[string][]string `yaml:"grants"`
}

// TokenConfig configures the JWTs the token service issues.
type TokenConfig struct {
	// Issuer is the iss claim; default "berth".
	Issuer string `yaml:"issuer"`
	// Service is the service name clients ask tokens for and the aud
	// claim; default "berth".
	Service string `yaml:"service"`
	// Lifetime is how long an access token is valid; default 5m.
	Lifetime time.Duration `yaml:"lifetime"`
	// Realm is the token endpoint URL put in challenges; by default it is
	// derived from the request: <scheme>://<host>/auth/token.
	Realm string `yaml:"realm"`
}

// LoginConfig bounds failed logins per client address and per user.
type LoginConfig struct {
	// MaxFailures is how many failures are tolerated within Window before
	// further attempts are refused with 429; default 10.
	MaxFailures int `yaml:"maxFailures"`
	// Window is the period failures are counted over; default 1m.
	Window time.Duration `yaml:"window"`
}

// Enabled reports whether authentication is configured.
func (c Config) Enabled() bool { return c.Htpasswd != "" }

// WithDefaults returns c with unset token and login settings filled in.
func (c Config) WithDefaults() Config {
	if c.Token.Issuer == "" {
		c.Token.Issuer = "berth"
	}
	if c.Token.Service == "" {
		c.Token.Service = "berth"
	}
	if c.Token.Lifetime == 0 {
		c.Token.Lifetime = 5 * time.Minute
	}
	if c.Login.MaxFailures == 0 {
		c.Login.MaxFailures = 10
	}
	if c.Login.Window == 0 {
		c.Login.Window = time.Minute
	}
	return c
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	if !c.Enabled() {
		if len(c.Rules) > 0 || len(c.Admins) > 0 {
			return errors.New("auth: rules and admins need auth.htpasswd")
		}
		return nil
	}
	for i, r := range c.Rules {
		if len(r.Repositories) == 0 {
			return fmt.Errorf("auth.rules[%d]: no repositories", i)
		}
		for _, p := range r.Repositories {
			if _, err := glob.Compile(p); err != nil {
				return fmt.Errorf("auth.rules[%d]: %w", i, err)
			}
		}
		for subj, actions := range r.Grants {
			if err := validSubject(subj); err != nil {
				return fmt.Errorf("auth.rules[%d]: %w", i, err)
			}
			if err := validActions(actions); err != nil {
				return fmt.Errorf("auth.rules[%d] %s: %w", i, subj, err)
			}
		}
	}
	if err := validActions(c.Default); err != nil {
		return fmt.Errorf("auth.default: %w", err)
	}
	if c.Token.Lifetime < 0 || c.Token.Lifetime > time.Hour {
		return fmt.Errorf("auth.token.lifetime %s: want up to 1h", c.Token.Lifetime)
	}
	return nil
}

func validActions(actions []string) error {
	for _, a := range actions {
		switch a {
		case ActionPull, ActionPush, ActionDelete, "*":
		default:
			return fmt.Errorf("unknown action %q (want pull, push, delete or *)", a)
		}
	}
	return nil
}
