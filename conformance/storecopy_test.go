package conformance_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/conformance/internal/berthtest"
)

// Moving in: berth store copy copies a stopped single-machine store (bbolt
// and files) into the store a configuration names (bbolt or PostgreSQL,
// and an S3 bucket), and the berth serving the copy answers as the berth
// serving the original.

// storeCopyReport is the part of `berth store copy --json` these tests
// read.
type storeCopyReport struct {
	NothingNew bool `json:"nothingNew"`
	Error      string
	Blobs      struct {
		Copied, Present    int
		Bytes, Transferred int64
	}
	Repositories        int
	DeletedRepositories int `json:"deletedRepositories"`
	Links, Manifests    storeCopyCount
	Tags, Moves, Robots storeCopyCount
	Pulls, Cached       storeCopyCount
	TagChecks           storeCopyCount `json:"tagChecks"`
	Skipped             struct {
		Uploads, Deliveries int
	}
}

type storeCopyCount struct{ Copied, Present int }

// storeCopyCmd returns the command berth store copy --jobs 1 ARGS, with
// no BERTH_ variable of the test's environment. One blob at a time:
// versitygw v1.8.0's posix backend may refuse a PUT under a prefix whose
// last object another request is deleting, with 409
// ExistingObjectIsDirectory (versity/versitygw#1988, fixed after it), and
// parallel copies stage and remove anonymous content under one prefix.
func storeCopyCmd(t *testing.T, bin string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, append([]string{"store", "copy", "--jobs", "1"}, args...)...)
	cmd.Dir = t.TempDir()
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "BERTH_") })
	return cmd
}

