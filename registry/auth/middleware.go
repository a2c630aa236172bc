package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/berth-registry/berth/distribution"
	"github.com/berth-registry/berth/files"
)

// TokenPath is where the token service answers.
const TokenPath = "/auth/token"

// Authenticator puts authentication and access rules in front of the
// distribution API and serves the token endpoint.
type Authenticator struct {
	cfg     Config
	policy  *Policy
	users   *UserFile
	robots  RobotVerifier
	signer  signer
	limiter *failureLimiter
	log     *slog.Logger
	now     func() time.Time
}

// New builds an Authenticator for cfg (with defaults applied). robots may
// be nil when robot tokens are not in use.
func New(cfg Config, users *UserFile, keys *KeyRing, robots RobotVerifier, log *slog.Logger) (*Authenticator, error) {
	cfg = cfg.WithDefaults()
	policy, err := NewPolicy(cfg)
	if err != nil {
		return nil, err
	}
	return &Authenticator{
		cfg:     cfg,
		policy:  policy,
		users:   users,
		robots:  robots,
		signer:  signer{issuer: cfg.Token.Issuer, audience: cfg.Token.Service, keys: keys},
		limiter: newFailureLimiter(cfg.Login.MaxFailures, cfg.Login.Window),
		log:     log,
		now:     time.Now,
	}, nil
}

type identityKey struct{}

// caller is what the middleware puts in a request's context: who is
// calling and, for a Bearer token, the token's claims.
type caller struct {
	id     Identity
	claims *Claims
}

// IdentityFrom returns the identity the middleware authenticated for the
// request's context, or anonymous.
func IdentityFrom(ctx context.Context) Identity {
	c, _ := ctx.Value(identityKey{}).(caller)
	return c.id
}

// Allowed reports whether the caller of ctx may do action on repo by the
// rules (and a robot's scopes), whatever its token says. The distribution
// API asks it to filter the catalog and search, which list what the caller
// may pull.
func (a *Authenticator) Allowed(ctx context.Context, repo, action string) bool {
	return a.policy.Allowed(IdentityFrom(ctx), repo, action)
}

// Granted reports whether the request of ctx may do action on repo: the
// rules allow the caller and, for a Bearer token, the token grants it. The
// distribution API asks it for the repositories a request reaches beyond
// the one in its path: the source of a cross-repository mount and of a
// promotion.
func (a *Authenticator) Granted(ctx context.Context, repo, action string) bool {
	c, _ := ctx.Value(identityKey{}).(caller)
	return a.permits(c.id, c.claims, Scope{Type: "repository", Name: repo, Actions: []string{action}})
}

// need is the access a request requires.
type need struct {
	scope Scope
	// login means the request needs only a valid login (or anonymous
	// token): the API version check.
	login bool
	// admin means the request is for administrators only.
	admin bool
	// files means the request is one of the file paths, whose clients
	// (curl, wget, browsers) answer a Basic challenge rather than a
	// Bearer one.
	files bool
}

// AdminPrefix starts the paths of Berth's administration API, which only
// administrators may use.
const AdminPrefix = "/_berth/admin/"

// repoPathRE matches the paths of the distribution API and of Berth's
// repository extensions (_berth/tags/<tag>/history, rollback and promote),
// capturing the repository name and the resource. It is matched against
// the escaped path, as the distribution router matches its routes, so that
// an escaped slash ("%2F") stays inside its segment for both.
var repoPathRE = regexp.MustCompile(`^/v2/(.+?)/(blobs/uploads/[^/]*|blobs/[^/]+|manifests/[^/]+|tags/list|referrers/[^/]+|_berth/tags/[^/]+/(?:history|rollback|promote)|_berth/pulls)$`)

// required names what a request needs, from its path and method. ok is
// false for a path outside the API, which needs nothing. A path under /v2/
// that is not one of the API's known resources needs a login, so that a
// route added to the distribution API without a rule here is closed to
// anonymous callers rather than open.
func required(r *http.Request) (nd need, ok bool) {
	p := r.URL.Path
	if strings.HasPrefix(p, AdminPrefix) {
		return need{admin: true}, true
	}
	if strings.HasPrefix(p, files.Prefix) {
		return requiredFiles(r), true
	}
	switch p {
	case "/v2/", "/v2":
		return need{login: true}, true
	case "/v2/_catalog", distribution.SearchPath, distribution.RepositoriesPath:
		// All list what the caller may pull, filtered per caller.
		return need{scope: Scope{Type: "registry", Name: "catalog", Actions: []string{"*"}}}, true
	}
	m := repoPathRE.FindStringSubmatch(r.URL.EscapedPath())
	if m == nil {
		if strings.HasPrefix(p, "/v2/") {
			return need{login: true}, true
		}
		return need{}, false
	}
	action := ActionPull
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		// Who pulled what is for those who may push: the deployers and
		// the builders, not every reader.
		if strings.HasPrefix(m[2], "blobs/uploads/") || m[2] == "_berth/pulls" {
			action = ActionPush
		}
	case http.MethodDelete:
		action = ActionDelete
		if strings.HasPrefix(m[2], "blobs/uploads/") {
			action = ActionPush // cancelling one's own upload
		}
	default:
		action = ActionPush
	}
	return need{scope: Scope{Type: "repository", Name: distribution.UnescapeSegment(m[1]), Actions: []string{action}}}, true
}

