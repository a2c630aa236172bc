package conformance_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/conformance/internal/berthtest"
)

// Store format compatibility. testdata/store-v1 holds a data directory
// written by the Berth of its generation (storefixture_gen_test.go made it
// through the HTTP API and the berth command, see its README), with the
// users file, the credentials and the golden observations: what that Berth
// answered, request by request, when it served the store. TestStoreFixture
// serves a copy with the Berth under test and asks the same questions,
// following each next-page Link as a client does; the answers must be the
// same, byte for byte, but for what legitimately changes (Date,
// X-Request-Id, token values, the server's port, search cursors, which are sealed with a key of
// the server process, and robots that expired since). Then it writes to
// the store and checks it offline with fsck.

const (
	// fixtureEnv, set to 1, makes TestMakeStoreFixture regenerate the fixture.
	fixtureEnv = "BERTH_MAKE_FIXTURE"
	// reobserveEnv, set to 1, makes TestReobserveStoreFixture re-record
	// the fixture's golden answers from its data as it is.
	reobserveEnv = "BERTH_REOBSERVE_FIXTURE"
	// fixtureRoot is the fixture directory, relative to this package.
	fixtureRoot = "testdata/store-v1"
	// fixtureLapsed is the identity of the fixture's expired robot: a robot
	// active at generation that has expired since answers as it does.
	fixtureLapsed = "robot:lapsed"
	// fixtureAccept is the Accept header of every manifest request.
	fixtureAccept = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, " +
		"application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json"
)

// fixtureConfig is the configuration the fixture is generated and served
// with: authentication on, release tags immutable, and nothing that runs
// by itself (no scheduled collection, an upload idle timeout longer than
// the fixture will live) so that the store changes only when asked.
func fixtureConfig(htpasswd string) string {
	return fmt.Sprintf(`limits:
  uploadIdleTimeout: 876000h
gc:
  interval: 0s
tags:
  immutable:
    - repositories: ["**"]
      tags: ["v*.*.*"]
retention:
  historyWindow: 0s
  policies:
    - repositories: ["scratch/ci"]
      keepLast: 1
auth:
  htpasswd: %s
  groups:
    dev: [alice, bob]
  admins: [admin]
  rules:
    - repositories: ["sandbox/**"]
      grants:
        anonymous: [pull, push]
    - repositories: ["public/**"]
      grants:
        anonymous: [pull]
        group:dev: [pull, push]
    - repositories: ["apps/**", "legacy/**", "artifacts/**", "scratch/**"]
      grants:
        group:dev: [pull, push, delete]
  login:
    maxFailures: 1000
`, htpasswd)
}

// fxIdentity is one caller of the fixture: a user or a robot (User is
// then the robot's name and Password its secret). Anonymous has none.
type fxIdentity struct {
	User     string `json:"user,omitempty"`
	Password string `json:"password,omitempty"`
	// Robot names the robot whose secret Password is.
	Robot string `json:"robot,omitempty"`
}

// fxUpload is the upload session the fixture leaves open: Path is its
// URL path, Offset the bytes it holds, the start of fixtureResumeBlob.
type fxUpload struct {
	As     string `json:"as"`
	Path   string `json:"path"`
	Offset int64  `json:"offset"`
}

// fxMeta is fixture.json: who may log in, the open upload, and the digests
// the write checks use by name.
type fxMeta struct {
	// Berth is the version of berth that wrote the store.
	Berth      string                `json:"berth"`
	Identities map[string]fxIdentity `json:"identities"`
	Upload     fxUpload              `json:"upload"`
	Digests    map[string]string     `json:"digests"`
}

// fixtureResumeBlob is the content of the open upload session once
// complete; the fixture holds its first fxUpload.Offset bytes.
func fixtureResumeBlob() []byte {
	return bytes.Repeat([]byte("berth store-v1: an upload left open, resumed by a later berth\n"), 64)
}

// fxRequest is one question of the golden observations.
type fxRequest struct {
	// As names the identity asking, a key of fxMeta.Identities.
	As     string `json:"as"`
	Method string `json:"method"`
	Path   string `json:"path"`
	Accept string `json:"accept,omitempty"`
}

func (r fxRequest) String() string { return r.Method + " " + r.Path + " as " + r.As }

