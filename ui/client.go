package ui

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// maxAPIBody bounds what the UI reads of one API answer; a manifest is at
// most 4 MiB by default, and the UI reads no layer.
const maxAPIBody = 8 << 20

// errTooLarge is returned for an answer larger than the UI reads.
var errTooLarge = errors.New("answer too large for the web interface")

// apiClient sends the requests of one page to the API in-process, as the
// page's visitor: it answers the API's Bearer challenges as any registry
// client does, at the token endpoint the challenge names, with the
// session's refresh token, or anonymously without a session.
type apiClient struct {
	api http.Handler
	// orig is the browser's request: its context, client address, host
	// and TLS state go with every API request, so that the API logs and
	// records the visitor's address and rate-limits logins per visitor.
	orig *http.Request
	// mark, when set, derives the context of every API request (see
	// Options.APIContext).
	mark func(context.Context) context.Context
	// refresh is the session's refresh token; empty for a visitor who has
	// not logged in.
	refresh string
	// base is the access token sent first with every request, so that
	// the API knows who asks; empty until authorize gets one.
	base string
	// tokens caches the access tokens of this page, per scope.
	tokens map[string]grant
	// realm is the challenge of the version check, once discover has
	// asked; authOff records that it asked for nothing.
	realm   *challenge
	authOff bool
}

// grant is an access token and the scope the token service granted.
type grant struct {
	token string
	scope string
}

// apiResponse is a whole answer of the API.
type apiResponse struct {
	status int
	header http.Header
	body   []byte
}

// apiError is an error answer, with the first entry of its body.
type apiError struct {
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message)
}

// errorOf reads the error answer resp.
func errorOf(resp *apiResponse) *apiError {
	e := &apiError{Status: resp.status}
	var body struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(resp.body, &body) == nil && len(body.Errors) > 0 {
		e.Code, e.Message = body.Errors[0].Code, body.Errors[0].Message
	} else {
		e.Message = http.StatusText(resp.status)
	}
	return e
}

// hidden reports whether an error answer means the visitor may not see
// what was asked for, or it does not exist: the UI tells these apart no
// more than the API does for an anonymous caller.
func hidden(err error) bool {
	var e *apiError
	if !errors.As(err, &e) {
		return false
	}
	return e.Status == http.StatusNotFound || e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden
}

// recorder collects an in-process answer, up to maxAPIBody bytes.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
	over   bool
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	if r.body.Len()+len(p) > maxAPIBody {
		r.over = true
		return 0, errTooLarge
	}
	return r.body.Write(p)
}