// requiredFiles names what a request for a file path needs: pull on its
// repository to download, push to upload (any other method too, which
// the handler refuses). A path that names no repository needs a login:
// the handler then explains what is wrong with it.
func requiredFiles(r *http.Request) need {
	t, err := files.ParsePath(r.Method, r.URL.EscapedPath())
	if err != nil {
		return need{login: true, files: true}
	}
	action := ActionPush
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		action = ActionPull
	}
	return need{scope: Scope{Type: "repository", Name: t.Repo, Actions: []string{action}}, files: true}
}

// Wrap returns next behind authentication, with the token endpoint.
func (a *Authenticator) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == TokenPath {
			if r.Method != http.MethodGet && r.Method != http.MethodPost {
				writeAuthError(w, r, http.StatusMethodNotAllowed, distribution.CodeUnsupported, "use GET or POST")
				return
			}
			a.serveToken(w, r)
			return
		}
		nd, ok := required(r)
		if !ok {
			next.ServeHTTP(w, r) // not an API path: the API answers 404
			return
		}
		w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		now := a.now()
		id, claims, present, err := a.authenticate(w, r, now)
		if errors.Is(err, errLoginsLimited) {
			return // refused by the login rate limit; answered
		}
		if err != nil {
			// Why goes to the log; the caller learns only that its
			// credentials did not do (not, say, that a user is gone).
			a.log.InfoContext(r.Context(), "authentication failed", "reason", err, "remote", clientIP(r))
			a.challenge(w, r, nd, "invalid_token", "authentication failed")
			return
		}
		// The API version check, the catalog, metadata search and the
		// admin API answer differently per caller, so a caller without
		// credentials is asked for them first; an anonymous token is an
		// answer.
		if !present && (nd.login || nd.admin || nd.scope.Type == "registry") {
			a.challenge(w, r, nd, "", "authentication required: log in first")
			return
		}
		switch {
		case nd.login || nd.admin:
			if nd.admin && !a.policy.IsAdmin(id.Identity) {
				a.log.InfoContext(r.Context(), "access denied: not an administrator", "identity", id.String(), "remote", clientIP(r))
				writeAuthDetail(w, r, http.StatusForbidden, distribution.CodeDenied, "administrators only", nil)
				return
			}
		case !a.permits(id.Identity, claims, nd.scope):
			switch {
			case !present:
				// No credentials at all: the client is to log in, or
				// fetch an anonymous token, and try again. As RFC 6750
				// asks, the challenge carries no error code.
				a.challenge(w, r, nd, "", "authentication required")
			case id.Kind == Anonymous:
				// An anonymous token, which the token service gave all
				// it could: asking again without logging in cannot help.
				// insufficient_scope makes clients give up at once with
				// their usual wording ("pull access denied ... may
				// require 'docker login'", "denied: requested access to
				// the resource is denied") instead of retrying.
				a.log.InfoContext(r.Context(), "access denied", "identity", id.String(), "scope", nd.scope.String(), "remote", clientIP(r))
				a.challenge(w, r, nd, "insufficient_scope", "authentication required")
			case claims != nil && a.policyPermits(id.Identity, nd.scope):
				// The caller may, but its token does not say so: it asks
				// the token service again for this scope.
				a.challenge(w, r, nd, "insufficient_scope", "token does not cover "+nd.scope.String())
			default:
				a.log.InfoContext(r.Context(), "access denied", "identity", id.String(), "scope", nd.scope.String(), "remote", clientIP(r))
				writeAuthDetail(w, r, http.StatusForbidden, distribution.CodeDenied, distribution.CodeDenied.Message, nd.detail())
			}
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), identityKey{}, caller{id: id.Identity, claims: claims})))
	})
}

// permits reports whether the request may go ahead: the rules allow it
// and, for a bearer token, the token grants it.
func (a *Authenticator) permits(id Identity, claims *Claims, want Scope) bool {
	if !a.policyPermits(id, want) {
		return false
	}
	if claims == nil {
		return true
	}
	return slices.ContainsFunc(claims.Access, func(g Scope) bool {
		return g.Type == want.Type && g.Name == want.Name &&
			slices.ContainsFunc(want.Actions, func(w string) bool { return slices.Contains(g.Actions, w) || slices.Contains(g.Actions, "*") })
	})
}

func (a *Authenticator) policyPermits(id Identity, want Scope) bool {
	if want.Type == "registry" {
		return true // the catalog is filtered per caller
	}
	for _, act := range want.Actions {
		if !a.policy.Allowed(id, want.Name, act) {
			return false
		}
	}
	return true
}

