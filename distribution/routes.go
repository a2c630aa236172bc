package distribution

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/manifest"
)

// Store is what the API needs from storage. *storage.Service implements it.
type Store interface {
	StatBlob(ctx context.Context, repo string, d digest.Digest) (storage.BlobInfo, error)
	OpenBlob(ctx context.Context, repo string, d digest.Digest) (io.ReadSeekCloser, storage.BlobInfo, error)
	BlobURL(ctx context.Context, repo string, d digest.Digest) (string, storage.BlobInfo, error)
	PutBlob(ctx context.Context, repo string, d digest.Digest, r io.Reader, size int64) (storage.BlobInfo, error)
	MountBlob(ctx context.Context, repo, from string, d digest.Digest) (storage.BlobInfo, error)
	DeleteBlob(ctx context.Context, repo string, d digest.Digest) error

	StartUpload(ctx context.Context, repo string, alg digest.Algorithm) (storage.UploadInfo, error)
	UploadStatus(ctx context.Context, repo, id string) (storage.UploadInfo, error)
	AppendUpload(ctx context.Context, repo, id string, start int64, r io.Reader, length int64) (storage.UploadInfo, error)
	CommitUpload(ctx context.Context, repo, id string, d digest.Digest, start int64, r io.Reader, length int64) (storage.BlobInfo, error)
	CancelUpload(ctx context.Context, repo, id string) error

	PutManifest(ctx context.Context, repo string, d digest.Digest, body []byte, m *manifest.Manifest, tags []string) (digest.Digest, error)
	StatManifest(ctx context.Context, repo, reference string) (storage.ManifestInfo, error)
	GetManifest(ctx context.Context, repo, reference string) (storage.ManifestInfo, []byte, error)
	DeleteManifest(ctx context.Context, repo string, d digest.Digest) error
	DeleteTag(ctx context.Context, repo, tag string) error

	ListTags(ctx context.Context, repo, last string, n int) ([]string, bool, error)
	ListRepositories(ctx context.Context, last string, n int) ([]string, bool, error)
	Referrers(ctx context.Context, repo string, subject digest.Digest, artifactType string) ([]ocispec.Descriptor, error)

	Search(ctx context.Context, q storage.Query) ([]storage.SearchResult, string, error)

	Holders(ctx context.Context, q storage.HolderQuery) ([]storage.Holder, string, error)

	TagHistory(ctx context.Context, repo, tag string, before uint64, n int) ([]storage.TagMove, bool, error)
	RollbackTag(ctx context.Context, repo, tag string, to digest.Digest) (storage.TagMove, error)
	Promote(ctx context.Context, srcRepo, srcRef, dstRepo, dstTag string) (storage.TagMove, digest.Digest, error)
}

// Access decides what the caller of a request may do. The API asks it for
// decisions inside a request: which repositories the catalog and search
// show, and whether a cross-repository mount or a promotion may read its
// source.
type Access interface {
	// Allowed reports whether the caller may do action on repo, by who it
	// is: the catalog and search list what the caller may pull, whatever
	// a token of the request was issued for.
	Allowed(ctx context.Context, repo, action string) bool
	// Granted reports whether the request itself may do action on repo:
	// the caller may, and its credential grants it (a Bearer token only
	// what its scopes say). It decides for a repository a request reaches
	// beyond the one in its path: a mount's or a promotion's source.
	Granted(ctx context.Context, repo, action string) bool
}

// Options tune the API.
type Options struct {
	// Access filters the catalog and mount sources; nil allows everything.
	Access Access
	// MaxManifestBytes bounds a manifest body; zero means 4 MiB.
	MaxManifestBytes int64
	// MaxPageSize bounds a page of tags or repositories; zero means 1000.
	MaxPageSize int
	// MaxConcurrentUploads bounds the upload requests (POST, PATCH and PUT
	// of blobs) in flight; zero means 64.
	MaxConcurrentUploads int
	// BodyReadTimeout is the longest a request body may stall between two
	// reads; zero means no limit.
	BodyReadTimeout time.Duration
	// Pulls keeps the pull record: every manifest GET is recorded there,
	// and GET /v2/<name>/_berth/pulls reads it. Nil records nothing.
	Pulls Pulls
	// Logger receives request failures; nil discards them.
	Logger *slog.Logger
	// CursorSecret is the secret that search cursors are sealed with.
	// Replicas behind one load balancer must share it, so that a page's
	// cursor opens on any of them; empty means a random key of this
	// process.
	CursorSecret []byte
}

