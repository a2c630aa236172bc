package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/berth-registry/berth/distribution"
)

// RobotVerifier checks robot tokens, which the store keeps hashed.
type RobotVerifier interface {
	// VerifyRobot checks a robot secret. It fails for an unknown, revoked
	// or expired token, and otherwise returns the robot.
	VerifyRobot(ctx context.Context, secret string, now time.Time) (RobotInfo, error)
	// ActiveRobot returns a robot that is neither revoked nor expired at
	// now, and an error otherwise. When its secret was set (SecretSet)
	// ends the tokens issued before a rotation.
	ActiveRobot(ctx context.Context, name string, now time.Time) (RobotInfo, error)
}

// RobotSecretPrefix starts every robot secret, so that a password can be
// told apart from one without a lookup.
const RobotSecretPrefix = "berth_"

// maxTokenRequest bounds the body of a token request.
const maxTokenRequest = 64 << 10

// refreshLifetime is how long a refresh token lasts: the longest any token
// does, which is how long a retired signing key keeps verifying.
const refreshLifetime = MaxTokenLifetime

// tokenResponse is the token service's answer, in the form both the Docker
// token protocol (token) and OAuth2 clients (access_token) read.
type tokenResponse struct {
	Token        string `json:"token"`
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token,omitempty"`
	ExpiresIn    int    `json:"expires_in"`
	IssuedAt     string `json:"issued_at"`
	Scope        string `json:"scope,omitempty"`
}

// serveToken is the token endpoint. GET takes Basic credentials (or none,
// for anonymous access) and scope parameters; POST takes an OAuth2 form
// with grant_type password or refresh_token. Both answer a short-lived JWT
// carrying the granted subset of the scopes asked for.
func (a *Authenticator) serveToken(w http.ResponseWriter, r *http.Request) {
	now := a.now()
	r.Body = http.MaxBytesReader(w, r.Body, maxTokenRequest)
	if err := r.ParseForm(); err != nil {
		writeAuthError(w, r, http.StatusBadRequest, distribution.CodeUnsupported, "malformed token request")
		return
	}
	if svc := r.Form.Get("service"); svc != "" && svc != a.cfg.Token.Service {
		writeAuthError(w, r, http.StatusBadRequest, distribution.CodeUnsupported, fmt.Sprintf("unknown service %q", svc))
		return
	}
	var scopes []Scope
	for _, v := range r.Form["scope"] {
		for _, s := range strings.Fields(v) {
			sc, err := ParseScope(s)
			if err != nil {
				writeAuthError(w, r, http.StatusBadRequest, distribution.CodeUnsupported, err.Error())
				return
			}
			scopes = append(scopes, sc)
		}
	}

	var id checked
	var err error
	switch {
	case r.Method == http.MethodPost && r.PostForm.Get("grant_type") == "refresh_token":
		id, err = a.refreshIdentity(r.Context(), r.PostForm.Get("refresh_token"), now)
	case r.Method == http.MethodPost && r.PostForm.Get("grant_type") == "password":
		id, err = a.checkPassword(w, r, r.PostForm.Get("username"), r.PostForm.Get("password"), now)
	case r.Method == http.MethodPost:
		writeAuthError(w, r, http.StatusBadRequest, distribution.CodeUnsupported, "grant_type must be password or refresh_token")
		return
	default:
		if u, p, has := r.BasicAuth(); has {
			id, err = a.checkPassword(w, r, u, p, now)
		} else {
			id = checked{Identity: Identity{Kind: Anonymous}}
		}
	}
	if errors.Is(err, errLoginsLimited) {
		return // answered 429
	}
	if err != nil {
		writeAuthError(w, r, http.StatusUnauthorized, distribution.CodeUnauthorized, "invalid credentials")
		return
	}

	exp := now.Add(a.cfg.Token.Lifetime)
	if id.Kind == Robot {
		exp = minTime(exp, id.expires)
	}
	var granted []Scope
	for _, sc := range scopes {
		if g := a.policy.Grant(id.Identity, sc); len(g.Actions) > 0 {
			granted = append(granted, g)
		}
	}
	access, err := a.signer.sign(id.Identity, id.cred, useAccess, granted, now, exp)
	if err != nil {
		a.log.ErrorContext(r.Context(), "issue token", "error", err)
		writeAuthError(w, r, http.StatusInternalServerError, distribution.CodeUnknown, "internal error")
		return
	}
	resp := tokenResponse{Token: access, AccessToken: access, ExpiresIn: int(exp.Sub(now).Seconds()),
		IssuedAt: now.UTC().Format(time.RFC3339)}
	for _, g := range granted {
		resp.Scope = strings.TrimSpace(resp.Scope + " " + g.String())
	}
	offline := r.Form.Get("offline_token") == "true" || r.Form.Get("access_type") == "offline"
	if offline && id.Kind != Anonymous {
		rexp := now.Add(refreshLifetime)
		if id.Kind == Robot {
			rexp = minTime(rexp, id.expires)
		}
		if resp.RefreshToken, err = a.signer.sign(id.Identity, id.cred, useRefresh, nil, now, rexp); err != nil {
			a.log.ErrorContext(r.Context(), "issue refresh token", "error", err)
			writeAuthError(w, r, http.StatusInternalServerError, distribution.CodeUnknown, "internal error")
			return
		}
	}
	a.obs.TokenIssued(id.Kind.String(), false)
	if resp.RefreshToken != "" {
		a.obs.TokenIssued(id.Kind.String(), true)
	}
	a.log.InfoContext(r.Context(), "token issued", "identity", id.String(), "scope", resp.Scope, "remote", clientIP(r))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(resp)
}