// fxObservation is a request and its answer.
type fxObservation struct {
	fxRequest
	Status int `json:"status"`
	// Header holds every response header but Date and X-Request-Id (a
	// new identifier per request), with the server's address written
	// {server}.
	Header map[string]string `json:"header,omitempty"`
	// Length and Digest are those of the body as received.
	Length int    `json:"length"`
	Digest string `json:"digest,omitempty"`
	// Body is the body when it is JSON and not a manifest: API answers
	// and errors. For a token it is a summary (Summary is set): the
	// answer's fields and the JWT's header and claims without times and id.
	Body    json.RawMessage `json:"body,omitempty"`
	Summary bool            `json:"summary,omitempty"`
}

// fxObserver asks a running berth the fixture's questions.
type fxObserver struct {
	base    string
	ids     map[string]fxIdentity
	clients map[string]*authClient
}

func newObserver(base string, ids map[string]fxIdentity) *fxObserver {
	return &fxObserver{base: base, ids: ids, clients: map[string]*authClient{}}
}

// client speaks as identity as: Basic credentials for users and robots,
// the token flow for anonymous.
func (o *fxObserver) client(t *testing.T, as string) *authClient {
	t.Helper()
	if c, ok := o.clients[as]; ok {
		return c
	}
	id, ok := o.ids[as]
	if !ok && as != "anonymous" {
		t.Fatalf("fixture: unknown identity %q", as)
	}
	c := &authClient{base: o.base, user: id.User, pass: id.Password, basic: id.User != "", tokens: map[string]string{},
		hc: &http.Client{Timeout: time.Minute, Transport: &http.Transport{DisableCompression: true}}}
	o.clients[as] = c
	return c
}

// observe makes one request and records the answer, the cursor of a
// search page written {cursor} in the path and the Link header. It also
// returns the path the answer's next-page Link names, as the server wrote
// it, or "" if there is none.
func (o *fxObserver) observe(t *testing.T, r fxRequest) (fxObservation, string) {
	t.Helper()
	var hdr []string
	if r.Accept != "" {
		hdr = []string{"Accept", r.Accept}
	}
	resp, body := o.client(t, r.As).do(t, r.Method, r.Path, nil, hdr...)
	r.Path = normaliseCursor(r.Path)
	obs := fxObservation{fxRequest: r, Status: resp.StatusCode, Header: map[string]string{}, Length: len(body), Digest: digest.FromBytes(body).String()}
	for k, v := range resp.Header {
		if k != "Date" && k != "X-Request-Id" {
			obs.Header[k] = strings.ReplaceAll(strings.Join(v, ", "), o.base, "{server}")
		}
	}
	next := strings.TrimPrefix(nextTarget(obs.Header["Link"]), "{server}")
	if l, ok := obs.Header["Link"]; ok {
		obs.Header["Link"] = normaliseCursor(l)
	}
	switch {
	case strings.HasPrefix(r.Path, "/auth/token") && resp.StatusCode == http.StatusOK:
		sum, err := tokenSummary(body)
		if err != nil {
			t.Fatalf("%s: %v", r, err)
		}
		obs.Body, obs.Summary, obs.Length, obs.Digest = sum, true, 0, ""
		delete(obs.Header, "Content-Length")
	case json.Valid(body) && !(isContentPath(r.Path) && resp.StatusCode < 300):
		var c bytes.Buffer
		if err := json.Compact(&c, body); err != nil {
			t.Fatalf("%s: %v", r, err)
		}
		obs.Body = c.Bytes()
	}
	return obs, next
}

// fxNoNextPage is the path recorded for a page the previous answer gave no
// Link to: it was not asked.
const fxNoNextPage = "(not asked: the previous answer has no next-page Link)"

// observeAll asks the questions of script (golden observations, or the
// generator's) in order, as a client pages: a request that in script is
// the page the previous observation's Link named is sent to the page the
// Link of this run's previous answer names. Its path is then that Link's,
// compared with the golden one like any other (a search cursor as
// {cursor}).
func (o *fxObserver) observeAll(t *testing.T, script []fxObservation) []fxObservation {
	t.Helper()
	out := make([]fxObservation, 0, len(script))
	next := ""
	for i, s := range script {
		r := s.fxRequest
		if followsLink(script, i) {
			if next == "" {
				r.Path = fxNoNextPage
				out = append(out, fxObservation{fxRequest: r})
				continue
			}
			r.Path = next
		}
		var obs fxObservation
		obs, next = o.observe(t, r)
		out = append(out, obs)
	}
	return out
}

