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
	dsn    string
}

// replicaOptions shape a replicaSet.
type replicaOptions struct {
	// auth turns authentication on: interopUser (an administrator) may do
	// everything, anonymous callers nothing.
	auth bool
	// s3Endpoint replaces the S3 server's endpoint (a fault proxy in
	// front of it); pgAddr replaces PostgreSQL's host:port likewise.
	s3Endpoint, pgAddr string
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
	if o.s3Endpoint != "" {
		endpoint = o.s3Endpoint
	}
	if o.pgAddr != "" {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatalf("parse DSN %s: %v", dsn, err)
		}
		u.Host = o.pgAddr
		dsn = u.String()
	}
	var cfg strings.Builder
	fmt.Fprintf(&cfg, `storage:
  blobs:
    s3: {endpoint: %q, region: %s, bucket: %s, prefix: "", accessKey: %s, secretKey: %s, forcePathStyle: true}
  index:
    postgres: {dsn: %q}
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
	start := func() *registryUnderTest {
		reg := &registryUnderTest{mode: registryMode{name: "replica", auth: o.auth, s3: true}, bucket: b.Name}
		if o.auth {
			reg.user, reg.pass = interopUser, pass
		}
		reg.Server = berthtest.Start(t, berthtest.WithArgs("--config", rs.config))
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
	wg.Go(func() { rs.a = start() })
	rs.b = start()
	wg.Wait()
	if rs.a == nil || rs.a.Server == nil {
		t.FailNow()
	}
	return rs
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
)

// TestReplicasGCUnderLoad is TestGCUnderLoad on two replicas at once:
// pushers push through both (and delete through the other), while each
// replica collects with a small grace, back to back. Every push succeeds;
// every remaining image pulls completely through both replicas; every
// orphaned referrer is collected exactly once over both; and once
// everything is deleted, a final collection leaves no blob object in the
// bucket, and fsck is clean.
func TestReplicasGCUnderLoad(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), gcTimeout)
	defer cancel()
	bin := berthtest.Build(t)
	rs := startReplicas(t, replicaOptions{gc: "gc:\n  seenRefresh: 500ms\n"})
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
				res, err := gcRun(ctx, r.URL, gcGrace)
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
	var wg sync.WaitGroup
	errs := make(chan error, replicaGCWorkers)
	for w := range replicaGCWorkers {
		wg.Go(func() {
			errs <- func() error {
				for i := range replicaGCImages {
					push, del := reps[(w+i)%2], reps[(w+i+1)%2]
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
					tag, err := name.NewTag(fmt.Sprintf("%s/%s:w%d-i%d", push.Addr, repoPath, w, i), name.Insecure)
					if err != nil {
						return err
					}
					if err := ggcrremote.Write(tag, img, ggcrremote.WithContext(ctx)); err != nil {
						return fmt.Errorf("push %s: %w", tag, err)
					}
					d, err := img.Digest()
					if err != nil {
						return err
					}
					if i%gcDeleteEvery == 0 {
						if err := gcPushReferrer(ctx, tag.Context(), img); err != nil {
							return err
						}
						ref, err := name.NewDigest(fmt.Sprintf("%s/%s@%s", del.Addr, repoPath, d), name.Insecure)
						if err != nil {
							return err
						}
						if err := ggcrremote.Delete(ref, ggcrremote.WithContext(ctx)); err != nil {
							return fmt.Errorf("delete %s: %w", ref, err)
						}
						mu.Lock()
						deleted++
						mu.Unlock()
						continue
					}
					mu.Lock()
					kept = append(kept, repoPath+"@"+d.String())
					mu.Unlock()
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
	t.Logf("GC under load on two replicas: %d images (%d workers x %d), %d deleted during the load; %d collections (grace %s) during %s of load; "+
		"final collection %+v; bucket afterwards: %d objects, none a blob; total %s",
		replicaGCWorkers*replicaGCImages, replicaGCWorkers, replicaGCImages, deleted, gcRuns.Load(), gcGrace,
		loadTook.Round(time.Millisecond), final.Report, len(keys), time.Since(started).Round(time.Millisecond))
}
