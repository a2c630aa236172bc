package conformance_test

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/crypto/bcrypt"

	"github.com/berth-registry/berth/conformance/internal/berthtest"
	"github.com/berth-registry/berth/storage"
)

// findResult is one result of berth find --json: the API's result.
type findResult = storage.SearchResult

// berthFind runs berth find against reg as user (empty: anonymous) and
// returns what it did.
func berthFind(t *testing.T, reg *berthtest.Server, user, pass string, args ...string) clientResult {
	t.Helper()
	cmd := exec.Command(berthtest.Build(t), append([]string{"find"}, args...)...)
	cmd.Env = append(cmd.Environ(), "BERTH_REGISTRY="+reg.URL, "BERTH_USERNAME="+user, "BERTH_PASSWORD="+pass)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return clientResult{stdout: stdout.String(), stderr: stderr.String(), err: err}
}

// berthFindJSON runs berth find --json, which must succeed, and decodes
// its results.
func berthFindJSON(t *testing.T, reg *berthtest.Server, user, pass string, args ...string) []findResult {
	t.Helper()
	r := berthFind(t, reg, user, pass, append(args, "--json")...)
	if r.err != nil {
		t.Fatalf("berth find %s as %q: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), user, r.err, r.stdout, r.stderr)
	}
	var out struct {
		Results []findResult `json:"results"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("berth find --json printed %q: %v", r.stdout, err)
	}
	return out.Results
}

// refs is the sorted "repository@digest" of results.
func refs(rs []findResult) []string {
	out := []string{}
	for _, r := range rs {
		out = append(out, r.Repository+"@"+string(r.Digest))
	}
	slices.Sort(out)
	return out
}

// TestSearchFindsWhatORASPushed pushes artifacts with oras, annotated with
// the commit that built them, and finds exactly those with berth find, as a
// user who may pull everything, as one who may pull only apps/**, and
// anonymously; then answers "which digest does apps/web:production name,
// which commit built it and when" in one call.
func TestSearchFindsWhatORASPushed(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const ciPass, viewerPass = "ci-password-0123", "viewer-password-0123"
	var htpasswd strings.Builder
	for _, u := range [][2]string{{"ci", ciPass}, {"viewer", viewerPass}} {
		hash, err := bcrypt.GenerateFromPassword([]byte(u[1]), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&htpasswd, "%s:%s\n", u[0], hash)
	}
	writeTestFile(t, filepath.Join(dir, "htpasswd"), htpasswd.String())
	writeTestFile(t, filepath.Join(dir, "berth.yaml"), fmt.Sprintf(`auth:
  htpasswd: %s
  rules:
    - repositories: ["apps/**"]
      grants:
        user:ci: [pull, push, delete]
        user:viewer: [pull]
    - repositories: ["**"]
      grants:
        user:ci: [pull, push, delete]
`, filepath.Join(dir, "htpasswd")))
	reg := berthtest.Start(t, berthtest.WithArgs("--config", filepath.Join(dir, "berth.yaml")))
	t.Cleanup(func() {
		for line := range strings.SplitSeq(reg.Logs(), "\n") {
			if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
				t.Errorf("berth logged: %s", line)
			}
		}
	})

	env := clientEnv(t)
	work := t.TempDir()
	oras := func(args ...string) orasDescriptor {
		t.Helper()
		return decodeORAS(t, runClientIn(t, work, env, "oras", append(args, "--plain-http", "--format", "json")...))
	}
	res := execClientInput(t, work, env, ciPass+"\n", "oras", "login", "--plain-http", "-u", "ci", "--password-stdin", reg.Addr)
	if res.err != nil {
		t.Fatalf("oras login: %v\n%s%s", res.err, res.stdout, res.stderr)
	}
	writeFiles(t, work, map[string][]byte{
		"app.txt": []byte("the application\n"),
		"config.json": []byte(`{"architecture":"amd64","os":"linux","created":"2024-06-01T10:00:00Z",` +
			`"config":{"Labels":{"org.opencontainers.image.version":"1.4.0"}},"rootfs":{"type":"layers","diff_ids":[]}}`),
	})

	sha := strings.Repeat("3f2a9c1e", 5)
	const built = "2024-06-01T10:00:00Z"
	rev := "org.opencontainers.image.revision=" + sha
	web := oras("push", "--annotation", rev, "--annotation", "org.opencontainers.image.created="+built,
		"--config", "config.json:"+ocispec.MediaTypeImageConfig, reg.Addr+"/apps/web:production", "app.txt")
	runClientIn(t, work, env, "oras", "tag", "--plain-http", reg.Addr+"/apps/web:production", "v1.4.0")
	api := oras("push", "--annotation", rev, "--artifact-type", "application/vnd.berth.test", reg.Addr+"/apps/api:v1", "app.txt")
	secret := oras("push", "--annotation", rev, "--artifact-type", "application/vnd.berth.test", reg.Addr+"/secret/tool:v1", "app.txt")
	oras("push", "--annotation", "org.opencontainers.image.revision=another", "--artifact-type", "application/vnd.berth.test",
		reg.Addr+"/apps/web:old", "app.txt")

	want := []string{"apps/api@" + string(api.Digest), "apps/web@" + string(web.Digest), "secret/tool@" + string(secret.Digest)}
	slices.Sort(want)
	if got := refs(berthFindJSON(t, reg, "ci", ciPass, "--annotation", rev)); !slices.Equal(got, want) {
		t.Errorf("ci: berth find --annotation %s found %v, want exactly %v", rev, got, want)
	}
	// viewer may pull apps/** only: secret/tool is not shown.
	if got := refs(berthFindJSON(t, reg, "viewer", viewerPass, "--annotation", rev)); !slices.Equal(got, want[:2]) {
		t.Errorf("viewer: found %v, want %v", got, want[:2])
	}
	if got := berthFindJSON(t, reg, "", "", "--annotation", rev); len(got) != 0 {
		t.Errorf("anonymous: found %v, want nothing", refs(got))
	}

	// One call: digest, commit and time of apps/web:production.
	got := berthFindJSON(t, reg, "viewer", viewerPass, "--repository", "apps/web", "--tag", "production")
	if len(got) != 1 {
		t.Fatalf("apps/web:production: %+v", got)
	}
	r := got[0]
	if r.Digest != web.Digest || r.Annotations["org.opencontainers.image.revision"] != sha ||
		r.Created.Format(time.RFC3339) != built || !slices.Equal(r.Tags, []string{"production", "v1.4.0"}) ||
		r.Labels["org.opencontainers.image.version"] != "1.4.0" {
		t.Errorf("apps/web:production = %+v, want %s built from %s at %s", r, web.Digest, sha, built)
	}
	table := berthFind(t, reg, "viewer", viewerPass, "--repository", "apps/web", "--tag", "production")
	if table.err != nil {
		t.Fatalf("berth find (table): %v\n%s", table.err, table.stderr)
	}
	for _, s := range []string{"apps/web", "production,v1.4.0", string(web.Digest), built, sha} {
		if !strings.Contains(table.stdout, s) {
			t.Errorf("table does not show %q:\n%s", s, table.stdout)
		}
	}
	// The config's label is searchable too.
	if got := refs(berthFindJSON(t, reg, "ci", ciPass, "--label", "org.opencontainers.image.version=1.4.0")); !slices.Equal(got, []string{"apps/web@" + string(web.Digest)}) {
		t.Errorf("by label: %v", got)
	}
	if got := refs(berthFindJSON(t, reg, "ci", ciPass, "--repository", "apps/**", "--artifact-type", "application/vnd.berth.test",
		"--created-after", "1h")); len(got) != 2 {
		t.Errorf("recent test artifacts under apps/: %v, want apps/api and apps/web:old", got)
	}

	// Bad input is refused, by the CLI or with the registry's answer.
	for _, args := range [][]string{
		{"--annotation", "no-equals-sign"},
		{"--created-after", "last tuesday"},
		{"--repository", "Not/A/Name"},
	} {
		r := berthFind(t, reg, "ci", ciPass, args...)
		if r.err == nil {
			t.Errorf("berth find %v succeeded: %s", args, r.stdout)
		} else if r.stderr == "" {
			t.Errorf("berth find %v failed without saying why", args)
		}
	}
}
