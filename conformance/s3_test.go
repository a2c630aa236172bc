package conformance_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/conformance/internal/berthtest"
)

// s3Storage makes a fresh bucket of gw and returns the storage section of
// a configuration that keeps the blobs there, the bucket's name, and the
// environment that carries its keys.
func s3Storage(t *testing.T, redirect bool) (yaml, bucket string, env []string) {
	t.Helper()
	b := gw.Bucket(t)
	yaml = fmt.Sprintf(`storage:
  blobs:
    s3: {endpoint: %q, region: %s, bucket: %s, prefix: "", forcePathStyle: true, redirect: %v}
`, b.Endpoint, b.Region, b.Name, redirect)
	return yaml, b.Name, []string{"BERTH_S3_ACCESS_KEY=" + b.AccessKey, "BERTH_S3_SECRET_KEY=" + b.SecretKey}
}

// s3ConfigFile writes a configuration that keeps the blobs in a fresh
// bucket of gw, with its keys, and returns its path.
func s3ConfigFile(t *testing.T, redirect bool) string {
	t.Helper()
	b := gw.Bucket(t)
	path := filepath.Join(t.TempDir(), "berth.yaml")
	writeTestFile(t, path, fmt.Sprintf(`storage:
  blobs:
    s3: {endpoint: %q, region: %s, bucket: %s, prefix: "", accessKey: %s, secretKey: %s, forcePathStyle: true, redirect: %v}
`, b.Endpoint, b.Region, b.Name, b.AccessKey, b.SecretKey, redirect))
	return path
}

// s3Modes are berth with its blobs in a bucket, serving them itself or
// redirecting their GETs to the bucket.
var s3Modes = []registryMode{
	{name: "s3", s3: true},
	{name: "s3-redirect", s3: true, redirect: true},
}

// TestS3Clients runs crane and oras against berth with its blobs in a
// bucket, served by berth and redirected to the bucket: every push pulls
// back byte for byte (the crane test copies to a second such registry too).
func TestS3Clients(t *testing.T) {
	for _, mode := range s3Modes {
		t.Run(mode.name, func(t *testing.T) {
			t.Run("crane", func(t *testing.T) { testCraneCLI(t, startRegistry(t, mode)) })
			t.Run("oras", func(t *testing.T) { testORASCLIArtifact(t, startRegistry(t, mode)) })
			t.Run("large", func(t *testing.T) { testS3LargeArtifact(t, startRegistry(t, mode)) })
		})
	}
}

// testS3LargeArtifact pushes with oras an artifact whose files span
// several parts of the store, pulls it back byte for byte, and finds the
// content in the bucket and nothing under the data directory.
func testS3LargeArtifact(t *testing.T, srv *registryUnderTest) {
	env := clientEnv(t)
	work := t.TempDir()
	oras := func(args ...string) string {
		t.Helper()
		return runClientIn(t, work, env, "oras", append(args, "--plain-http")...)
	}
	files := map[string][]byte{
		"big.bin":   randomBytes(t, 21<<20+5),
		"exact.bin": randomBytes(t, 8<<20),
		"small.txt": []byte("small\n"),
	}
	writeFiles(t, work, files)
	ref := srv.Addr + "/s3/large:v1"
	oras("push", ref, "big.bin", "exact.bin", "small.txt")
	out := t.TempDir()
	oras("pull", "-o", out, ref)
	compareFiles(t, out, files)
	if _, err := os.Stat(filepath.Join(srv.DataDir, "blobs")); !os.IsNotExist(err) {
		t.Errorf("berth on S3 has blobs/ under its data directory: %v", err)
	}
	blobs := bucketKeys(t, srv.bucket, "")
	for _, name := range []string{"big.bin", "exact.bin"} {
		key := "blobs/sha256/" + digest.FromBytes(files[name]).Encoded()
		if !slices.Contains(blobs, key) {
			t.Errorf("the bucket has no %s for %s: %v", key, name, blobs)
		}
	}
	for _, key := range blobs {
		if !strings.HasPrefix(key, "blobs/") {
			t.Errorf("after the pushes the bucket holds %s, content in flight", key)
		}
	}
}