// API is the OCI Distribution API over a Store.
type API struct {
	store       Store
	access      Access
	maxManifest int64
	maxPage     int
	uploadSlots chan struct{}
	bodyTimeout time.Duration
	// cursors seals the cursors of search pages.
	cursors *cursors
	pulls   Pulls
	log     *slog.Logger
	// router is the route table, built once.
	router *mux.Router
}

// New returns the API serving store.
func New(store Store, opts Options) *API {
	a := &API{store: store, access: opts.Access, maxManifest: opts.MaxManifestBytes, maxPage: opts.MaxPageSize,
		bodyTimeout: opts.BodyReadTimeout, log: opts.Logger, cursors: newCursors(opts.CursorSecret), pulls: opts.Pulls}
	slots := opts.MaxConcurrentUploads
	if slots <= 0 {
		slots = 64
	}
	a.uploadSlots = make(chan struct{}, slots)
	if a.maxManifest <= 0 {
		a.maxManifest = 4 << 20
	}
	if a.maxPage <= 0 {
		a.maxPage = 1000
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	a.router = a.routes()
	return a
}

// Handler returns the API: its route table, behind the API version header.
func (a *API) Handler() http.Handler { return apiVersion(a.router) }

// Route names what r asks for, as metrics and request logs show it: the
// template of the route it matches ("/v2/{name}/manifests/{reference}",
// the regular expressions of variables left out) and the repository its
// path names, unescaped; ok is false when no route matches r's path. A
// route that matches the path but not the method still names it.
func (a *API) Route(r *http.Request) (template, repo string, ok bool) {
	template, vars, ok := MatchRoute(a.router, r)
	if !ok {
		return "", "", false
	}
	return template, UnescapeSegment(vars["name"]), true
}

// MatchRoute finds the route of router that r's path matches, under r's
// method or, failing that, another: it returns the route's path template,
// the regular expressions of its variables left out, and the variables.
func MatchRoute(router *mux.Router, r *http.Request) (template string, vars map[string]string, ok bool) {
	var m mux.RouteMatch
	// With a MethodNotAllowedHandler, a method mismatch matches, without
	// a route.
	if !router.Match(r, &m) || m.Route == nil {
		if !errors.Is(m.MatchErr, mux.ErrMethodMismatch) {
			return "", nil, false
		}
		// The path is a route's: find it under a method it takes.
		found := false
		for _, method := range []string{http.MethodGet, http.MethodPut, http.MethodPost, http.MethodPatch, http.MethodDelete} {
			m = mux.RouteMatch{}
			alt := r.Clone(r.Context())
			alt.Method = method
			if router.Match(alt, &m) && m.Route != nil {
				found = true
				break
			}
		}
		if !found {
			return "", nil, false
		}
	}
	tmpl, err := m.Route.GetPathTemplate()
	if err != nil {
		return "", nil, false
	}
	return plainTemplate(tmpl), m.Vars, true
}

// plainTemplate drops the regular expressions of a route template's
// variables: "{name:.+}" becomes "{name}".
func plainTemplate(t string) string {
	var b strings.Builder
	for {
		i := strings.Index(t, "{")
		if i < 0 {
			b.WriteString(t)
			return b.String()
		}
		j := strings.Index(t[i:], "}")
		if j < 0 {
			b.WriteString(t)
			return b.String()
		}
		v := t[i : i+j+1]
		if k := strings.Index(v, ":"); k >= 0 {
			v = v[:k] + "}"
		}
		b.WriteString(t[:i])
		b.WriteString(v)
		t = t[i+j+1:]
	}
}

// routes builds the route table. Repository names may contain slashes, so
// each route captures the name greedily up to its resource keyword; the
// name is then checked against the specification's grammar by the handler.
func (a *API) routes() *mux.Router {
	r := mux.NewRouter()
	r.SkipClean(true) // a path with ".." is an invalid name, never a redirect
	r.UseEncodedPath()
	const name = "/v2/{name:.+}"

	r.HandleFunc("/v2/", a.base).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/v2/_catalog", a.catalog).Methods(http.MethodGet)
	// Before the repository routes, so that _berth is never read as a name.
	r.HandleFunc(SearchPath, a.search).Methods(http.MethodGet)
	r.HandleFunc(RepositoriesPath, a.repositories).Methods(http.MethodGet)

	// Requests that carry blob content are bounded in number and may not
	// stall; see limits.go.
	upload := func(h http.HandlerFunc) http.HandlerFunc { return a.limitUploads(a.guardBody(h)) }
	r.HandleFunc(name+"/blobs/uploads/", upload(a.startUpload)).Methods(http.MethodPost)
	r.HandleFunc(name+"/blobs/uploads/{id}", a.uploadStatus).Methods(http.MethodGet)
	r.HandleFunc(name+"/blobs/uploads/{id}", upload(a.appendUpload)).Methods(http.MethodPatch)
	r.HandleFunc(name+"/blobs/uploads/{id}", upload(a.commitUpload)).Methods(http.MethodPut)
	r.HandleFunc(name+"/blobs/uploads/{id}", a.cancelUpload).Methods(http.MethodDelete)

	r.HandleFunc(name+"/blobs/{digest}", a.getBlob).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc(name+"/blobs/{digest}", a.deleteBlob).Methods(http.MethodDelete)

	r.HandleFunc(name+"/manifests/{reference}", a.getManifest).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc(name+"/manifests/{reference}", a.guardBody(a.putManifest)).Methods(http.MethodPut)
	r.HandleFunc(name+"/manifests/{reference}", a.deleteManifest).Methods(http.MethodDelete)

	r.HandleFunc(name+"/tags/list", a.listTags).Methods(http.MethodGet)
	r.HandleFunc(name+"/referrers/{digest}", a.referrers).Methods(http.MethodGet)

	// Berth's release lifecycle extensions; see lifecycle.go.
	r.HandleFunc(name+"/_berth/tags/{tag}/history", a.tagHistory).Methods(http.MethodGet)
	r.HandleFunc(name+"/_berth/tags/{tag}/rollback", a.guardBody(a.rollbackTag)).Methods(http.MethodPost)
	r.HandleFunc(name+"/_berth/tags/{tag}/promote", a.guardBody(a.promoteTag)).Methods(http.MethodPost)
	// Who pulled what; see pulls.go.
	r.HandleFunc(name+PullsSuffix, a.listPulls).Methods(http.MethodGet)

	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		a.writeError(w, req, newError(CodeUnsupported, nil, "no such endpoint: %s %s", req.Method, req.URL.Path).withStatus(http.StatusNotFound))
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		a.writeError(w, req, newError(CodeUnsupported, nil, "method %s is not supported on %s", req.Method, req.URL.Path))
	})
	return r
}

// allowed asks the Access hook whether the caller may do action on repo,
// allowing everything without one.
func (a *API) allowed(r *http.Request, repo, action string) bool {
	return a.access == nil || a.access.Allowed(r.Context(), repo, action)
}

// granted asks the Access hook whether the request's credential grants
// action on repo, allowing everything without one.
func (a *API) granted(r *http.Request, repo, action string) bool {
	return a.access == nil || a.access.Granted(r.Context(), repo, action)
}

// apiVersion marks every response as coming from a registry/2.0 API.
func apiVersion(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		next.ServeHTTP(w, r)
	})
}

// base answers the API version check.
func (a *API) base(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", "2")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = io.WriteString(w, "{}")
	}
}
