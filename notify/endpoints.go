package notify

import (
	"slices"
	"time"

	"github.com/berth-registry/berth/registry/glob"
	"github.com/berth-registry/berth/storage"
)

// Endpoints are the compiled endpoints of a configuration. They are the
// storage core's Outbox: they decide, inside the transaction of a change,
// which endpoints each of its events goes to.
type Endpoints struct {
	list   []*endpoint
	byName map[string]*endpoint
	source string
	poll   time.Duration
}

// endpoint is one compiled endpoint.
type endpoint struct {
	name        string
	url         string
	format      string
	secret      []byte
	headers     map[string]string
	timeout     time.Duration
	maxAttempts int
	backoff     time.Duration
	maxBackoff  time.Duration
	concurrency int
	actions     []string
	repos       glob.Set
	tags        glob.Set
}

var _ storage.Outbox = (*Endpoints)(nil)

// Endpoints returns the names of the endpoints whose filters pass e, in
// the order of the configuration.
func (eps *Endpoints) Endpoints(e storage.Event) []string {
	var out []string
	for _, ep := range eps.list {
		if ep.wants(e) {
			out = append(out, ep.name)
		}
	}
	return out
}

// Names returns the names of the endpoints, in the order of the
// configuration.
func (eps *Endpoints) Names() []string {
	out := make([]string, 0, len(eps.list))
	for _, ep := range eps.list {
		out = append(out, ep.name)
	}
	return out
}

// Len is the number of endpoints.
func (eps *Endpoints) Len() int { return len(eps.list) }

// wants reports whether the endpoint's filters pass e.
func (ep *endpoint) wants(e storage.Event) bool {
	if len(ep.actions) > 0 && !slices.Contains(ep.actions, e.Action) {
		return false
	}
	if len(ep.repos) > 0 && (e.Repo == "" || !ep.repos.Match(e.Repo)) {
		return false
	}
	if len(ep.tags) > 0 && (e.Tag == "" || !ep.tags.Match(e.Tag)) {
		return false
	}
	return true
}
