package conformance_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	ggcrremote "github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/jackc/pgx/v5"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/crypto/bcrypt"

	"github.com/berth-registry/berth/admin"
	"github.com/berth-registry/berth/conformance/internal/berthtest"
)

// This file runs two real berth replicas, A and B, on one PostgreSQL
// database and one bucket, as a load balancer in front of them would see
// them: what one replica acknowledged, the other serves at once.

// replicaSet is two berth processes on the same index and bucket, each
// with a data directory of its own (which holds only its signing keys).
type replicaSet struct {
	a, b *registryUnderTest
	// config is the configuration both run with; fsck reads it too.
	config string
	bucket string
	// dsn is the database's own DSN, not through pgFault.
	dsn string
	// pgFault and s3Fault stand between the replicas and PostgreSQL and
	// the S3 server when replicaOptions.faults is set.
	pgFault, s3Fault *tcpFault
}

// replicaOptions shape a replicaSet.
type replicaOptions struct {
	// auth turns authentication on: interopUser (an administrator) may do
	// everything, anonymous callers nothing.
	auth bool
	// faults puts a tcpFault between the replicas and each server.
	faults bool
	// gc is the configuration's gc section, if any.
	gc string
	// quiet requires that neither replica logs a warning or an error.
	quiet bool
}

// startReplicas makes a fresh database and bucket and starts two berth
// replicas on them. It skips the test outside CI when PostgreSQL or
// versitygw is missing, and fails it, naming the server, in CI.
func startReplicas(t *testing.T, o replicaOptions) *replicaSet {
	t.Helper()
	dsn := pg.Database(t)
	b := gw.Bucket(t)
	rs := &replicaSet{bucket: b.Name, dsn: dsn}
	endpoint := b.Endpoint
	if o.faults {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatalf("parse DSN %s: %v", dsn, err)
		}
		rs.pgFault = newTCPFault(t, "PostgreSQL", u.Host)
		u.Host = rs.pgFault.addr
		dsn = u.String()
		e, err := url.Parse(endpoint)
		if err != nil {
			t.Fatalf("parse endpoint %s: %v", endpoint, err)
		}
		rs.s3Fault = newTCPFault(t, "versitygw", e.Host)
		e.Host = rs.s3Fault.addr
		endpoint = e.String()
	}
	var cfg strings.Builder
	fmt.Fprintf(&cfg, `storage:
  blobs:
    s3: {endpoint: %q, region: %s, bucket: %s, prefix: "", accessKey: %s, secretKey: %s, forcePathStyle: true}
  index:
    postgres: {dsn: %q}
http:
  secret: the secret every replica of this set shares
`, endpoint, b.Region, b.Name, b.AccessKey, b.SecretKey, dsn)
	cfg.WriteString(o.gc)
	pass := ""
	if o.auth {
		buf := make([]byte, 16)
		if _, err := rand.Read(buf); err != nil {
			t.Fatal(err)
		}
		pass = hex.EncodeToString(buf)
		hash, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		htpasswd := filepath.Join(t.TempDir(), "htpasswd")
		writeTestFile(t, htpasswd, interopUser+":"+string(hash)+"\n")
		fmt.Fprintf(&cfg, `auth:
  htpasswd: %s
  admins: [%s]
  rules:
    - repositories: ["**"]
      grants:
        user:%s: [pull, push, delete]
`, htpasswd, interopUser, interopUser)
	}
	rs.config = filepath.Join(t.TempDir(), "berth.yaml")
	writeTestFile(t, rs.config, cfg.String())
	dirs := []string{t.TempDir(), t.TempDir()}
	if o.auth {
		// The token signing keys live in each replica's data directory:
		// the replicas are given the same ones, as an operator must
		// today, or a token one of them issued is refused by the other.
		berthCLI(t, "", nil, "keys", "rotate", "--data", dirs[0])
		copyKeys(t, filepath.Join(dirs[0], "keys"), filepath.Join(dirs[1], "keys"))
	}
	start := func(dir string) *registryUnderTest {
		reg := &registryUnderTest{mode: registryMode{name: "replica", auth: o.auth, s3: true}, bucket: b.Name}
		if o.auth {
			reg.user, reg.pass = interopUser, pass
		}
		reg.Server = berthtest.Start(t, berthtest.WithDataDir(dir), berthtest.WithArgs("--config", rs.config))
		if o.quiet {
			t.Cleanup(func() {
				for line := range strings.SplitSeq(reg.Logs(), "\n") {
					if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
						t.Errorf("berth %s logged: %s", reg.Addr, line)
					}
				}
			})
		}
		return reg
	}
	// Both start on an empty database at once: the migrations must not
	// race.
	var wg sync.WaitGroup
	wg.Go(func() { rs.a = start(dirs[0]) })
	rs.b = start(dirs[1])
	wg.Wait()
	if rs.a == nil || rs.a.Server == nil {
		t.FailNow()
	}
	return rs
}

// copyKeys copies the key directory src (its files) to dst.
func copyKeys(t *testing.T, src, dst string) {
	t.Helper()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatalf("read the signing keys: %v", err)
	}
	if err := os.MkdirAll(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// do sends one request to a replica, with the replica's credentials in
// authenticated mode, and returns the answer and its body.
func (r *registryUnderTest) do(t *testing.T, method, path string, body []byte, header ...string) (*http.Response, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), interopTimeout)
	defer cancel()
	target := path
	if !strings.HasPrefix(path, "http") {
		target = r.URL + path
	}
	req, err := http.NewRequestWithContext(ctx, method, target, bytes.NewReader(body))
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	hc := r.httpClient(t)
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s on %s: %v", method, path, r.Addr, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s on %s: read body: %v", method, path, r.Addr, err)
	}
	return resp, b
}

// ociLayout writes img into a fresh OCI layout, tagged v1 there.
func ociLayout(t *testing.T, img v1.Image) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "src")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatalf("create OCI layout: %v", err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{ocispec.AnnotationRefName: "v1"})); err != nil {
		t.Fatalf("write OCI layout: %v", err)
	}
	return dir
}

