package conformance_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/crypto/bcrypt"

	"github.com/berth-registry/berth/conformance/internal/berthtest"
	"github.com/berth-registry/berth/storage"
)

// lifecycleConfig makes release tags (v*.*.*, sha-*) immutable everywhere,
// and every tag immutable under signed/, where only the signature tags of
// cosign still move.
const lifecycleConfig = `tags:
  immutable:
    - repositories: ["**"]
      tags: ["v*.*.*", "sha-*"]
    - repositories: ["signed/**"]
      tags: ["**"]
`

// lifecycle is a berth with the lifecycle configuration, request logging
// on, and the clients that talk to it: crane, oras and the berth CLI, all
// as alice when authentication is on.
type lifecycle struct {
	t    *testing.T
	srv  *berthtest.Server
	user string // empty: no authentication
	pass string
	env  []string // client environment (crane, oras)
	work string   // oras working directory
}

// startLifecycle starts the registry; with user set, authentication is on
// and that user, whose password is returned in the struct, may pull, push
// and delete everywhere. env is extra server environment.
func startLifecycle(t *testing.T, user string, env ...string) *lifecycle {
	t.Helper()
	dir := t.TempDir()
	cfg := lifecycleConfig
	lc := &lifecycle{t: t, user: user, env: clientEnv(t), work: t.TempDir()}
	if user != "" {
		// user may do anything; bob may pull and push under deploy/ only.
		lc.pass = user + "-pw"
		var lines []string
		for _, u := range []string{user, "bob"} {
			hash, err := bcrypt.GenerateFromPassword([]byte(u+"-pw"), bcrypt.MinCost)
			if err != nil {
				t.Fatal(err)
			}
			lines = append(lines, u+":"+string(hash))
		}
		htpasswd := filepath.Join(dir, "htpasswd")
		writeTestFile(t, htpasswd, strings.Join(lines, "\n")+"\n")
		cfg += fmt.Sprintf(`auth:
  htpasswd: %s
  rules:
    - repositories: ["deploy/**"]
      grants:
        user:bob: [pull, push]
        user:%s: [pull, push, delete]
    - repositories: ["**"]
      grants:
        user:%s: [pull, push, delete]
`, htpasswd, user, user)
	}
	path := filepath.Join(dir, "berth.yaml")
	writeTestFile(t, path, cfg)
	lc.srv = berthtest.Start(t, berthtest.WithArgs("--config", path, "--log-level", "debug"), berthtest.WithEnv(env...))
	if user != "" {
		for _, client := range [][]string{
			{"crane", "auth", "login", lc.srv.Addr, "-u", user, "--password-stdin"},
			{"oras", "login", "--plain-http", "-u", user, "--password-stdin", lc.srv.Addr},
		} {
			if r := execClientInput(t, lc.work, lc.env, lc.pass+"\n", client[0], client[1:]...); r.err != nil {
				t.Fatalf("%s: %v\n%s%s", strings.Join(client, " "), r.err, r.stdout, r.stderr)
			}
		}
	}
	return lc
}

// ref is a client reference to repo:tag (or repo@digest) on the server.
func (lc *lifecycle) ref(s string) string { return lc.srv.Addr + "/" + s }

func (lc *lifecycle) crane(args ...string) string {
	lc.t.Helper()
	return strings.TrimSpace(runClientIn(lc.t, lc.work, lc.env, "crane", append(args, "--insecure")...))
}

func (lc *lifecycle) oras(args ...string) string {
	lc.t.Helper()
	return runClientIn(lc.t, lc.work, lc.env, "oras", append(args, "--plain-http")...)
}

