package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/berth-registry/berth/distribution"
	"github.com/berth-registry/berth/storage"
)

// Server is a configured Berth registry: its store and its HTTP server.
type Server struct {
	cfg   Config
	log   *slog.Logger
	store *storage.Store
	http  *http.Server
}

// New opens the store named by cfg and assembles the server. The caller
// must call Run, which closes the store when it returns.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid configuration: %w", err)
	}
	store, err := storage.Open(ctx, cfg.Data, storage.Options{Logger: log})
	if err != nil {
		return nil, err
	}
	api := distribution.New(store, distribution.Options{
		MaxManifestBytes:     cfg.Limits.MaxManifestBytes,
		MaxPageSize:          cfg.Limits.MaxPageSize,
		MaxConcurrentUploads: cfg.Limits.MaxConcurrentUploads,
		BodyReadTimeout:      cfg.HTTP.BodyReadTimeout,
		Logger:               log,
	})
	handler := recoverPanics(log, logRequests(log, api.Handler()))
	return &Server{
		cfg:   cfg,
		log:   log,
		store: store,
		http: &http.Server{
			Handler:           handler,
			ReadHeaderTimeout: cfg.HTTP.ReadHeaderTimeout,
			IdleTimeout:       cfg.HTTP.IdleTimeout,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
	}, nil
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
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.cfg.Addr, err)
	}
	s.log.InfoContext(ctx, "listening", "addr", ln.Addr().String(), "data", s.cfg.Data)
	served := make(chan error, 1)
	go func() { served <- s.http.Serve(ln) }()
	jctx, stopJanitor := context.WithCancel(ctx)
	janitorDone := make(chan struct{})
	go func() {
		defer close(janitorDone)
		s.expireUploads(jctx)
	}()
	defer func() {
		stopJanitor()
		<-janitorDone
	}()
	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	s.log.InfoContext(ctx, "shutting down", "timeout", s.cfg.HTTP.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.HTTP.ShutdownTimeout)
	defer cancel()
	if err := s.http.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	s.log.InfoContext(ctx, "stopped")
	return nil
}

// expireUploads removes idle upload sessions until ctx is done. It looks
// four times per idle timeout, at most once a minute and at least once a
// second, so a session outlives its timeout by a quarter of it at most.
func (s *Server) expireUploads(ctx context.Context) {
	idle := s.cfg.Limits.UploadIdleTimeout
	every := min(max(idle/4, time.Second), time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			n, err := s.store.ExpireUploads(ctx, idle, now)
			if err != nil && ctx.Err() == nil {
				s.log.WarnContext(ctx, "expire upload sessions", "error", err)
			}
			if n > 0 {
				s.log.InfoContext(ctx, "expired idle upload sessions", "count", n, "idle", idle)
			}
		}
	}
}
