// Package proxy is Berth's pull-through cache: a distribution.Store that
// wraps the storage core and, for the repositories under an upstream's
// namespace, fetches from that upstream registry what the store does not
// hold, keeps it as ordinary content, and serves it from then on.
//
// It owns the cache's rules:
//
//   - Routing (route.go): a repository under an upstream's namespace is
//     that upstream's; containerd's ns query parameter and, for Docker's
//     registry-mirrors, names outside every namespace that the registry
//     does not hold are rewritten into a namespace before anything else
//     (authentication included) sees the request.
//   - Manifests (manifests.go): by digest, kept for good; by tag, trusted
//     for the upstream's tagTTL, then checked with a HEAD. They are
//     recorded through the core as the cache's (storage.PutOptions.
//     Upstream): what they reference is pending until a client asks.
//   - Blobs (blobs.go): one upstream GET per missing blob, however many
//     clients ask at once, a pipeline that reads the upstream into a ring
//     of chunks in memory while it writes and hashes them into a
//     storage.Fill, and that every client follows as it grows; a client
//     that goes away does not stop it; the digest is verified before the
//     content becomes visible, and the last byte is held back from
//     clients until it is. With prefetch, the GET of an image manifest
//     starts the fills of its config and layers.
//   - Failures: an upstream that is unreachable, failing, limiting (429)
//     or refusing Berth's credentials leaves what is cached served, with a
//     Cache-Status header and a log line saying so; what was never cached
//     answers the specification's error with the upstream's reason.
//   - Writes into a namespace are refused: the cache alone writes there.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/singleflight"

	"github.com/berth-registry/berth/distribution"
	"github.com/berth-registry/berth/remote"
	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/manifest"
)

