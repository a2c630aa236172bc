// Package admin serves Berth's administration API under /_berth/admin/:
// robot credentials, retention runs, garbage collection, webhook
// deliveries, bundle imports and replication. It holds no state of its
// own: each endpoint calls an interface or function that package registry
// wires to the owner of what it changes (registry/auth for robots,
// storage/retention and storage/gc for the maintenance jobs, notify for
// the deliveries, bundle for imports, replication for sync rules).
// The authentication middleware in front of it admits administrators only.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/berth-registry/berth/distribution"
	"github.com/berth-registry/berth/registry/auth"
	"github.com/berth-registry/berth/storage/gc"
	"github.com/berth-registry/berth/storage/retention"
)

// The endpoints, under auth.AdminPrefix:
//
//	POST   /_berth/admin/robots               create a robot token
//	GET    /_berth/admin/robots               list robot tokens
//	DELETE /_berth/admin/robots/{name}        revoke a robot token
//	POST   /_berth/admin/robots/{name}/rotate replace a robot's secret
//	POST   /_berth/admin/retention?dryRun=    apply retention policies
//	POST   /_berth/admin/gc                   collect garbage (gc.go)
//	GET    /_berth/admin/events               webhook deliveries (events.go)
//	POST   /_berth/admin/import?prefix=       import an offline bundle (bundle.go)
//	GET    /_berth/admin/sync                 the replication rules (sync.go)
//	POST   /_berth/admin/sync/{rule}/run      run a replication rule now
//
// Errors have the distribution API's form, {"errors":[{"code","message"}]}.
const (
	// maxAdminBody bounds an admin request body.
	maxAdminBody = 64 << 10
	// maxRobotLifetime bounds how long a robot token may be valid.
	maxRobotLifetime = 8760 * time.Hour
	// maxRobotScopes bounds the scopes of one robot.
	maxRobotScopes = 100
)

// CreateRobotRequest is the body of POST /_berth/admin/robots.
type CreateRobotRequest struct {
	Name   string   `json:"name"`
	Scopes []string `json:"scopes"`
	// Expires is a Go duration from now, such as "720h".
	Expires string `json:"expires"`
}

// RobotSecret answers a creation or rotation in the admin API: the only
// time the secret is shown.
type RobotSecret struct {
	Name    string    `json:"name"`
	Secret  string    `json:"secret"`
	Expires time.Time `json:"expires"`
}

// RobotListing is one robot in the admin API's listing.
type RobotListing struct {
	Name    string     `json:"name"`
	Scopes  []string   `json:"scopes"`
	Created time.Time  `json:"created"`
	Expires time.Time  `json:"expires"`
	Revoked *time.Time `json:"revoked,omitempty"`
	Rotated *time.Time `json:"rotated,omitempty"`
	// Status is active, revoked or expired.
	Status string `json:"status"`
}

// Error codes of the admin API besides the distribution API's.
const (
	codeNameInvalid    = "NAME_INVALID"
	codeScopeInvalid   = "SCOPE_INVALID"
	codeExpiresInvalid = "EXPIRES_INVALID"
	codeRobotUnknown   = "ROBOT_UNKNOWN"
	codeRobotExists    = "ROBOT_EXISTS"
	codeRobotInactive  = "ROBOT_INACTIVE"
	codeUnsupported    = "UNSUPPORTED"
	codeUnknown        = "UNKNOWN"
)

// Robots is what the API needs of robot credentials; *auth.Robots is one.
type Robots interface {
	Create(ctx context.Context, name string, scopes []string, expires time.Time) (string, error)
	List(ctx context.Context) ([]auth.RobotInfo, error)
	Revoke(ctx context.Context, name string, now time.Time) error
	Rotate(ctx context.Context, name string, now time.Time) (string, time.Time, error)
}

// Collector runs one garbage collection with the given grace.
type Collector func(ctx context.Context, grace time.Duration, dryRun bool) (gc.Report, error)

// Retainer applies the configured retention policies once.
type Retainer func(ctx context.Context, dryRun bool) (retention.Report, error)

