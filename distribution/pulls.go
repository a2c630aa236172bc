package distribution

import (
	"context"
	"net/http"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/pulls"
)

// Pulls keeps the pull record: who last pulled each manifest, from where
// and when. *pulls.Recorder is one.
type Pulls interface {
	// Record notes that the actor of ctx pulled manifest d of repo. It
	// must not block: it runs on the request path.
	Record(ctx context.Context, repo string, d digest.Digest)
	// List returns the pull records of repo, newest first; with d set,
	// only those of d.
	List(ctx context.Context, repo string, d digest.Digest) ([]pulls.Entry, error)
}

// PullsSuffix ends the path of a repository's pull record:
// /v2/<name>/_berth/pulls.
const PullsSuffix = "/_berth/pulls"

// pullList is the answer of GET /v2/<name>/_berth/pulls.
type pullList struct {
	Name  string        `json:"name"`
	Pulls []pulls.Entry `json:"pulls"`
}

// browsingKey marks the context of a request that browses rather than
// pulls.
type browsingKey struct{}

// Browsing returns ctx marking the requests made with it as browsing, not
// pulling: a manifest GET with it is not recorded. The web interface's
// requests to the API carry it; nothing a client sends can set it.
func Browsing(ctx context.Context) context.Context {
	return context.WithValue(ctx, browsingKey{}, true)
}

// record notes a pull of manifest d of repo, when the pull record is on
// and the request is not browsing.
func (a *API) record(r *http.Request, repo string, d digest.Digest) {
	if a.pulls != nil && r.Context().Value(browsingKey{}) == nil {
		a.pulls.Record(r.Context(), repo, d)
	}
}

// listPulls answers GET /v2/<name>/_berth/pulls: per manifest and
// identity, the last pull, newest first, each with the tags naming the
// manifest now. digest=DIGEST keeps one manifest's, actor=KIND:NAME (or
// anonymous) one identity's. The authentication middleware lets only
// callers with push on the repository this far: who deploys what is not
// for every reader.
func (a *API) listPulls(w http.ResponseWriter, r *http.Request) {
	repo, err := repoName(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	var d digest.Digest
	if s := q.Get("digest"); s != "" {
		if d, err = parseDigest(s); err != nil {
			a.writeError(w, r, err)
			return
		}
	}
	actor := q.Get("actor")
	if actor != "" && actor != "anonymous" && !strings.Contains(actor, ":") {
		a.writeError(w, r, newError(CodeUnsupported, map[string]string{"actor": actor},
			"actor: want KIND:NAME (robot:prod-deployer, user:alice) or anonymous, got %q", actor).withStatus(http.StatusBadRequest))
		return
	}
	// An unknown repository is NAME_UNKNOWN, as for its tags.
	if _, _, err := a.store.ListTags(r.Context(), repo, "", 0); err != nil {
		a.writeError(w, r, err)
		return
	}
	out := pullList{Name: repo, Pulls: []pulls.Entry{}}
	if a.pulls != nil {
		all, err := a.pulls.List(r.Context(), repo, d)
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		for _, p := range all {
			if actor == "" || actor == identity(p.Actor.Kind, p.Actor.Name) {
				out.Pulls = append(out.Pulls, p)
			}
		}
	}
	writeJSON(w, "application/json", out)
}

// identity names an actor as "kind:name", or "anonymous".
func identity(kind, name string) string {
	if name == "" {
		return kind
	}
	return kind + ":" + name
}
