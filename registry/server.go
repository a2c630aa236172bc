package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/gorilla/mux"
	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/admin"
	"github.com/berth-registry/berth/bundle"
	"github.com/berth-registry/berth/distribution"
	"github.com/berth-registry/berth/files"
	"github.com/berth-registry/berth/metrics"
	"github.com/berth-registry/berth/notify"
	"github.com/berth-registry/berth/proxy"
	"github.com/berth-registry/berth/registry/auth"
	"github.com/berth-registry/berth/registry/glob"
	"github.com/berth-registry/berth/registry/health"
	"github.com/berth-registry/berth/replication"
	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/blob"
	"github.com/berth-registry/berth/storage/meta"
	"github.com/berth-registry/berth/storage/pulls"
	"github.com/berth-registry/berth/ui"
)

// Server is a configured Berth registry: its store and its HTTP server.
type Server struct {
	cfg   Config
	log   *slog.Logger
	store *Store
	http  *http.Server
	// metricsHTTP serves the metrics on a listener of their own, when
	// metrics.addr is set.
	metricsHTTP *http.Server
	metrics     *metrics.Metrics
	health      *health.Checker
	// notifier delivers the outbox to the webhook endpoints.
	notifier *notify.Notifier
	// users, keys and robots are set when authentication is on; Run
	// watches users and keys for changes and reloads them on SIGHUP.
	users  *auth.UserFile
	keys   *auth.KeyRing
	robots *auth.Robots
	// retention applies the retention policies, on a schedule when
	// retention.interval is set.
	retention *retentionRunner
	// pulls records who pulls what; Run writes its records.
	pulls *pulls.Recorder
	// sync runs the replication rules, when there are some.
	sync *replication.Replicator
}

