package replication

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"

	"github.com/berth-registry/berth/registry/glob"
	"github.com/berth-registry/berth/remote"
	"github.com/berth-registry/berth/transfer"
)

// Config is the sync section of Berth's configuration: the replication
// rules; see docs/sync.md.
type Config struct {
	Rules []RuleConfig `yaml:"rules"`
}

// The directions of a rule.
const (
	// Pull copies from the remote into Berth, on a schedule and on demand.
	Pull = "pull"
	// Push copies what is pushed to Berth to the remote.
	Push = "push"
)

// RuleConfig is one replication rule.
type RuleConfig struct {
	// Name names the rule in commands, logs and history.
	Name string `yaml:"name"`
	// Direction is pull or push.
	Direction string `yaml:"direction"`
	// Remote is the other registry: url, credentials, tls.
	Remote remote.Config `yaml:"remote"`
	// Repositories are glob patterns of the repositories copied: names on
	// the remote for a pull rule (a pattern with a wildcard lists the
	// remote's catalog), local names for a push rule.
	Repositories []string `yaml:"repositories"`
	// Tags are glob patterns of the tags copied; none means every tag.
	Tags []string `yaml:"tags"`
	// Semver, when set, copies only the tags that are semantic versions
	// (a leading v allowed) within this range, such as ">=1.2, <2".
	// Pre-releases count only when the range names one.
	Semver string `yaml:"semver"`
	// SignedOnly copies only the tags whose manifest has a signature: a
	// cosign signature tag, or a referrer that is a cosign, Sigstore or
	// Notary signature.
	SignedOnly bool `yaml:"signedOnly"`
	// Prefix is put before every repository name at the destination, with
	// a slash.
	Prefix string `yaml:"prefix"`
	// Interval is how often a pull rule runs; zero runs it only when
	// asked (berth sync run). Push rules deliver as content arrives.
	Interval time.Duration `yaml:"interval"`
}

// ruleNameRE is what a rule name may be.
var ruleNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// prefixRE is a prefix: the start of a repository name.
var prefixRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	_, err := compile(c)
	return err
}

// rule is a compiled rule.
type rule struct {
	RuleConfig
	repos  glob.Set
	tags   glob.Set
	semver *semver.Constraints
	// literal holds the repository patterns without a wildcard: a pull
	// rule of those alone needs no catalog.
	literal []string
	wild    bool
}

// compile checks and compiles the rules.
func compile(c Config) ([]*rule, error) {
	names := map[string]bool{}
	out := make([]*rule, 0, len(c.Rules))
	for i, rc := range c.Rules {
		at := fmt.Sprintf("sync.rules[%d]", i)
		if !ruleNameRE.MatchString(rc.Name) {
			return nil, fmt.Errorf("%s: name %q: want a short lower-case word (letters, digits, . _ -)", at, rc.Name)
		}
		if names[rc.Name] {
			return nil, fmt.Errorf("%s: name %q used twice", at, rc.Name)
		}
		names[rc.Name] = true
		at = fmt.Sprintf("sync rule %s", rc.Name)
		if rc.Direction != Pull && rc.Direction != Push {
			return nil, fmt.Errorf("%s: direction %q: want pull or push", at, rc.Direction)
		}
		if err := rc.Remote.Validate(at + ": remote"); err != nil {
			return nil, err
		}
		if len(rc.Repositories) == 0 {
			return nil, fmt.Errorf("%s: repositories: at least one pattern is required", at)
		}
		r := &rule{RuleConfig: rc}
		var err error
		if r.repos, err = glob.CompileSet(at+": repositories", rc.Repositories); err != nil {
			return nil, err
		}
		if r.tags, err = glob.CompileSet(at+": tags", rc.Tags); err != nil {
			return nil, err
		}
		for _, p := range rc.Repositories {
			if strings.ContainsAny(p, "*?") {
				r.wild = true
			} else {
				r.literal = append(r.literal, p)
			}
		}
		if rc.Semver != "" {
			if r.semver, err = semver.NewConstraint(rc.Semver); err != nil {
				return nil, fmt.Errorf("%s: semver %q: %w", at, rc.Semver, err)
			}
		}
		r.Prefix = strings.Trim(rc.Prefix, "/")
		if r.Prefix != "" && !prefixRE.MatchString(r.Prefix) {
			return nil, fmt.Errorf("%s: prefix %q: want the start of a repository name, such as mirror/team", at, rc.Prefix)
		}
		if rc.Interval < 0 {
			return nil, fmt.Errorf("%s: interval %s: must not be negative", at, rc.Interval)
		}
		if rc.Interval > 0 && rc.Direction == Push {
			return nil, fmt.Errorf("%s: interval: a push rule delivers as content arrives and runs on no schedule", at)
		}
		out = append(out, r)
	}
	return out, nil
}

// destination is the name of repo (a source name) at the destination.
func (r *rule) destination(repo string) string {
	if r.Prefix == "" {
		return repo
	}
	return r.Prefix + "/" + repo
}

// wantTag reports whether the rule copies tag, before the signature
// check: not one of cosign's (those follow their manifest), matching the
// tag patterns if any, and a version within the range if one is set.
func (r *rule) wantTag(tag string) bool {
	if transfer.IsSignatureTag(tag) {
		return false
	}
	if len(r.tags) > 0 && !r.tags.Match(tag) {
		return false
	}
	if r.semver != nil {
		v, err := semver.NewVersion(tag)
		if err != nil || !r.semver.Check(v) {
			return false
		}
	}
	return true
}

// ErrUnknownRule is returned for a rule name no rule has.
var ErrUnknownRule = errors.New("no such sync rule")