// authenticate reads the request's credentials: none (anonymous), Basic
// (a user's password or a robot secret) or Bearer (a token from the token
// service). present reports whether any were given.
func (a *Authenticator) authenticate(w http.ResponseWriter, r *http.Request, now time.Time) (id checked, claims *Claims, present bool, err error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return checked{Identity: Identity{Kind: Anonymous}}, nil, false, nil
	}
	if user, pass, ok := r.BasicAuth(); ok {
		id, err := a.checkPassword(w, r, user, pass, now)
		if err != nil {
			return checked{}, nil, true, err
		}
		return id, nil, true, nil
	}
	raw, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		return checked{}, nil, true, errors.New("unsupported authorization scheme")
	}
	claims, err = a.signer.verify(strings.TrimSpace(raw), useAccess, now)
	if err != nil {
		return checked{}, nil, true, err
	}
	id, err = a.current(r.Context(), claims, now)
	if err != nil {
		return checked{}, nil, true, err
	}
	return id, claims, true, nil
}

// current checks that the subject of a token still exists, is allowed in
// and has the credential the token was obtained with: a removed user, a
// changed password, a revoked or expired robot and a rotated robot secret
// end every token issued before, whatever the token's own expiry.
func (a *Authenticator) current(ctx context.Context, claims *Claims, now time.Time) (checked, error) {
	id := claims.identity()
	switch id.Kind {
	case User:
		cred, ok := a.users.Fresh().Fingerprint(id.Name)
		if !ok {
			return checked{}, fmt.Errorf("user %s no longer exists", id.Name)
		}
		if claims.Cred != cred {
			return checked{}, fmt.Errorf("the password of user %s changed after the token was issued", id.Name)
		}
		return checked{Identity: id, cred: cred}, nil
	case Robot:
		if a.robots == nil {
			return checked{}, errors.New("robot tokens are not enabled")
		}
		r, err := a.robots.ActiveRobot(ctx, id.Name, now)
		if err != nil {
			return checked{}, err
		}
		c := robotIdentity(r)
		if claims.Cred != c.cred {
			return checked{}, fmt.Errorf("the secret of robot %s was rotated after the token was issued", id.Name)
		}
		return c, nil
	}
	return checked{Identity: id}, nil
}

// challenge answers 401 with a Bearer challenge naming the token service
// and the scope the request needs.
func (a *Authenticator) challenge(w http.ResponseWriter, r *http.Request, nd need, errCode, msg string) {
	realm := a.cfg.Token.Realm
	if realm == "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		realm = scheme + "://" + r.Host + TokenPath
	}
	c := fmt.Sprintf("Bearer realm=%q,service=%q", realm, a.cfg.Token.Service)
	if !nd.login && !nd.admin {
		c += fmt.Sprintf(",scope=%q", nd.scope.String())
	}
	if errCode != "" {
		c += fmt.Sprintf(",error=%q", errCode)
	}
	w.Header().Del("WWW-Authenticate")
	if nd.files {
		// curl -u and wget send a password when asked in Basic; a
		// browser asks for one. The Bearer challenge follows for
		// clients that fetch tokens.
		w.Header().Add("WWW-Authenticate", fmt.Sprintf("Basic realm=%q, charset=\"UTF-8\"", a.cfg.Token.Service))
	}
	w.Header().Add("WWW-Authenticate", c)
	writeAuthDetail(w, r, http.StatusUnauthorized, distribution.CodeUnauthorized, msg, nd.detail())
}

// accessDetail is one access a refused request needed, in the detail of
// its error, as the Docker registry client reads it.
type accessDetail struct {
	Type   string `json:"Type"`
	Name   string `json:"Name"`
	Action string `json:"Action"`
}

// detail is the detail of a refusal of nd: the access the request needed,
// which the caller named itself. Docker's registry client reads an error
// whose message is its code's own and that has no detail as a bare code,
// which it then neither words as usual ("pull access denied ...") nor
// stops retrying on; with the detail it does both.
func (nd need) detail() any {
	if nd.login || nd.admin {
		return nil
	}
	var out []accessDetail
	for _, act := range nd.scope.Actions {
		out = append(out, accessDetail{Type: nd.scope.Type, Name: nd.scope.Name, Action: act})
	}
	return out
}

// writeAuthError answers with the specification's error body for code,
// with the given status.
func writeAuthError(w http.ResponseWriter, r *http.Request, status int, code distribution.Code, msg string) {
	writeAuthDetail(w, r, status, code, msg, nil)
}

// writeAuthDetail is writeAuthError with a detail.
func writeAuthDetail(w http.ResponseWriter, r *http.Request, status int, code distribution.Code, msg string, detail any) {
	distribution.WriteError(w, r, &distribution.Error{Code: code, Message: msg, Detail: detail, Status: status})
}