// TestReplicasClients: crane, oras, regctl and skopeo push through one
// replica and pull through the other, byte for byte; a chunked upload
// moves between replicas; a tag moved on one is seen at once on the
// other, with the same history; a robot made through one logs in at the
// other, and its revocation through the other holds at once on the first.
func TestReplicasClients(t *testing.T) {
	rs := startReplicas(t, replicaOptions{auth: true, quiet: true})
	a, b := rs.a, rs.b

	t.Run("crane", func(t *testing.T) {
		env := clientEnv(t)
		crane := func(args ...string) string {
			t.Helper()
			return runClientIn(t, "", env, "crane", append(args, "--insecure")...)
		}
		craneLogin(t, a, env)
		craneLogin(t, b, env)
		img := hostImage(t, true)
		crane("push", ociLayout(t, img), a.Addr+"/replicas/crane:v1")
		out := filepath.Join(t.TempDir(), "pulled")
		crane("pull", "--format", "oci", b.Addr+"/replicas/crane:v1", out)
		p, err := layout.FromPath(out)
		if err != nil {
			t.Fatalf("read pulled layout: %v", err)
		}
		got, err := p.Image(mustDigest(t, img))
		if err != nil {
			t.Fatalf("crane pull through B: the layout lacks the image pushed through A: %v", err)
		}
		compareImage(t, "crane: pushed through A, pulled through B", got, img)
	})

	t.Run("oras", func(t *testing.T) {
		env := clientEnv(t)
		work := t.TempDir()
		oras := func(args ...string) string {
			t.Helper()
			return runClientIn(t, work, env, "oras", append(args, "--plain-http")...)
		}
		for _, r := range []*registryUnderTest{a, b} {
			r.login(t, work, env, "oras", "login", "--plain-http", "-u", r.user, "--password-stdin", r.Addr)
		}
		// Push through one, pull through the other, both ways; the big
		// file spans several parts of the bucket's multipart upload.
		for _, dir := range []struct {
			name     string
			from, to *registryUnderTest
		}{{"a-to-b", a, b}, {"b-to-a", b, a}} {
			files := map[string][]byte{
				dir.name + "/big.bin":   randomBytes(t, 11<<20+7),
				dir.name + "/small.txt": []byte("replicas " + dir.name + "\n"),
			}
			writeFiles(t, work, files)
			ref := "/replicas/oras:" + dir.name
			oras(append([]string{"push", dir.from.Addr + ref}, slices.Sorted(maps.Keys(files))...)...)
			out := t.TempDir()
			oras("pull", "-o", out, dir.to.Addr+ref)
			compareFiles(t, out, files)
		}
	})

	t.Run("regctl", func(t *testing.T) {
		env := clientEnv(t)
		work := t.TempDir()
		regctl := func(args ...string) string {
			t.Helper()
			return runClientIn(t, work, env, "regctl", args...)
		}
		for _, r := range []*registryUnderTest{a, b} {
			regctl("registry", "set", "--tls", "disabled", r.Addr)
			r.login(t, work, env, "regctl", "registry", "login", r.Addr, "-u", r.user, "--pass-stdin")
		}
		img := hostImage(t, false)
		regctl("image", "copy", "ocidir://"+ociLayout(t, img)+":v1", a.Addr+"/replicas/regctl:v1")
		out := filepath.Join(t.TempDir(), "out")
		regctl("image", "copy", b.Addr+"/replicas/regctl:v1", "ocidir://"+out+":v1")
		compareImage(t, "regctl: pushed through A, pulled through B", layoutImage(t, out, "v1"), img)
	})

	t.Run("skopeo", func(t *testing.T) {
		sk := newSkopeo(t, a.basicAuth())
		img := hostImage(t, true)
		sk.run("copy", "--preserve-digests", "--dest-tls-verify=false", "oci:"+ociLayout(t, img)+":v1", "docker://"+a.Addr+"/replicas/skopeo:v1")
		out := filepath.Join(t.TempDir(), "out")
		sk.run("copy", "--preserve-digests", "--src-tls-verify=false", "docker://"+b.Addr+"/replicas/skopeo:v1", "oci:"+out+":v1")
		compareImage(t, "skopeo: pushed through A, pulled through B", layoutImage(t, out, "v1"), img)
	})

	t.Run("chunked", func(t *testing.T) {
		// Chunks of 3, 4, 2 and 1 MiB: the bucket's 5 MiB minimum part
		// is crossed while the session moves between replicas.
		for _, plan := range []struct {
			name string
			// at names the replica of each request: the POST, each
			// PATCH, then the closing PUT.
			at string
		}{
			{"started-on-a-finished-on-b", "AAAAAB"},
			{"alternating", "ABABAB"},
		} {
			t.Run(plan.name, func(t *testing.T) {
				reps := map[byte]*registryUnderTest{'A': a, 'B': b}
				chunks := [][]byte{randomBytes(t, 3<<20), randomBytes(t, 4<<20), randomBytes(t, 2<<20), randomBytes(t, 1<<20+3)}
				whole := bytes.Join(chunks, nil)
				d := digest.FromBytes(whole)
				repo := "replicas/chunked-" + plan.name
				resp, body := reps[plan.at[0]].do(t, http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil)
				mustStatus(t, "POST on "+string(plan.at[0]), resp, body, http.StatusAccepted)
				loc := resp.Header.Get("Location")
				offset := 0
				for i, chunk := range chunks {
					r := reps[plan.at[1+i]]
					resp, body = r.do(t, http.MethodPatch, relative(t, loc), chunk,
						"Content-Type", "application/octet-stream",
						"Content-Range", fmt.Sprintf("%d-%d", offset, offset+len(chunk)-1))
					mustStatus(t, fmt.Sprintf("PATCH %d on %c", i, plan.at[1+i]), resp, body, http.StatusAccepted)
					offset += len(chunk)
					if got, want := resp.Header.Get("Range"), fmt.Sprintf("0-%d", offset-1); got != want {
						t.Fatalf("PATCH %d on %c: Range %q, want %q", i, plan.at[1+i], got, want)
					}
					loc = resp.Header.Get("Location")
				}
				last := reps[plan.at[len(plan.at)-1]]
				u := relative(t, loc)
				sep := "?"
				if strings.Contains(u, "?") {
					sep = "&"
				}
				resp, body = last.do(t, http.MethodPut, u+sep+"digest="+d.String(), nil)
				mustStatus(t, "closing PUT", resp, body, http.StatusCreated)
				for _, r := range []*registryUnderTest{a, b} {
					resp, body = r.do(t, http.MethodGet, "/v2/"+repo+"/blobs/"+d.String(), nil)
					if resp.StatusCode != http.StatusOK || !bytes.Equal(body, whole) {
						t.Fatalf("GET the blob on %s: %s, %d bytes (want %d, equal %v)", r.Addr, resp.Status, len(body), len(whole), bytes.Equal(body, whole))
					}
				}
			})
		}
	})

	t.Run("tag-moves", func(t *testing.T) {
		const repo = "replicas/moves"
		config := []byte(`{"architecture":"amd64","os":"linux"}`)
		var digests []string
		for i, r := range []*registryUnderTest{a, b, a} {
			layer := []byte(fmt.Sprintf("layer %d of the moves", i))
			for _, blob := range [][]byte{config, layer} {
				resp, body := r.do(t, http.MethodPost, "/v2/"+repo+"/blobs/uploads/?digest="+digest.FromBytes(blob).String(), blob)
				mustStatus(t, "push blob", resp, body, http.StatusCreated)
			}
			m := imageManifest(config, [][]byte{layer}, "", "")
			// Move the tag on this replica; the other sees it at once.
			resp, body := r.do(t, http.MethodPut, "/v2/"+repo+"/manifests/stable", m, "Content-Type", ocispec.MediaTypeImageManifest)
			mustStatus(t, "move the tag", resp, body, http.StatusCreated)
			want := digest.FromBytes(m).String()
			digests = append(digests, want)
			for _, other := range []*registryUnderTest{a, b} {
				resp, body := other.do(t, http.MethodGet, "/v2/"+repo+"/manifests/stable", nil, "Accept", ocispec.MediaTypeImageManifest)
				if resp.StatusCode != http.StatusOK || !bytes.Equal(body, m) || resp.Header.Get("Docker-Content-Digest") != want {
					t.Fatalf("move %d made on %s: %s has stable at %s (%s), want %s", i, r.Addr, other.Addr, resp.Header.Get("Docker-Content-Digest"), resp.Status, want)
				}
			}
		}
		// berth tag history answers the same through either replica.
		var histories []string
		for _, r := range []*registryUnderTest{a, b} {
			out := berthCLI(t, "", []string{"BERTH_REGISTRY=" + r.URL, "BERTH_USERNAME=" + r.user, "BERTH_PASSWORD=" + r.pass},
				"tag", "history", "--json", repo+":stable")
			var page struct {
				History []struct {
					Seq      int64  `json:"seq"`
					Previous string `json:"previous"`
					Digest   string `json:"digest"`
				} `json:"history"`
			}
			if err := json.Unmarshal([]byte(out), &page); err != nil {
				t.Fatalf("berth tag history --json through %s: %v\n%s", r.Addr, err, out)
			}
			if len(page.History) != len(digests) {
				t.Fatalf("berth tag history through %s: %d moves, want %d:\n%s", r.Addr, len(page.History), len(digests), out)
			}
			for i, move := range page.History {
				n := len(digests) - 1 - i
				prev := ""
				if n > 0 {
					prev = digests[n-1]
				}
				if move.Digest != digests[n] || move.Previous != prev {
					t.Errorf("berth tag history through %s: move %d is %s -> %s, want %s -> %s", r.Addr, i, move.Previous, move.Digest, prev, digests[n])
				}
			}
			histories = append(histories, out)
		}
		if histories[0] != histories[1] {
			t.Errorf("berth tag history differs between the replicas:\nA: %s\nB: %s", histories[0], histories[1])
		}
	})

	// A search page's cursor, issued by one replica, opens on the other:
	// every replica seals cursors with the key of the shared http.secret.
	t.Run("search-cursor", func(t *testing.T) {
		path := "/v2/_berth/search?repository=replicas/moves&n=1"
		seen := map[string]bool{}
		for page, r := 0, a; path != ""; page++ {
			if page > 5 {
				t.Fatal("the search's pages do not end")
			}
			resp, body := r.do(t, http.MethodGet, path, nil)
			mustStatus(t, fmt.Sprintf("search page %d through %s", page, r.Addr), resp, body, http.StatusOK)
			var res struct {
				Results []struct{ Digest string } `json:"results"`
			}
			if err := json.Unmarshal(body, &res); err != nil {
				t.Fatalf("search page %d: %v\n%s", page, err, body)
			}
			for _, x := range res.Results {
				if seen[x.Digest] {
					t.Errorf("search page %d through %s repeats %s", page, r.Addr, x.Digest)
				}
				seen[x.Digest] = true
			}
			path = ""
			if link := resp.Header.Get("Link"); link != "" {
				path = relative(t, strings.TrimSuffix(strings.TrimPrefix(link, "<"), `>; rel="next"`))
			}
			// The next page is asked of the other replica.
			if r == a {
				r = b
			} else {
				r = a
			}
		}
		if len(seen) != 3 {
			t.Errorf("paging the search across the replicas found %d manifests of replicas/moves, want its 3", len(seen))
		}
	})
	t.Run("token", func(t *testing.T) {
		// Behind a load balancer, a token the token service of one
		// replica issued comes with the next request to any replica.
		for _, from := range []*registryUnderTest{a, b} {
			tok := tokenFor(t, from.URL, from.user, from.pass, "repository:replicas/crane:pull")
			for _, r := range []*registryUnderTest{a, b} {
				if st := bearerStatus(t, r.URL+"/v2/replicas/crane/tags/list", tok); st != http.StatusOK {
					t.Errorf("a token from the token service of %s, at %s: status %d, want 200", from.Addr, r.Addr, st)
				}
			}
		}
	})

	t.Run("robot", func(t *testing.T) {
		admin := func(r *registryUnderTest) []string {
			return []string{"BERTH_REGISTRY=" + r.URL, "BERTH_USERNAME=" + r.user, "BERTH_PASSWORD=" + r.pass}
		}
		secret := strings.TrimSpace(berthCLI(t, "", admin(a), "token", "create", "--name", "ci",
			"--scope", "repository:replicas/robot:pull,push", "--expires", "1h"))
		// The robot logs in at B with crane and pushes there; A serves it.
		env := clientEnv(t)
		res := execClientInput(t, "", env, secret+"\n", "crane", "auth", "login", b.Addr, "-u", "ci", "--password-stdin")
		if res.err != nil {
			t.Fatalf("the robot made through A cannot log in at B: %v\n%s%s", res.err, res.stdout, res.stderr)
		}
		img := hostImage(t, true)
		runClientIn(t, "", env, "crane", "push", "--insecure", ociLayout(t, img), b.Addr+"/replicas/robot:v1")
		robotA := *a
		robotA.user, robotA.pass = "ci", secret
		compareImage(t, "the robot's push through B, read through A", pullImage(t, &robotA, a.Addr+"/replicas/robot:v1"), img)
		// Revoked through B, the robot is refused by A at once.
		berthCLI(t, "", admin(b), "token", "revoke", "ci")
		resp, body := robotA.do(t, http.MethodGet, "/v2/replicas/robot/tags/list", nil)
		mustStatus(t, "the robot revoked through B, at A", resp, body, http.StatusUnauthorized)
	})
}

