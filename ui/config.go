package ui

import (
	"fmt"
	"regexp"
)

// Config is the ui section of Berth's configuration.
type Config struct {
	// Enabled serves the web interface at /ui/; on by default.
	Enabled bool `yaml:"enabled"`
	// Environments are the tags of the release board's columns, in the
	// order a release moves through them: promoting copies the digest a
	// column's tag names to the next column's tag, in the same
	// repository.
	Environments []string `yaml:"environments"`
}

// DefaultConfig is the web interface with nothing configured: on, with
// the columns staging-validated, production-ready and production.
func DefaultConfig() Config {
	return Config{Enabled: true, Environments: []string{"staging-validated", "production-ready", "production"}}
}

// tagRE is the specification's grammar of a tag.
var tagRE = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	seen := map[string]bool{}
	for _, env := range c.Environments {
		if !tagRE.MatchString(env) {
			return fmt.Errorf("ui.environments: %q is not a valid tag", env)
		}
		if seen[env] {
			return fmt.Errorf("ui.environments: %q is listed twice", env)
		}
		seen[env] = true
	}
	return nil
}