// TestS3Redirect: with redirect on, a blob GET is a 307 to a pre-signed
// URL of the bucket, which a real HTTP client follows to the bytes (and a
// range of them); a HEAD is answered by berth itself.
func TestS3Redirect(t *testing.T) {
	srv := berthtest.Start(t, berthtest.WithArgs("--config", s3ConfigFile(t, true)))
	data := randomBytes(t, 3<<20+11)
	d := digest.FromBytes(data)
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/v2/r/app/blobs/uploads/?digest="+d.String(), bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("push: %s", resp.Status)
	}
	blobURL := srv.URL + "/v2/r/app/blobs/" + d.String()

	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err = noFollow.Get(blobURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusTemporaryRedirect || !strings.HasPrefix(loc, gw.Endpoint()+"/") || !strings.Contains(loc, "X-Amz-Signature=") {
		t.Fatalf("GET: %s, Location %q; want 307 to a pre-signed URL of %s", resp.Status, loc, gw.Endpoint())
	}

	get := func(rng string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, blobURL, nil)
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, b
	}
	if status, body := get(""); status != http.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("followed GET: %d, %d bytes, want %d", status, len(body), len(data))
	}
	if status, body := get("bytes=1048576-1048675"); status != http.StatusPartialContent || !bytes.Equal(body, data[1<<20:1<<20+100]) {
		t.Fatalf("followed ranged GET: %d, %d bytes", status, len(body))
	}

	resp, err = noFollow.Head(blobURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Location") != "" || resp.ContentLength != int64(len(data)) ||
		resp.Header.Get("Docker-Content-Digest") != d.String() {
		t.Fatalf("HEAD: %s, Location %q, length %d", resp.Status, resp.Header.Get("Location"), resp.ContentLength)
	}
}

// TestS3BadBucketStopsStart: berth configured with a bucket that is not
// there, or an endpoint that does not answer, exits at once with one
// line saying so, and never listens.
func TestS3BadBucketStopsStart(t *testing.T) {
	gw.Bucket(t) // the server runs
	bin := berthtest.Build(t)
	for _, tc := range []struct{ name, endpoint, bucket, want string }{
		{"missing bucket", gw.Endpoint(), "no-such-bucket", `s3: bucket "no-such-bucket" does not exist at ` + gw.Endpoint()},
		{"endpoint not answering", "http://127.0.0.1:1", "berth", "s3: cannot reach http://127.0.0.1:1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			config := filepath.Join(dir, "berth.yaml")
			writeTestFile(t, config, fmt.Sprintf(`storage:
  blobs:
    s3: {endpoint: %q, bucket: %s, accessKey: k, secretKey: s, forcePathStyle: true}
`, tc.endpoint, tc.bucket))
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "serve", "--addr", "127.0.0.1:0", "--data", filepath.Join(dir, "data"), "--config", config)
			var stderr bytes.Buffer
			cmd.Stderr, cmd.Stdout = &stderr, &stderr
			err := cmd.Run()
			if err == nil {
				t.Fatal("berth started on a bad bucket")
			}
			out := stderr.String()
			if strings.Contains(out, "listening") {
				t.Fatalf("berth listened before failing:\n%s", out)
			}
			var found []string
			for line := range strings.SplitSeq(out, "\n") {
				if strings.Contains(line, tc.want) {
					found = append(found, line)
				}
			}
			if len(found) != 1 {
				t.Fatalf("want one line with %q, got:\n%s", tc.want, out)
			}
		})
	}
}

