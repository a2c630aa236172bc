package conformance_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/opencontainers/go-digest"
	"golang.org/x/crypto/bcrypt"

	"github.com/berth-registry/berth/conformance/internal/berthtest"
)

// uiTimeout bounds each browser step.
const uiTimeout = 30 * time.Second

// uiUsers are the users of the web interface tests: ci pushes and
// promotes builds, alice releases (push on apps/**), bob only looks
// (pull on apps/**), admin may do everything.
var uiUsers = map[string]string{"ci": "ci-pw", "alice": "alice-pw", "bob": "bob-pw", "admin": "admin-pw"}

// uiConfig is the access configuration of the tests:
//
//	public/**  anonymous pull; ci and alice push
//	apps/**    ci and alice pull and push; bob pull
//	secret/**  the admin only
const uiConfig = `auth:
  htpasswd: %s
  admins: [admin]
  rules:
    - repositories: ["public/**"]
      grants:
        anonymous: [pull]
        user:ci: [push]
        user:alice: [push]
    - repositories: ["apps/**"]
      grants:
        user:ci: [pull, push]
        user:alice: [pull, push]
        user:bob: [pull]
    - repositories: ["secret/**"]
      grants: {}
`

// startUIServer starts a berth with authentication on, the web interface
// on by default, and the users of uiUsers.
func startUIServer(t *testing.T) *berthtest.Server {
	t.Helper()
	dir := t.TempDir()
	var lines []string
	for name, pass := range uiUsers {
		h, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, name+":"+string(h))
	}
	htpasswd := filepath.Join(dir, "htpasswd")
	writeTestFile(t, htpasswd, strings.Join(lines, "\n")+"\n")
	cfg := filepath.Join(dir, "berth.yaml")
	writeTestFile(t, cfg, fmt.Sprintf(uiConfig, htpasswd))
	return berthtest.Start(t, berthtest.WithArgs("--config", cfg))
}

// uiSeed pushes content as one user, with Basic credentials, the way a
// pipeline's HTTP client does.
type uiSeed struct {
	t          *testing.T
	base       string
	user, pass string
}

func (s *uiSeed) do(method, path string, body []byte, contentType string) (int, http.Header, []byte) {
	s.t.Helper()
	req, err := http.NewRequest(method, s.base+path, bytes.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	req.SetBasicAuth(s.user, s.pass)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", strings.Join([]string{"application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json", "application/json"}, ", "))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// blob uploads data and returns its descriptor as JSON.
func (s *uiSeed) blob(repo, mediaType string, data []byte) string {
	s.t.Helper()
	d := digest.FromBytes(data)
	if st, _, b := s.do(http.MethodPost, "/v2/"+repo+"/blobs/uploads/?digest="+d.String(), data, "application/octet-stream"); st != http.StatusCreated {
		s.t.Fatalf("upload blob to %s: %d %s", repo, st, b)
	}
	return fmt.Sprintf(`{"mediaType":%q,"digest":%q,"size":%d}`, mediaType, d, len(data))
}

// manifest pushes a manifest under ref (a tag, or "" for its digest).
func (s *uiSeed) manifest(repo, ref, mediaType string, body []byte) digest.Digest {
	s.t.Helper()
	d := digest.FromBytes(body)
	if ref == "" {
		ref = d.String()
	}
	if st, _, b := s.do(http.MethodPut, "/v2/"+repo+"/manifests/"+ref, body, mediaType); st != http.StatusCreated {
		s.t.Fatalf("push manifest %s:%s: %d %s", repo, ref, st, b)
	}
	return d
}

// uiBuild is one build of an application.
type uiBuild struct {
	commit, version string
	created         time.Time
	arch            string
	layers          []int // sizes
}

// image pushes an image of build b under the given tags and returns its
// digest and manifest size.
func (s *uiSeed) image(repo string, b uiBuild, tags ...string) (digest.Digest, int) {
	s.t.Helper()
	var layers, diffIDs []string
	for _, n := range b.layers {
		data := randomBytes(s.t, n)
		layers = append(layers, s.blob(repo, "application/vnd.oci.image.layer.v1.tar", data))
		diffIDs = append(diffIDs, fmt.Sprintf("%q", digest.FromBytes(data)))
	}
	arch := b.arch
	if arch == "" {
		arch = "amd64"
	}
	created := b.created.UTC().Format(time.RFC3339)
	cfg := fmt.Sprintf(`{"architecture":%q,"os":"linux","created":%q,"config":{"Entrypoint":["/app/server"],"User":"65532",`+
		`"Labels":{"org.opencontainers.image.revision":%q,"org.opencontainers.image.version":%q,"team":"web"}},`+
		`"rootfs":{"type":"layers","diff_ids":[%s]}}`, arch, created, b.commit, b.version, strings.Join(diffIDs, ","))
	config := s.blob(repo, "application/vnd.oci.image.config.v1+json", []byte(cfg))
	body := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":%s,"layers":[%s],`+
		`"annotations":{"org.opencontainers.image.revision":%q,"org.opencontainers.image.version":%q,"org.opencontainers.image.created":%q,`+
		`"org.opencontainers.image.source":"https://git.example.com/apps/web"}}`, config, strings.Join(layers, ","), b.commit, b.version, created))
	d := s.manifest(repo, "", "application/vnd.oci.image.manifest.v1+json", body)
	for _, tag := range tags {
		s.manifest(repo, tag, "application/vnd.oci.image.manifest.v1+json", body)
	}
	return d, len(body)
}