// relative is the path and query of an upload's Location, which a client
// may send to any replica.
func relative(t *testing.T, loc string) string {
	t.Helper()
	u, err := url.Parse(loc)
	if err != nil || u.Path == "" {
		t.Fatalf("upload Location %q: %v", loc, err)
	}
	if u.RawQuery != "" {
		return u.Path + "?" + u.RawQuery
	}
	return u.Path
}

// The scale of TestReplicasGCUnderLoad: smaller than TestGCUnderLoad's,
// on two replicas.
const (
	replicaGCWorkers = 6
	replicaGCImages  = 8
	// replicaGCGrace must exceed the longest push plus the refresh
	// period (storage/gc): on two replicas sharing PostgreSQL and the S3
	// server on two shared cores with both collecting, a push here has
	// taken up to 4s, so TestGCUnderLoad's 2s would make pushes fail
	// (cleanly, with MANIFEST_BLOB_UNKNOWN), as the invariant says.
	replicaGCGrace   = "10s"
	replicaGCRefresh = "gc:\n  seenRefresh: 2s\n"
)

// TestReplicasGCUnderLoad is TestGCUnderLoad on two replicas at once:
// pushers push through both (and delete through the other), while each
// replica collects with a small grace, back to back; images deleted just
// before the load share their layers with the load's, and become
// collectable during it. Every push succeeds;
// every remaining image pulls completely through both replicas; every
// orphaned referrer is collected exactly once over both; and once
// everything is deleted, a final collection leaves no blob object in the
// bucket, and fsck is clean.
func TestReplicasGCUnderLoad(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), gcTimeout)
	defer cancel()
	bin := berthtest.Build(t)
	rs := startReplicas(t, replicaOptions{gc: replicaGCRefresh})
	reps := []*registryUnderTest{rs.a, rs.b}
	started := time.Now()

	shared := make([]v1.Layer, gcSharedLayers)
	for i := range shared {
		l, err := random.Layer(32<<10, types.OCILayer)
		if err != nil {
			t.Fatal(err)
		}
		shared[i] = l
	}

	// A collector on each replica, back to back until the pushers are
	// done.
	stop := make(chan struct{})
	var gcRuns, gcManifests atomic.Int64
	gcDone := make(chan error, len(reps))
	for _, r := range reps {
		go func() {
			for {
				select {
				case <-stop:
					gcDone <- nil
					return
				default:
				}
				res, err := gcRun(ctx, r.URL, replicaGCGrace)
				if err != nil {
					gcDone <- fmt.Errorf("collection on %s: %w", r.Addr, err)
					return
				}
				gcRuns.Add(1)
				gcManifests.Add(int64(res.ManifestsRemoved))
				time.Sleep(gcPause)
			}
		}()
	}

	var mu sync.Mutex
	var kept []string // repository@digest, without the host
	deleted := 0
	var longest time.Duration // the longest push
	// pushOne pushes an image of worker w through one replica, with two
	// shared layers and one of its own; with del it pushes a referrer of
	// it, then deletes it through the other replica.
	pushOne := func(w, i int, tagName string, del bool) error {
		push, other := reps[(w+i)%2], reps[(w+i+1)%2]
		repoPath := fmt.Sprintf("gc/r%d", w%gcRepos)
		own, err := random.Layer(4<<10, types.OCILayer)
		if err != nil {
			return err
		}
		img, err := mutate.AppendLayers(empty.Image, shared[(w+i)%gcSharedLayers], shared[(w+i+1)%gcSharedLayers], own)
		if err != nil {
			return err
		}
		img = mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
		tag, err := name.NewTag(fmt.Sprintf("%s/%s:%s", push.Addr, repoPath, tagName), name.Insecure)
		if err != nil {
			return err
		}
		began := time.Now()
		if err := ggcrremote.Write(tag, img, ggcrremote.WithContext(ctx)); err != nil {
			return fmt.Errorf("push %s (for %s): %w", tag, time.Since(began).Round(time.Millisecond), err)
		}
		took := time.Since(began)
		d, err := img.Digest()
		if err != nil {
			return err
		}
		mu.Lock()
		longest = max(longest, took)
		mu.Unlock()
		if !del {
			mu.Lock()
			kept = append(kept, repoPath+"@"+d.String())
			mu.Unlock()
			return nil
		}
		// An SBOM-like referrer first, orphaned by the delete:
		// collection removes it with its layer.
		if err := gcPushReferrer(ctx, tag.Context(), img); err != nil {
			return err
		}
		ref, err := name.NewDigest(fmt.Sprintf("%s/%s@%s", other.Addr, repoPath, d), name.Insecure)
		if err != nil {
			return err
		}
		if err := ggcrremote.Delete(ref, ggcrremote.WithContext(ctx)); err != nil {
			return fmt.Errorf("delete %s: %w", ref, err)
		}
		mu.Lock()
		deleted++
		mu.Unlock()
		return nil
	}
	// Images deleted before the load, which the collections can reclaim
	// once the grace has passed, while the load pushes images that share
	// their layers.
	for w := range replicaGCWorkers {
		if err := pushOne(w, 0, fmt.Sprintf("early-w%d", w), true); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, replicaGCWorkers)
	for w := range replicaGCWorkers {
		wg.Go(func() {
			errs <- func() error {
				for i := range replicaGCImages {
					if err := pushOne(w, i, fmt.Sprintf("w%d-i%d", w, i), i%gcDeleteEvery == 0); err != nil {
						return err
					}
				}
				return nil
			}()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	close(stop)
	for range reps {
		if err := <-gcDone; err != nil {
			t.Errorf("collector: %v", err)
		}
	}
	if t.Failed() {
		return
	}
	loadTook := time.Since(started)

	// Everything kept pulls completely through both replicas.
	for _, r := range reps {
		for _, k := range kept {
			ref, err := name.NewDigest(r.Addr+"/"+k, name.Insecure)
			if err != nil {
				t.Fatal(err)
			}
			if err := gcPull(ctx, ref); err != nil {
				t.Fatalf("pull %s: %v", ref, err)
			}
		}
	}

	// Delete everything, half through each; a final collection leaves no
	// blob behind in the bucket.
	for i, k := range kept {
		ref, err := name.NewDigest(reps[i%2].Addr+"/"+k, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		if err := ggcrremote.Delete(ref, ggcrremote.WithContext(ctx)); err != nil {
			t.Fatalf("delete %s: %v", ref, err)
		}
	}
	cli := exec.CommandContext(ctx, bin, "gc", "--registry", rs.b.URL, "--grace", "0s", "--json")
	cli.Env = append(os.Environ(), "BERTH_USERNAME=", "BERTH_PASSWORD=")
	out, err := cli.Output()
	if err != nil {
		t.Fatalf("berth gc: %v\n%s", err, out)
	}
	var final admin.GCResult
	if err := json.Unmarshal(out, &final); err != nil {
		t.Fatalf("berth gc --json: %v\n%s", err, out)
	}
	keys := bucketKeys(t, rs.bucket, "")
	var blobs []string
	for _, k := range keys {
		if strings.HasPrefix(k, "blobs/") {
			blobs = append(blobs, k)
		}
	}
	if len(blobs) != 0 {
		t.Fatalf("the final collection %+v left %d blob objects in the bucket, e.g. %s", final.Report, len(blobs), blobs[0])
	}
	if got := gcManifests.Load() + int64(final.ManifestsRemoved); got != int64(deleted) {
		t.Errorf("the collections of both replicas removed %d orphaned referrers, want %d", got, deleted)
	}
	rs.a.Stop()
	rs.b.Stop()
	r := fsckJSON(t, bin, 0, "--config", rs.config, "--verify-content")
	if len(r.Problems) != 0 || len(r.Orphans) != 0 || r.Blobs != 0 {
		t.Fatalf("fsck after the final collection: %d blobs, problems %v, orphans %v", r.Blobs, r.Problems, r.Orphans)
	}
	t.Logf("GC under load on two replicas: %d images (%d workers x %d, and %d before; the longest push %s), %d deleted; %d collections (grace %s) during %s of load removed %d orphaned referrers; "+
		"final collection %+v; bucket afterwards: %d objects, none a blob; total %s",
		replicaGCWorkers*replicaGCImages, replicaGCWorkers, replicaGCImages, replicaGCWorkers, longest.Round(time.Millisecond), deleted, gcRuns.Load(), replicaGCGrace,
		loadTook.Round(time.Millisecond), gcManifests.Load(), final.Report, len(keys), time.Since(started).Round(time.Millisecond))
}

// The scale of TestReplicasSIGKILL.
const (
	killWorkers = 4
	killImages  = 8
	// killAfter is how many pushes are acknowledged before A is killed.
	killAfter = 8
)

// TestReplicasSIGKILL: pushers spread their pushes over both replicas;
// once some are acknowledged, A is killed with SIGKILL, in the middle of
// others and of a PATCH of a chunked upload, which then goes on through B
// from where its last acknowledged PATCH left it. A push A fails is pushed again through B, as a load balancer
// would. B keeps serving: none of its pushes fails. Every acknowledged
// push, through either replica, reads back completely through B, and
// once B is stopped too, berth fsck (on the database and the bucket,
// through the configuration) finds no inconsistency.
func TestReplicasSIGKILL(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	bin := berthtest.Build(t)
	rs := startReplicas(t, replicaOptions{})
	a, b := rs.a, rs.b
	shared := make([]v1.Layer, 4)
	for i := range shared {
		l, err := random.Layer(48<<10, types.OCILayer)
		if err != nil {
			t.Fatal(err)
		}
		shared[i] = l
	}
	// No retries: a failure must be seen as one.
	noRetry := []ggcrremote.Option{ggcrremote.WithContext(ctx),
		ggcrremote.WithRetryPredicate(func(error) bool { return false }), ggcrremote.WithRetryStatusCodes()}

	var (
		killed   atomic.Bool
		ackedN   atomic.Int64
		mu       sync.Mutex
		acked    []string // repository:tag@digest, without the host
		failedA  int
		inFlight int // pushes through A that A's death cut off
		afterOnB int // pushes B acknowledged after the kill
	)
	killNow := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, killWorkers)
	for w := range killWorkers {
		wg.Go(func() {
			errs <- func() error {
				for i := range killImages {
					own, err := random.Layer(4<<10, types.OCILayer)
					if err != nil {
						return err
					}
					img, err := mutate.AppendLayers(empty.Image, shared[(w+i)%len(shared)], shared[(w+i+1)%len(shared)], own)
					if err != nil {
						return err
					}
					img = mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
					d, err := img.Digest()
					if err != nil {
						return err
					}
					repoTag := fmt.Sprintf("kill/r%d:w%d-i%d", w%2, w, i)
					target := []*registryUnderTest{a, b}[(w+i)%2]
					wasKilled := killed.Load()
					err = ggcrremote.Write(mustTag(repoTag, target.Addr), img, noRetry...)
					if err != nil && target == a && (wasKilled || killed.Load()) {
						// A died (before or under this push): through B.
						mu.Lock()
						failedA++
						if !wasKilled {
							inFlight++
						}
						mu.Unlock()
						target = b
						err = ggcrremote.Write(mustTag(repoTag, b.Addr), img, noRetry...)
					}
					if err != nil {
						return fmt.Errorf("push %s through %s (A killed: %v): %w", repoTag, target.Addr, killed.Load(), err)
					}
					mu.Lock()
					acked = append(acked, repoTag+"@"+d.String())
					if target == b && killed.Load() {
						afterOnB++
					}
					mu.Unlock()
					if ackedN.Add(1) == killAfter {
						close(killNow)
					}
				}
				return nil
			}()
		})
	}
	// Once enough pushes are acknowledged, A dies under a PATCH of a
	// chunked upload (and whatever pushes it is serving).
	workersDone := make(chan struct{})
	go func() {
		wg.Wait()
		close(workersDone)
	}()
	var upload *interruptedUpload
	select {
	case <-killNow:
		upload = cutUpload(t, a, b, "kill/chunked", func() {
			killed.Store(true)
			a.Kill()
		}, cutKilled)
	case <-workersDone:
	}
	<-workersDone
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if !killed.Load() {
		t.Fatal("A was never killed")
	}
	// The upload goes on through B from where its last acknowledged
	// PATCH left it.
	upload.resume(t)
	if t.Failed() {
		return
	}
	if afterOnB == 0 {
		t.Fatal("B acknowledged no push after A was killed")
	}
	// Every acknowledged push reads back through the survivor, by tag
	// and completely.
	for _, k := range acked {
		repoTag, dg, _ := strings.Cut(k, "@")
		ref, err := name.NewDigest(b.Addr+"/"+strings.Split(repoTag, ":")[0]+"@"+dg, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		if err := gcPull(ctx, ref); err != nil {
			t.Fatalf("pull %s through B: %v", ref, err)
		}
		resp, _ := b.do(t, http.MethodHead, "/v2/"+strings.Replace(repoTag, ":", "/manifests/", 1), nil, "Accept", string(types.OCIManifestSchema1))
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Content-Digest") != dg {
			t.Fatalf("HEAD %s through B: %s, digest %s, want %s", repoTag, resp.Status, resp.Header.Get("Docker-Content-Digest"), dg)
		}
	}
	b.Stop()
	r := fsckJSON(t, bin, 0, "--config", rs.config, "--verify-content")
	for _, p := range r.Problems {
		if !p.Harmless {
			t.Errorf("fsck after the kill: %+v", p)
		}
	}
	t.Logf("SIGKILL of A after %d acknowledged pushes: %d pushes acknowledged in all (%d by B after the kill), %d failed on A (%d of them in flight at the kill) and were pushed again through B; "+
		"fsck: %d blobs, %d manifests, harmless findings %v, orphans %v", killAfter, len(acked), afterOnB, failedA, inFlight, r.Blobs, r.Manifests, findings(r.Problems), findings(r.Orphans))
}

// mustTag is repoTag on host.
func mustTag(repoTag, host string) name.Tag {
	tag, err := name.NewTag(host+"/"+repoTag, name.Insecure)
	if err != nil {
		panic(err)
	}
	return tag
}

// tcpFault is a loopback TCP proxy between the replicas and a server. Cut
// makes the server look stopped: every connection through the proxy is
// closed and new ones are refused, as they are when a server goes away;
// Restore listens again on the same port, and the server is back.
type tcpFault struct {
	t      *testing.T
	server string // the server's name, for messages
	target string // the server's host:port
	addr   string // the proxy's host:port

	mu    sync.Mutex
	ln    net.Listener // nil while cut
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// newTCPFault starts a proxy to target on a free loopback port; it stops
// when the test ends.
func newTCPFault(t *testing.T, server, target string) *tcpFault {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen on loopback: %v", err)
	}
	f := &tcpFault{t: t, server: server, target: target, addr: ln.Addr().String(), conns: map[net.Conn]struct{}{}}
	f.serve(ln)
	t.Cleanup(func() {
		f.Cut()
		f.wg.Wait()
	})
	return f
}

func (f *tcpFault) serve(ln net.Listener) {
	f.mu.Lock()
	f.ln = ln
	f.mu.Unlock()
	f.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.wg.Go(func() { f.pipe(c) })
		}
	})
}