// New opens the store named by cfg and assembles the server. The caller
// must call Run, which closes the store when it returns.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid configuration: %w", err)
	}
	rules, err := compileTagRules(cfg.Tags.Immutable)
	if err != nil {
		return nil, fmt.Errorf("invalid configuration: %w", err)
	}
	metricRepos, err := glob.CompileSet("metrics.repositories", cfg.Metrics.Repositories)
	if err != nil {
		return nil, fmt.Errorf("invalid configuration: %w", err)
	}
	// Every line logged with a request's context names its request.
	log = slog.New(requestIDs{log.Handler()})
	m := metrics.New(metrics.Options{Repositories: metricRepos, Version: cfg.Build.Version, Commit: cfg.Build.Commit})
	endpoints, err := notify.Compile(cfg.Notifications)
	if err != nil {
		return nil, fmt.Errorf("invalid configuration: %w", err)
	}
	// The notifier needs the store and the store its sinks: the sink
	// reaches the notifier made just after, before anything is served.
	var notifier *notify.Notifier
	wake := storage.SinkFunc(func(ctx context.Context, e storage.Event) { notifier.Sink().Publish(ctx, e) })
	core := storage.Options{Tags: rules, Sinks: []storage.Sink{m.Sink()}, SeenRefresh: cfg.GC.SeenRefresh}
	if endpoints.Len() > 0 {
		core.Outbox = endpoints
		core.Sinks = append(core.Sinks, wake)
	}
	v, _ := buildVersion()
	var repl *replication.Replicator
	if len(cfg.Sync.Rules) > 0 {
		// The replicator hears of every change, for its push rules.
		repl, err = replication.New(cfg.Sync, replication.Options{Logger: log, UserAgent: "berth/" + v,
			Reserved: cfg.Proxy.Namespaced, MaxManifestBytes: cfg.Limits.MaxManifestBytes})
		if err != nil {
			return nil, fmt.Errorf("invalid configuration: %w", err)
		}
		core.Sinks = append(core.Sinks, repl)
	}
	store, err := OpenStore(ctx, cfg.Data, StoreOptions{Logger: log, Decorate: m.Index, Core: core, Storage: cfg.Storage})
	if err != nil {
		return nil, err
	}
	notifier = notify.New(store.Index, endpoints, notify.Options{Logger: log, Observer: m})
	start := time.Now()
	if err := m.Count(ctx, store.Index); err != nil {
		_ = store.Close()
		return nil, err
	}
	log.DebugContext(ctx, "store counted for the metrics", "took", time.Since(start))
	srv := &Server{cfg: cfg, log: log, store: store, metrics: m, notifier: notifier,
		pulls: pulls.New(store.Service, pulls.Options{Logger: log})}
	srv.health = health.New(cfg.Health.Timeout, log, storeProbes(store)...)
	if repl != nil {
		repl.Bind(store.Service)
		srv.sync = repl
	}
	opts := distribution.Options{
		MaxManifestBytes:     cfg.Limits.MaxManifestBytes,
		MaxPageSize:          cfg.Limits.MaxPageSize,
		MaxConcurrentUploads: cfg.Limits.MaxConcurrentUploads,
		BodyReadTimeout:      cfg.HTTP.BodyReadTimeout,
		Pulls:                srv.pulls,
		Logger:               log,
	}
	policies, err := compileRetention(cfg.Retention)
	if err != nil {
		_ = store.Close()
		return nil, fmt.Errorf("invalid configuration: %w", err)
	}
	srv.retention = &retentionRunner{svc: store.Service, policies: policies, window: cfg.Retention.HistoryWindow, log: log, metrics: m}
	var authn *auth.Authenticator
	if cfg.Auth.Enabled() {
		if authn, err = srv.openAuth(); err != nil {
			_ = store.Close()
			return nil, err
		}
		authn.SetObserver(m)
		opts.Access = authn
	}
	// With upstreams configured, the API serves the pull-through cache,
	// which wraps the core.
	var backing distribution.Store = store.Service
	var cache *proxy.Cache
	if len(cfg.Proxy.Upstreams) > 0 {
		cache, err = proxy.New(store.Service, cfg.Proxy, proxy.Options{Logger: log,
			MaxManifestBytes: cfg.Limits.MaxManifestBytes, UserAgent: "berth/" + v})
		if err != nil {
			_ = store.Close()
			return nil, fmt.Errorf("invalid configuration: %w", err)
		}
		backing = cache
	}
	api := distribution.New(backing, opts)
	adminAPI := srv.admin()
	routes := http.NewServeMux()
	routes.Handle("/", api.Handler())
	// Without authentication the admin API is as open as the rest, except
	// robot tokens, which need authentication.
	routes.Handle(auth.AdminPrefix, adminAPI)
	fileHandler := files.New(store.Service, files.Options{
		MaxManifestBytes:     cfg.Limits.MaxManifestBytes,
		MaxConcurrentUploads: cfg.Limits.MaxConcurrentUploads,
		BodyReadTimeout:      cfg.HTTP.BodyReadTimeout,
		Pulls:                srv.pulls,
		Logger:               log,
	})
	var handler http.Handler = withActor(underPrefix(files.Prefix, fileHandler, routes))
	if authn != nil {
		handler = authn.Wrap(handler)
	}
	if cache != nil {
		// Before authentication, so that access rules see the names the
		// store uses.
		handler = cache.Route(handler)
	}
	rt := router{api: api}
	rt.admin, _ = adminAPI.(*mux.Router)
	if cfg.UI.Enabled {
		// The web interface calls the API in-process, through the same
		// handler clients reach, so its pages see what the visitor may.
		web, err := ui.New(handler, ui.Options{Config: cfg.UI, Logger: log, APIContext: distribution.Browsing})
		if err != nil {
			_ = store.Close()
			return nil, err
		}
		handler, rt.ui = web, web
	}
	var scrape http.Handler
	if cfg.Metrics.Enabled {
		scrape = m.Handler()
		if cfg.Metrics.needsAuth(authn != nil) {
			scrape = authn.RequireAdmin(scrape)
		}
	}
	front := handler
	if cfg.Metrics.Addr == "" {
		front = srv.ownEndpoints(handler, scrape)
	} else if scrape != nil {
		srv.metricsHTTP = &http.Server{
			Handler:           observe(log, m, rt.route, cfg.Log.Access, recoverPanics(log, srv.ownEndpoints(http.NotFoundHandler(), scrape))),
			ReadHeaderTimeout: cfg.HTTP.ReadHeaderTimeout,
			IdleTimeout:       cfg.HTTP.IdleTimeout,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		}
		front = srv.ownEndpoints(handler, nil)
	}
	srv.http = &http.Server{
		Handler:           observe(log, m, rt.route, cfg.Log.Access, recoverPanics(log, front)),
		ReadHeaderTimeout: cfg.HTTP.ReadHeaderTimeout,
		IdleTimeout:       cfg.HTTP.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return srv, nil
}

