package proxy

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/berth-registry/berth/remote"
)

// Config is the proxy section of Berth's configuration: the upstream
// registries the pull-through cache serves; see docs/mirror.md.
type Config struct {
	Upstreams []UpstreamConfig `yaml:"upstreams"`
}

// UpstreamConfig is one upstream registry of the pull-through cache.
type UpstreamConfig struct {
	// Name names the upstream in logs, headers and cache records.
	Name string `yaml:"name"`
	// Config is how to reach it: url, credentials, tls.
	remote.Config `yaml:",inline"`
	// Namespace is the local namespace of its repositories: the local
	// repository <namespace>/<name> is the upstream's <name>.
	Namespace string `yaml:"namespace"`
	// RemoteNamespace, when set, is where those repositories are on the
	// upstream: <remoteNamespace>/<name> (for an upstream that is itself a
	// Berth mirror, its namespace of the same upstream).
	RemoteNamespace string `yaml:"remoteNamespace"`
	// Hosts are the registry names containerd may send in the ns query
	// parameter for this upstream (docker.io for Docker Hub); the
	// namespace and the URL's host always count.
	Hosts []string `yaml:"hosts"`
	// TagTTL is how long a tag checked against the upstream is trusted
	// before it is checked again with a HEAD; zero checks on every pull.
	TagTTL time.Duration `yaml:"tagTTL"`
	// Prefetch makes a GET of an image manifest start fetching its config
	// and layers the cache lacks at once, before the client asks for
	// them: their first bytes are then in memory when it does. It costs
	// upstream traffic for layers a client already has and never asks
	// for.
	Prefetch bool `yaml:"prefetch"`
	// Default makes this upstream serve repository names outside every
	// namespace that the registry does not hold (Docker's registry-mirrors
	// asks for library/alpine). At most one upstream is the default.
	Default bool `yaml:"default"`
}

// namespaceRE is a namespace: path components of a repository name.
var namespaceRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	names, spaces := map[string]bool{}, []string{}
	defaults := 0
	for i, u := range c.Upstreams {
		at := fmt.Sprintf("proxy.upstreams[%d]", i)
		if u.Name == "" || strings.ContainsAny(u.Name, " \t\n\";,=") {
			return fmt.Errorf("%s: name %q: a short word is required", at, u.Name)
		}
		if names[u.Name] {
			return fmt.Errorf("%s: name %q used twice", at, u.Name)
		}
		names[u.Name] = true
		if err := u.Config.Validate(at); err != nil {
			return err
		}
		ns := strings.Trim(u.Namespace, "/")
		if !namespaceRE.MatchString(ns) {
			return fmt.Errorf("%s: namespace %q: want the start of a repository name, such as hub or docker.io", at, u.Namespace)
		}
		for _, other := range spaces {
			if ns == other || strings.HasPrefix(ns, other+"/") || strings.HasPrefix(other, ns+"/") {
				return fmt.Errorf("%s: namespace %q overlaps %q", at, ns, other)
			}
		}
		spaces = append(spaces, ns)
		if r := strings.Trim(u.RemoteNamespace, "/"); r != "" && !namespaceRE.MatchString(r) {
			return fmt.Errorf("%s: remoteNamespace %q is no repository name prefix", at, u.RemoteNamespace)
		}
		if u.TagTTL < 0 {
			return fmt.Errorf("%s: tagTTL %s: must not be negative", at, u.TagTTL)
		}
		if u.Default {
			defaults++
		}
	}
	if defaults > 1 {
		return errors.New("proxy.upstreams: at most one upstream may be the default")
	}
	return nil
}

// Namespaced reports whether repo is under the namespace of one of the
// upstreams, where the cache alone writes.
func (c Config) Namespaced(repo string) bool {
	for _, u := range c.Upstreams {
		ns := strings.Trim(u.Namespace, "/")
		if ns != "" && strings.HasPrefix(repo, ns+"/") {
			return true
		}
	}
	return false
}