// pipe forwards one connection to the server until either side closes
// it or the proxy is cut.
func (f *tcpFault) pipe(c net.Conn) {
	up, err := net.DialTimeout("tcp", f.target, 5*time.Second)
	if err != nil {
		_ = c.Close()
		return
	}
	f.mu.Lock()
	if f.ln == nil {
		f.mu.Unlock()
		_ = c.Close()
		_ = up.Close()
		return
	}
	f.conns[c], f.conns[up] = struct{}{}, struct{}{}
	f.mu.Unlock()
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		_ = dst.Close()
		_ = src.Close()
		done <- struct{}{}
	}
	go cp(up, c)
	go cp(c, up)
	<-done
	<-done
	f.mu.Lock()
	delete(f.conns, c)
	delete(f.conns, up)
	f.mu.Unlock()
}

// Cut closes every connection and stops listening.
func (f *tcpFault) Cut() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ln != nil {
		_ = f.ln.Close()
		f.ln = nil
	}
	for c := range f.conns {
		_ = c.Close()
	}
}

// Restore listens again on the proxy's port.
func (f *tcpFault) Restore() {
	f.t.Helper()
	var err error
	for range 100 {
		var ln net.Listener
		if ln, err = net.Listen("tcp", f.addr); err == nil {
			f.serve(ln)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	f.t.Fatalf("restore the way to %s: listen on %s again: %v", f.server, f.addr, err)
}

// loadPush is one image the background load of TestReplicasFaults pushed.
type loadPush struct {
	tag      string
	manifest []byte
	blobs    [][]byte
}

// send is one request that may fail, for goroutines (no t.Fatal).
func send(ctx context.Context, method, url string, body []byte, header ...string) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b, err
}

// unavailable checks that an answer is the 503 of a backend out of reach:
// the specification's error body with code UNAVAILABLE, and Retry-After.
func unavailable(status int, h http.Header, body []byte) error {
	var e struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if status != http.StatusServiceUnavailable {
		return fmt.Errorf("status %d, want 503: %s", status, body)
	}
	if ra := h.Get("Retry-After"); ra == "" || strings.Trim(ra, "0123456789") != "" {
		return fmt.Errorf("503 with Retry-After %q, want a number of seconds", ra)
	}
	if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) != 1 || e.Errors[0].Code != "UNAVAILABLE" || e.Errors[0].Message == "" {
		return fmt.Errorf("503 with body %s, want one error of code UNAVAILABLE (%v)", body, err)
	}
	return nil
}