// ownEndpoints serves the health probes and, when scrape is not nil, the
// metrics, in front of next: before authentication, which the probes never
// need (the metrics handler asks for it itself when it must).
func (s *Server) ownEndpoints(next, scrape http.Handler) http.Handler {
	live, ready := s.health.Live(), s.health.ReadyHandler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == health.LivePath:
			live.ServeHTTP(w, r)
		case r.URL.Path == health.ReadyPath:
			ready.ServeHTTP(w, r)
		case r.URL.Path == metricsPath && scrape != nil:
			scrape.ServeHTTP(w, r)
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// probeDigest is the digest readiness looks up in the index and the blob
// store: whether it is there does not matter, only that they answer.
var probeDigest = digest.FromString("berth readiness probe")

// storeProbes checks that the index and the blob store answer, each
// through its seam.
func storeProbes(s *Store) []health.Probe {
	return []health.Probe{
		{Name: "index", Check: func(ctx context.Context) error {
			return s.Index.View(ctx, func(tx meta.Tx) error {
				_, _, err := tx.Blob(probeDigest)
				return err
			})
		}},
		{Name: "blobs", Check: func(ctx context.Context) error {
			if _, err := s.Blobs.Stat(ctx, probeDigest); err != nil && !errors.Is(err, blob.ErrNotFound) {
				return err
			}
			return nil
		}},
	}
}

// admin returns the admin API of the server's store and configuration.
func (s *Server) admin() http.Handler {
	opts := admin.Options{
		Collect: s.collect,
		Retain:  s.retention.run,
		Events:  s.notifier,
		Import:  s.importBundle,
		Grace:   s.cfg.GC.Grace,
		Logger:  s.log,
	}
	if s.robots != nil { // a nil *auth.Robots must not become a non-nil interface
		opts.Robots = s.robots
	}
	if s.sync != nil {
		opts.Sync = s.sync
	}
	return admin.Handler(opts)
}

// openAuth loads the users file and the signing keys (creating the first
// key under <data>/keys) and builds the authenticator. A users file that
// is missing or holds a non-bcrypt hash stops the start.
func (s *Server) openAuth() (*auth.Authenticator, error) {
	users, err := auth.OpenUserFile(s.cfg.Auth.Htpasswd)
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	keys, err := auth.OpenKeyRing(filepath.Join(s.cfg.Data, "keys"))
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	s.users, s.keys = users, keys
	s.robots = auth.NewRobots(auth.IndexRobots(s.store.Index), s.log)
	return auth.New(s.cfg.Auth, users, keys, s.robots, s.log)
}

// Run listens on the configured address and serves until ctx is done, then
// shuts down gracefully: it stops accepting connections, lets in-flight
// requests finish (up to the shutdown timeout) and closes the index.
func (s *Server) Run(ctx context.Context) (err error) {
	defer func() {
		if cerr := s.store.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	// SIGHUP is taken over before the server says it is listening: until
	// then its default action would kill the process.
	var hup chan os.Signal
	if s.users == nil {
		// Nothing to reload: a SIGHUP must not stop the server.
		signal.Ignore(syscall.SIGHUP)
	} else {
		hup = make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
	}
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.cfg.Addr, err)
	}
	scheme := "http"
	if s.cfg.TLS.Enabled() {
		scheme = "https"
	}
	s.log.InfoContext(ctx, "listening", "addr", ln.Addr().String(), "scheme", scheme, "data", s.cfg.Data,
		"auth", s.cfg.Auth.Enabled())
	if insecureAuth(s.cfg, ln.Addr()) {
		s.log.WarnContext(ctx, "AUTHENTICATION OVER PLAIN HTTP: passwords and tokens cross the network in clear text; configure tls.certificate and tls.key",
			"addr", ln.Addr().String())
	}
	served := make(chan error, 2)
	go func() {
		if s.cfg.TLS.Enabled() {
			// ServeTLS negotiates HTTP/2 as well as HTTP/1.1.
			served <- s.http.ServeTLS(ln, s.cfg.TLS.Certificate, s.cfg.TLS.Key)
			return
		}
		served <- s.http.Serve(ln)
	}()
	if s.metricsHTTP != nil {
		mln, err := net.Listen("tcp", s.cfg.Metrics.Addr)
		if err != nil {
			_ = s.http.Close()
			<-served
			return fmt.Errorf("listen on metrics.addr %s: %w", s.cfg.Metrics.Addr, err)
		}
		s.log.InfoContext(ctx, "metrics listening", "addr", mln.Addr().String(), "scheme", "http")
		go func() { served <- s.metricsHTTP.Serve(mln) }()
	}
	if hup != nil {
		defer background(ctx, func(ctx context.Context) { s.watchAuth(ctx, hup) })()
	}
	defer background(ctx, s.expireUploads)()
	defer background(ctx, s.notifier.Run)()
	// Stopped after the HTTP server, so that it writes the pulls of the
	// last requests, and before the store closes.
	defer background(ctx, s.pulls.Run)()
	if every := s.cfg.Retention.Interval; every > 0 {
		defer background(ctx, func(ctx context.Context) { s.retention.schedule(ctx, every) })()
	}
	if s.cfg.GC.Interval > 0 {
		defer background(ctx, s.collectGarbage)()
	}
	if s.sync != nil {
		defer background(ctx, s.sync.Serve)()
	}
	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	// Not ready from now on, while still serving: a load balancer that
	// probes /readyz stops sending requests before the listener closes.
	s.health.Drain()
	s.log.InfoContext(ctx, "shutting down", "delay", s.cfg.HTTP.ShutdownDelay, "timeout", s.cfg.HTTP.ShutdownTimeout)
	if d := s.cfg.HTTP.ShutdownDelay; d > 0 {
		time.Sleep(d)
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.HTTP.ShutdownTimeout)
	defer cancel()
	servers := []*http.Server{s.http}
	if s.metricsHTTP != nil {
		servers = append(servers, s.metricsHTTP)
	}
	for _, hs := range servers {
		if err := hs.Shutdown(sctx); err != nil {
			return fmt.Errorf("shutdown: %w", err)
		}
		if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve: %w", err)
		}
	}
	s.log.InfoContext(ctx, "stopped")
	return nil
}