// referrer attaches an artifact of artifactType to the manifest subject.
func (s *uiSeed) referrer(repo, artifactType string, subject digest.Digest, subjectSize int, content []byte, created time.Time) (digest.Digest, int) {
	s.t.Helper()
	empty := s.blob(repo, "application/vnd.oci.empty.v1+json", []byte("{}"))
	layer := s.blob(repo, artifactType, content)
	body := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":%q,"config":%s,"layers":[%s],`+
		`"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"size":%d},"annotations":{"org.opencontainers.image.created":%q}}`,
		artifactType, empty, layer, subject, subjectSize, created.UTC().Format(time.RFC3339)))
	return s.manifest(repo, "", "application/vnd.oci.image.manifest.v1+json", body), len(body)
}

// promote points tag of repo at ref through the API, as `berth promote`.
func (s *uiSeed) promote(repo, ref, tag string) {
	s.t.Helper()
	body := fmt.Sprintf(`{"repository":%q,"reference":%q}`, repo, ref)
	if st, _, b := s.do(http.MethodPost, "/v2/"+repo+"/_berth/tags/"+tag+"/promote", []byte(body), "application/json"); st != http.StatusCreated {
		s.t.Fatalf("promote %s:%s to %s: %d %s", repo, ref, tag, st, b)
	}
}

// tagDigest is the digest a tag names, read as the admin.
func (s *uiSeed) tagDigest(repo, tag string) digest.Digest {
	s.t.Helper()
	st, h, b := s.do(http.MethodHead, "/v2/"+repo+"/manifests/"+tag, nil, "")
	if st != http.StatusOK {
		s.t.Fatalf("HEAD %s:%s: %d %s", repo, tag, st, b)
	}
	return digest.Digest(h.Get("Docker-Content-Digest"))
}

// lastMove is a tag's newest move, read as the admin.
func (s *uiSeed) lastMove(repo, tag string) (action, actor string, to digest.Digest) {
	s.t.Helper()
	st, _, b := s.do(http.MethodGet, "/v2/"+repo+"/_berth/tags/"+tag+"/history?n=1", nil, "")
	if st != http.StatusOK {
		s.t.Fatalf("history of %s:%s: %d %s", repo, tag, st, b)
	}
	var h struct {
		History []struct {
			Action string
			Digest digest.Digest
			Actor  struct{ Kind, Name string }
		}
	}
	if err := json.Unmarshal(b, &h); err != nil || len(h.History) == 0 {
		s.t.Fatalf("history of %s:%s: %v %s", repo, tag, err, b)
	}
	m := h.History[0]
	return m.Action, m.Actor.Kind + ":" + m.Actor.Name, m.Digest
}

// uiContent is what seedUI pushed.
type uiContent struct {
	web      [3]digest.Digest // apps/web builds 1, 2, 3
	sbom     digest.Digest
	sig      digest.Digest
	sbomSig  digest.Digest
	apiIndex digest.Digest
}