// fxNextLink matches a Link header naming the next page.
var fxNextLink = regexp.MustCompile(`^<([^>]+)>;\s*rel="next"$`)

// nextTarget is the path a Link header names as the next page, or "".
func nextTarget(link string) string {
	if m := fxNextLink.FindStringSubmatch(link); m != nil {
		return m[1]
	}
	return ""
}

// followsLink reports whether script[i] asks for the page that the Link of
// script[i-1] names, as the same caller.
func followsLink(script []fxObservation, i int) bool {
	if i == 0 {
		return false
	}
	prev, r := script[i-1], script[i]
	next := normaliseCursor(nextTarget(prev.Header["Link"]))
	return next != "" && r.As == prev.As && r.Method == http.MethodGet && r.Method == prev.Method &&
		r.Accept == prev.Accept && normaliseCursor(r.Path) == next
}

const (
	// fixtureSearchPath is the search endpoint, whose cursor is opaque.
	fixtureSearchPath = "/v2/_berth/search"
	// fixtureCursor stands for a search cursor in observations.
	fixtureCursor = "{cursor}"
)

// fxSearchCursor matches the cursor parameter of a search page's path, on
// its own or in a Link header.
var fxSearchCursor = regexp.MustCompile(`([?&]last=)[^&>]*`)

// normaliseCursor writes the cursor of a search path or Link header as
// {cursor}: a search cursor is sealed with a key of the server process, so
// it differs from one run to the next, and pages compare by content. Any
// other path or header is returned as it is.
func normaliseCursor(s string) string {
	if !strings.HasPrefix(strings.TrimPrefix(s, "<"), fixtureSearchPath+"?") {
		return s
	}
	return fxSearchCursor.ReplaceAllString(s, "${1}"+fixtureCursor)
}

// normalised is o with its search cursors written {cursor}.
func (o fxObservation) normalised() fxObservation {
	o.Path = normaliseCursor(o.Path)
	if l, ok := o.Header["Link"]; ok && normaliseCursor(l) != l {
		o.Header = maps.Clone(o.Header)
		o.Header["Link"] = normaliseCursor(l)
	}
	return o
}

// isContentPath reports whether path names a manifest or a blob, whose
// bodies are compared by digest only.
func isContentPath(path string) bool {
	p, _, _ := strings.Cut(path, "?")
	return strings.Contains(p, "/manifests/") || (strings.Contains(p, "/blobs/") && !strings.Contains(p, "/blobs/uploads/"))
}

// tokenSummary keeps what a token answer says that does not change from
// one request to the next: its fields, expires_in, and the JWT's header
// and claims without exp, iat, nbf and jti.
func tokenSummary(body []byte) (json.RawMessage, error) {
	var ans map[string]any
	if err := json.Unmarshal(body, &ans); err != nil {
		return nil, fmt.Errorf("token answer: %w", err)
	}
	fields := make([]string, 0, len(ans))
	for k := range ans {
		fields = append(fields, k)
	}
	slices.Sort(fields)
	tok, _ := ans["token"].(string)
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("token answer: token is not a JWT")
	}
	seg := func(s string) (map[string]any, error) {
		raw, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("JWT segment: %w", err)
		}
		var m map[string]any
		return m, json.Unmarshal(raw, &m)
	}
	header, err := seg(parts[0])
	if err != nil {
		return nil, err
	}
	claims, err := seg(parts[1])
	if err != nil {
		return nil, err
	}
	for _, k := range []string{"exp", "iat", "nbf", "jti"} {
		delete(claims, k)
	}
	return json.Marshal(map[string]any{"fields": fields, "expires_in": ans["expires_in"], "header": header, "claims": claims})
}

// fxView is an observation's answer as shown in a diff, bodies decoded.
type fxView struct {
	Status  int
	Header  map[string]string
	Length  int
	Digest  string
	Body    any
	Summary bool
}

func (o fxObservation) view() fxView {
	v := fxView{Status: o.Status, Header: o.Header, Length: o.Length, Digest: o.Digest, Summary: o.Summary}
	if len(o.Body) > 0 {
		_ = json.Unmarshal(o.Body, &v.Body)
	}
	return v
}