// pushLoad pushes small images to repo through the replicas in turn until
// stop is closed (or n images), pacing itself. A push that fails must fail
// with unavailable's 503; it returns the pushes acknowledged and those
// refused.
func pushLoad(ctx context.Context, reps []*registryUnderTest, repo string, n int, stop <-chan struct{}) (acked []loadPush, refused int, err error) {
	for i := range n {
		select {
		case <-stop:
			return acked, refused, nil
		default:
		}
		base := reps[i%len(reps)].URL
		layer := make([]byte, 2048)
		if _, err := rand.Read(layer); err != nil {
			return acked, refused, err
		}
		config := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","load":%d}`, i))
		p := loadPush{tag: fmt.Sprintf("l%d", i), blobs: [][]byte{config, layer}, manifest: imageManifest(config, [][]byte{layer}, "", "")}
		ok := true
		for _, blob := range p.blobs {
			status, h, body, err := send(ctx, http.MethodPost, base+"/v2/"+repo+"/blobs/uploads/?digest="+digest.FromBytes(blob).String(), blob)
			if err != nil {
				return acked, refused, fmt.Errorf("push a blob through %s: %w", base, err)
			}
			if status != http.StatusCreated {
				if err := unavailable(status, h, body); err != nil {
					return acked, refused, fmt.Errorf("push a blob through %s: %w", base, err)
				}
				ok = false
				break
			}
		}
		if ok {
			status, h, body, err := send(ctx, http.MethodPut, base+"/v2/"+repo+"/manifests/"+p.tag, p.manifest, "Content-Type", ocispec.MediaTypeImageManifest)
			if err != nil {
				return acked, refused, fmt.Errorf("push manifest %s through %s: %w", p.tag, base, err)
			}
			if status == http.StatusCreated {
				acked = append(acked, p)
			} else if err := unavailable(status, h, body); err != nil {
				return acked, refused, fmt.Errorf("push manifest %s through %s: %w", p.tag, base, err)
			} else {
				ok = false
			}
		}
		if !ok {
			refused++
		}
		time.Sleep(20 * time.Millisecond)
	}
	return acked, refused, nil
}