// Options tune a Cache.
type Options struct {
	// Logger receives the cache's log lines; nil discards them.
	Logger *slog.Logger
	// MaxManifestBytes bounds a manifest fetched from an upstream; zero
	// means 4 MiB.
	MaxManifestBytes int64
	// PulledEvery is how often a pull refreshes a cached manifest's pull
	// time (which retention's unpulled rule reads); zero means an hour.
	PulledEvery time.Duration
	// Getenv reads credentials named in the configuration; nil means
	// os.Getenv.
	Getenv func(string) string
	// UserAgent is sent to upstreams.
	UserAgent string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Cache is the pull-through cache: a distribution.Store over the core.
// Methods it does not override are the core's.
type Cache struct {
	*storage.Service
	ups     []*upstream // by namespace, longest first
	byName  map[string]*upstream
	def     *upstream
	log     *slog.Logger
	maxMan  int64
	pulled  time.Duration
	now     func() time.Time
	flights singleflight.Group

	mu    sync.Mutex
	fills map[fillKey]*fill
}

var _ distribution.Store = (*Cache)(nil)

// New returns the cache of the upstreams cfg configures, over svc.
func New(svc *storage.Service, cfg Config, opts Options) (*Cache, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Cache{Service: svc, byName: map[string]*upstream{}, log: opts.Logger, maxMan: opts.MaxManifestBytes,
		pulled: opts.PulledEvery, now: opts.Now, fills: map[fillKey]*fill{}}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.maxMan <= 0 {
		c.maxMan = 4 << 20
	}
	if c.pulled <= 0 {
		c.pulled = time.Hour
	}
	if c.now == nil {
		c.now = time.Now
	}
	for _, uc := range cfg.Upstreams {
		reg, err := remote.New(uc.Config, remote.Options{Getenv: opts.Getenv, UserAgent: opts.UserAgent})
		if err != nil {
			return nil, fmt.Errorf("proxy upstream %s: %w", uc.Name, err)
		}
		u := &upstream{name: uc.Name, ns: strings.Trim(uc.Namespace, "/"), remoteNS: strings.Trim(uc.RemoteNamespace, "/"),
			ttl: uc.TagTTL, reg: reg, def: uc.Default, prefetch: uc.Prefetch}
		u.hosts = append([]string{u.ns, reg.Host()}, uc.Hosts...)
		c.ups = append(c.ups, u)
		c.byName[u.name] = u
		if u.def {
			c.def = u
		}
	}
	sort.SliceStable(c.ups, func(i, j int) bool { return len(c.ups[i].ns) > len(c.ups[j].ns) })
	return c, nil
}

// upstreamOf returns the upstream whose namespace holds repo, and repo's
// name under it; nil if none does.
func (c *Cache) upstreamOf(repo string) (*upstream, string) {
	for _, u := range c.ups {
		if rest, ok := strings.CutPrefix(repo, u.ns+"/"); ok && rest != "" {
			return u, rest
		}
	}
	return nil, ""
}

// Namespaced reports whether repo is under an upstream's namespace.
func (c *Cache) Namespaced(repo string) bool {
	u, _ := c.upstreamOf(repo)
	return u != nil
}

// actor is who the cache's own writes are recorded as.
func actor(u *upstream) storage.Actor {
	return storage.Actor{Kind: storage.ActorSystem, Name: "mirror:" + u.name}
}

// refuse is the answer to a write into an upstream's namespace.
func refuse(u *upstream, repo string) error {
	return &distribution.Error{Code: distribution.CodeDenied,
		Message: fmt.Sprintf("%s is a cache of upstream %s: the cache alone writes there; push to a repository outside %s/",
			repo, u.name, u.ns),
		Detail: map[string]string{"upstream": u.name, "namespace": u.ns + "/"}}
}

// The writes, refused in a namespace.

// PutBlob refuses a namespace, else stores as the core does.
func (c *Cache) PutBlob(ctx context.Context, repo string, d digest.Digest, r io.Reader, size int64) (storage.BlobInfo, error) {
	if u, _ := c.upstreamOf(repo); u != nil {
		return storage.BlobInfo{}, refuse(u, repo)
	}
	return c.Service.PutBlob(ctx, repo, d, r, size)
}

// MountBlob refuses a namespace as the destination.
func (c *Cache) MountBlob(ctx context.Context, repo, from string, d digest.Digest) (storage.BlobInfo, error) {
	if u, _ := c.upstreamOf(repo); u != nil {
		return storage.BlobInfo{}, refuse(u, repo)
	}
	return c.Service.MountBlob(ctx, repo, from, d)
}

// StartUpload refuses a namespace.
func (c *Cache) StartUpload(ctx context.Context, repo string, alg digest.Algorithm) (storage.UploadInfo, error) {
	if u, _ := c.upstreamOf(repo); u != nil {
		return storage.UploadInfo{}, refuse(u, repo)
	}
	return c.Service.StartUpload(ctx, repo, alg)
}

// PutManifest refuses a namespace.
func (c *Cache) PutManifest(ctx context.Context, repo string, d digest.Digest, body []byte, m *manifest.Manifest, tags []string) (digest.Digest, error) {
	if u, _ := c.upstreamOf(repo); u != nil {
		return "", refuse(u, repo)
	}
	return c.Service.PutManifest(ctx, repo, d, body, m, tags)
}

// RollbackTag refuses a namespace: its tags follow the upstream's.
func (c *Cache) RollbackTag(ctx context.Context, repo, tag string, to digest.Digest) (storage.TagMove, error) {
	if u, _ := c.upstreamOf(repo); u != nil {
		return storage.TagMove{}, refuse(u, repo)
	}
	return c.Service.RollbackTag(ctx, repo, tag, to)
}

// Promote refuses a namespace as the destination. A cached image promoted
// out of a namespace takes what the cache holds of it: pull it whole
// first.
func (c *Cache) Promote(ctx context.Context, srcRepo, srcRef, dstRepo, dstTag string) (storage.TagMove, digest.Digest, error) {
	if u, _ := c.upstreamOf(dstRepo); u != nil {
		return storage.TagMove{}, "", refuse(u, dstRepo)
	}
	return c.Service.Promote(ctx, srcRepo, srcRef, dstRepo, dstTag)
}

// outcome is how a request was answered, told to the client in a
// Cache-Status header (RFC 9211).
type outcome struct{ hdr http.Header }

type outcomeKey struct{}

// note sets the Cache-Status of the request ctx belongs to.
func note(ctx context.Context, status string) {
	if o, ok := ctx.Value(outcomeKey{}).(*outcome); ok {
		o.hdr.Set("Cache-Status", status)
	}
}

// stale serves a cached copy in place of what the upstream failed to
// give: it says so to the client and in the log.
func (c *Cache) stale(ctx context.Context, u *upstream, repo, ref string, err error) {
	reason := "unreachable"
	var ue *upstreamError
	if errors.As(err, &ue) {
		reason = fmt.Sprintf("%d", ue.status)
	} else if errors.Is(err, errBadUpstream) {
		reason = "invalid answer"
	}
	note(ctx, fmt.Sprintf(`berth; hit; fwd=stale; detail="upstream %s %s; serving the cached copy"`, u.name, reason))
	c.log.WarnContext(ctx, "upstream failed; serving the cached copy", "upstream", u.name, "repo", repo, "reference", ref, "error", err)
}