// runStoreCopy runs berth store copy --json ARGS, requires it to succeed
// and returns its report.
func runStoreCopy(t *testing.T, bin string, args ...string) storeCopyReport {
	t.Helper()
	cmd := storeCopyCmd(t, bin, append([]string{"--json"}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("berth store copy %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out.String(), errOut.String())
	}
	var r storeCopyReport
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("berth store copy: the output is not a JSON report: %v\n%s", err, out.String())
	}
	return r
}

// destinationStorage returns the storage section of a configuration for
// a store on a fresh bucket and, with index "postgres", a fresh database,
// and the bucket's name.
func destinationStorage(t *testing.T, index string) (string, string) {
	t.Helper()
	b := gw.Bucket(t)
	yaml := fmt.Sprintf(`storage:
  blobs:
    s3: {endpoint: %q, region: %s, bucket: %s, accessKey: %s, secretKey: %s, forcePathStyle: true}
`, b.Endpoint, b.Region, b.Name, b.AccessKey, b.SecretKey)
	if index == "postgres" {
		yaml += fmt.Sprintf("  index:\n    postgres: {dsn: %q}\n", pg.Database(t))
	}
	return yaml, b.Name
}

// appendFile appends text to the file at path.
func appendFile(t *testing.T, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// storeCopyIndexes are the destination indexes the tests copy into, each
// with the blobs in a bucket.
var storeCopyIndexes = []string{"bolt", "postgres"}

// TestStoreCopyFixture copies the store fixture (testdata/store-v1: every
// kind of record, written by a real berth: images, an index, referrers, a
// cosign signature tag, tag moves, rollbacks, promotions, deleted tags and
// a deleted repository, retention, robots rotated, revoked and expired, an
// open upload) into a bucket and a bbolt or PostgreSQL index, then asks
// the berth serving the copy every question of golden.json, and the berth
// serving the original too: the answers must be the same, but for the open
// upload session, which is not copied. A second copy finds nothing new,
// and fsck finds the destination clean, every blob re-hashed.
func TestStoreCopyFixture(t *testing.T) {
	for _, index := range storeCopyIndexes {
		t.Run(index+"+s3", func(t *testing.T) { testStoreCopyFixture(t, index) })
	}
}

func testStoreCopyFixture(t *testing.T, index string) {
	var meta fxMeta
	var golden fxGolden
	readFixtureJSON(t, "fixture.json", &meta)
	readFixtureJSON(t, "golden.json", &golden)
	bin := berthtest.Build(t)

	src, srcConfig := copyFixtureStore(t)
	dir := t.TempDir()
	dst := filepath.Join(dir, "data")
	// The token signing keys are files of the data directory, not records
	// of the store: moving in copies them (docs/store-copy.md).
	if err := os.CopyFS(filepath.Join(dst, "keys"), os.DirFS(filepath.Join(src, "keys"))); err != nil {
		t.Fatal(err)
	}
	dstConfig := writeFixtureConfig(t, dir, filepath.Join(fixtureRoot, "htpasswd"))
	storage, _ := destinationStorage(t, index)
	appendFile(t, dstConfig, fmt.Sprintf("data: %s\n", dst)+storage)

	first := runStoreCopy(t, bin, "--from", src, "--config", dstConfig)
	if first.NothingNew || first.Blobs.Copied != 55 || first.Blobs.Present != 0 || first.Blobs.Transferred != first.Blobs.Bytes ||
		first.Manifests.Copied == 0 || first.Tags.Copied == 0 || first.Moves.Copied <= first.Tags.Copied ||
		first.Robots.Copied != 4 || first.DeletedRepositories != 1 || first.Skipped.Uploads != 1 {
		t.Fatalf("first copy: %+v; want 55 blobs, manifests, tags and more moves, 4 robots, the deleted repository, 1 upload skipped", first)
	}
	again := runStoreCopy(t, bin, "--from", src, "--config", dstConfig)
	if !again.NothingNew || again.Blobs.Copied != 0 || again.Blobs.Present != 55 || again.Manifests.Present != first.Manifests.Copied ||
		again.Moves.Present != first.Moves.Copied || again.Robots.Present != 4 || again.Links.Present != first.Links.Copied {
		t.Fatalf("second copy: %+v, want nothing new and everything of the first (%+v) present", again, first)
	}

	// The questions, but those about the open upload session, which
	// stays behind.
	script := ageObservations(t, golden.Observations, meta.Identities, time.Now())
	script = slices.DeleteFunc(script, func(o fxObservation) bool { return strings.Contains(o.Path, "/blobs/uploads/") })

	srcSrv := startFixtureServer(t, src, srcConfig)
	want := newObserver(srcSrv.URL, meta.Identities).observeAll(t, script)
	srcSrv.Stop()
	compareObservations(t, script, want)

	dstSrv := berthtest.Start(t, berthtest.WithDataDir(dst), berthtest.WithArgs("--config", dstConfig))
	got := newObserver(dstSrv.URL, meta.Identities).observeAll(t, script)
	compareObservations(t, want, got)
	o := newObserver(dstSrv.URL, meta.Identities)
	resp, body := o.client(t, meta.Upload.As).do(t, http.MethodGet, meta.Upload.Path, nil)
	mustStatus(t, "the upload session left behind", resp, body, http.StatusNotFound)
	dstSrv.Stop()

	checkFsckClean(t, "fsck of the copy", fsckJSON(t, bin, 0, "--config", dstConfig, "--verify-content"))
}

// TestStoreCopyInterrupted pushes images with crane into a berth, stops it,
// kills a copy of its store into a bucket (and a bbolt or PostgreSQL index)
// once the first blobs have arrived, and copies again: the second copy
// completes, a third finds nothing new, and every tag pulls from the
// berth serving the copy as from the original, byte for byte, with the
// same tag history. Then the original, served again, moves a tag and
// deletes one: a new copy follows both. Then both move the same tag each
// its own way: the copy is refused, naming it, and writes nothing.
func TestStoreCopyInterrupted(t *testing.T) {
	for _, index := range storeCopyIndexes {
		t.Run(index+"+s3", func(t *testing.T) { testStoreCopyInterrupted(t, index) })
	}
}

func testStoreCopyInterrupted(t *testing.T, index string) {
	bin := berthtest.Build(t)
	env := clientEnv(t)
	srcData := t.TempDir()
	srcSrv := berthtest.Start(t, berthtest.WithDataDir(srcData))
	host := strings.TrimPrefix(srcSrv.URL, "http://")
	work := t.TempDir()
	crane := func(args ...string) string {
		t.Helper()
		return strings.TrimSpace(runClientIn(t, work, env, "crane", append(args, "--insecure")...))
	}
	// Images of one random layer of 4 MiB each: enough content that the
	// copy is still running when the first blobs have arrived.
	const images = 16
	var tags []string
	for i := range images {
		layer := filepath.Join(work, fmt.Sprintf("layer%d.tar", i))
		writeRandomTar(t, layer, 4<<20)
		tag := fmt.Sprintf("v%d", i)
		crane("append", "-f", layer, "-t", host+"/big/app:"+tag)
		tags = append(tags, tag)
	}
	crane("index", "append", "-m", host+"/big/app:v0", "-m", host+"/big/app:v1", "-t", host+"/big/app:multi")
	crane("tag", host+"/big/app:v2", "latest")
	crane("tag", host+"/big/app:v3", "latest")
	crane("tag", host+"/big/app:v4", "gone")
	deleteTag(t, srcSrv.URL, "big/app", "gone")
	tags = append(tags, "multi", "latest")

	dir := t.TempDir()
	dstConfig := filepath.Join(dir, "berth.yaml")
	storage, bucket := destinationStorage(t, index)
	writeTestFile(t, dstConfig, fmt.Sprintf("data: %s\n", filepath.Join(dir, "data"))+storage)

	// A store a berth serves is not copied.
	busy, err := storeCopyCmd(t, bin, "--from", srcData, "--config", dstConfig).CombinedOutput()
	if err == nil || !strings.Contains(string(busy), "is in use by another process") || !strings.Contains(string(busy), "stop it first") {
		t.Fatalf("copy of a store in use: %v\n%s", err, busy)
	}
	srcSrv.Stop()

	// Kill the first copy once two blobs are in the bucket.
	cmd := storeCopyCmd(t, bin, "--from", srcData, "--config", dstConfig)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	killed := false
	for i := 0; i < 6000 && !killed; i++ {
		select {
		case err := <-exited:
			t.Fatalf("the copy ended (%v) before two blobs were in the bucket; it could not be interrupted:\n%s", err, out.String())
		default:
		}
		if len(bucketKeys(t, bucket, "blobs/")) >= 2 {
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !killed {
		t.Fatalf("no blob arrived in the bucket:\n%s", out.String())
	}
	if err := <-exited; err == nil {
		t.Fatalf("the copy finished before it was killed; it was not interrupted:\n%s", out.String())
	}

	second := runStoreCopy(t, bin, "--from", srcData, "--config", dstConfig)
	if second.NothingNew || second.Blobs.Copied == 0 || second.Blobs.Present == 0 {
		t.Fatalf("copy after the interrupted one: %+v; want blobs copied and blobs present already", second)
	}
	third := runStoreCopy(t, bin, "--from", srcData, "--config", dstConfig)
	if !third.NothingNew || third.Blobs.Present != second.Blobs.Copied+second.Blobs.Present || third.Tags.Present != len(tags) {
		t.Fatalf("third copy: %+v; want nothing new, %d blobs and %d tags present", third, second.Blobs.Copied+second.Blobs.Present, len(tags))
	}

	srcSrv = berthtest.Start(t, berthtest.WithDataDir(srcData))
	want := pullEverything(t, crane, strings.TrimPrefix(srcSrv.URL, "http://"), srcSrv.URL, tags)
	srcSrv.Stop()
	dstSrv := berthtest.Start(t, berthtest.WithDataDir(filepath.Join(dir, "data")), berthtest.WithArgs("--config", dstConfig))
	got := pullEverything(t, crane, strings.TrimPrefix(dstSrv.URL, "http://"), dstSrv.URL, tags)
	dstSrv.Stop()
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: the copy answers %.200q, the original %.200q", k, got[k], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d answers from the copy, %d from the original", len(got), len(want))
	}
	checkFsckClean(t, "fsck of the copy", fsckJSON(t, bin, 0, "--config", dstConfig, "--verify-content"))

	// The original, served again, moves latest and deletes v1: a new
	// copy follows the tag, with its history, and the deletion of v1.
	srcSrv = berthtest.Start(t, berthtest.WithDataDir(srcData))
	srcHost := strings.TrimPrefix(srcSrv.URL, "http://")
	crane("tag", srcHost+"/big/app:v5", "latest")
	deleteTag(t, srcSrv.URL, "big/app", "v1")
	srcSrv.Stop()
	fourth := runStoreCopy(t, bin, "--from", srcData, "--config", dstConfig)
	if fourth.Tags.Copied != 2 || fourth.Moves.Copied != 2 || fourth.Blobs.Copied != 0 || fourth.Manifests.Copied != 0 {
		t.Fatalf("copy after the original moved latest and deleted v1: %+v; want 2 tags and 2 moves copied, nothing else", fourth)
	}
	tags = slices.DeleteFunc(tags, func(s string) bool { return s == "v1" })
	srcSrv = berthtest.Start(t, berthtest.WithDataDir(srcData))
	want = pullEverything(t, crane, strings.TrimPrefix(srcSrv.URL, "http://"), srcSrv.URL, tags)
	want["history v1"] = httpBody(t, srcSrv.URL+"/v2/big/app/_berth/tags/v1/history")
	srcSrv.Stop()
	dstSrv = berthtest.Start(t, berthtest.WithDataDir(filepath.Join(dir, "data")), berthtest.WithArgs("--config", dstConfig))
	got = pullEverything(t, crane, strings.TrimPrefix(dstSrv.URL, "http://"), dstSrv.URL, tags)
	got["history v1"] = httpBody(t, dstSrv.URL+"/v2/big/app/_berth/tags/v1/history")
	// The copy's own change: latest moves there too.
	crane("tag", strings.TrimPrefix(dstSrv.URL, "http://")+"/big/app:v6", "latest")
	dstSrv.Stop()
	for k, w := range want {
		if got[k] != w {
			t.Errorf("after the second copy, %s: the copy answers %.200q, the original %.200q", k, got[k], w)
		}
	}

	// Now both moved latest, each its own way, and the original has a new
	// tag: the copy is refused, naming the tag, and writes nothing.
	srcSrv = berthtest.Start(t, berthtest.WithDataDir(srcData))
	srcHost = strings.TrimPrefix(srcSrv.URL, "http://")
	crane("tag", srcHost+"/big/app:v7", "latest")
	crane("tag", srcHost+"/big/app:v7", "extra")
	srcSrv.Stop()
	refused := storeCopyCmd(t, bin, "--from", srcData, "--config", dstConfig)
	msg, err := refused.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || !strings.Contains(string(msg), "history of big/app:latest diverges") ||
		!strings.Contains(string(msg), "nothing was written") {
		t.Fatalf("copy onto a destination whose history of latest diverges: %v\n%s", err, msg)
	}
	dstSrv = berthtest.Start(t, berthtest.WithDataDir(filepath.Join(dir, "data")), berthtest.WithArgs("--config", dstConfig))
	if list := httpBody(t, dstSrv.URL+"/v2/big/app/tags/list"); strings.Contains(list, "extra") {
		t.Errorf("a refused copy wrote the tag extra: %s", list)
	}
	if d := crane("digest", strings.TrimPrefix(dstSrv.URL, "http://")+"/big/app:latest"); d != crane("digest", strings.TrimPrefix(dstSrv.URL, "http://")+"/big/app:v6") {
		t.Errorf("after a refused copy, latest names %s, not v6's", d)
	}
}

// deleteTag deletes tag of repo through the API of berth at base.
func deleteTag(t *testing.T, base, repo, tag string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodDelete, base+"/v2/"+repo+"/manifests/"+tag, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("delete %s:%s: %v", repo, tag, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("delete %s:%s: status %d", repo, tag, resp.StatusCode)
	}
}

// pullEverything asks berth at base, through crane and the HTTP API, for
// every tag of big/app: its digest, manifest, config, each layer's digest
// as pulled, and its history. It returns the answers by question.
func pullEverything(t *testing.T, crane func(...string) string, host, base string, tags []string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, tag := range tags {
		ref := host + "/big/app:" + tag
		out["digest "+tag] = crane("digest", ref)
		out["manifest "+tag] = crane("manifest", ref)
		out["history "+tag] = httpBody(t, base+"/v2/big/app/_berth/tags/"+tag+"/history")
		if tag == "multi" {
			continue
		}
		out["config "+tag] = crane("config", ref)
		var m struct {
			Layers []struct{ Digest string } `json:"layers"`
		}
		if err := json.Unmarshal([]byte(out["manifest "+tag]), &m); err != nil {
			t.Fatalf("manifest of %s: %v", tag, err)
		}
		for _, l := range m.Layers {
			body := httpBody(t, base+"/v2/big/app/blobs/"+l.Digest)
			out["layer "+l.Digest] = fmt.Sprintf("%d bytes hashing to %s", len(body), digest.FromString(body))
		}
	}
	out["history gone"] = httpBody(t, base+"/v2/big/app/_berth/tags/gone/history")
	out["catalog"] = httpBody(t, base+"/v2/_catalog")
	out["tags"] = httpBody(t, base+"/v2/big/app/tags/list")
	return out
}

// httpBody GETs url and returns its body, failing unless the answer is 200.
func httpBody(t *testing.T, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b.String())
	}
	return b.String()
}

// writeRandomTar writes a tar file at path holding one file of n random
// bytes.
func writeRandomTar(t *testing.T, path string, n int) {
	t.Helper()
	content := make([]byte, n)
	if _, err := rand.Read(content); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.WriteHeader(&tar.Header{Name: "data.bin", Mode: 0o644, Size: int64(n)}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(content); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, path, b.String())
}
