package registry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/berth-registry/berth/distribution"
	"github.com/berth-registry/berth/files"
	"github.com/berth-registry/berth/metrics"
	"github.com/berth-registry/berth/registry/auth"
	"github.com/berth-registry/berth/registry/glob"
	"github.com/berth-registry/berth/registry/health"
)

// MetricsConfig configures the Prometheus metrics; see docs/operations.md.
type MetricsConfig struct {
	// Enabled serves the metrics at /metrics; default true.
	Enabled bool `yaml:"enabled"`
	// Addr, when set, serves /metrics (and the health probes) on a
	// listener of its own, host:port, instead of the main one.
	Addr string `yaml:"addr"`
	// Auth makes /metrics ask for an administrator's credentials. It
	// needs auth.htpasswd. On the main listener with authentication on,
	// /metrics always asks for them.
	Auth bool `yaml:"auth"`
	// Repositories are patterns (see registry/glob) of the repositories
	// whose names may be the value of the metrics' repository label;
	// other repositories count under an empty label.
	Repositories []string `yaml:"repositories"`
}

// HealthConfig tunes the readiness probe.
type HealthConfig struct {
	// Timeout bounds each check of /readyz (the index, the blob store);
	// default 2s.
	Timeout time.Duration `yaml:"timeout"`
}

// validate reports a setting that cannot work.
func (m MetricsConfig) validate(authOn bool, mainAddr string) error {
	if m.Addr != "" && m.Addr == mainAddr && !strings.HasSuffix(m.Addr, ":0") {
		return fmt.Errorf("metrics.addr %s: the main listener's address; leave it empty to serve /metrics there", m.Addr)
	}
	if m.Addr != "" {
		if _, _, err := net.SplitHostPort(m.Addr); err != nil {
			return fmt.Errorf("metrics.addr %q: %w", m.Addr, err)
		}
	}
	if m.Auth && !authOn {
		return errors.New("metrics.auth: needs auth.htpasswd, whose administrators may scrape")
	}
	if _, err := glob.CompileSet("metrics.repositories", m.Repositories); err != nil {
		return err
	}
	return nil
}

// needsAuth reports whether /metrics asks for an administrator.
func (m MetricsConfig) needsAuth(authOn bool) bool {
	return m.Auth || (authOn && m.Addr == "")
}

// maxRequestID bounds the length of an X-Request-Id kept from a client.
const maxRequestID = 128

// RequestIDHeader is the header that carries a request's identifier in and
// out.
const RequestIDHeader = "X-Request-Id"

// requestID returns the identifier of r: the client's X-Request-Id if it
// is one a log can hold (1 to 128 visible ASCII characters, no quote or
// backslash), else a new random one.
func requestID(r *http.Request) string {
	if id := r.Header.Get(RequestIDHeader); id != "" && len(id) <= maxRequestID && printable(id) {
		return id
	}
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails
	return hex.EncodeToString(b[:])
}