// diffObservation returns "" when got answers as want did, else a readable
// diff (-want +got).
func diffObservation(want, got fxObservation) string {
	want, got = want.normalised(), got.normalised()
	if want.fxRequest != got.fxRequest {
		return fmt.Sprintf("asked %s, want %s", got.fxRequest, want.fxRequest)
	}
	if want.Status == got.Status && want.Length == got.Length && want.Digest == got.Digest &&
		want.Summary == got.Summary && bytes.Equal(want.Body, got.Body) && maps.Equal(want.Header, got.Header) {
		return ""
	}
	if d := cmp.Diff(want.view(), got.view()); d != "" {
		return d
	}
	// Equal once decoded: the bytes differ (order of keys, escaping).
	return cmp.Diff(string(want.Body), string(got.Body))
}

// compareObservations reports every answer that differs from the golden
// one, each with its diff, and fails the test if any does.
func compareObservations(t *testing.T, want, got []fxObservation) {
	t.Helper()
	if len(want) != len(got) {
		t.Fatalf("%d observations, want %d", len(got), len(want))
	}
	bad := 0
	for i := range want {
		if d := diffObservation(want[i], got[i]); d != "" {
			bad++
			t.Errorf("observation %d, %s, answers differently (-golden +now):\n%s", i+1, want[i].fxRequest, d)
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d observations differ from %s", bad, len(want), filepath.Join(fixtureRoot, "golden.json"))
	}
}

// fxRobotListing mirrors an entry of the admin API's robot listing, field
// for field, so that a listing re-encoded from it has the server's bytes.
type fxRobotListing struct {
	Name    string     `json:"name"`
	Scopes  []string   `json:"scopes"`
	Created time.Time  `json:"created"`
	Expires time.Time  `json:"expires"`
	Revoked *time.Time `json:"revoked,omitempty"`
	Rotated *time.Time `json:"rotated,omitempty"`
	Status  string     `json:"status"`
}

// copyFixtureStore copies the fixture's data directory and users file
// into a new temporary directory and writes the fixture's configuration
// there. It returns the data directory and the configuration's path.
func copyFixtureStore(t *testing.T) (data, config string) {
	t.Helper()
	dir := t.TempDir()
	data = filepath.Join(dir, "data")
	if err := os.CopyFS(data, os.DirFS(filepath.Join(fixtureRoot, "data"))); err != nil {
		t.Fatalf("copy fixture store: %v", err)
	}
	return data, writeFixtureConfig(t, dir, filepath.Join(fixtureRoot, "htpasswd"))
}

// writeFixtureConfig copies the users file at htpasswd into dir and
// writes berth.yaml there naming it; it returns the configuration's path.
func writeFixtureConfig(t *testing.T, dir, htpasswd string) string {
	t.Helper()
	users, err := os.ReadFile(htpasswd)
	if err != nil {
		t.Fatal(err)
	}
	local := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(local, users, 0o600); err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(dir, "berth.yaml")
	if err := os.WriteFile(config, []byte(fixtureConfig(local)), 0o600); err != nil {
		t.Fatal(err)
	}
	return config
}

// startFixtureServer serves data with the fixture's configuration.
func startFixtureServer(t *testing.T, data, config string) *berthtest.Server {
	t.Helper()
	return berthtest.Start(t, berthtest.WithDataDir(data), berthtest.WithArgs("--config", config))
}

// fxMove is the part of a tag move the fixture's tests read.
type fxMove struct {
	Seq      int    `json:"seq"`
	Previous string `json:"previous"`
	Digest   string `json:"digest"`
	Action   string `json:"action"`
	Actor    struct {
		Name string `json:"name"`
	} `json:"actor"`
}

// tagHistory returns the moves of repo:tag, newest first.
func tagHistory(t *testing.T, c *authClient, repo, tag string) []fxMove {
	t.Helper()
	resp, body := c.do(t, http.MethodGet, "/v2/"+repo+"/_berth/tags/"+tag+"/history", nil)
	mustStatus(t, "tag history", resp, body, http.StatusOK)
	var h struct {
		History []fxMove `json:"history"`
	}
	if err := json.Unmarshal(body, &h); err != nil || len(h.History) == 0 {
		t.Fatalf("history of %s:%s: %v %s", repo, tag, err, body)
	}
	return h.History
}