// background runs fn in a goroutine with a context of its own; the
// returned stop cancels that context and waits for fn to return.
func background(ctx context.Context, fn func(context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

// expireUploads removes idle upload sessions until ctx is done. It looks
// four times per idle timeout, at most once a minute and at least once a
// second, so a session outlives its timeout by a quarter of it at most.
func (s *Server) expireUploads(ctx context.Context) {
	idle := s.cfg.Limits.UploadIdleTimeout
	repeat(ctx, min(max(idle/4, time.Second), time.Minute), func(ctx context.Context, now time.Time) {
		n, err := s.store.ExpireUploads(ctx, idle, now)
		if err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "expire upload sessions", "error", err)
		}
		if n > 0 {
			s.log.InfoContext(ctx, "expired idle upload sessions", "count", n, "idle", idle)
		}
	})
}

// repeat calls fn every interval until ctx is done; the maintenance loops
// (upload expiry, retention, garbage collection) run on it.
func repeat(ctx context.Context, every time.Duration, fn func(ctx context.Context, now time.Time)) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			fn(ctx, now)
		}
	}
}

// watchAuth reloads the users file and the signing keys when they change
// (polled every two seconds) and at once on a SIGHUP received on hup, until
// ctx is done. A file that fails to load leaves the previous one in force.
func (s *Server) watchAuth(ctx context.Context, hup <-chan os.Signal) {
	const every = 2 * time.Second
	usersDone := make(chan struct{})
	go func() {
		defer close(usersDone)
		s.users.Watch(ctx, every, s.log)
	}()
	defer func() { <-usersDone }()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if err := s.users.Reload(); err != nil {
				s.log.WarnContext(ctx, "reload users on SIGHUP", "error", err)
			} else {
				s.log.InfoContext(ctx, "users reloaded on SIGHUP")
			}
		case <-t.C:
		}
		if err := s.keys.Reload(); err != nil {
			s.log.WarnContext(ctx, "reload signing keys", "error", err)
		}
	}
}

// insecureAuth reports whether credentials would cross a network in clear
// text: authentication on, TLS off, and an address other than loopback.
func insecureAuth(cfg Config, addr net.Addr) bool {
	tcp, ok := addr.(*net.TCPAddr)
	loopback := ok && tcp.IP.IsLoopback()
	return cfg.Auth.Enabled() && !cfg.TLS.Enabled() && !loopback
}

// buildVersion is the module version the binary was built from, for the
// User-Agent of Berth's requests to other registries.
func buildVersion() (string, bool) {
	bi, ok := debug.ReadBuildInfo()
	if !ok || bi.Main.Version == "" || bi.Main.Version == "(devel)" {
		return "dev", false
	}
	return bi.Main.Version, true
}

// importBundle imports an offline bundle into the server's store.
func (s *Server) importBundle(ctx context.Context, r io.Reader, prefix string) (bundle.ImportReport, error) {
	return bundle.Import(storage.WithActor(ctx, storage.ActorFrom(ctx)), s.store.Service, r, bundle.ImportOptions{
		Prefix: prefix, Valid: distribution.ValidName})
}
