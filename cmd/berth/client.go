package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/spf13/cobra"
)

// registryFlags are the connection flags of the commands that talk to a
// running Berth through its HTTP API: token, tag, promote, find, retention,
// gc.
type registryFlags struct {
	registry      string
	username      string
	passwordStdin bool
}

// add registers the flags on cmd, as persistent flags: on a command
// without subcommands they are simply its own; "berth token" shares them
// with its subcommands.
func (rf *registryFlags) add(cmd *cobra.Command) {
	f := cmd.PersistentFlags()
	f.StringVar(&rf.registry, "registry", "", "registry URL (default $BERTH_REGISTRY or "+defaultRegistry+")")
	f.StringVarP(&rf.username, "username", "u", "", "user name (default $BERTH_USERNAME; none: anonymous)")
	f.BoolVar(&rf.passwordStdin, "password-stdin", false, "read the password from standard input (default $BERTH_PASSWORD)")
}

// apiClient calls a Berth server's HTTP API, with Basic credentials when a
// user name is set.
type apiClient struct {
	base     *url.URL
	username string
	password string
	http     *http.Client
}

// client resolves the registry URL and the optional credentials, from the
// flags, then the environment.
func (rf *registryFlags) client(cmd *cobra.Command) (*apiClient, error) {
	base, err := registryURL(rf.registry)
	if err != nil {
		return nil, err
	}
	c := &apiClient{base: base, http: &http.Client{Timeout: adminTimeout}}
	c.username = rf.username
	if c.username == "" {
		c.username = os.Getenv("BERTH_USERNAME")
	}
	if c.username == "" {
		if rf.passwordStdin {
			return nil, errors.New("--password-stdin needs a user name: use --username or set BERTH_USERNAME")
		}
		return c, nil
	}
	if rf.passwordStdin {
		if c.password, err = readPasswordLine(cmd.InOrStdin()); err != nil {
			return nil, err
		}
	} else if c.password = os.Getenv("BERTH_PASSWORD"); c.password == "" {
		return nil, errors.New("no password: pass --password-stdin and write it to standard input, or set BERTH_PASSWORD")
	}
	if base.Scheme == "http" && !isLoopback(base.Hostname()) {
		fmt.Fprintf(cmd.ErrOrStderr(), "warning: sending the password of %s over plain HTTP to %s\n", c.username, base.Host)
	}
	return c, nil
}

// registryURL resolves the registry to talk to: flag, else BERTH_REGISTRY,
// else the default, checked to be a plain http or https URL.
func registryURL(flag string) (*url.URL, error) {
	raw := flag
	if raw == "" {
		raw = os.Getenv("BERTH_REGISTRY")
	}
	if raw == "" {
		raw = defaultRegistry
	}
	base, err := url.Parse(strings.TrimSuffix(raw, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" ||
		base.RawQuery != "" || base.Fragment != "" || base.User != nil {
		return nil, fmt.Errorf("--registry %q: want a URL such as https://registry.example.com or http://127.0.0.1:5000", raw)
	}
	return base, nil
}

// isLoopback reports whether host names this machine.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// apiError is one entry of the error body of an answer.
type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// APIError is an error answer of the registry: the status and the first
// entry of the specification's error body.
type APIError struct {
	Status  int
	Code    string
	Message string
}

func (e *APIError) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("registry answered %d: %s", e.Status, e.Message)
	}
	return fmt.Sprintf("registry answered %d %s: %s", e.Status, e.Code, e.Message)
}

// do sends method to path (an absolute path on the registry, such as
// /v2/apps/web/_berth/tags/prod/history) with query, and body as JSON if
// not nil. An answer with status want is decoded into out if not nil; any
// other answer is an *APIError. It returns the response headers.
func (c *apiClient) do(ctx context.Context, method, path string, query url.Values, body any, want int, out any) (http.Header, error) {
	_, h, err := c.call(ctx, method, path, query, body, out, want)
	return h, err
}

// call is do for a request that may succeed with any of several statuses;
// it returns the status it got.
func (c *apiClient) call(ctx context.Context, method, path string, query url.Values, body any, out any, wants ...int) (int, http.Header, error) {
	u := *c.base
	u.Path = strings.TrimSuffix(c.base.Path, "/") + path
	u.RawQuery = query.Encode()
	var buf []byte
	if body != nil {
		var err error
		if buf, err = json.Marshal(body); err != nil {
			return 0, nil, fmt.Errorf("encode request: %w", err)
		}
	}
	resp, raw, err := c.send(ctx, method, u.String(), buf, "")
	if err == nil && resp.StatusCode == http.StatusUnauthorized {
		// Asked to log in by token: an anonymous caller gets an
		// anonymous token, which is an answer too.
		if token, ok := c.token(ctx, resp.Header.Get("WWW-Authenticate")); ok {
			resp, raw, err = c.send(ctx, method, u.String(), buf, token)
		}
	}
	if err != nil {
		return 0, nil, err
	}
	if !slices.Contains(wants, resp.StatusCode) {
		return resp.StatusCode, resp.Header, apiErrorFrom(resp.StatusCode, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, resp.Header, fmt.Errorf("decode answer of %s: %w", c.base.Redacted(), err)
		}
	}
	return resp.StatusCode, resp.Header, nil
}

