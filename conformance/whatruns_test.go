package conformance_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/conformance/internal/berthtest"
	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/pulls"
)

// berthAs runs the berth command line against srv as user, and returns
// what it did.
func berthAs(t *testing.T, srv *filesServer, user string, args ...string) clientResult {
	t.Helper()
	cmd := exec.Command(berthtest.Build(t), args...)
	cmd.Env = append(cmd.Environ(), "BERTH_REGISTRY="+srv.URL, "BERTH_USERNAME="+user, "BERTH_PASSWORD="+srv.pw[user])
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return clientResult{stdout: stdout.String(), stderr: stderr.String(), err: err}
}

// mustBerthAs is berthAs for a command that must succeed.
func mustBerthAs(t *testing.T, srv *filesServer, user string, args ...string) string {
	t.Helper()
	r := berthAs(t, srv, user, args...)
	if r.err != nil {
		t.Fatalf("berth %s as %s: %v\n%s%s", strings.Join(args, " "), user, r.err, r.stdout, r.stderr)
	}
	return r.stdout
}

// TestWhatRunsWhere answers the seeds' question from facts: two robots
// deploy (one pulls with oras, one downloads with curl), and berth pulls
// says which digest each pulled, when and from where; berth which, given
// the file found on a server, says which version holds it, under which
// tags now, and that prod named it before. A repository the caller may
// not pull is never revealed.
func TestWhatRunsWhere(t *testing.T) {
	t.Parallel()
	srv := startFilesServer(t)
	work := t.TempDir()
	builder := "builder:" + srv.pw["builder"]
	v1, v2 := []byte("myapp build 1, the jar"), []byte("myapp build 2, the jar")
	writeFiles(t, work, map[string][]byte{"v1/app.jar": v1, "v2/app.jar": v2})
	for _, v := range []string{"1.0", "2.0"} {
		dir := "v" + v[:1]
		wantCurl(t, "upload "+v, curl(t, filepath.Join(work, dir), "-u", builder, "-T", "app.jar", srv.URL+"/artifacts/apps/myapp/"+v+"/app.jar"), 201, "")
	}
	// The same jar in a repository only the admin may pull.
	wantCurl(t, "upload secret", curl(t, filepath.Join(work, "v1"), "-u", "admin:"+srv.pw["admin"], "-T", "app.jar", srv.URL+"/artifacts/secret/myapp/1.0/app.jar"), 201, "")
	mustBerthAs(t, srv, "builder", "promote", "apps/myapp:1.0", "apps/myapp:prod")

	// Two robots, which deploy.
	secrets := map[string]string{}
	for _, name := range []string{"prod-deployer", "staging-deployer"} {
		r := curl(t, work, "-u", "admin:"+srv.pw["admin"], "-H", "Content-Type: application/json",
			"-d", `{"name":"`+name+`","scopes":["repository:apps/**:pull"],"expires":"1h"}`, srv.URL+"/_berth/admin/robots")
		var robot struct{ Secret string }
		if err := json.Unmarshal([]byte(r.body), &robot); err != nil || robot.Secret == "" {
			t.Fatalf("robot %s: %d %s", name, r.status, r.body)
		}
		secrets[name] = robot.Secret
	}
	env := clientEnv(t)
	prodHost := t.TempDir()
	if r := execClientInput(t, prodHost, env, secrets["prod-deployer"]+"\n", "oras", "login", "--plain-http", "-u", "prod-deployer", "--password-stdin", srv.Addr); r.err != nil {
		t.Fatalf("oras login: %v %s", r.err, r.stderr)
	}
	runClientIn(t, prodHost, env, "oras", "pull", "--plain-http", srv.Addr+"/apps/myapp:prod")
	stagingHost := t.TempDir()
	wantCurl(t, "staging download", curl(t, stagingHost, "-f", "-u", "staging-deployer:"+secrets["staging-deployer"], "-O", srv.URL+"/artifacts/apps/myapp/2.0/app.jar"), 200, "")

	// berth pulls: which digest each deployer pulled last, and when.
	digests := map[string]string{}
	for _, v := range []string{"1.0", "2.0"} {
		var l struct{ Digest string }
		_ = json.Unmarshal([]byte(curl(t, work, "-u", builder, srv.URL+"/artifacts/apps/myapp/"+v+"/").body), &l)
		digests[v] = l.Digest
	}
	var record struct {
		Name  string
		Pulls []pulls.Entry
	}
	eventually(t, "the pulls of both robots recorded", func() bool {
		_ = json.Unmarshal([]byte(mustBerthAs(t, srv, "builder", "pulls", "apps/myapp", "--json")), &record)
		return len(record.Pulls) == 2
	})
	byWho := map[string]pulls.Entry{}
	for _, p := range record.Pulls {
		byWho[p.Actor.Kind+":"+p.Actor.Name] = p
	}
	prod, staging := byWho["robot:prod-deployer"], byWho["robot:staging-deployer"]
	if string(prod.Digest) != digests["1.0"] || !slices.Equal(prod.Tags, []string{"1.0", "prod"}) || prod.Actor.Address != "127.0.0.1" ||
		time.Since(prod.Time) > 10*time.Minute {
		t.Errorf("prod-deployer's pull: %+v, want 1.0 (%s) tagged prod, from 127.0.0.1", prod, digests["1.0"])
	}
	if string(staging.Digest) != digests["2.0"] || !slices.Equal(staging.Tags, []string{"2.0"}) {
		t.Errorf("staging-deployer's pull: %+v, want 2.0 (%s)", staging, digests["2.0"])
	}
	table := mustBerthAs(t, srv, "builder", "pulls", "apps/myapp", "--actor", "robot:prod-deployer")
	if !strings.Contains(table, "robot:prod-deployer") || strings.Contains(table, "staging") || !strings.Contains(table, digests["1.0"]) {
		t.Errorf("berth pulls --actor:\n%s", table)
	}
	// Reading the record needs push.
	if r := berthAs(t, srv, "deployer", "pulls", "apps/myapp"); r.err == nil || !strings.Contains(r.stderr, "DENIED") {
		t.Errorf("berth pulls as a reader: %v %s %s", r.err, r.stdout, r.stderr)
	}

	// prod moves on to 2.0; the file found on the prod server is 1.0's.
	mustBerthAs(t, srv, "builder", "promote", "apps/myapp:2.0", "apps/myapp:prod")
	found := filepath.Join(prodHost, "app.jar")
	if got, _ := os.ReadFile(found); string(got) != string(v1) {
		t.Fatalf("the file oras pulled: %q", got)
	}
	var which struct {
		Digest  string
		Results []storage.Holder
	}
	if err := json.Unmarshal([]byte(mustBerthAs(t, srv, "deployer", "which", found, "--json")), &which); err != nil {
		t.Fatal(err)
	}
	if len(which.Results) != 1 {
		t.Fatalf("berth which as deployer: %+v (the secret repository must not show)", which)
	}
	h := which.Results[0]
	if h.Repository != "apps/myapp" || string(h.Digest) != digests["1.0"] || h.As != storage.HoldsLayer || h.File != "app.jar" ||
		!slices.Equal(h.Tags, []string{"1.0"}) {
		t.Errorf("the holder: %+v", h)
	}
	var prodSpan *storage.TagPeriod
	for i, p := range h.History {
		if p.Tag == "prod" {
			prodSpan = &h.History[i]
		}
	}
	if prodSpan == nil || prodSpan.Until == nil || prodSpan.Action != storage.MovePromote || prodSpan.By.Name != "builder" {
		t.Errorf("prod's span over 1.0: %+v in %+v", prodSpan, h.History)
	}
	table = mustBerthAs(t, srv, "deployer", "which", found)
	if !strings.Contains(table, "apps/myapp") || !strings.Contains(table, "layer app.jar") || !strings.Contains(table, "prod") ||
		strings.Contains(table, "secret") {
		t.Errorf("berth which:\n%s", table)
	}
	// The admin sees the secret copy too; by digest as well as by file.
	_ = json.Unmarshal([]byte(mustBerthAs(t, srv, "admin", "which", which.Digest, "--json")), &which)
	if len(which.Results) != 2 || which.Results[1].Repository != "secret/myapp" {
		t.Errorf("berth which as admin: %+v", which.Results)
	}
}
