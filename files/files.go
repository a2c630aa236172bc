// Package files serves build outputs over plain HTTP, under /artifacts/:
// a file goes up with curl -T or curl -F and comes back with curl -O or
// wget, and every version is an OCI artifact, so that OCI clients (oras)
// see the same bytes and an artifact they pushed downloads here.
//
// It owns the mapping between the two: the paths
// (/artifacts/<repository>/<version>/<file>, path.go), the artifact's
// layout (one layer per file, titled by org.opencontainers.image.title,
// under the version's tag: artifact.go), uploads streamed into upload
// sessions and committed only once everything is verified (upload.go),
// and downloads with their headers, checksums and listings
// (download.go). It is a client of the storage core's public API and
// never reaches below it; authentication is the middleware's, as for the
// OCI API (registry/auth classifies /artifacts/ paths with ParsePath).
// docs/files.md describes it for users.
package files

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/distribution"
	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/manifest"
)

// Store is what the files need from the storage core; *storage.Service
// implements it.
type Store interface {
	StatBlob(ctx context.Context, repo string, d digest.Digest) (storage.BlobInfo, error)
	OpenBlob(ctx context.Context, repo string, d digest.Digest) (io.ReadSeekCloser, storage.BlobInfo, error)
	PutBlob(ctx context.Context, repo string, d digest.Digest, r io.Reader, size int64) (storage.BlobInfo, error)
	DeleteBlob(ctx context.Context, repo string, d digest.Digest) error

	StartUpload(ctx context.Context, repo string, alg digest.Algorithm) (storage.UploadInfo, error)
	AppendUpload(ctx context.Context, repo, id string, start int64, r io.Reader, length int64) (storage.UploadInfo, error)
	CommitUpload(ctx context.Context, repo, id string, d digest.Digest, start int64, r io.Reader, length int64) (storage.BlobInfo, error)
	CancelUpload(ctx context.Context, repo, id string) error

	PutManifest(ctx context.Context, repo string, d digest.Digest, body []byte, m *manifest.Manifest, tags []string) (digest.Digest, error)
	GetManifest(ctx context.Context, repo, reference string) (storage.ManifestInfo, []byte, error)
	Search(ctx context.Context, q storage.Query) ([]storage.SearchResult, string, error)
	Immutable(repo, tag string) bool
}

// Recorder notes pulls: a file download is a pull of its version's
// manifest. distribution.Pulls is one.
type Recorder interface {
	Record(ctx context.Context, repo string, d digest.Digest)
}

// Options tune the handler.
type Options struct {
	// MaxManifestBytes bounds the manifest of a version, as the OCI API
	// bounds a pushed one; zero means 4 MiB.
	MaxManifestBytes int64
	// MaxConcurrentUploads bounds the uploads in flight; more are answered
	// 429 with Retry-After. Zero means 64.
	MaxConcurrentUploads int
	// BodyReadTimeout is the longest an upload may stall between two
	// reads; zero means no limit.
	BodyReadTimeout time.Duration
	// Pulls, when set, records every file download as a pull.
	Pulls Recorder
	// Logger receives request failures; nil discards them.
	Logger *slog.Logger
}

// Handler serves /artifacts/.
type Handler struct {
	store       Store
	maxManifest int64
	slots       chan struct{}
	bodyTimeout time.Duration
	pulls       Recorder
	log         *slog.Logger
	// repoLocks serialise, per repository, the step of an upload that
	// reads a version's manifest and writes its successor.
	repoLocks keyedMutex
}

// New returns the handler of /artifacts/ over store.
func New(store Store, opts Options) *Handler {
	h := &Handler{store: store, maxManifest: opts.MaxManifestBytes, bodyTimeout: opts.BodyReadTimeout,
		pulls: opts.Pulls, log: opts.Logger}
	if h.maxManifest <= 0 {
		h.maxManifest = 4 << 20
	}
	n := opts.MaxConcurrentUploads
	if n <= 0 {
		n = 64
	}
	h.slots = make(chan struct{}, n)
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	h.repoLocks.m = map[string]*keyedEntry{}
	return h
}

// ServeHTTP answers a request under /artifacts/.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t, err := ParsePath(r.Method, r.URL.EscapedPath())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		if t.File == "" {
			h.list(w, r, t)
			return
		}
		h.download(w, r, t)
	case http.MethodPut:
		h.limit(distribution.GuardBody(h.bodyTimeout, func(w http.ResponseWriter, r *http.Request) { h.put(w, r, t) }))(w, r)
	case http.MethodPost:
		h.limit(distribution.GuardBody(h.bodyTimeout, func(w http.ResponseWriter, r *http.Request) { h.post(w, r, t) }))(w, r)
	default:
		w.Header().Set("Allow", "GET, HEAD, PUT, POST")
		h.fail(w, r, &distribution.Error{Code: distribution.CodeUnsupported,
			Message: fmt.Sprintf("method %s is not supported on %s: GET or HEAD downloads, PUT or POST uploads", r.Method, Prefix)})
	}
}

// limit bounds the uploads in flight, answering 429 beyond the bound.
func (h *Handler) limit(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		select {
		case h.slots <- struct{}{}:
			defer func() { <-h.slots }()
		default:
			w.Header().Set("Retry-After", "1")
			h.fail(w, r, &distribution.Error{Code: distribution.CodeTooManyRequests, Detail: map[string]int{"limit": cap(h.slots)},
				Message: "too many uploads in progress (limit " + strconv.Itoa(cap(h.slots)) + "); retry shortly"})
			return
		}
		next(w, r)
	}
}

// fail answers the request with err, in the OCI error body, and logs it.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	e := distribution.AsError(err)
	status := e.Status
	if status == 0 {
		status = e.Code.Status
	}
	level := slog.LevelDebug
	if status >= 500 {
		level = slog.LevelError
	}
	h.log.Log(r.Context(), level, "file request failed", "method", r.Method, "path", r.URL.Path,
		"status", status, "code", e.Code.Name, "error", err)
	w.Header().Del("Content-Disposition")
	w.Header().Del("Repr-Digest")
	distribution.WriteError(w, r, e)
}

// keyedMutex is a mutex per key, kept only while held or waited for.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int
}

// lock locks key and returns its unlock.
func (k *keyedMutex) lock(key string) func() {
	k.mu.Lock()
	e, ok := k.m[key]
	if !ok {
		e = &keyedEntry{}
		k.m[key] = e
	}
	e.refs++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}
