package conformance_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"golang.org/x/crypto/bcrypt"

	"github.com/berth-registry/berth/conformance/internal/berthtest"
)

// authServer is a berth with authentication on: users reader (group team),
// writer and admin, and rules giving
//
//	public/**   anonymous pull; writer push
//	team/**     group team pull; writer pull, push, delete
//	private/**  nobody but the admin
type authServer struct {
	*berthtest.Server
	users    map[string]string // name -> password
	htpasswd string
}

func startAuthServer(t *testing.T, extraEnv ...string) *authServer {
	t.Helper()
	return startAuthServerWith(t, "", extraEnv...)
}

// startAuthServerWith is startAuthServer with extra YAML under auth:, each
// line indented by two spaces.
func startAuthServerWith(t *testing.T, extraAuth string, extraEnv ...string) *authServer {
	t.Helper()
	dir := t.TempDir()
	users := map[string]string{"reader": "reader-pw", "writer": "writer-pw", "admin": "admin-pw"}
	var lines []string
	for _, name := range []string{"reader", "writer", "admin"} {
		h, err := bcrypt.GenerateFromPassword([]byte(users[name]), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, name+":"+string(h))
	}
	htpasswd := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(htpasswd, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`auth:
  htpasswd: %s
  groups:
    team: [reader]
  admins: [admin]
  rules:
    - repositories: ["public/**"]
      grants:
        anonymous: [pull]
        user:writer: [push]
    - repositories: ["team/**"]
      grants:
        group:team: [pull]
        user:writer: [pull, push, delete]
    - repositories: ["private/**"]
      grants: {}
%s`, htpasswd, extraAuth)
	path := filepath.Join(dir, "berth.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := berthtest.Start(t, berthtest.WithArgs("--config", path), berthtest.WithEnv(extraEnv...))
	return &authServer{Server: srv, users: users, htpasswd: htpasswd}
}

// authClient speaks to berth as one identity, the way registry clients do:
// it answers a 401 challenge by asking the token service for the scope the
// challenge names, then retries with the token. With basic set it sends
// Basic credentials on every request instead.
type authClient struct {
	base       string
	user, pass string
	basic      bool
	hc         *http.Client
	tokens     map[string]string // scope -> token
	// extra are scopes asked for besides the challenge's, as a client
	// does for the source of a mount or a promotion.
	extra []string
}

func (s *authServer) client(user string, basic bool) *authClient {
	return &authClient{base: s.URL, user: user, pass: s.users[user], basic: basic, hc: &http.Client{}, tokens: map[string]string{}}
}

var challengeParam = regexp.MustCompile(`(\w+)="([^"]*)"`)

func (c *authClient) do(t *testing.T, method, path string, body []byte, header ...string) (*http.Response, []byte) {
	t.Helper()
	send := func(auth string) (*http.Response, []byte) {
		req, err := http.NewRequest(method, c.base+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		switch {
		case auth != "":
			req.Header.Set("Authorization", auth)
		case c.basic && c.user != "":
			req.SetBasicAuth(c.user, c.pass)
		}
		resp, err := c.hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	resp, b := send("")
	if c.basic || resp.StatusCode != http.StatusUnauthorized {
		return resp, b
	}
	// The file paths challenge in Basic first, for curl and browsers,
	// then in Bearer: a token client takes the Bearer one.
	challenge := resp.Header.Get("WWW-Authenticate")
	for _, c := range resp.Header.Values("WWW-Authenticate") {
		if strings.HasPrefix(c, "Bearer ") {
			challenge = c
		}
	}
	params := map[string]string{}
	for _, m := range challengeParam.FindAllStringSubmatch(challenge, -1) {
		params[m[1]] = m[2]
	}
	if params["realm"] == "" {
		t.Fatalf("401 without a Bearer challenge: %v", resp.Header)
	}
	q := url.Values{"service": {params["service"]}}
	if params["scope"] != "" {
		q.Set("scope", params["scope"])
	}
	for _, sc := range c.extra {
		q.Add("scope", sc)
	}
	req, _ := http.NewRequest(http.MethodGet, params["realm"]+"?"+q.Encode(), nil)
	if c.user != "" {
		req.SetBasicAuth(c.user, c.pass)
	}
	tr, err := c.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Body.Close()
	if tr.StatusCode != http.StatusOK {
		return resp, b // the token service refused: the 401 stands
	}
	var tok struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(tr.Body).Decode(&tok); err != nil {
		t.Fatal(err)
	}
	return send("Bearer " + tok.Token)
}

// fixture content pushed by the admin into each repository.
type repoContent struct {
	blob, config    []byte
	manifest        []byte
	mdigest         digest.Digest
	referrer        []byte
	referrerDigest  digest.Digest
	disposable      []byte // a second manifest, for DELETE
	disposableDigst digest.Digest
}

func imageManifest(config []byte, layers [][]byte, annotations string, subject string) []byte {
	var ls []string
	for _, l := range layers {
		ls = append(ls, fmt.Sprintf(`{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%d}`, digest.FromBytes(l), len(l)))
	}
	subj := ""
	if subject != "" {
		subj = `,"subject":` + subject
	}
	return []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[%s],"annotations":{"n":"%s"}%s}`,
		digest.FromBytes(config), len(config), strings.Join(ls, ","), annotations, subj))
}

func mustStatus(t *testing.T, what string, resp *http.Response, body []byte, want ...int) {
	t.Helper()
	if !slices.Contains(want, resp.StatusCode) {
		t.Fatalf("%s: status %d, want %v: %s", what, resp.StatusCode, want, body)
	}
}

// seed pushes content into repo as the admin.
func seed(t *testing.T, admin *authClient, repo, tag string) repoContent {
	t.Helper()
	c := repoContent{blob: []byte("layer of " + repo), config: []byte(`{"repo":"` + repo + `"}`)}
	for _, b := range [][]byte{c.blob, c.config} {
		resp, body := admin.do(t, http.MethodPost, "/v2/"+repo+"/blobs/uploads/?digest="+digest.FromBytes(b).String(), b)
		mustStatus(t, "seed blob", resp, body, http.StatusCreated)
	}
	c.manifest = imageManifest(c.config, [][]byte{c.blob}, repo, "")
	c.mdigest = digest.FromBytes(c.manifest)
	ct := []string{"Content-Type", "application/vnd.oci.image.manifest.v1+json"}
	resp, body := admin.do(t, http.MethodPut, "/v2/"+repo+"/manifests/"+tag, c.manifest, ct...)
	mustStatus(t, "seed manifest", resp, body, http.StatusCreated)
	c.referrer = imageManifest(c.config, nil, "sbom", fmt.Sprintf(`{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%d}`, c.mdigest, len(c.manifest)))
	c.referrerDigest = digest.FromBytes(c.referrer)
	resp, body = admin.do(t, http.MethodPut, "/v2/"+repo+"/manifests/"+c.referrerDigest.String(), c.referrer, ct...)
	mustStatus(t, "seed referrer", resp, body, http.StatusCreated)
	// A version of files, uploaded as curl does.
	resp, body = admin.do(t, http.MethodPut, "/artifacts/"+repo+"/files-1/seed.txt", []byte("seed file of "+repo))
	mustStatus(t, "seed file", resp, body, http.StatusCreated)
	c.disposable = imageManifest(c.config, [][]byte{c.blob}, "disposable", "")
	c.disposableDigst = digest.FromBytes(c.disposable)
	resp, body = admin.do(t, http.MethodPut, "/v2/"+repo+"/manifests/"+c.disposableDigst.String(), c.disposable, ct...)
	mustStatus(t, "seed disposable", resp, body, http.StatusCreated)
	return c
}

// TestAccessMatrix checks every operation for every kind of caller against
// public, team and private repositories, with Basic credentials and with
// tokens from the token service, and that refused writes change nothing.
func TestAccessMatrix(t *testing.T) {
	for _, mode := range []string{"token", "basic"} {
		t.Run(mode, func(t *testing.T) {
			srv := startAuthServer(t)
			admin := srv.client("admin", true)
			repos := []string{"public/app", "team/app", "private/app"}
			content := map[string]repoContent{}
			for _, repo := range repos {
				content[repo] = seed(t, admin, repo, "v1")
			}
			// A robot for pipelines, created by the admin through the admin
			// API, scoped to team/*.
			resp, body := admin.do(t, http.MethodPost, "/_berth/admin/robots",
				[]byte(`{"name":"ci","scopes":["repository:team/*:pull,push"],"expires":"1h"}`), "Content-Type", "application/json")
			mustStatus(t, "create robot", resp, body, http.StatusCreated)
			var robot struct{ Secret string }
			if err := json.Unmarshal(body, &robot); err != nil || !strings.HasPrefix(robot.Secret, "berth_") {
				t.Fatalf("robot secret: %s (%v)", body, err)
			}
			srv.users["ci"] = robot.Secret
			// allowed[identity][repo] are the actions granted.
			allowed := map[string]map[string][]string{
				// A robot may do exactly what its scopes say: not even what
				// anonymous callers may.
				"ci":        {"team/app": {"pull", "push"}},
				"anonymous": {"public/app": {"pull"}},
				"reader":    {"public/app": {"pull"}, "team/app": {"pull"}},
				"writer":    {"public/app": {"pull", "push"}, "team/app": {"pull", "push", "delete"}},
				"admin":     {"public/app": {"pull", "push", "delete"}, "team/app": {"pull", "push", "delete"}, "private/app": {"pull", "push", "delete"}},
			}
			for _, who := range []string{"anonymous", "reader", "writer", "admin", "ci"} {
				user := who
				if who == "anonymous" {
					user = ""
				}
				c := srv.client(user, mode == "basic")
				for _, repo := range repos {
					actions := allowed[who][repo]
					if mode == "token" && who == "ci" && repo == "public/app" {
						// Its first, credential-less request is served as
						// an anonymous caller's, which may pull there.
						actions = allowed["anonymous"][repo]
					}
					checkRepo(t, c, who, repo, content[repo], actions)
				}
				checkCatalog(t, c, who, allowed[who])
				checkSearch(t, c, who, repos, allowed[who])
			}
			// Refused writes changed nothing: every seeded manifest is still
			// there, and no tag other than the ones allowed callers pushed.
			for _, repo := range repos {
				resp, body := admin.do(t, http.MethodGet, "/v2/"+repo+"/tags/list", nil)
				mustStatus(t, "tags after matrix", resp, body, http.StatusOK)
				var tl struct{ Tags []string }
				_ = json.Unmarshal(body, &tl)
				var want []string
				for _, who := range []string{"admin", "anonymous", "ci", "reader", "writer"} {
					if slices.Contains(allowed[who][repo], "push") {
						want = append(want, "by-"+who, "promoted-by-"+who, "file-by-"+who)
					}
				}
				want = append(want, "v1", "files-1")
				slices.Sort(want)
				if !slices.Equal(tl.Tags, want) {
					t.Errorf("%s tags after the matrix: %v, want %v", repo, tl.Tags, want)
				}
			}
		})
	}
}

// checkRepo runs every operation on repo as c and checks each outcome.
func checkRepo(t *testing.T, c *authClient, who, repo string, rc repoContent, actions []string) {
	t.Helper()
	can := func(a string) bool { return slices.Contains(actions, a) }
	denied := http.StatusForbidden
	if who == "anonymous" {
		denied = http.StatusUnauthorized
	}
	expect := func(op string, ok bool, okStatus int, resp *http.Response, body []byte) {
		t.Helper()
		want := okStatus
		if !ok {
			want = denied
		}
		if resp.StatusCode != want {
			t.Errorf("%s %s %s: status %d, want %d: %s", who, op, repo, resp.StatusCode, want, body)
			return
		}
		if !ok && !strings.HasPrefix(op, "HEAD") && !strings.Contains(string(body), `"errors"`) {
			t.Errorf("%s %s %s: refusal without an error body: %s", who, op, repo, body)
		}
	}
	bd, md := digest.FromBytes(rc.blob), rc.mdigest
	r, b := c.do(t, http.MethodHead, "/v2/"+repo+"/blobs/"+bd.String(), nil)
	expect("HEAD blob", can("pull"), http.StatusOK, r, b)
	r, b = c.do(t, http.MethodGet, "/v2/"+repo+"/blobs/"+bd.String(), nil)
	expect("GET blob", can("pull"), http.StatusOK, r, b)
	if can("pull") && !bytes.Equal(b, rc.blob) {
		t.Errorf("%s GET blob %s: wrong content", who, repo)
	}
	r, b = c.do(t, http.MethodHead, "/v2/"+repo+"/manifests/v1", nil)
	expect("HEAD manifest", can("pull"), http.StatusOK, r, b)
	r, b = c.do(t, http.MethodGet, "/v2/"+repo+"/manifests/"+md.String(), nil)
	expect("GET manifest", can("pull"), http.StatusOK, r, b)
	r, b = c.do(t, http.MethodGet, "/v2/"+repo+"/tags/list", nil)
	expect("tag list", can("pull"), http.StatusOK, r, b)
	r, b = c.do(t, http.MethodGet, "/v2/"+repo+"/referrers/"+md.String(), nil)
	expect("referrers", can("pull"), http.StatusOK, r, b)
	if can("pull") && !strings.Contains(string(b), rc.referrerDigest.String()) {
		t.Errorf("%s referrers %s: the seeded referrer is missing: %s", who, repo, b)
	}

	// Upload a new blob, monolithic.
	nb := []byte("new blob by " + who + " in " + repo)
	r, b = c.do(t, http.MethodPost, "/v2/"+repo+"/blobs/uploads/?digest="+digest.FromBytes(nb).String(), nb)
	expect("upload", can("push"), http.StatusCreated, r, b)
	// Mount from private/app, which only the admin may read: without read
	// access the mount must not happen (a new session instead).
	pb := digest.FromBytes([]byte("layer of private/app"))
	c.extra = []string{"repository:private/app:pull"} // a token for the source, as clients ask
	r, b = c.do(t, http.MethodPost, "/v2/"+repo+"/blobs/uploads/?mount="+pb.String()+"&from=private/app", nil)
	c.extra = nil
	switch {
	case !can("push"):
		expect("mount", false, 0, r, b)
	case who == "admin":
		expect("mount", true, http.StatusCreated, r, b)
	default:
		expect("mount from unreadable source", true, http.StatusAccepted, r, b)
	}
	// Manifest PUT under a new tag.
	r, b = c.do(t, http.MethodPut, "/v2/"+repo+"/manifests/by-"+who, rc.manifest, "Content-Type", "application/vnd.oci.image.manifest.v1+json")
	expect("manifest PUT", can("push"), http.StatusCreated, r, b)
	// Berth's lifecycle extensions: history needs pull; rollback and
	// promotion need push (a promotion also pull on its source, here the
	// same repository).
	r, b = c.do(t, http.MethodGet, "/v2/"+repo+"/_berth/tags/v1/history", nil)
	expect("tag history", can("pull"), http.StatusOK, r, b)
	if can("pull") && !strings.Contains(string(b), md.String()) {
		t.Errorf("%s tag history %s: the push of v1 is missing: %s", who, repo, b)
	}
	r, b = c.do(t, http.MethodPost, "/v2/"+repo+"/_berth/tags/v1/rollback", []byte(`{"to":"`+md.String()+`"}`), "Content-Type", "application/json")
	expect("rollback", can("push"), http.StatusOK, r, b)
	c.extra = []string{"repository:" + repo + ":pull"} // the source's scope in the token
	r, b = c.do(t, http.MethodPost, "/v2/"+repo+"/_berth/tags/promoted-by-"+who+"/promote",
		[]byte(`{"repository":"`+repo+`","reference":"v1"}`), "Content-Type", "application/json")
	c.extra = nil
	expect("promote", can("push") && can("pull"), http.StatusCreated, r, b)
	// Files over plain HTTP: download needs pull, upload push, as for the
	// API; the pull record needs push.
	r, b = c.do(t, http.MethodGet, "/artifacts/"+repo+"/files-1/seed.txt", nil)
	expect("file GET", can("pull"), http.StatusOK, r, b)
	if can("pull") && string(b) != "seed file of "+repo {
		t.Errorf("%s file GET %s: wrong content %q", who, repo, b)
	}
	r, b = c.do(t, http.MethodHead, "/artifacts/"+repo+"/files-1/seed.txt", nil)
	expect("HEAD file", can("pull"), http.StatusOK, r, b)
	r, b = c.do(t, http.MethodGet, "/artifacts/"+repo+"/files-1/", nil)
	expect("file listing", can("pull"), http.StatusOK, r, b)
	r, b = c.do(t, http.MethodPut, "/artifacts/"+repo+"/file-by-"+who+"/f.txt", []byte("put by "+who))
	expect("file PUT", can("push"), http.StatusCreated, r, b)
	form, ct := multipartFile(t, "g.txt", []byte("posted by "+who))
	r, b = c.do(t, http.MethodPost, "/artifacts/"+repo+"/file-by-"+who, form, "Content-Type", ct)
	expect("file POST", can("push"), http.StatusCreated, r, b)
	r, b = c.do(t, http.MethodGet, "/v2/"+repo+"/_berth/pulls", nil)
	expect("pull record", can("push"), http.StatusOK, r, b)
	// Manifest DELETE; only the first caller allowed to delete finds it.
	r, b = c.do(t, http.MethodDelete, "/v2/"+repo+"/manifests/"+rc.disposableDigst.String(), nil)
	if can("delete") {
		if r.StatusCode != http.StatusAccepted && r.StatusCode != http.StatusNotFound {
			t.Errorf("%s manifest DELETE %s: status %d: %s", who, repo, r.StatusCode, b)
		}
	} else {
		expect("manifest DELETE", false, 0, r, b)
	}
}

// multipartFile is a multipart form of one file field, and its
// Content-Type.
func multipartFile(t *testing.T, name string, data []byte) ([]byte, string) {
	t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	fw, err := w.CreateFormFile("file", name)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = fw.Write(data)
	_ = w.Close()
	return buf.Bytes(), w.FormDataContentType()
}

// checkCatalog checks that the catalog and the repository summaries list
// exactly the repositories the caller may pull.
func checkCatalog(t *testing.T, c *authClient, who string, allowed map[string][]string) {
	t.Helper()
	checkCatalogPath(t, c, who, allowed, "/v2/_catalog")
	checkCatalogPath(t, c, who, allowed, "/v2/_berth/repositories")
}

func checkCatalogPath(t *testing.T, c *authClient, who string, allowed map[string][]string, path string) {
	t.Helper()
	r, b := c.do(t, http.MethodGet, path, nil)
	if who == "anonymous" && c.basic {
		// Without the token flow an anonymous caller has no answer to the
		// challenge: the catalog is per caller and asks who is calling.
		if r.StatusCode != http.StatusUnauthorized {
			t.Errorf("anonymous %s without a token: status %d, want 401", path, r.StatusCode)
		}
		return
	}
	if r.StatusCode != http.StatusOK {
		t.Errorf("%s %s: status %d: %s", who, path, r.StatusCode, b)
		return
	}
	var cl struct{ Repositories []string }
	if path != "/v2/_catalog" {
		// Summaries: objects with a name each.
		var sl struct{ Repositories []struct{ Name string } }
		_ = json.Unmarshal(b, &sl)
		cl.Repositories = []string{}
		for _, s := range sl.Repositories {
			cl.Repositories = append(cl.Repositories, s.Name)
		}
	} else {
		_ = json.Unmarshal(b, &cl)
	}
	var want []string
	for repo, actions := range allowed {
		if slices.Contains(actions, "pull") {
			want = append(want, repo)
		}
	}
	slices.Sort(want)
	if !slices.Equal(cl.Repositories, want) {
		t.Errorf("%s %s: %v, want %v", who, path, cl.Repositories, want)
	}
}

// checkSearch checks that metadata search finds a repository's seeded
// manifest (annotated n=<repository>) exactly when the caller may pull it,
// with an anonymous token answering the challenge of an anonymous caller.
func checkSearch(t *testing.T, c *authClient, who string, repos []string, allowed map[string][]string) {
	t.Helper()
	for _, repo := range repos {
		r, b := c.do(t, http.MethodGet, "/v2/_berth/search?annotation=n="+url.QueryEscape(repo), nil)
		if who == "anonymous" && c.basic {
			// As for the catalog: the answer is per caller, so a caller
			// without credentials is asked for them (or for a token).
			if r.StatusCode != http.StatusUnauthorized {
				t.Errorf("anonymous search without a token: status %d, want 401", r.StatusCode)
			}
			continue
		}
		if r.StatusCode != http.StatusOK {
			t.Errorf("%s search for %s: status %d: %s", who, repo, r.StatusCode, b)
			continue
		}
		var res struct {
			Results []struct{ Repository string }
		}
		if err := json.Unmarshal(b, &res); err != nil {
			t.Errorf("%s search for %s: %v: %s", who, repo, err, b)
			continue
		}
		want := 0
		if slices.Contains(allowed[repo], "pull") {
			want = 1
		}
		if len(res.Results) != want || (want == 1 && res.Results[0].Repository != repo) {
			t.Errorf("%s search for %s: %s, want %d result(s)", who, repo, b, want)
		}
	}
}