// seedUI pushes the content the pages show: a web application whose three
// builds moved through the environments (build 1 in production, 2 in
// production-ready, 3 in staging-validated), build 2 signed and with a
// signed SBOM, build 1 signed by the tag schema, a multi-platform API
// service the same everywhere, a public image and a secret one.
func seedUI(t *testing.T, base string) uiContent {
	t.Helper()
	ci := &uiSeed{t: t, base: base, user: "ci", pass: uiUsers["ci"]}
	admin := &uiSeed{t: t, base: base, user: "admin", pass: uiUsers["admin"]}
	now := time.Now()
	var c uiContent
	builds := []uiBuild{
		{commit: "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d", version: "1.0.0", created: now.Add(-9 * 24 * time.Hour), layers: []int{900 << 10, 120 << 10}},
		{commit: "7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f", version: "1.1.0", created: now.Add(-2 * 24 * time.Hour), layers: []int{900 << 10, 150 << 10}},
		{commit: "c0ffee42b00c1d2e3f4a5b6c7d8e9f0a1b2c3d4e", version: "1.2.0", created: now.Add(-3 * time.Hour), layers: []int{910 << 10, 160 << 10}},
	}
	var sizes [3]int
	for i, b := range builds {
		c.web[i], sizes[i] = ci.image("apps/web", b, "sha-"+b.commit[:7], "v"+b.version, "staging-validated")
		switch i {
		case 0:
			ci.promote("apps/web", "staging-validated", "production-ready")
			ci.promote("apps/web", "staging-validated", "production")
			// Signed the way cosign does without the referrers API.
			sig := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":%s,"layers":[%s]}`,
				ci.blob("apps/web", "application/vnd.oci.image.config.v1+json", []byte(`{"architecture":"","os":"","config":{}}`)),
				ci.blob("apps/web", "application/vnd.dev.cosign.simplesigning.v1+json", []byte(`{"critical":{"image":{"docker-manifest-digest":"`+c.web[0].String()+`"}}}`)))
			ci.manifest("apps/web", strings.Replace(c.web[0].String(), ":", "-", 1)+".sig", "application/vnd.oci.image.manifest.v1+json", []byte(sig))
		case 1:
			ci.promote("apps/web", "staging-validated", "production-ready")
			var sbomSize int
			c.sbom, sbomSize = ci.referrer("apps/web", "application/spdx+json", c.web[1], sizes[1],
				[]byte(`{"spdxVersion":"SPDX-2.3","name":"apps/web"}`), b.created.Add(time.Minute))
			c.sig, _ = ci.referrer("apps/web", "application/vnd.dev.cosign.artifact.sig.v1+json", c.web[1], sizes[1],
				randomBytes(t, 96), b.created.Add(2*time.Minute))
			c.sbomSig, _ = ci.referrer("apps/web", "application/vnd.dev.cosign.artifact.sig.v1+json", c.sbom, sbomSize,
				randomBytes(t, 96), b.created.Add(3*time.Minute))
		}
	}

	// A multi-platform service, the same artifact in every environment.
	var children []string
	for _, arch := range []string{"amd64", "arm64"} {
		d, size := ci.image("apps/api", uiBuild{commit: "5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f80", version: "2.0.0",
			created: now.Add(-26 * time.Hour), arch: arch, layers: []int{700 << 10}})
		children = append(children, fmt.Sprintf(`{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"size":%d,"platform":{"os":"linux","architecture":%q}}`, d, size, arch))
	}
	index := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[%s],`+
		`"annotations":{"org.opencontainers.image.revision":"5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f80","org.opencontainers.image.version":"2.0.0"}}`,
		strings.Join(children, ",")))
	c.apiIndex = ci.manifest("apps/api", "v2.0.0", "application/vnd.oci.image.index.v1+json", index)
	for _, tag := range []string{"staging-validated", "production-ready", "production"} {
		ci.promote("apps/api", "v2.0.0", tag)
	}

	ci.image("public/hello", uiBuild{commit: "0123456789abcdef0123456789abcdef01234567", version: "0.3.0",
		created: now.Add(-40 * 24 * time.Hour), layers: []int{64 << 10}}, "latest", "v0.3.0", "production")
	admin.image("secret/keys", uiBuild{commit: "deadbeefdeadbeefdeadbeefdeadbeefdeadbeef", version: "9.9.9",
		created: now.Add(-time.Hour), layers: []int{4 << 10}}, "production", "staging-validated")
	return c
}

// chromiumPath finds the Debian chromium. A missing browser fails the
// test, naming it: the web interface tests never skip.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("chromium is not installed: run 'make debs' (it installs the Debian package chromium, which the web interface tests drive)")
	return ""
}

// uiBrowser drives one headless chromium with a profile of its own.
type uiBrowser struct {
	t     *testing.T
	ctx   context.Context
	base  string
	shots string
}

// newBrowser starts chromium for the test, at a laptop's window size. The
// flags keep it from reaching for the network, which this machine lacks.
func newBrowser(t *testing.T, base string) *uiBrowser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("no-proxy-server", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// The first action starts the browser, bound to ctx, not to a timeout.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	shots := filepath.Join(berthtest.RepoRoot(t), "conformance", "results", "ui")
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	return &uiBrowser{t: t, ctx: ctx, base: base, shots: shots}
}

// step runs actions with a bounded time.
func (b *uiBrowser) step(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, uiTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// run runs one action returning a value, with a bounded time.
func uiRun[T any](b *uiBrowser, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, uiTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
	return v
}

// visit loads a page and returns its status.
func (b *uiBrowser) visit(path string) int64 {
	b.t.Helper()
	resp := uiRun(b, "visit "+path, chromedp.NavigateResponse(b.base+path))
	if resp == nil {
		b.t.Fatalf("visit %s: no response", path)
	}
	return resp.Status
}

// follow clicks (or presses Enter on) an element that loads a page, and
// returns the status of the page it lands on.
func (b *uiBrowser) follow(what string, a chromedp.Action[chromedp.Void]) int64 {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, uiTimeout)
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, a)
	if err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
	if resp == nil {
		b.t.Fatalf("%s: no page loaded", what)
	}
	return resp.Status
}

// click clicks the element matching a CSS selector and waits for the page
// it loads.
func (b *uiBrowser) click(sel string) int64 {
	b.t.Helper()
	return b.follow("click "+sel, chromedp.Click(chromedp.CSS(sel)))
}

// eval evaluates a JavaScript expression in the page.
func uiEval[T any](b *uiBrowser, expr string) T {
	b.t.Helper()
	return uiRun(b, "evaluate "+expr, chromedp.Evaluate[T](expr))
}

// text is the text of the page's main content, as a person reads it.
func (b *uiBrowser) text() string {
	b.t.Helper()
	return uiEval[string](b, `document.querySelector("main").innerText`)
}

// count counts the elements matching a CSS selector.
func (b *uiBrowser) count(sel string) int {
	b.t.Helper()
	return uiEval[int](b, fmt.Sprintf(`document.querySelectorAll(%q).length`, sel))
}

// wantText checks that the main content shows every string.
func (b *uiBrowser) wantText(where string, want ...string) {
	b.t.Helper()
	got := b.text()
	for _, w := range want {
		if !strings.Contains(got, w) {
			b.t.Errorf("%s: the page does not show %q; it shows:\n%s", where, w, got)
		}
	}
}

// wantNoText checks that the whole page shows none of the strings.
func (b *uiBrowser) wantNoText(where string, unwanted ...string) {
	b.t.Helper()
	html := uiEval[string](b, `document.documentElement.outerHTML`)
	for _, w := range unwanted {
		if strings.Contains(html, w) {
			b.t.Errorf("%s: the page reveals %q", where, w)
		}
	}
}

// shot saves a screenshot of the whole page under conformance/results/ui.
func (b *uiBrowser) shot(name string) {
	b.t.Helper()
	buf := uiRun(b, "screenshot "+name, chromedp.FullScreenshot(100))
	if err := os.WriteFile(filepath.Join(b.shots, name+".png"), buf, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// login logs in through the form, with the keyboard.
func (b *uiBrowser) login(user string) {
	b.t.Helper()
	if st := b.visit("/ui/login"); st != http.StatusOK {
		b.t.Fatalf("login page: status %d", st)
	}
	b.step("fill the login form",
		chromedp.SendKeys(chromedp.ID("username"), user),
		chromedp.SendKeys(chromedp.ID("password"), uiUsers[user]))
	if st := b.follow("submit the login form", chromedp.SendKeys(chromedp.ID("password"), kb.Enter)); st != http.StatusOK {
		b.t.Fatalf("login as %s: status %d: %s", user, st, b.text())
	}
	b.wantText("after login", "Logged in as "+user)
}

// logout logs out with the header's button.
func (b *uiBrowser) logout() {
	b.t.Helper()
	if st := b.click(`form[action="/ui/logout"] button`); st != http.StatusOK {
		b.t.Fatalf("logout: status %d", st)
	}
	b.wantText("after logout", "Logged out")
}

// checkPage checks what every page must be: in English, with one heading
// of the first level, a label for every field, a name for every button,
// headers on every table, no wider than the window, text that contrasts
// with its background by WCAG AA, and nothing loaded from another origin.
func (b *uiBrowser) checkPage(where string) {
	b.t.Helper()
	problems := uiEval[[]string](b, `(() => {
  const p = [];
  if (document.documentElement.lang !== "en") p.push("html has no lang");
  if (document.querySelectorAll("h1").length !== 1) p.push("not exactly one h1");
  for (const i of document.querySelectorAll("input:not([type=hidden])")) {
    if (!i.labels || i.labels.length === 0) p.push("input without label: " + (i.id || i.name));
  }
  for (const btn of document.querySelectorAll("button, a.button")) {
    if (!(btn.getAttribute("aria-label") || btn.textContent).trim()) p.push("button without a name");
  }
  for (const t of document.querySelectorAll("table")) {
    if (t.querySelectorAll("th").length === 0) p.push("table without headers");
  }
  for (const e of document.querySelectorAll("script[src], link[href], img[src]")) {
    const u = new URL(e.getAttribute("src") || e.getAttribute("href"), location.href);
    if (u.origin !== location.origin) p.push("loads from another origin: " + u.href);
  }
  if (document.documentElement.scrollWidth > window.innerWidth) p.push("the page is wider than the window");
  // Text contrast, WCAG AA: 4.5:1, or 3:1 for large text.
  const rgba = c => {
    let m = c.match(/^rgba?\(([\d.]+),\s*([\d.]+),\s*([\d.]+)(?:,\s*([\d.]+))?\)$/);
    if (m) return [+m[1], +m[2], +m[3], m[4] === undefined ? 1 : +m[4]];
    m = c.match(/^color\(srgb ([\d.]+) ([\d.]+) ([\d.]+)(?: \/ ([\d.]+))?\)$/);
    if (m) return [m[1] * 255, m[2] * 255, m[3] * 255, m[4] === undefined ? 1 : +m[4]];
    return null;
  };
  const over = (top, bottom) => [0, 1, 2].map(i => top[i] * top[3] + bottom[i] * (1 - top[3])).concat([1]);
  const background = el => {
    if (!el) return [255, 255, 255, 1];
    const c = rgba(getComputedStyle(el).backgroundColor) || [0, 0, 0, 0];
    return c[3] >= 1 ? c : over(c, background(el.parentElement));
  };
  const lum = c => {
    const l = c.slice(0, 3).map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
    return 0.2126 * l[0] + 0.7152 * l[1] + 0.0722 * l[2];
  };
  for (const el of document.querySelectorAll("body *")) {
    if (el.closest(".sr-only, [hidden], script, style, svg, option") || !el.getClientRects().length) continue;
    if (![...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim())) continue;
    const st = getComputedStyle(el);
    const fg = rgba(st.color);
    if (!fg) { p.push("unreadable colour " + st.color); continue; }
    const bg = background(el);
    const a = lum(over(fg, bg)), b = lum(bg);
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(st.fontSize), bold = parseInt(st.fontWeight, 10) >= 700;
    const need = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    if (ratio < need) p.push("contrast " + ratio.toFixed(2) + " of " + JSON.stringify(el.textContent.trim().slice(0, 40)) + " (" + st.color + " on rgb(" + bg.slice(0, 3).map(Math.round) + "))");
  }
  for (const e of performance.getEntriesByType("resource")) {
    if (!e.name.startsWith(location.origin) && !e.name.startsWith("data:")) p.push("fetched from another origin: " + e.name);
  }
  return p;
})()`)
	for _, p := range problems {
		b.t.Errorf("%s: %s", where, p)
	}
}

// TestWebUI drives the web interface in a real browser against a real
// berth with authentication on: what anonymous visitors see, logging in,
// browsing to an artifact and its referrers, promoting and rolling back on
// the release board and seeing the tag history, what a user without push
// sees and may do, and that hidden repositories look like missing ones.
// It saves a screenshot of each page under conformance/results/ui/.
func TestWebUI(t *testing.T) {
	chromiumPath(t) // before anything else: a missing browser fails at once
	srv := startUIServer(t)
	content := seedUI(t, srv.URL)
	admin := &uiSeed{t: t, base: srv.URL, user: "admin", pass: uiUsers["admin"]}
	b := newBrowser(t, srv.URL)

	t.Run("anonymous sees public repositories only", func(t *testing.T) {
		b.t = t
		// A browser asking for / is sent to the interface.
		if st := b.visit("/"); st != http.StatusOK {
			t.Fatalf("/: status %d", st)
		}
		if loc := uiRun(b, "location", chromedp.Location()); loc != srv.URL+"/ui/" {
			t.Errorf("a browser asking for / lands on %s, want %s/ui/", loc, srv.URL)
		}
		b.checkPage("repositories, anonymous")
		b.wantText("repositories, anonymous", "public/hello", "Log in to see more")
		b.wantNoText("repositories, anonymous", "apps/web", "apps/api", "secret/keys")
		if n := b.count("#repositories tbody tr"); n != 1 {
			t.Errorf("anonymous sees %d repositories, want 1", n)
		}
		b.shot("repositories-anonymous")
		// The board and search show nothing hidden either.
		b.visit("/ui/board")
		b.wantText("board, anonymous", "public/hello")
		b.wantNoText("board, anonymous", "apps/web", "apps/api", "secret/keys", "Promote to")
		b.visit("/ui/search?text=deadbeef")
		b.wantText("search, anonymous", "Nothing you may see matches")
		// Keyboard: the first Tab reaches the skip link.
		b.step("press Tab", chromedp.KeyEvent(kb.Tab))
		if got := uiEval[string](b, `document.activeElement.textContent`); got != "Skip to content" {
			t.Errorf("first Tab focuses %q, want the skip link", got)
		}
	})

	t.Run("login", func(t *testing.T) {
		b.t = t
		b.visit("/ui/login")
		b.checkPage("login")
		b.shot("login")
		// A wrong password is refused on the form.
		b.step("fill the login form", chromedp.SendKeys(chromedp.ID("username"), "alice"),
			chromedp.SendKeys(chromedp.ID("password"), "not-her-password"))
		if st := b.follow("submit a wrong password", chromedp.SendKeys(chromedp.ID("password"), kb.Enter)); st != http.StatusUnauthorized {
			t.Errorf("wrong password: status %d, want 401", st)
		}
		b.wantText("wrong password", "Wrong user name or password")
		b.login("alice")
		cookies := uiRun(b, "read cookies", func(ctx context.Context, tg *chromedp.Target) ([]*network.Cookie, error) {
			res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{srv.URL + "/ui/"}})
			return res.Cookies, err
		})
		var session *network.Cookie
		for _, c := range cookies {
			if c.Name == "berth_session" {
				session = c
			}
		}
		if session == nil || !session.HTTPOnly || session.SameSite != network.CookieSameSiteStrict || session.Path != "/ui/" {
			t.Errorf("session cookie = %+v, want HttpOnly, SameSite=Strict, Path=/ui/", session)
		}
		if got := uiEval[string](b, `document.cookie`); got != "" {
			t.Errorf("scripts read the cookies %q", got)
		}
		b.wantText("repositories, alice", "apps/web", "apps/api", "public/hello")
		b.wantNoText("repositories, alice", "secret/keys")
		b.shot("repositories")
	})

	t.Run("browse to an artifact and its referrers", func(t *testing.T) {
		b.t = t
		b.visit("/ui/")
		if st := b.click(`a[href="/ui/r/apps/web"]`); st != http.StatusOK {
			t.Fatalf("apps/web: status %d", st)
		}
		b.checkPage("repository")
		b.wantText("repository", "staging-validated", "production-ready", "production", "v1.2.0", "sha-c0ffee4",
			"c0ffee42b00c", "signed", "not signed", "image", "1.0 MiB")
		// Build 2 is signed through the referrers API, build 1 by the tag
		// schema; build 3 is not.
		signed := uiEval[map[string]string](b, `Object.fromEntries([...document.querySelectorAll("#tags tbody tr")].map(tr =>
  [tr.querySelector("th a").textContent, tr.querySelector(".badge.signed, .badge.unsigned").textContent]))`)
		for tag, want := range map[string]string{"v1.0.0": "signed", "v1.1.0": "signed", "v1.2.0": "not signed"} {
			if signed[tag] != want {
				t.Errorf("%s: %q, want %q", tag, signed[tag], want)
			}
		}
		b.shot("repository")
		if st := b.click(`#tags a[href="/ui/r/apps/web/-/artifact/v1.1.0"]`); st != http.StatusOK {
			t.Fatalf("artifact v1.1.0: status %d", st)
		}
		b.checkPage("artifact")
		host := strings.TrimPrefix(srv.URL, "http://")
		b.wantText("artifact", content.web[1].String(), "7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f", "1.1.0",
			"docker pull "+host+"/apps/web@"+content.web[1].String(),
			"oras pull --plain-http "+host+"/apps/web@"+content.web[1].String(),
			"crane manifest --insecure", "curl -u alice", "linux/amd64", "/app/server", "Layers", "team")
		// The referrers tree: the signature and the SBOM of the build,
		// and the signature of the SBOM under it.
		tree := uiEval[[]string](b, `[...document.querySelectorAll("ul.tree > li > .node")].map(n => n.textContent.replace(/\s+/g, " ").trim())`)
		if len(tree) != 3 || b.count(`ul.tree ul.tree a[href$="`+content.sbomSig.String()+`"]`) != 1 ||
			b.count(`ul.tree > li > .node a[href$="`+content.sbom.String()+`"]`) != 1 ||
			b.count(`ul.tree > li > .node a[href$="`+content.sig.String()+`"]`) != 1 {
			t.Errorf("referrers tree = %q, want the SBOM (with its signature under it) and the signature", tree)
		}
		b.wantText("artifact referrers", "SBOM", "signature", "application/spdx+json")
		b.shot("artifact")
		// Follow the SBOM to its own page, whose subject is the build.
		if st := b.click(`ul.tree > li > .node a[href$="` + content.sbom.String() + `"]`); st != http.StatusOK {
			t.Fatalf("SBOM page: status %d", st)
		}
		b.wantText("SBOM", "application/spdx+json", "Refers to", "Files")
		// A multi-platform index lists its platforms.
		if st := b.visit("/ui/r/apps/api/-/artifact/production"); st != http.StatusOK {
			t.Fatalf("apps/api:production: status %d", st)
		}
		b.wantText("index", "Platforms", "linux/amd64", "linux/arm64", "index", content.apiIndex.String())
		b.shot("artifact-index")
		// Search by a commit prefix finds the build.
		b.visit("/ui/search?commit=c0ffee42")
		b.checkPage("search")
		b.wantText("search", "apps/web", "sha-c0ffee4", "v1.2.0", "staging-validated")
		b.shot("search")
	})

	t.Run("promote on the board", func(t *testing.T) {
		b.t = t
		if st := b.visit("/ui/board"); st != http.StatusOK {
			t.Fatalf("board: status %d", st)
		}
		b.checkPage("board")
		b.wantText("board", "apps/web", "apps/api", "public/hello", "same artifact everywhere", "by user:ci")
		letters := func() []string {
			return uiEval[[]string](b, `[...document.querySelectorAll("tr")].filter(tr => tr.querySelector('th.repo a[href="/ui/r/apps/web"]'))
  .flatMap(tr => [...tr.querySelectorAll("td")].map(td => (td.querySelector(".letter") || {textContent: "-"}).textContent.replace("artifact ", "")))`)
		}
		if got := letters(); !slices.Equal(got, []string{"A", "B", "C"}) {
			t.Errorf("apps/web columns hold artifacts %v, want three different ones [A B C]", got)
		}
		b.shot("board")
		promote := `tr:has(a[href="/ui/r/apps/web"]) td[data-env="production-ready"] a.button[href*="action=promote"]`
		if st := b.click(promote); st != http.StatusOK {
			t.Fatalf("promote link: status %d", st)
		}
		b.checkPage("confirm")
		b.wantText("confirm", "Promote to production", content.web[0].String()[:19], content.web[1].String()[:19], "7e8f9a0b1c2d")
		b.shot("confirm-promote")
		// Confirmed with the keyboard.
		if st := b.follow("confirm the promotion", chromedp.SendKeys(chromedp.CSS("form.confirm button"), kb.Enter)); st != http.StatusOK {
			t.Fatalf("promotion: status %d: %s", st, b.text())
		}
		b.wantText("board after the promotion", "Promoted apps/web@"+content.web[1].String()[:19]+" from production-ready to production")
		if got := letters(); !slices.Equal(got, []string{"A", "B", "B"}) {
			t.Errorf("after the promotion apps/web holds %v, want [A B B]", got)
		}
		b.shot("board-promoted")
		if d := admin.tagDigest("apps/web", "production"); d != content.web[1] {
			t.Errorf("apps/web:production = %s, want build 2 %s", d, content.web[1])
		}
		action, actor, to := admin.lastMove("apps/web", "production")
		if action != "promote" || actor != "user:alice" || to != content.web[1] {
			t.Errorf("last move of production = %s by %s to %s, want promote by user:alice to %s", action, actor, to, content.web[1])
		}
		// The history page shows the move at the top.
		if st := b.click(`tr:has(a[href="/ui/r/apps/web"]) td[data-env="production"] .since a`); st != http.StatusOK {
			t.Fatalf("history: status %d", st)
		}
		b.checkPage("history")
		first := uiEval[string](b, `document.querySelector("ol.timeline li").innerText`)
		if !strings.Contains(first, "promote") || !strings.Contains(first, "user:alice") ||
			!strings.Contains(first, shortDigestOf(content.web[0])) || !strings.Contains(first, shortDigestOf(content.web[1])) {
			t.Errorf("newest move on the history page = %q, want a promote by user:alice from build 1 to build 2", first)
		}
		b.wantText("history", "promote", "user:ci")
		b.shot("history-promote")
	})

	t.Run("roll back on the board", func(t *testing.T) {
		b.t = t
		b.visit("/ui/board?repository=apps/web")
		if n := b.count(`tr`); n != 2 {
			t.Errorf("board of apps/web has %d rows with its header, want 2", n)
		}
		rollback := `td[data-env="production"] a.button[href*="action=rollback"]`
		if st := b.click(rollback); st != http.StatusOK {
			t.Fatalf("rollback link: status %d", st)
		}
		b.wantText("confirm rollback", "Roll back production", shortDigestOf(content.web[0]))
		b.shot("confirm-rollback")
		if st := b.click("form.confirm button"); st != http.StatusOK {
			t.Fatalf("rollback: status %d", st)
		}
		b.wantText("board after the rollback", "Rolled apps/web:production back to "+shortDigestOf(content.web[0]))
		if d := admin.tagDigest("apps/web", "production"); d != content.web[0] {
			t.Errorf("apps/web:production = %s after the rollback, want build 1 %s", d, content.web[0])
		}
		if action, actor, _ := admin.lastMove("apps/web", "production"); action != "rollback" || actor != "user:alice" {
			t.Errorf("last move = %s by %s, want rollback by user:alice", action, actor)
		}
		b.visit("/ui/r/apps/web/-/history/production")
		if n := b.count("ol.timeline li"); n != 3 {
			t.Errorf("production's history shows %d moves, want 3", n)
		}
		b.wantText("history after the rollback", "rollback")
		b.shot("history")
	})

	t.Run("phone width", func(t *testing.T) {
		b.t = t
		b.step("phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile))
		defer b.step("laptop viewport", chromedp.EmulateViewport(1280, 900))
		for _, p := range []struct{ path, shot string }{
			{"/ui/board", "board-phone"}, {"/ui/r/apps/web", "repository-phone"}, {"/ui/r/apps/web/-/artifact/v1.1.0", "artifact-phone"},
		} {
			b.visit(p.path)
			b.checkPage(p.path + " at phone width")
			b.shot(p.shot)
		}
	})

	t.Run("dark colour scheme", func(t *testing.T) {
		b.t = t
		dark := func(on bool) {
			var f []*emulation.MediaFeature
			if on {
				f = []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}
			}
			uiRun(b, "colour scheme", func(ctx context.Context, _ *chromedp.Target) (cdp.Empty, error) {
				return chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{Features: f})
			})
		}
		dark(true)
		defer dark(false)
		for _, p := range []string{"/ui/board", "/ui/r/apps/web", "/ui/r/apps/web/-/artifact/v1.1.0", "/ui/r/apps/web/-/history/production"} {
			b.visit(p)
			if bg := uiEval[string](b, `getComputedStyle(document.documentElement).backgroundColor`); bg != "rgb(18, 22, 28)" {
				t.Errorf("dark scheme: the background of %s is %s", p, bg)
			}
			b.checkPage(p + " in the dark scheme")
		}
		b.visit("/ui/board")
		b.shot("board-dark")
	})

	t.Run("a user without push sees no promote button and a forged POST is refused", func(t *testing.T) {
		b.t = t
		b.logout()
		b.login("bob")
		b.visit("/ui/board")
		b.wantText("board, bob", "apps/web", "read only")
		if n := b.count(`a.button`); n != 0 {
			t.Errorf("bob sees %d promote or rollback buttons, want none", n)
		}
		b.shot("board-readonly")
		before := admin.tagDigest("apps/web", "production")
		// Bob forges the promotion form with his own valid token: the API
		// refuses him.
		csrf := uiEval[string](b, `document.querySelector('form[action="/ui/logout"] input[name=csrf]').value`)
		forged := fmt.Sprintf(`fetch("/ui/board/promote", {method: "POST", headers: {"Content-Type": "application/x-www-form-urlencoded"},
  body: new URLSearchParams({csrf: %q, repository: "apps/web", from: "staging-validated", to: "production", digest: %q, back: "/ui/board"})})
  .then(r => r.text())`, csrf, content.web[2])
		page := uiRun(b, "forge a promotion", chromedp.Evaluate[string](forged, chromedp.EvalAwaitPromise))
		if !strings.Contains(page, "Promotion refused") {
			t.Errorf("bob's forged promotion: the page does not say it was refused")
		}
		// Another site's page posting the same form gets no further.
		evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, `<!doctype html><html><body><form method="post" action="%s/ui/board/promote">
<input name="repository" value="apps/web"><input name="to" value="production"><input name="digest" value="%s"><input name="csrf" value="%s">
</form><script>document.forms[0].submit()</script></body></html>`, srv.URL, content.web[2], csrf)
		}))
		defer evil.Close()
		// localhost is another site than 127.0.0.1 to the browser.
		uiRun(b, "visit another site", chromedp.NavigateResponse(strings.Replace(evil.URL, "127.0.0.1", "localhost", 1)))
		b.step("wait for the forged form to land", chromedp.WaitVisible(chromedp.CSS("main h1")))
		if got := uiEval[string](b, `document.querySelector("main h1").textContent`); got != "Refused" {
			t.Errorf("a cross-site form: the page says %q, want Refused", got)
		}
		if d := admin.tagDigest("apps/web", "production"); d != before {
			t.Errorf("a forged promotion moved apps/web:production from %s to %s", before, d)
		}
		if action, _, _ := admin.lastMove("apps/web", "production"); action != "rollback" {
			t.Errorf("a forged promotion was recorded: last move %s", action)
		}
	})

	t.Run("a hidden repository looks like a missing one", func(t *testing.T) {
		b.t = t
		// bob may pull apps/** but not secret/**.
		for _, p := range []struct{ hidden, missing string }{
			{"/ui/r/secret/keys", "/ui/r/apps/missing"},
			{"/ui/r/secret/keys/-/artifact/production", "/ui/r/apps/missing/-/artifact/production"},
			{"/ui/r/secret/keys/-/history/production", "/ui/r/apps/missing/-/history/production"},
			{"/ui/board/confirm?action=promote&repository=secret/keys&from=staging-validated&to=production",
				"/ui/board/confirm?action=promote&repository=apps/missing&from=staging-validated&to=production"},
		} {
			stHidden := b.visit(p.hidden)
			hidden := b.text()
			stMissing := b.visit(p.missing)
			missing := b.text()
			if stHidden != http.StatusNotFound || stMissing != http.StatusNotFound || hidden != missing {
				t.Errorf("%s answers %d %q; %s answers %d %q: want the same 404", p.hidden, stHidden, hidden, p.missing, stMissing, missing)
			}
		}
		b.visit("/ui/r/secret/keys")
		b.shot("not-found")
		b.visit("/ui/search?text=deadbeef")
		b.wantText("search, bob", "Nothing you may see matches")
		b.visit("/ui/?q=secret")
		b.wantNoText("repositories, bob", "secret/keys")
		// Anonymous visitors get the same answer for apps/web, which
		// exists, as for a missing repository.
		b.logout()
		stHidden, hidden := b.visit("/ui/r/apps/web"), b.text()
		stMissing, missing := b.visit("/ui/r/apps/missing"), b.text()
		if stHidden != http.StatusNotFound || hidden != missing || stMissing != http.StatusNotFound {
			t.Errorf("anonymous: apps/web answers %d %q, a missing repository %d %q", stHidden, hidden, stMissing, missing)
		}
	})
	b.t = t
	// Every request of the browser was answered without a server fault.
	for line := range strings.SplitSeq(srv.Logs(), "\n") {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
			t.Errorf("berth logged: %s", line)
		}
	}
}

// shortDigestOf is a digest as the pages quote it.
func shortDigestOf(d digest.Digest) string { return d.String()[:len("sha256:")+12] }
