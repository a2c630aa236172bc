package registry

import (
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
	"github.com/berth-registry/berth/storage"
)

// The administration API, under auth.AdminPrefix. The authentication
// middleware lets only administrators reach it.
//
//	POST   /_berth/admin/robots               create a robot token
//	GET    /_berth/admin/robots               list robot tokens
//	DELETE /_berth/admin/robots/{name}        revoke a robot token
//	POST   /_berth/admin/robots/{name}/rotate replace a robot's secret
//	POST   /_berth/admin/retention?dryRun=    apply retention policies
//	POST   /_berth/admin/gc                   collect garbage (admin_gc.go)
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

type adminAPI struct {
	store *storage.Store
	log   *slog.Logger
	now   func() time.Time
	// retention applies the configured policies; nil: none configured.
	retention *retention
	// gc and uploadIdle are the defaults of a garbage collection.
	gc         GCConfig
	uploadIdle time.Duration
}

// adminHandler serves the administration API from store. The caller
// mounts it at auth.AdminPrefix behind the authentication middleware,
// which admits only administrators.
func adminHandler(store *storage.Store, log *slog.Logger) http.Handler {
	return newAdminAPI(store, log, time.Now).handler()
}

func newAdminAPI(store *storage.Store, log *slog.Logger, now func() time.Time) *adminAPI {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &adminAPI{store: store, log: log, now: now}
}

func (a *adminAPI) handler() http.Handler {
	r := mux.NewRouter()
	robots := strings.TrimSuffix(auth.AdminPrefix, "/") + "/robots"
	r.HandleFunc(robots, a.createRobot).Methods(http.MethodPost)
	r.HandleFunc(robots, a.listRobots).Methods(http.MethodGet)
	r.HandleFunc(robots+"/{name}", a.revokeRobot).Methods(http.MethodDelete)
	r.HandleFunc(robots+"/{name}/rotate", a.rotateRobot).Methods(http.MethodPost)
	r.HandleFunc(strings.TrimSuffix(auth.AdminPrefix, "/")+"/retention", a.runRetention).Methods(http.MethodPost)
	r.HandleFunc(GCPath, a.collectGarbage).Methods(http.MethodPost)
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		writeAdminError(w, req, http.StatusNotFound, codeUnsupported, fmt.Sprintf("no such endpoint: %s %s", req.Method, req.URL.Path))
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		writeAdminError(w, req, http.StatusMethodNotAllowed, codeUnsupported, fmt.Sprintf("method %s is not supported on %s", req.Method, req.URL.Path))
	})
	return r
}

func (a *adminAPI) createRobot(w http.ResponseWriter, r *http.Request) {
	var req CreateRobotRequest
	if !decodeAdminBody(w, r, &req) {
		return
	}
	if err := storage.ValidRobotName(req.Name); err != nil {
		writeAdminError(w, r, http.StatusBadRequest, codeNameInvalid, err.Error())
		return
	}
	scopes, err := robotScopes(req.Scopes)
	if err != nil {
		writeAdminError(w, r, http.StatusBadRequest, codeScopeInvalid, err.Error())
		return
	}
	life, err := robotLifetime(req.Expires)
	if err != nil {
		writeAdminError(w, r, http.StatusBadRequest, codeExpiresInvalid, err.Error())
		return
	}
	expires := a.now().Add(life).UTC()
	secret, err := a.store.CreateRobot(r.Context(), req.Name, scopes, expires)
	if err != nil {
		a.storeError(w, r, err)
		return
	}
	a.log.InfoContext(r.Context(), "robot token created", "robot", req.Name, "scopes", scopes,
		"expires", expires, "by", auth.IdentityFrom(r.Context()).String())
	writeAdminJSON(w, http.StatusCreated, RobotSecret{Name: req.Name, Secret: secret, Expires: expires})
}

func (a *adminAPI) listRobots(w http.ResponseWriter, r *http.Request) {
	robots, err := a.store.ListRobots(r.Context())
	if err != nil {
		a.storeError(w, r, err)
		return
	}
	now := a.now()
	out := make([]RobotListing, 0, len(robots))
	for _, rb := range robots {
		out = append(out, RobotListing{
			Name: rb.Name, Scopes: rb.Scopes, Created: rb.Created.UTC(), Expires: rb.Expires.UTC(),
			Revoked: utcPtr(rb.Revoked), Rotated: utcPtr(rb.Rotated), Status: rb.Status(now),
		})
	}
	writeAdminJSON(w, http.StatusOK, out)
}

func (a *adminAPI) revokeRobot(w http.ResponseWriter, r *http.Request) {
	name := mux.Vars(r)["name"]
	if err := a.store.RevokeRobot(r.Context(), name, a.now()); err != nil {
		a.storeError(w, r, err)
		return
	}
	a.log.InfoContext(r.Context(), "robot token revoked", "robot", name, "by", auth.IdentityFrom(r.Context()).String())
	w.WriteHeader(http.StatusNoContent)
}

func (a *adminAPI) rotateRobot(w http.ResponseWriter, r *http.Request) {
	name := mux.Vars(r)["name"]
	now := a.now()
	secret, err := a.store.RotateRobot(r.Context(), name, now)
	if err != nil {
		a.storeError(w, r, err)
		return
	}
	a.log.InfoContext(r.Context(), "robot token rotated", "robot", name, "by", auth.IdentityFrom(r.Context()).String())
	// Rotation keeps the expiry; read it back for the answer. Only a
	// revocation in between can make this fail, and then the new secret
	// is of no use anyway.
	_, expires, err := a.store.ActiveRobot(r.Context(), name, now)
	if err != nil {
		writeAdminError(w, r, http.StatusConflict, codeRobotInactive, "robot revoked during rotation: "+err.Error())
		return
	}
	writeAdminJSON(w, http.StatusOK, RobotSecret{Name: name, Secret: secret, Expires: expires.UTC()})
}

// storeError answers a store failure with its status and code; failures
// that are not the client's are logged and answered 500 without detail.
func (a *adminAPI) storeError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, storage.ErrRobotInvalid):
		writeAdminError(w, r, http.StatusBadRequest, codeNameInvalid, err.Error())
	case errors.Is(err, storage.ErrRobotUnknown):
		writeAdminError(w, r, http.StatusNotFound, codeRobotUnknown, err.Error())
	case errors.Is(err, storage.ErrRobotExists):
		writeAdminError(w, r, http.StatusConflict, codeRobotExists, err.Error())
	case errors.Is(err, storage.ErrRobotInactive):
		writeAdminError(w, r, http.StatusConflict, codeRobotInactive, err.Error())
	default:
		a.log.ErrorContext(r.Context(), "admin request failed", "method", r.Method, "path", r.URL.Path, "error", err)
		writeAdminError(w, r, http.StatusInternalServerError, codeUnknown, "internal error")
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

// decodeAdminBody reads one JSON object of at most maxAdminBody bytes
// into v, refusing unknown fields and trailing data, as the distribution
// API reads its own. On failure it has answered.
func decodeAdminBody(w http.ResponseWriter, r *http.Request, v any) bool {
	if e := distribution.ReadJSON(r, v, maxAdminBody, false); e != nil {
		w.Header().Set("Cache-Control", "no-store")
		distribution.WriteError(w, r, e)
		return false
	}
	return true
}

func writeAdminJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeAdminError answers with the distribution API's error body, under
// one of the admin API's codes and a status of its own.
func writeAdminError(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
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