// Options are what the API serves.
type Options struct {
	// Robots manages robot credentials; nil (authentication off) answers
	// the robot endpoints 404: without authentication there are none.
	Robots Robots
	// Collect and Retain run the maintenance jobs; nil answers 404.
	Collect Collector
	Retain  Retainer
	// Events shows and replays webhook deliveries; nil answers 404.
	Events Events
	// Import imports offline bundles; nil answers 404.
	Import Importer
	// Sync shows and runs the replication rules; nil answers 404.
	Sync Syncer
	// Grace is the grace of a collection that names none.
	Grace time.Duration
	// Logger receives failures and a line per maintenance run; nil
	// discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// api is the administration API over its Options.
type api struct {
	Options
}

// Handler returns the administration API. The caller mounts it at
// auth.AdminPrefix behind the authentication middleware.
func Handler(opts Options) http.Handler {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	a := &api{opts}
	r := mux.NewRouter()
	robots := strings.TrimSuffix(auth.AdminPrefix, "/") + "/robots"
	if a.Robots != nil {
		r.HandleFunc(robots, a.createRobot).Methods(http.MethodPost)
		r.HandleFunc(robots, a.listRobots).Methods(http.MethodGet)
		r.HandleFunc(robots+"/{name}", a.revokeRobot).Methods(http.MethodDelete)
		r.HandleFunc(robots+"/{name}/rotate", a.rotateRobot).Methods(http.MethodPost)
	} else {
		r.PathPrefix(robots).HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			writeError(w, req, http.StatusNotFound, codeUnsupported,
				fmt.Sprintf("robot tokens need authentication: %s %s", req.Method, req.URL.Path))
		})
	}
	if a.Retain != nil {
		r.HandleFunc(strings.TrimSuffix(auth.AdminPrefix, "/")+"/retention", a.runRetention).Methods(http.MethodPost)
	}
	if a.Collect != nil {
		r.HandleFunc(GCPath, a.collectGarbage).Methods(http.MethodPost)
	}
	if a.Events != nil {
		a.eventsRoutes(r)
	}
	if a.Import != nil {
		r.HandleFunc(ImportPath, a.importBundle).Methods(http.MethodPost)
	}
	if a.Sync != nil {
		a.syncRoutes(r)
	}
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		writeError(w, req, http.StatusNotFound, codeUnsupported, fmt.Sprintf("no such endpoint: %s %s", req.Method, req.URL.Path))
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		writeError(w, req, http.StatusMethodNotAllowed, codeUnsupported, fmt.Sprintf("method %s is not supported on %s", req.Method, req.URL.Path))
	})
	return r
}

func (a *api) createRobot(w http.ResponseWriter, r *http.Request) {
	var req CreateRobotRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if err := auth.ValidRobotName(req.Name); err != nil {
		writeError(w, r, http.StatusBadRequest, codeNameInvalid, err.Error())
		return
	}
	scopes, err := robotScopes(req.Scopes)
	if err != nil {
		writeError(w, r, http.StatusBadRequest, codeScopeInvalid, err.Error())
		return
	}
	life, err := robotLifetime(req.Expires)
	if err != nil {
		writeError(w, r, http.StatusBadRequest, codeExpiresInvalid, err.Error())
		return
	}
	expires := a.Now().Add(life).UTC()
	secret, err := a.Robots.Create(r.Context(), req.Name, scopes, expires)
	if err != nil {
		a.failed(w, r, err)
		return
	}
	a.Logger.InfoContext(r.Context(), "robot token created", "robot", req.Name, "scopes", scopes,
		"expires", expires, "by", auth.IdentityFrom(r.Context()).String())
	writeJSON(w, http.StatusCreated, RobotSecret{Name: req.Name, Secret: secret, Expires: expires})
}