// bucketKeys lists the keys of a bucket of gw under prefix.
func bucketKeys(t *testing.T, bucket, prefix string) []string {
	t.Helper()
	var keys []string
	p := awss3.NewListObjectsV2Paginator(gw.Client(), &awss3.ListObjectsV2Input{Bucket: &bucket, Prefix: &prefix})
	for p.HasMorePages() {
		page, err := p.NextPage(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	return keys
}

// TestS3Fsck: berth fsck, given the server's configuration, checks the
// blobs in its bucket: a clean store is clean; content rotted in the
// bucket is found with --verify-content and quarantined in the bucket by
// --repair; an object no record names is an orphan, which --repair
// removes.
func TestS3Fsck(t *testing.T) {
	bin := berthtest.Build(t)
	b := gw.Bucket(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "berth.yaml")
	writeTestFile(t, cfg, fmt.Sprintf(`data: %s
storage:
  blobs:
    s3: {endpoint: %q, bucket: %s, accessKey: %s, secretKey: %s, forcePathStyle: true}
`, filepath.Join(dir, "data"), b.Endpoint, b.Name, b.AccessKey, b.SecretKey))
	srv := berthtest.Start(t, berthtest.WithCommandLine("serve", "--addr", "127.0.0.1:0", "--config", cfg))
	const repo = "fsck/s3"
	config := []byte(`{"architecture":"amd64","os":"linux"}`)
	intact := bytes.Repeat([]byte("an intact layer "), 4096)
	victim := bytes.Repeat([]byte("a layer that rots "), 1<<20) // several parts
	md := fsckPush(t, srv.URL, repo, config, intact, victim)
	srv.Stop()

	r := fsckJSON(t, bin, 0, "--config", cfg, "--verify-content")
	if r.Inconsistencies != 0 || len(r.Problems) != 0 || len(r.Orphans) != 0 || r.Blobs != 4 || r.Manifests != 1 {
		t.Fatalf("clean store on S3: %+v", r)
	}

	// Rot the victim in the bucket (same size), and leave an object no
	// record names.
	vd := fsckDigest(victim)
	rotted := bytes.Clone(victim)
	rotted[100] ^= 0x20
	client := gw.Client()
	put := func(key string, body []byte) {
		t.Helper()
		if _, err := client.PutObject(t.Context(), &awss3.PutObjectInput{Bucket: &b.Name, Key: aws.String(key), Body: bytes.NewReader(body)}); err != nil {
			t.Fatal(err)
		}
	}
	put("blobs/sha256/"+vd[7:], rotted)
	stray := []byte("content no record names")
	sd := fsckDigest(stray)
	put("blobs/sha256/"+sd[7:], stray)

	r = fsckJSON(t, bin, 1, "--config", cfg, "--verify-content")
	if r.Inconsistencies != 1 || len(r.Problems) != 1 || r.Problems[0].Kind != "corrupt" || r.Problems[0].Digest != vd {
		t.Fatalf("rotted blob in the bucket: %+v", r)
	}
	if len(r.Orphans) != 1 || r.Orphans[0].Digest != sd {
		t.Fatalf("orphan in the bucket: %+v", r.Orphans)
	}
	r = fsckJSON(t, bin, 0, "--config", cfg, "--repair", "--verify-content")
	if len(r.Repaired) != 2 {
		t.Fatalf("repair: %+v", r.Repaired)
	}
	keys := bucketKeys(t, b.Name, "")
	if !slices.Contains(keys, "quarantine/sha256-"+vd[7:]) || slices.Contains(keys, "blobs/sha256/"+vd[7:]) || slices.Contains(keys, "blobs/sha256/"+sd[7:]) {
		t.Fatalf("after repair the bucket holds %v", keys)
	}
	r = fsckJSON(t, bin, 0, "--config", cfg, "--verify-content")
	if r.Inconsistencies != 0 || len(r.Orphans) != 0 || len(r.Problems) != 1 || r.Problems[0].Kind != "incomplete-manifest" || r.Problems[0].Digest != md {
		t.Fatalf("after repair: %+v", r)
	}
}
