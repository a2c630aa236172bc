package registry

import (
	"fmt"

	"github.com/berth-registry/berth/registry/glob"
	"github.com/berth-registry/berth/storage"
)

// TagsConfig configures what happens to tags.
type TagsConfig struct {
	// Immutable lists the rules that make tags immutable: once such a tag
	// exists, a push, delete, rollback or promotion that would move it is
	// refused with TAG_IMMUTABLE. Re-pushing the same digest is accepted.
	Immutable []ImmutableRule `yaml:"immutable"`
}

// ImmutableRule makes the tags matching Tags, and not Except, immutable in
// the repositories matching Repositories. Patterns are globs (see
// registry/glob): "v*.*.*", "sha-*", "apps/**".
type ImmutableRule struct {
	Repositories []string `yaml:"repositories"`
	Tags         []string `yaml:"tags"`
	Except       []string `yaml:"except"`
}

type compiledTagRule struct {
	repos, tags, except glob.Set
}

// tagRules implements storage.TagRules for the configured rules.
type tagRules []compiledTagRule

// compileTagRules checks and compiles the immutable tag rules.
func compileTagRules(rules []ImmutableRule) (tagRules, error) {
	var out tagRules
	for i, r := range rules {
		at := fmt.Sprintf("tags.immutable[%d]", i)
		if len(r.Repositories) == 0 {
			return nil, fmt.Errorf("%s: no repositories", at)
		}
		if len(r.Tags) == 0 {
			return nil, fmt.Errorf("%s: no tags", at)
		}
		var c compiledTagRule
		var err error
		if c.repos, err = glob.CompileSet(at+".repositories", r.Repositories); err != nil {
			return nil, err
		}
		if c.tags, err = glob.CompileSet(at+".tags", r.Tags); err != nil {
			return nil, err
		}
		if c.except, err = glob.CompileSet(at+".except", r.Except); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// Immutable reports whether a rule makes tag in repo immutable. The tags
// of the referrers tag-schema fallback (sha256-<hex>.sig, .att, .sbom),
// which cosign and others move as they add signatures, are never release
// tags, so no rule makes them immutable.
func (t tagRules) Immutable(repo, tag string) bool {
	if _, ok := storage.SignatureTag(tag); ok {
		return false
	}
	for _, r := range t {
		if r.repos.Match(repo) && r.tags.Match(tag) && !r.except.Match(tag) {
			return true
		}
	}
	return false
}