// send sends one request, with Basic credentials when a user is set or
// the bearer token when one is given, and reads the whole answer.
func (c *apiClient) send(ctx context.Context, method, target string, body []byte, bearer string) (*http.Response, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return nil, nil, fmt.Errorf("build request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	switch {
	case bearer != "":
		req.Header.Set("Authorization", "Bearer "+bearer)
	case c.username != "":
		req.SetBasicAuth(c.username, c.password)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("reach registry %s: %w", c.base.Redacted(), err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAdminResponse))
	if err != nil {
		return nil, nil, fmt.Errorf("read answer of %s: %w", c.base.Redacted(), err)
	}
	return resp, raw, nil
}

// challengeParam reads one parameter of a WWW-Authenticate challenge.
var challengeParam = regexp.MustCompile(`(\w+)="([^"]*)"`)

// token answers a Bearer challenge: it asks the token service the
// challenge names for the scope it names, as the configured user or
// anonymously. It reports false when there is no Bearer challenge or no
// token was given.
func (c *apiClient) token(ctx context.Context, challenge string) (string, bool) {
	if !strings.HasPrefix(challenge, "Bearer ") {
		return "", false
	}
	params := map[string]string{}
	for _, m := range challengeParam.FindAllStringSubmatch(challenge, -1) {
		params[m[1]] = m[2]
	}
	if params["error"] == "invalid_token" {
		// The credentials sent were refused: sending them again to the
		// token service would only count a second failed login.
		return "", false
	}
	realm, err := url.Parse(params["realm"])
	if err != nil || !strings.EqualFold(realm.Host, c.base.Host) || (realm.Scheme != "http" && realm.Scheme != "https") ||
		(c.base.Scheme == "https" && realm.Scheme != "https") {
		// Only the registry's own token service gets credentials, and
		// over TLS when the registry is reached over TLS.
		return "", false
	}
	q := url.Values{"service": {params["service"]}}
	if params["scope"] != "" {
		q.Set("scope", params["scope"])
	}
	realm.RawQuery = q.Encode()
	resp, raw, err := c.send(ctx, http.MethodGet, realm.String(), nil, "")
	if err != nil || resp.StatusCode != http.StatusOK {
		return "", false
	}
	var tok struct {
		Token string `json:"token"`
	}
	if json.Unmarshal(raw, &tok) != nil || tok.Token == "" {
		return "", false
	}
	return tok.Token, true
}

// apiErrorFrom reads an error answer.
func apiErrorFrom(status int, raw []byte) *APIError {
	var body struct {
		Errors []apiError `json:"errors"`
	}
	e := &APIError{Status: status}
	if json.Unmarshal(raw, &body) == nil && len(body.Errors) > 0 {
		e.Code, e.Message = body.Errors[0].Code, body.Errors[0].Message
		return e
	}
	e.Message = strings.TrimSpace(string(raw))
	if len(e.Message) > 200 {
		e.Message = e.Message[:200] + "..."
	}
	if e.Message == "" {
		e.Message = http.StatusText(status)
	}
	return e
}

// printJSON writes v as indented JSON, as the commands' --json does.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write JSON: %w", err)
	}
	return nil
}

// splitRef splits "REPO:TAG" (or "REPO@DIGEST" when digestOK) into its
// repository and reference. The tag separator is the last ":" after the
// last "/", so registry-less names with ports are not misread.
func splitRef(s string, digestOK bool) (repo, ref string, err error) {
	if i := strings.Index(s, "@"); i >= 0 {
		if !digestOK {
			return "", "", fmt.Errorf("%q: want REPOSITORY:TAG", s)
		}
		repo, ref = s[:i], s[i+1:]
	} else {
		slash := strings.LastIndex(s, "/")
		colon := strings.LastIndex(s, ":")
		if colon <= slash {
			return "", "", fmt.Errorf("%q: want REPOSITORY:TAG", s)
		}
		repo, ref = s[:colon], s[colon+1:]
	}
	if repo == "" || ref == "" {
		return "", "", fmt.Errorf("%q: want REPOSITORY:TAG", s)
	}
	return repo, ref, nil
}

// readAll reads an answer's body, bounded.
func readAll(r io.Reader) ([]byte, error) {
	return io.ReadAll(io.LimitReader(r, maxAdminResponse))
}

// jsonUnmarshal decodes an answer.
func jsonUnmarshal(raw []byte, out any) error {
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	return nil
}