func (a *api) listRobots(w http.ResponseWriter, r *http.Request) {
	robots, err := a.Robots.List(r.Context())
	if err != nil {
		a.failed(w, r, err)
		return
	}
	now := a.Now()
	out := make([]RobotListing, 0, len(robots))
	for _, rb := range robots {
		out = append(out, RobotListing{
			Name: rb.Name, Scopes: rb.Scopes, Created: rb.Created.UTC(), Expires: rb.Expires.UTC(),
			Revoked: utcPtr(rb.Revoked), Rotated: utcPtr(rb.Rotated), Status: rb.Status(now),
		})
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *api) revokeRobot(w http.ResponseWriter, r *http.Request) {
	name := mux.Vars(r)["name"]
	if err := a.Robots.Revoke(r.Context(), name, a.Now()); err != nil {
		a.failed(w, r, err)
		return
	}
	a.Logger.InfoContext(r.Context(), "robot token revoked", "robot", name, "by", auth.IdentityFrom(r.Context()).String())
	w.WriteHeader(http.StatusNoContent)
}

func (a *api) rotateRobot(w http.ResponseWriter, r *http.Request) {
	name := mux.Vars(r)["name"]
	now := a.Now()
	secret, expires, err := a.Robots.Rotate(r.Context(), name, now)
	if err != nil {
		a.failed(w, r, err)
		return
	}
	a.Logger.InfoContext(r.Context(), "robot token rotated", "robot", name, "by", auth.IdentityFrom(r.Context()).String())
	writeJSON(w, http.StatusOK, RobotSecret{Name: name, Secret: secret, Expires: expires.UTC()})
}

// failed answers a failure with its status and code; failures
// that are not the client's are logged and answered 500 without detail.
func (a *api) failed(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, auth.ErrRobotInvalid):
		writeError(w, r, http.StatusBadRequest, codeNameInvalid, err.Error())
	case errors.Is(err, auth.ErrRobotUnknown):
		writeError(w, r, http.StatusNotFound, codeRobotUnknown, err.Error())
	case errors.Is(err, auth.ErrRobotExists):
		writeError(w, r, http.StatusConflict, codeRobotExists, err.Error())
	case errors.Is(err, auth.ErrRobotInactive):
		writeError(w, r, http.StatusConflict, codeRobotInactive, err.Error())
	default:
		a.Logger.ErrorContext(r.Context(), "admin request failed", "method", r.Method, "path", r.URL.Path, "error", err)
		writeError(w, r, http.StatusInternalServerError, codeUnknown, "internal error")
	}
}

// robotScopes validates the scopes of a new robot: at least one, each a
// repository scope with a name and known actions. It returns them in
// canonical form.
func robotScopes(in []string) ([]string, error) {
	if len(in) == 0 {
		return nil, errors.New("scopes: at least one scope is required, such as repository:apps/*:pull,push")
	}
	if len(in) > maxRobotScopes {
		return nil, fmt.Errorf("scopes: %d given, at most %d allowed", len(in), maxRobotScopes)
	}
	out := make([]string, 0, len(in))
	for _, s := range in {
		sc, err := auth.ParseScope(strings.TrimSpace(s))
		if err != nil {
			return nil, err
		}
		switch {
		case sc.Type != "repository":
			return nil, fmt.Errorf("scope %q: robots take repository scopes only", s)
		case sc.Name == "" || strings.ContainsAny(sc.Name, " \t\r\n"):
			return nil, fmt.Errorf("scope %q: want a repository name or pattern", s)
		case len(sc.Actions) == 0:
			return nil, fmt.Errorf("scope %q: no actions (want pull, push, delete or *)", s)
		}
		out = append(out, sc.String())
	}
	return out, nil
}

// robotLifetime parses the expires field: a positive Go duration up to
// maxRobotLifetime.
func robotLifetime(s string) (time.Duration, error) {
	if s == "" {
		return 0, errors.New("expires: required, a duration such as 720h")
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("expires: %w", err)
	}
	if d <= 0 || d > maxRobotLifetime {
		return 0, fmt.Errorf("expires %s: want a positive duration up to %s", s, maxRobotLifetime)
	}
	return d, nil
}

// decodeBody reads one JSON object of at most maxAdminBody bytes
// into v, refusing unknown fields and trailing data, as the distribution
// API reads its own. On failure it has answered.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	if e := distribution.ReadJSON(r, v, maxAdminBody, false); e != nil {
		w.Header().Set("Cache-Control", "no-store")
		distribution.WriteError(w, r, e)
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError answers with the distribution API's error body, under
// one of the admin API's codes and a status of its own.
func writeError(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	w.Header().Set("Cache-Control", "no-store")
	distribution.WriteError(w, r, &distribution.Error{Code: distribution.Code{Name: code}, Message: msg, Status: status})
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}