// checked is an authenticated identity with the expiry of its credential
// and the credential's fingerprint (see credential).
type checked struct {
	Identity
	expires time.Time
	cred    string
}

// errLoginsLimited is checkPassword's error when it has refused the caller
// for too many failed logins and answered 429 itself.
var errLoginsLimited = errors.New("too many failed logins")

// errBadCredentials is checkPassword's error for a wrong user name,
// password or robot secret; why is logged, not told to the caller.
var errBadCredentials = errors.New("invalid credentials")

// checkPassword verifies a user's password or a robot secret, counting
// attempts per (user name, client address) pair: see failureLimiter. When
// the pair has failed too often it answers 429 itself (with Retry-After)
// and returns errLoginsLimited.
func (a *Authenticator) checkPassword(w http.ResponseWriter, r *http.Request, user, pass string, now time.Time) (checked, error) {
	key := limiterKey(user, clientIP(r))
	if ok, wait := a.limiter.begin(now, key); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds())+1))
		a.obs.LoginRateLimited()
		a.log.WarnContext(r.Context(), "login refused: too many failures", "user", user, "remote", clientIP(r))
		writeAuthError(w, r, http.StatusTooManyRequests, distribution.CodeTooManyRequests, "too many failed logins; retry later")
		return checked{}, errLoginsLimited
	}
	id, err := a.authenticatePassword(r.Context(), user, pass, now)
	if err != nil {
		a.obs.LoginFailed()
		a.log.InfoContext(r.Context(), "login failed", "user", user, "remote", clientIP(r), "reason", err)
		return checked{}, errBadCredentials
	}
	a.limiter.succeeded(key)
	return id, nil
}

// authenticatePassword checks a user's password, or a robot secret given
// as the password (the user name is then informational).
func (a *Authenticator) authenticatePassword(ctx context.Context, user, pass string, now time.Time) (checked, error) {
	if strings.HasPrefix(pass, RobotSecretPrefix) && a.robots != nil {
		r, err := a.robots.VerifyRobot(ctx, pass, now)
		if err != nil {
			return checked{}, err
		}
		return robotIdentity(r), nil
	}
	users := a.users.Fresh()
	if !users.Verify(user, pass) {
		return checked{}, errors.New("wrong user name or password")
	}
	cred, ok := users.Fingerprint(user)
	if !ok {
		return checked{}, errors.New("user removed during the login")
	}
	return checked{Identity: Identity{Kind: User, Name: user}, cred: cred}, nil
}

// robotIdentity is robot r with the scopes the store keeps for it, and
// the fingerprint of its current secret, which changes when the secret is
// rotated; a scope that does not parse grants nothing.
func robotIdentity(r RobotInfo) checked {
	id := Identity{Kind: Robot, Name: r.Name}
	for _, s := range r.Scopes {
		if sc, err := ParseScope(s); err == nil {
			id.Scopes = append(id.Scopes, sc)
		}
	}
	return checked{Identity: id, expires: r.Expires,
		cred: credential("robot", r.Name, r.SecretSet().UTC().Format(time.RFC3339Nano))}
}

// refreshIdentity checks a refresh token, and that its subject still
// exists with the credential the token was obtained with.
func (a *Authenticator) refreshIdentity(ctx context.Context, raw string, now time.Time) (checked, error) {
	claims, err := a.signer.verify(raw, useRefresh, now)
	if err != nil {
		return checked{}, err
	}
	return a.current(ctx, claims, now)
}

// clientIP is the address of the peer, without its port.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func minTime(a, b time.Time) time.Time {
	if !b.IsZero() && b.Before(a) {
		return b
	}
	return a
}