// untilStatus polls GET path on r until it answers want, a bounded number
// of times, and fails the test otherwise.
func untilStatus(t *testing.T, r *registryUnderTest, what, path string, want int) {
	t.Helper()
	var status int
	var body []byte
	for range 200 {
		var err error
		status, _, body, err = send(t.Context(), http.MethodGet, r.URL+path, nil, "Accept", ocispec.MediaTypeImageManifest)
		if err != nil {
			t.Fatalf("%s: GET %s on %s: %v", what, path, r.Addr, err)
		}
		if status == want {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: GET %s on %s still answers %d (%s), want %d", what, path, r.Addr, status, body, want)
}

// TestReplicasFaults: PostgreSQL, then the S3 server, goes away for a
// moment under two replicas and a light load of pushes through both.
// While it is away, /readyz answers 503 and requests that need it get a
// 503 with the specification's error body (UNAVAILABLE) and Retry-After;
// what they would have written is not there afterwards, neither a
// manifest without its blobs nor a tag without its manifest. A chunked
// upload whose PATCH the fault cut in the middle stays where its last
// acknowledged PATCH left it (or, when only the index went away after the
// append began, holds the whole chunk), and goes on from there. Once the
// server is back, both replicas serve again by themselves, without a
// restart; every push acknowledged at any time reads back completely
// through both; and fsck finds no inconsistency.
func TestReplicasFaults(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	bin := berthtest.Build(t)
	rs := startReplicas(t, replicaOptions{faults: true})
	reps := []*registryUnderTest{rs.a, rs.b}
	const repo = "faults/app"
	ct := []string{"Content-Type", ocispec.MediaTypeImageManifest}

	// What is there before the faults.
	config := []byte(`{"architecture":"amd64","os":"linux"}`)
	layer := randomBytes(t, 64<<10)
	for _, blob := range [][]byte{config, layer} {
		resp, body := rs.a.do(t, http.MethodPost, "/v2/"+repo+"/blobs/uploads/?digest="+digest.FromBytes(blob).String(), blob)
		mustStatus(t, "push a blob", resp, body, http.StatusCreated)
	}
	base := imageManifest(config, [][]byte{layer}, "", "")
	resp, body := rs.a.do(t, http.MethodPut, "/v2/"+repo+"/manifests/v1", base, ct...)
	mustStatus(t, "push v1", resp, body, http.StatusCreated)
	layerPath := "/v2/" + repo + "/blobs/" + digest.FromBytes(layer).String()

	// A light load through both replicas for the whole test.
	stop := make(chan struct{})
	type loadResult struct {
		acked   []loadPush
		refused int
		err     error
	}
	loadDone := make(chan loadResult, 1)
	go func() {
		acked, refused, err := pushLoad(ctx, reps, "faults/load", 1000, stop)
		loadDone <- loadResult{acked, refused, err}
	}()

	refusing := databaseRefusal(t, rs.dsn)
	for _, fault := range []struct {
		name string
		// cut takes the server away (idempotent), restore brings it back.
		cut, restore func()
		// probe is a request that needs the server.
		probe string
	}{
		{"postgres", rs.pgFault.Cut, rs.pgFault.Restore, "/v2/" + repo + "/manifests/v1"},
		{"postgres-refusing", refusing.cut, refusing.restore, "/v2/" + repo + "/manifests/v1"},
		{"s3", rs.s3Fault.Cut, rs.s3Fault.Restore, layerPath},
	} {
		t.Run(fault.name, func(t *testing.T) {
			// A manifest of its own, and a blob only the S3 run pushes.
			extra := []byte("blob pushed while " + fault.name + " is away")
			m := imageManifest(config, [][]byte{layer}, "while "+fault.name+" is away", "")
			md := digest.FromBytes(m).String()
			tag := "during-" + fault.name

			// An upload in progress, cut in the middle of a PATCH.
			want := cutRefused
			if strings.HasPrefix(fault.name, "postgres") {
				// The session is in the bucket: its append needs the
				// index only before it begins.
				want = cutRefusedOrDone
			}
			upload := cutUpload(t, rs.a, rs.b, repo, fault.cut, want)

			fault.cut()
			for _, r := range reps {
				untilStatus(t, r, fault.name+" away: /readyz", "/readyz", http.StatusServiceUnavailable)
				for _, req := range []struct {
					what, method, path string
					body               []byte
					header             []string
				}{
					{"read", http.MethodGet, fault.probe, nil, []string{"Accept", ocispec.MediaTypeImageManifest}},
					{"manifest push", http.MethodPut, "/v2/" + repo + "/manifests/" + tag, m, ct},
					{"blob push", http.MethodPost, "/v2/" + repo + "/blobs/uploads/?digest=" + digest.FromBytes(extra).String(), extra, nil},
					{"chunk", http.MethodPatch, upload.loc, extra, []string{"Content-Type", "application/octet-stream"}},
				} {
					status, h, body, err := send(ctx, req.method, r.URL+req.path, req.body, req.header...)
					if err != nil {
						t.Fatalf("%s away: %s on %s: %v", fault.name, req.what, r.Addr, err)
					}
					if err := unavailable(status, h, body); err != nil {
						t.Errorf("%s away: %s %s on %s: %v", fault.name, req.method, req.path, r.Addr, err)
					}
				}
			}
			fault.restore()
			for _, r := range reps {
				untilStatus(t, r, fault.name+" back: /readyz", "/readyz", http.StatusOK)
				untilStatus(t, r, fault.name+" back", fault.probe, http.StatusOK)
				// Nothing of the refused pushes is there.
				for _, path := range []string{"/v2/" + repo + "/manifests/" + md, "/v2/" + repo + "/manifests/" + tag,
					"/v2/" + repo + "/blobs/" + digest.FromBytes(extra).String()} {
					resp, body := r.do(t, http.MethodGet, path, nil, "Accept", ocispec.MediaTypeImageManifest)
					mustStatus(t, fault.name+" back: what was refused", resp, body, http.StatusNotFound)
				}
			}
			// The upload goes on from where its record says it is.
			upload.resume(t)
			// And the same pushes now succeed.
			resp, body := rs.b.do(t, http.MethodPost, "/v2/"+repo+"/blobs/uploads/?digest="+digest.FromBytes(extra).String(), extra)
			mustStatus(t, fault.name+" back: push the blob", resp, body, http.StatusCreated)
			resp, body = rs.b.do(t, http.MethodPut, "/v2/"+repo+"/manifests/"+tag, m, ct...)
			mustStatus(t, fault.name+" back: push the manifest", resp, body, http.StatusCreated)
			resp, body = rs.a.do(t, http.MethodGet, "/v2/"+repo+"/manifests/"+tag, nil, "Accept", ocispec.MediaTypeImageManifest)
			if resp.StatusCode != http.StatusOK || !bytes.Equal(body, m) {
				t.Fatalf("%s back: %s through A: %s", fault.name, tag, resp.Status)
			}
		})
	}
	close(stop)
	load := <-loadDone
	if load.err != nil {
		t.Fatalf("load: %v", load.err)
	}

	// Every acknowledged push reads back completely through both; every
	// tag there is names a manifest whose blobs are all there.
	for _, r := range reps {
		for _, p := range load.acked {
			resp, body := r.do(t, http.MethodGet, "/v2/faults/load/manifests/"+p.tag, nil, "Accept", ocispec.MediaTypeImageManifest)
			if resp.StatusCode != http.StatusOK || !bytes.Equal(body, p.manifest) {
				t.Fatalf("acknowledged push %s through %s: %s", p.tag, r.Addr, resp.Status)
			}
			for _, blob := range p.blobs {
				resp, body := r.do(t, http.MethodGet, "/v2/faults/load/blobs/"+digest.FromBytes(blob).String(), nil)
				if resp.StatusCode != http.StatusOK || !bytes.Equal(body, blob) {
					t.Fatalf("blob of acknowledged push %s through %s: %s", p.tag, r.Addr, resp.Status)
				}
			}
		}
		resp, body := r.do(t, http.MethodGet, "/v2/faults/load/tags/list", nil)
		mustStatus(t, "tags of the load", resp, body, http.StatusOK)
		var tags struct{ Tags []string }
		if err := json.Unmarshal(body, &tags); err != nil {
			t.Fatal(err)
		}
		if len(tags.Tags) < len(load.acked) {
			t.Fatalf("%s lists %d tags of the load, fewer than the %d acknowledged", r.Addr, len(tags.Tags), len(load.acked))
		}
		for _, tag := range tags.Tags {
			ref := fmt.Sprintf("%s/faults/load:%s", r.Addr, tag)
			img, err := ggcrremote.Image(mustTag("faults/load:"+tag, r.Addr), ggcrremote.WithContext(ctx))
			if err != nil {
				t.Fatalf("tag %s: %v", ref, err)
			}
			d, err := img.Digest()
			if err != nil {
				t.Fatal(err)
			}
			if err := gcPull(ctx, mustTag("faults/load:"+tag, r.Addr).Context().Digest(d.String())); err != nil {
				t.Fatalf("tag %s names an incomplete image: %v", ref, err)
			}
		}
	}
	rs.a.Stop()
	rs.b.Stop()
	r := fsckJSON(t, bin, 0, "--config", rs.config, "--verify-content")
	for _, p := range r.Problems {
		if !p.Harmless {
			t.Errorf("fsck after the faults: %+v", p)
		}
	}
	t.Logf("faults: load of %d pushes acknowledged and %d refused with 503 while a server was away; fsck: %d blobs, %d manifests, harmless findings %v, orphans %v",
		len(load.acked), load.refused, r.Blobs, r.Manifests, findings(r.Problems), findings(r.Orphans))
}

// interruptedUpload is a chunked upload whose second PATCH a fault cut
// off in the middle.
type interruptedUpload struct {
	a, b     *registryUnderTest
	repo     string
	loc      string
	whole    []byte
	recorded int // bytes the first PATCH stored
}

// cutOutcome is what the PATCH cut off in the middle must answer.
type cutOutcome int

const (
	// cutRefused: 503 UNAVAILABLE.
	cutRefused cutOutcome = iota
	// cutRefusedOrDone: 503, or 202 having stored the whole chunk (the
	// server cut is one the append no longer needs once it began).
	cutRefusedOrDone
	// cutKilled: the PATCH goes to a, which the cut kills: no answer.
	cutKilled
)

// cutUpload starts an upload on a, stores its first chunk there, then
// sends the second through b (through a with cutKilled) with a body that
// stops in the middle: cut runs, and the rest of the body follows. The
// answer must be want's.
func cutUpload(t *testing.T, a, b *registryUnderTest, repo string, cut func(), want cutOutcome) *interruptedUpload {
	t.Helper()
	first, second := randomBytes(t, 1<<20), randomBytes(t, 7<<20)
	u := &interruptedUpload{a: a, b: b, repo: repo, whole: append(slices.Clone(first), second...), recorded: len(first)}
	resp, body := a.do(t, http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil)
	mustStatus(t, "start an upload", resp, body, http.StatusAccepted)
	resp, body = a.do(t, http.MethodPatch, relative(t, resp.Header.Get("Location")), first,
		"Content-Type", "application/octet-stream", "Content-Range", fmt.Sprintf("0-%d", len(first)-1))
	mustStatus(t, "first PATCH", resp, body, http.StatusAccepted)
	u.loc = relative(t, resp.Header.Get("Location"))

	target := b
	if want == cutKilled {
		target = a
		u.a = b // a is gone: the rest goes through b
	}
	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPatch, target.URL+u.loc, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(len(second))
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Content-Range", fmt.Sprintf("%d-%d", len(first), len(u.whole)-1))
	go func() {
		// Six MiB, more than a part of the bucket, go before the cut.
		if _, err := pw.Write(second[:6<<20]); err != nil {
			pw.CloseWithError(err)
			return
		}
		cut()
		_, err := pw.Write(second[6<<20:])
		pw.CloseWithError(err)
	}()
	r, err := http.DefaultClient.Do(req)
	if want == cutKilled {
		if err == nil {
			r.Body.Close()
			t.Fatalf("the PATCH to the replica killed under it was answered: %s", r.Status)
		}
		t.Logf("the PATCH cut off in the middle by the kill: %v", err)
		return u
	}
	if err != nil {
		t.Fatalf("the PATCH cut off by the fault: %v", err)
	}
	defer r.Body.Close()
	rb, _ := io.ReadAll(r.Body)
	if r.StatusCode == http.StatusAccepted && want == cutRefusedOrDone {
		u.recorded = len(u.whole)
	} else if err := unavailable(r.StatusCode, r.Header, rb); err != nil {
		t.Errorf("the PATCH cut off by the fault, on %s: %v", target.Addr, err)
	}
	t.Logf("the PATCH cut off in the middle by the fault: %s", r.Status)
	return u
}

// resume asks b where the upload is, sends the rest from there through a
// and closes it through b; the blob then reads back whole through both.
func (u *interruptedUpload) resume(t *testing.T) {
	t.Helper()
	resp, body := u.b.do(t, http.MethodGet, u.loc, nil)
	mustStatus(t, "status of the interrupted upload", resp, body, http.StatusNoContent)
	if got, want := resp.Header.Get("Range"), fmt.Sprintf("0-%d", u.recorded-1); got != want {
		t.Fatalf("the interrupted upload is at %q, want %q (what the acknowledged PATCH stored)", got, want)
	}
	loc := u.loc
	if rest := u.whole[u.recorded:]; len(rest) > 0 {
		resp, body = u.a.do(t, http.MethodPatch, u.loc, rest,
			"Content-Type", "application/octet-stream", "Content-Range", fmt.Sprintf("%d-%d", u.recorded, len(u.whole)-1))
		mustStatus(t, "resume the upload", resp, body, http.StatusAccepted)
		loc = relative(t, resp.Header.Get("Location"))
	}
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	d := digest.FromBytes(u.whole)
	resp, body = u.b.do(t, http.MethodPut, loc+sep+"digest="+d.String(), nil)
	mustStatus(t, "close the resumed upload", resp, body, http.StatusCreated)
	for _, r := range []*registryUnderTest{u.a, u.b} {
		resp, body = r.do(t, http.MethodGet, "/v2/"+u.repo+"/blobs/"+d.String(), nil)
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, u.whole) {
			t.Fatalf("the resumed upload's blob through %s: %s, %d bytes, want %d", r.Addr, resp.Status, len(body), len(u.whole))
		}
	}
}

// findings names fsck's findings, kind and path, for the log.
func findings(fs []fsckFinding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Kind+" "+f.Path+f.Digest)
	}
	return out
}