// clientFails runs a client that must fail, and returns its output.
func (lc *lifecycle) clientFails(what, name string, args ...string) string {
	lc.t.Helper()
	flag := "--insecure"
	if name == "oras" {
		flag = "--plain-http"
	}
	r := execClient(lc.t, lc.work, lc.env, name, append(args, flag)...)
	if r.err == nil {
		lc.t.Fatalf("%s: %s %s succeeded, want a refusal\n%s", what, name, strings.Join(args, " "), r.stdout)
	}
	out := r.stdout + r.stderr
	if !strings.Contains(strings.ToLower(out), "immutable") {
		lc.t.Errorf("%s: %s %s failed, but not for the immutable tag:\n%s", what, name, strings.Join(args, " "), out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	lc.t.Logf("%s: %s", what, lines[len(lines)-1])
	return out
}

// berthEnv is the environment of the berth CLI.
func (lc *lifecycle) berthEnv() []string {
	env := []string{"BERTH_REGISTRY=" + lc.srv.URL, "BERTH_USERNAME=", "BERTH_PASSWORD="}
	if lc.user != "" {
		env = append(env, "BERTH_USERNAME="+lc.user, "BERTH_PASSWORD="+lc.pass)
	}
	return env
}

// berth runs the berth CLI, which must succeed, and returns its stdout.
func (lc *lifecycle) berth(args ...string) string {
	lc.t.Helper()
	return berthCLI(lc.t, "", lc.berthEnv(), args...)
}

// berthFails runs the berth CLI, which must exit non-zero, and returns
// its standard error.
func (lc *lifecycle) berthFails(args ...string) string {
	lc.t.Helper()
	cmd := exec.Command(berthtest.Build(lc.t), args...)
	cmd.Env = append(cmd.Environ(), lc.berthEnv()...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err == nil {
		lc.t.Fatalf("berth %s succeeded, want a failure\n%s", strings.Join(args, " "), stdout.String())
	}
	return stderr.String()
}

// do sends a raw API request, as the user if there is one.
func (lc *lifecycle) do(method, path string, body []byte, header ...string) (*http.Response, []byte) {
	lc.t.Helper()
	req, err := http.NewRequest(method, lc.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		lc.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	if lc.user != "" {
		req.SetBasicAuth(lc.user, lc.pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		lc.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		lc.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp, b
}

// target is the digest repo:tag names, or "" if it names nothing.
func (lc *lifecycle) target(repo, tag string) string {
	lc.t.Helper()
	resp, _ := lc.do(http.MethodHead, "/v2/"+repo+"/manifests/"+tag, nil, "Accept",
		strings.Join([]string{string(types.OCIManifestSchema1), string(types.OCIImageIndex),
			string(types.DockerManifestSchema2), string(types.DockerManifestList)}, ", "))
	if resp.StatusCode == http.StatusNotFound {
		return ""
	}
	if resp.StatusCode != http.StatusOK {
		lc.t.Fatalf("HEAD %s:%s: status %d", repo, tag, resp.StatusCode)
	}
	return resp.Header.Get("Docker-Content-Digest")
}

// history reads a tag's whole history through the API.
func (lc *lifecycle) history(repo, tag string) []storage.TagMove {
	lc.t.Helper()
	resp, body := lc.do(http.MethodGet, "/v2/"+repo+"/_berth/tags/"+tag+"/history", nil)
	if resp.StatusCode != http.StatusOK {
		lc.t.Fatalf("history of %s:%s: status %d: %s", repo, tag, resp.StatusCode, body)
	}
	var h struct {
		History []storage.TagMove `json:"history"`
	}
	if err := json.Unmarshal(body, &h); err != nil {
		lc.t.Fatalf("history of %s:%s: %v: %s", repo, tag, err, body)
	}
	return h.History
}

// wantUnchanged checks that repo:tag still names d after a refusal, and
// that its history still has n moves.
func (lc *lifecycle) wantUnchanged(what, repo, tag, d string, n int) {
	lc.t.Helper()
	if got := lc.target(repo, tag); got != d {
		lc.t.Errorf("after %s: %s:%s names %s, want %s still", what, repo, tag, got, d)
	}
	if h := lc.history(repo, tag); len(h) != n {
		lc.t.Errorf("after %s: %s:%s has %d moves in its history, want %d: %+v", what, repo, tag, len(h), n, h)
	}
}

// writeLayout writes img as the one image of a new OCI layout.
func writeLayout(t *testing.T, img v1.Image) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := layout.Write(dir, mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: img})); err != nil {
		t.Fatalf("write layout: %v", err)
	}
	return dir
}

// pushImage pushes a new random image to repo:tag with crane and returns
// its layout and digest.
func (lc *lifecycle) pushImage(repoTag string) (string, string) {
	lc.t.Helper()
	src := writeLayout(lc.t, hostImage(lc.t, true))
	out := lc.crane("push", src, lc.ref(repoTag))
	_, d, ok := strings.Cut(out, "@")
	if !ok {
		lc.t.Fatalf("crane push printed %q, want REPO@DIGEST", out)
	}
	return src, d
}

// TestLifecycleImmutableTags: an immutable tag is refused through the raw
// API, crane and oras alike, and a refusal changes nothing; pushing the
// digest it names again is fine, and cosign's signature tags still move.
func TestLifecycleImmutableTags(t *testing.T) {
	lc := startLifecycle(t, "")
	const repo = "apps/web"
	layoutA, a := lc.pushImage(repo + ":v1.2.3")
	layoutB, b := lc.pushImage(repo + ":candidate")
	lc.wantUnchanged("the first push", repo, "v1.2.3", a, 1)

	// Raw API: the manifest of B under the immutable tag.
	bodyB := []byte(lc.crane("manifest", lc.ref(repo+"@"+b)))
	resp, body := lc.do(http.MethodPut, "/v2/"+repo+"/manifests/v1.2.3", bodyB, "Content-Type", string(types.OCIManifestSchema1))
	if resp.StatusCode != http.StatusConflict {
		t.Fatalf("PUT over an immutable tag: status %d, want 409: %s", resp.StatusCode, body)
	}
	var eb struct {
		Errors []struct {
			Code    string         `json:"code"`
			Message string         `json:"message"`
			Detail  map[string]any `json:"detail"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(body, &eb); err != nil || len(eb.Errors) != 1 || eb.Errors[0].Code != "TAG_IMMUTABLE" ||
		eb.Errors[0].Detail["tag"] != "v1.2.3" || eb.Errors[0].Detail["digest"] != a || eb.Errors[0].Message == "" {
		t.Errorf("error body = %s (%v), want one TAG_IMMUTABLE naming the tag and %s", body, err, a)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("error Content-Type = %q", ct)
	}
	lc.wantUnchanged("a raw PUT", repo, "v1.2.3", a, 1)
	resp, body = lc.do(http.MethodDelete, "/v2/"+repo+"/manifests/v1.2.3", nil)
	if resp.StatusCode != http.StatusConflict || !strings.Contains(string(body), "TAG_IMMUTABLE") {
		t.Errorf("DELETE of an immutable tag: status %d: %s", resp.StatusCode, body)
	}
	lc.wantUnchanged("a raw DELETE", repo, "v1.2.3", a, 1)

	// crane: push, tag and delete.
	lc.clientFails("crane push over an immutable tag", "crane", "push", layoutB, lc.ref(repo+":v1.2.3"))
	lc.wantUnchanged("crane push", repo, "v1.2.3", a, 1)
	lc.clientFails("crane tag over an immutable tag", "crane", "tag", lc.ref(repo+"@"+b), "v1.2.3")
	lc.wantUnchanged("crane tag", repo, "v1.2.3", a, 1)
	lc.clientFails("crane delete of a manifest an immutable tag names", "crane", "delete", lc.ref(repo+"@"+a))
	lc.wantUnchanged("crane delete", repo, "v1.2.3", a, 1)

	// oras: push of a file and tag.
	writeTestFile(t, filepath.Join(lc.work, "notes.txt"), "release notes\n")
	lc.clientFails("oras push over an immutable tag", "oras", "push", lc.ref(repo+":v1.2.3"), "notes.txt")
	lc.wantUnchanged("oras push", repo, "v1.2.3", a, 1)
	lc.clientFails("oras tag over an immutable tag", "oras", "tag", lc.ref(repo+"@"+b), "v1.2.3")
	lc.wantUnchanged("oras tag", repo, "v1.2.3", a, 1)

	// The identical digest again: accepted, and not a move.
	lc.crane("push", layoutA, lc.ref(repo+":v1.2.3"))
	lc.crane("tag", lc.ref(repo+"@"+a), "v1.2.3")
	lc.oras("tag", lc.ref(repo+"@"+a), "v1.2.3")
	lc.wantUnchanged("re-pushing the same digest", repo, "v1.2.3", a, 1)

	// Tags outside the rules move freely.
	lc.crane("tag", lc.ref(repo+"@"+a), "candidate")
	if got := lc.target(repo, "candidate"); got != a {
		t.Errorf("candidate = %s, want %s", got, a)
	}

	// Under signed/ every tag is immutable but cosign's signature tags.
	const signed = "signed/app"
	_, s := lc.pushImage(signed + ":latest")
	lc.crane("copy", lc.ref(repo+"@"+b), lc.ref(signed+"@"+b))
	lc.clientFails("crane tag over signed/app:latest", "crane", "tag", lc.ref(signed+"@"+b), "latest")
	lc.wantUnchanged("crane tag", signed, "latest", s, 1)
	sigTag := "sha256-" + strings.TrimPrefix(s, "sha256:") + ".sig"
	writeTestFile(t, filepath.Join(lc.work, "sig1"), "first signature\n")
	writeTestFile(t, filepath.Join(lc.work, "sig2"), "second signature\n")
	lc.oras("push", lc.ref(signed+":"+sigTag), "sig1")
	first := lc.target(signed, sigTag)
	lc.oras("push", lc.ref(signed+":"+sigTag), "sig2")
	if second := lc.target(signed, sigTag); second == first || second == "" {
		t.Errorf("signature tag %s did not move: %s then %s", sigTag, first, second)
	}
	if h := lc.history(signed, sigTag); len(h) != 2 {
		t.Errorf("signature tag history has %d moves, want 2", len(h))
	}

	// cosign itself, twice with two keys: the second signature moves the
	// .sig tag, in a repository where every other tag is immutable, and
	// both signatures verify.
	_, c := lc.pushImage(signed + ":cosigned")
	cosignTag := "sha256-" + strings.TrimPrefix(c, "sha256:") + ".sig"
	signerA, signerB := newCosignNoLogin(t), newCosignNoLogin(t)
	signerA.sign(nil, lc.ref(signed+"@"+c))
	signerB.sign(nil, lc.ref(signed+"@"+c))
	if h := lc.history(signed, cosignTag); len(h) != 2 {
		t.Errorf("cosign's signature tag moved %d times, want 2", len(h))
	}
	for i, cs := range []*cosign{signerA, signerB} {
		writeTestFile(t, filepath.Join(cs.dir, "trusted_root.json"), `{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}`)
		cs.run("verify", "--key", "cosign.pub", "--trusted-root", "trusted_root.json", "--insecure-ignore-tlog=true",
			"--offline=true", "--allow-http-registry", lc.ref(signed+"@"+c))
		t.Logf("cosign signature %d of %s verifies", i+1, c)
	}
}

// TestLifecycleHistoryAndRollback: three pushes by alice are three moves in
// the tag's history, shown by berth tag history; berth tag rollback puts
// the second back and is a fourth move. The server's page size is 2, so
// the CLI follows pages.
func TestLifecycleHistoryAndRollback(t *testing.T) {
	lc := startLifecycle(t, "alice", "BERTH_MAX_PAGE_SIZE=2")
	const repo = "production"
	var v [3]string
	for i := range v {
		_, v[i] = lc.pushImage(repo + ":current")
	}

	table := lc.berth("tag", "history", repo+":current")
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "SEQ") {
		t.Fatalf("berth tag history printed:\n%s\nwant a header and three moves", table)
	}
	for i, line := range lines[1:] {
		f := strings.Fields(line)
		if len(f) < 8 || f[0] != fmt.Sprint(3-i) || f[2] != storage.MovePush || f[6] != "user:alice" || f[7] != "127.0.0.1" ||
			!strings.HasPrefix(v[2-i], f[5]) {
			t.Errorf("history line %d = %q, want move %d, a push of %s by user:alice from 127.0.0.1", i, line, 3-i, v[2-i])
		}
	}

	out := lc.berth("tag", "rollback", repo+":current")
	if !strings.Contains(out, v[1]) {
		t.Errorf("berth tag rollback printed %q, want it to name %s", out, v[1])
	}
	if got := lc.target(repo, "current"); got != v[1] {
		t.Fatalf("after rollback current = %s, want %s", got, v[1])
	}
	var h struct {
		Name, Tag string
		History   []storage.TagMove
	}
	if err := json.Unmarshal([]byte(lc.berth("tag", "history", "--json", repo+":current")), &h); err != nil {
		t.Fatal(err)
	}
	if len(h.History) != 4 {
		t.Fatalf("history --json has %d moves, want 4: %+v", len(h.History), h.History)
	}
	m := h.History[0]
	if m.Seq != 4 || m.Action != storage.MoveRollback || string(m.Previous) != v[2] || string(m.Digest) != v[1] ||
		m.Actor.Kind != "user" || m.Actor.Name != "alice" || m.Actor.Address != "127.0.0.1" {
		t.Errorf("newest move = %+v, want a rollback %s -> %s by alice", m, v[2], v[1])
	}
	if err := json.Unmarshal([]byte(lc.berth("tag", "history", "--json", "-n", "3", repo+":current")), &h); err != nil || len(h.History) != 3 {
		t.Errorf("history -n 3 has %d moves (%v), want 3", len(h.History), err)
	}

	// Back to the first with --to; the immutable release tag refuses.
	lc.berth("tag", "rollback", "--to", v[0], repo+":current")
	if got := lc.target(repo, "current"); got != v[0] {
		t.Errorf("after rollback --to, current = %s, want %s", got, v[0])
	}
	lc.crane("tag", lc.ref(repo+"@"+v[2]), "v1.0.0")
	msg := lc.berthFails("tag", "rollback", "--to", v[1], repo+":v1.0.0")
	if !strings.Contains(msg, "v1.0.0 in production is immutable") {
		t.Errorf("rollback of an immutable tag: %q", msg)
	}
	lc.wantUnchanged("a refused rollback", repo, "v1.0.0", v[2], 1)

	// bob may push to deploy/ but not pull production: the promotion is
	// denied and creates nothing; alice's is not.
	cmd := exec.Command(berthtest.Build(t), "promote", repo+":current", "deploy/web:live")
	cmd.Env = append(os.Environ(), "BERTH_REGISTRY="+lc.srv.URL, "BERTH_USERNAME=bob", "BERTH_PASSWORD=bob-pw")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "403 DENIED") {
		t.Errorf("bob's promotion from production: %v: %s", err, out)
	}
	if got := lc.target("deploy/web", "live"); got != "" {
		t.Errorf("deploy/web:live = %s after a denied promotion", got)
	}
	lc.berth("promote", repo+":current", "deploy/web:live")
	if got := lc.target("deploy/web", "live"); got != v[0] {
		t.Errorf("deploy/web:live = %s, want %s", got, v[0])
	}
	if h := lc.history("deploy/web", "live"); len(h) != 1 || h[0].Actor.Name != "alice" || h[0].Action != storage.MovePromote {
		t.Errorf("history of deploy/web:live = %+v, want one promotion by alice", h)
	}

	// Without credentials the history is not shown.
	cmd = exec.Command(berthtest.Build(t), "tag", "history", repo+":current")
	cmd.Env = append(os.Environ(), "BERTH_REGISTRY="+lc.srv.URL, "BERTH_USERNAME=", "BERTH_PASSWORD=")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "401") {
		t.Errorf("anonymous berth tag history: %v: %s", err, out)
	}
}

// logMark sends a request the server logs, waits until the log shows it,
// and returns the log up to and including it.
func (lc *lifecycle) logMark(name string) string {
	lc.t.Helper()
	path := "/v2/mark/" + name + "/tags/list"
	lc.do(http.MethodGet, path, nil)
	var logs string
	eventually(lc.t, "request log line for "+path, func() bool {
		logs = lc.srv.Logs()
		return strings.Contains(logs, "path="+path+" ")
	})
	return logs[:strings.Index(logs, "path="+path+" ")]
}

// TestLifecyclePromote: berth promote makes a multi-platform image built
// once in apps/web pullable, complete, from apps/web-prod, without any
// blob upload; an immutable destination tag refuses another digest.
func TestLifecyclePromote(t *testing.T) {
	lc := startLifecycle(t, "")
	platforms := []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64", Variant: "v8"}}
	idx, _ := randomIndex(t, platforms, types.OCIImageIndex, types.OCIManifestSchema1, types.OCIConfigJSON, types.OCILayer)
	src := t.TempDir()
	if _, err := layout.Write(src, idx); err != nil {
		t.Fatal(err)
	}
	lc.crane("push", "--index", src, lc.ref("apps/web:staging-validated"))
	want := lc.target("apps/web", "staging-validated")

	before := lc.logMark("before")
	uploads, _ := os.ReadDir(filepath.Join(lc.srv.DataDir, "uploads"))
	got := strings.TrimSpace(lc.berth("promote", "apps/web:staging-validated", "apps/web-prod:production"))
	if got != want {
		t.Errorf("berth promote printed %q, want %s", got, want)
	}
	if d := lc.target("apps/web-prod", "production"); d != want {
		t.Errorf("apps/web-prod:production = %s, want %s", d, want)
	}
	lc.crane("validate", "--remote", lc.ref("apps/web-prod:production"))
	lc.crane("pull", "--format", "oci", lc.ref("apps/web-prod:production"), filepath.Join(t.TempDir(), "pulled"))
	if d := lc.crane("digest", lc.ref("apps/web-prod:production")); d != want {
		t.Errorf("crane digest of the promoted image = %s, want %s", d, want)
	}
	log := strings.TrimPrefix(lc.logMark("after"), before)
	if !strings.Contains(log, "path=/v2/apps/web-prod/_berth/tags/production/promote ") {
		t.Errorf("the promotion is not in the request log:\n%s", log)
	}
	if strings.Contains(log, "/blobs/uploads/") {
		t.Errorf("the promotion or the pulls uploaded blobs:\n%s", log)
	}
	after, _ := os.ReadDir(filepath.Join(lc.srv.DataDir, "uploads"))
	if len(after) != len(uploads) {
		t.Errorf("uploads/ held %d entries before the promotion, %d after", len(uploads), len(after))
	}
	h := lc.history("apps/web-prod", "production")
	if len(h) != 1 || h[0].Action != storage.MovePromote || string(h[0].Digest) != want {
		t.Errorf("history of the promoted tag = %+v", h)
	}

	// Promoting again is no move; by digest to a release tag, then another
	// digest over that release tag is refused and changes nothing.
	lc.berth("promote", "apps/web:staging-validated", "apps/web-prod:production")
	lc.berth("promote", "apps/web@"+want, "apps/web-prod:v2.0.0")
	_, other := lc.pushImage("apps/web:hotfix")
	msg := lc.berthFails("promote", "apps/web:hotfix", "apps/web-prod:v2.0.0")
	if !strings.Contains(msg, "v2.0.0 in apps/web-prod is immutable") {
		t.Errorf("promote over an immutable tag: %q", msg)
	}
	lc.wantUnchanged("a refused promotion", "apps/web-prod", "v2.0.0", want, 1)
	if resp, _ := lc.do(http.MethodHead, "/v2/apps/web-prod/manifests/"+other, nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("the refused manifest is in apps/web-prod: HEAD status %d", resp.StatusCode)
	}
	if msg := lc.berthFails("promote", "apps/web:missing", "apps/web-prod:x"); !strings.Contains(msg, "MANIFEST_UNKNOWN") {
		t.Errorf("promote of an unknown tag: %q", msg)
	}
}

// TestLifecyclePromoteSigned: a promotion carries the image's cosign
// signature (a sha256-<hex>.sig tag) and an SBOM attached with oras (a
// referrer), so that cosign verify and oras discover work on the
// destination as on the source.
func TestLifecyclePromoteSigned(t *testing.T) {
	lc := startLifecycle(t, "")
	_, d := lc.pushImage("apps/web:staging-validated")
	cs := newCosignNoLogin(t)
	cs.sign(nil, lc.ref("apps/web@"+d))
	writeTestFile(t, filepath.Join(lc.work, "sbom.json"), `{"spdxVersion":"SPDX-2.3"}`)
	lc.oras("attach", "--artifact-type", "application/spdx+json", lc.ref("apps/web@"+d), "sbom.json")

	lc.berth("promote", "apps/web:staging-validated", "apps/web-prod:production")
	// Verification with the key alone: an empty trusted root keeps cosign
	// from fetching Sigstore's from the Internet.
	writeTestFile(t, filepath.Join(cs.dir, "trusted_root.json"), `{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}`)
	verify := []string{"verify", "--key", "cosign.pub", "--trusted-root", "trusted_root.json", "--insecure-ignore-tlog=true", "--offline=true", "--allow-http-registry"}
	cs.run(append(verify, lc.ref("apps/web-prod@"+d))...)
	cs.run(append(verify, lc.ref("apps/web-prod:production"))...)
	if out := lc.oras("discover", "--format", "json", lc.ref("apps/web-prod@"+d)); !strings.Contains(out, "application/spdx+json") {
		t.Errorf("oras discover on the destination does not list the SBOM:\n%s", out)
	}
	// An image promoted without its signature does not verify: the check
	// above is not vacuous.
	_, unsigned := lc.pushImage("apps/web:unsigned")
	lc.berth("promote", "apps/web:unsigned", "apps/web-prod:unsigned")
	if r := cs.try(append(verify, lc.ref("apps/web-prod@"+unsigned))...); r.err == nil {
		t.Errorf("cosign verify of an unsigned image succeeded:\n%s", r.stdout)
	}
}