func printable(s string) bool {
	for i := range len(s) {
		if c := s[i]; c <= ' ' || c > '~' || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// requestInfo is what the layers of a request learn about it that its
// access log line and metrics report: its identifier, and who made it,
// which the authentication middleware establishes further in.
type requestInfo struct {
	id       string
	identity string
}

type requestInfoKey struct{}

// infoFrom returns the requestInfo of ctx, or nil.
func infoFrom(ctx context.Context) *requestInfo {
	info, _ := ctx.Value(requestInfoKey{}).(*requestInfo)
	return info
}

// routeFunc names what a request asks for: its route template and the
// repository its path names.
type routeFunc func(r *http.Request) (route, repo string)

// router names requests by the route tables of the API, the admin API,
// the files, the web interface and the server's own endpoints: the route label of
// the metrics and the route of the access log, never the raw path.
type router struct {
	api   *distribution.API
	admin *mux.Router
	ui    interface{ Route(*http.Request) string }
}

// route names r's route; a path no table knows is "other".
func (rt router) route(r *http.Request) (string, string) {
	p := r.URL.Path
	switch {
	case p == health.LivePath || p == health.ReadyPath || p == metricsPath || p == auth.TokenPath:
		return p, ""
	case strings.HasPrefix(p, auth.AdminPrefix):
		if rt.admin != nil {
			if tmpl, _, ok := distribution.MatchRoute(rt.admin, r); ok {
				return tmpl, ""
			}
		}
		return auth.AdminPrefix, ""
	case strings.HasPrefix(p, files.Prefix):
		t, err := files.ParsePath(r.Method, r.URL.EscapedPath())
		switch {
		case err != nil:
			return files.Prefix, ""
		case t.File == "":
			return files.Prefix + "{repository}/{version}/", t.Repo
		}
		return files.Prefix + "{repository}/{version}/{file}", t.Repo
	case p == "/ui" || strings.HasPrefix(p, "/ui/"):
		if rt.ui != nil {
			return rt.ui.Route(r), ""
		}
	case p == "/v2" || strings.HasPrefix(p, "/v2/"):
		if tmpl, repo, ok := rt.api.Route(r); ok {
			return tmpl, repo
		}
		return "/v2/other", ""
	case p == "/":
		return "/", ""
	}
	return "other", ""
}

// metricsPath is where the metrics are served.
const metricsPath = "/metrics"

// observe is the outermost middleware: it gives each request its
// identifier (returned in X-Request-Id), counts it in the metrics and
// writes its access log line. accessLog false logs only the requests that
// failed on the server's side (5xx). Probes and scrapes are logged at
// debug level only.
func observe(log *slog.Logger, m *metrics.Metrics, route routeFunc, accessLog bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		info := &requestInfo{id: requestID(r), identity: "anonymous"}
		w.Header().Set(RequestIDHeader, info.id)
		name, repo := route(r)
		var body *countingBody
		if r.Body != nil && r.Body != http.NoBody {
			body = &countingBody{ReadCloser: r.Body}
			r.Body = body
		}
		rec := &statusRecorder{ResponseWriter: w}
		done := m.InFlight()
		defer func() {
			done()
			took := time.Since(start)
			status := rec.status
			if status == 0 {
				status = http.StatusOK // net/http's answer to a handler that wrote nothing
			}
			var received int64
			if body != nil {
				received = body.n
			}
			m.Request(name, r.Method, status, repo, received, rec.bytes, took)
			level := slog.LevelInfo
			switch {
			case status >= 500:
				level = slog.LevelWarn
			case name == health.LivePath || name == health.ReadyPath || name == metricsPath:
				level = slog.LevelDebug
			case !accessLog:
				return
			}
			log.LogAttrs(r.Context(), level, "request",
				slog.String("request_id", info.id),
				slog.String("method", r.Method),
				slog.String("route", name),
				slog.String("path", r.URL.EscapedPath()),
				slog.String("repository", repo),
				slog.Int("status", status),
				slog.Int64("received", received),
				slog.Int64("sent", rec.bytes),
				slog.Duration("duration", took),
				slog.String("identity", info.identity),
				slog.String("client", clientAddress(r)),
				slog.String("user_agent", truncate(r.UserAgent(), 200)),
			)
		}()
		next.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), requestInfoKey{}, info)))
	})
}

// clientAddress is the IP address of the peer, without its port.
func clientAddress(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// countingBody counts the bytes read from a request body.
type countingBody struct {
	io.ReadCloser
	n int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	return n, err
}

// requestIDs is a slog.Handler that adds the request_id of the request a
// record was logged for, when logged with its context, so that every line
// of one request can be found by its identifier.
type requestIDs struct{ slog.Handler }

// Handle adds request_id when ctx carries one.
func (h requestIDs) Handle(ctx context.Context, rec slog.Record) error {
	if info := infoFrom(ctx); info != nil {
		rec.AddAttrs(slog.String("request_id", info.id))
	}
	return h.Handler.Handle(ctx, rec)
}

// WithAttrs keeps the wrapper on derived handlers.
func (h requestIDs) WithAttrs(attrs []slog.Attr) slog.Handler {
	return requestIDs{h.Handler.WithAttrs(attrs)}
}

// WithGroup keeps the wrapper on derived handlers.
func (h requestIDs) WithGroup(name string) slog.Handler { return requestIDs{h.Handler.WithGroup(name)} }