// dbRefusal makes PostgreSQL refuse one database, the way a server does
// to an administrator's ALTER DATABASE ... ALLOW_CONNECTIONS false: it
// ends the database's sessions (pg_terminate_backend, which their clients
// see as an administrator's shutdown) and refuses new ones, until restore.
type dbRefusal struct {
	t    *testing.T
	name string // the database
}

// databaseRefusal returns a dbRefusal of the database of dsn; the
// database accepts connections again when the test ends.
func databaseRefusal(t *testing.T, dsn string) *dbRefusal {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("parse DSN: %v", err)
	}
	r := &dbRefusal{t: t, name: strings.TrimPrefix(u.Path, "/")}
	if strings.Trim(r.name, "abcdefghijklmnopqrstuvwxyz_0123456789") != "" {
		t.Fatalf("database name %q", r.name)
	}
	t.Cleanup(func() { r.admin(`ALTER DATABASE ` + r.name + ` ALLOW_CONNECTIONS true`) })
	return r
}

func (r *dbRefusal) admin(sql string) {
	r.t.Helper()
	conn, err := pgx.Connect(context.Background(), pg.DSN("postgres"))
	if err != nil {
		r.t.Fatalf("connect to PostgreSQL as its administrator: %v", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), sql); err != nil {
		r.t.Fatalf("%s: %v", sql, err)
	}
}

func (r *dbRefusal) cut() {
	r.admin(`ALTER DATABASE ` + r.name + ` ALLOW_CONNECTIONS false`)
	r.admin(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '` + r.name + `' AND pid <> pg_backend_pid()`)
}

func (r *dbRefusal) restore() { r.admin(`ALTER DATABASE ` + r.name + ` ALLOW_CONNECTIONS true`) }