// send makes one request to the API with the given Authorization header
// (none if empty).
func (c *apiClient) send(ctx context.Context, method, target string, body []byte, header http.Header, authz string) (*apiResponse, error) {
	var rd io.Reader = http.NoBody
	if body != nil {
		rd = bytes.NewReader(body)
	}
	if c.mark != nil {
		ctx = c.mark(ctx)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return nil, fmt.Errorf("build API request: %w", err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	req.RemoteAddr = c.orig.RemoteAddr
	req.Host = c.orig.Host
	req.TLS = c.orig.TLS
	req.RequestURI = req.URL.RequestURI()
	rec := &recorder{header: http.Header{}}
	c.api.ServeHTTP(rec, req)
	if rec.over {
		return nil, fmt.Errorf("%s %s: %w", method, req.URL.Path, errTooLarge)
	}
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	return &apiResponse{status: rec.status, header: rec.header, body: rec.body.Bytes()}, nil
}

// challengeParam reads one parameter of a WWW-Authenticate challenge.
var challengeParam = regexp.MustCompile(`(\w+)="([^"]*)"`)

// challenge is a parsed Bearer challenge.
type challenge struct {
	realm, service, scope, err string
}

// parseChallenge reads the Bearer challenge of a 401 answer.
func parseChallenge(h http.Header) (challenge, bool) {
	v := h.Get("WWW-Authenticate")
	if !strings.HasPrefix(v, "Bearer ") {
		return challenge{}, false
	}
	p := map[string]string{}
	for _, m := range challengeParam.FindAllStringSubmatch(v, -1) {
		p[m[1]] = m[2]
	}
	return challenge{realm: p["realm"], service: p["service"], scope: p["scope"], err: p["error"]}, p["realm"] != ""
}

// do sends a request to the API as the visitor and returns the answer,
// whatever its status. path is an absolute path such as /v2/_catalog.
func (c *apiClient) do(ctx context.Context, method, path string, query url.Values, body []byte, header http.Header) (*apiResponse, error) {
	target := path
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	authz := ""
	if c.base != "" {
		authz = "Bearer " + c.base
	}
	resp, err := c.send(ctx, method, target, body, header, authz)
	if err != nil || resp.status != http.StatusUnauthorized {
		return resp, err
	}
	ch, ok := parseChallenge(resp.header)
	if !ok || ch.err == "invalid_token" {
		return resp, nil
	}
	g, err := c.token(ctx, ch)
	if err != nil || g.token == "" {
		// No token: the 401 stands, and means the visitor may not.
		return resp, nil
	}
	return c.send(ctx, method, target, body, header, "Bearer "+g.token)
}

// get sends a GET and returns the answer of a 200, or an *apiError.
func (c *apiClient) get(ctx context.Context, path string, query url.Values, accept ...string) (*apiResponse, error) {
	h := http.Header{}
	if len(accept) > 0 {
		h.Set("Accept", strings.Join(accept, ", "))
	}
	resp, err := c.do(ctx, http.MethodGet, path, query, nil, h)
	if err != nil {
		return nil, err
	}
	if resp.status != http.StatusOK {
		return resp, errorOf(resp)
	}
	return resp, nil
}

// getJSON GETs path and decodes a 200 answer into out.
func (c *apiClient) getJSON(ctx context.Context, path string, query url.Values, out any) (*apiResponse, error) {
	resp, err := c.get(ctx, path, query, "application/json")
	if err != nil {
		return resp, err
	}
	if err := json.Unmarshal(resp.body, out); err != nil {
		return resp, fmt.Errorf("decode answer of %s: %w", path, err)
	}
	return resp, nil
}

// postJSON POSTs v as JSON and decodes the answer, if one of wants, into
// out; any other answer is an *apiError.
func (c *apiClient) postJSON(ctx context.Context, path string, v any, out any, wants ...int) (int, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return 0, fmt.Errorf("encode request: %w", err)
	}
	h := http.Header{"Content-Type": {"application/json"}, "Accept": {"application/json"}}
	resp, err := c.do(ctx, http.MethodPost, path, nil, body, h)
	if err != nil {
		return 0, err
	}
	if !slices.Contains(wants, resp.status) {
		return resp.status, errorOf(resp)
	}
	if out != nil {
		if err := json.Unmarshal(resp.body, out); err != nil {
			return resp.status, fmt.Errorf("decode answer of %s: %w", path, err)
		}
	}
	return resp.status, nil
}

// tokenAnswer is the token service's answer.
type tokenAnswer struct {
	Token        string `json:"token"`
	RefreshToken string `json:"refresh_token"`
	Scope        string `json:"scope"`
	ExpiresIn    int    `json:"expires_in"`
}

// token asks the token service the challenge names for its scope: with
// the session's refresh token, or anonymously. The token service is
// reached in-process, at the path of the realm.
func (c *apiClient) token(ctx context.Context, ch challenge) (grant, error) {
	if g, ok := c.tokens[ch.scope]; ok {
		return g, nil
	}
	realm, err := url.Parse(ch.realm)
	if err != nil || !strings.HasPrefix(realm.Path, "/") {
		return grant{}, fmt.Errorf("token realm %q: not a URL", ch.realm)
	}
	form := url.Values{}
	if ch.service != "" {
		form.Set("service", ch.service)
	}
	if ch.scope != "" {
		form.Set("scope", ch.scope)
	}
	var resp *apiResponse
	if c.refresh != "" {
		form.Set("grant_type", "refresh_token")
		form.Set("refresh_token", c.refresh)
		resp, err = c.send(ctx, http.MethodPost, realm.Path, []byte(form.Encode()),
			http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}, "")
	} else {
		resp, err = c.send(ctx, http.MethodGet, realm.Path+"?"+form.Encode(), nil, nil, "")
	}
	if err != nil {
		return grant{}, err
	}
	if resp.status != http.StatusOK {
		return grant{}, errorOf(resp)
	}
	var ans tokenAnswer
	if err := json.Unmarshal(resp.body, &ans); err != nil {
		return grant{}, fmt.Errorf("decode token: %w", err)
	}
	g := grant{token: ans.Token, scope: ans.Scope}
	if c.tokens == nil {
		c.tokens = map[string]grant{}
	}
	c.tokens[ch.scope] = g
	return g, nil
}

// discover asks the API who answers for tokens: the realm and service of
// the challenge of the version check. ok is false when the API asks for
// no credentials (authentication is off).
func (c *apiClient) discover(ctx context.Context) (ch challenge, ok bool, err error) {
	switch {
	case c.realm != nil:
		return *c.realm, true, nil
	case c.authOff:
		return challenge{}, false, nil
	}
	resp, err := c.send(ctx, http.MethodGet, "/v2/", nil, nil, "")
	if err != nil {
		return challenge{}, false, err
	}
	if resp.status != http.StatusUnauthorized {
		c.authOff = true
		return challenge{}, false, nil
	}
	ch, ok = parseChallenge(resp.header)
	if !ok {
		return challenge{}, false, errors.New("the API asks for credentials without a Bearer challenge")
	}
	ch.scope, ch.err = "", ""
	c.realm = &ch
	return ch, true, nil
}

// authorize asks the token service for one token covering every scope
// a page needs, and sends it first from then on: one token instead of one
// per challenge. With authentication off it does nothing.
func (c *apiClient) authorize(ctx context.Context, scopes ...string) error {
	ch, ok, err := c.discover(ctx)
	if err != nil || !ok {
		return err
	}
	ch.scope = strings.Join(scopes, " ")
	g, err := c.token(ctx, ch)
	if err != nil {
		return err
	}
	c.base = g.token
	return nil
}

// may reports whether the visitor may do action on repo, by asking the
// token service for it: what it grants is what the API allows. With
// authentication off, everyone may do everything.
func (c *apiClient) may(ctx context.Context, repo, action string) bool {
	ch, ok, err := c.discover(ctx)
	if err != nil {
		return false
	}
	if !ok {
		return true
	}
	want := "repository:" + repo
	granted := func(scope string) bool {
		for _, s := range strings.Fields(scope) {
			i := strings.LastIndex(s, ":")
			if i > 0 && s[:i] == want && slices.Contains(strings.Split(s[i+1:], ","), action) {
				return true
			}
		}
		return false
	}
	for _, g := range c.tokens {
		if granted(g.scope) {
			return true
		}
	}
	ch.scope = want + ":" + action
	g, err := c.token(ctx, ch)
	return err == nil && granted(g.scope)
}
