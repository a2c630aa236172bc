package registry

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/internal/testserver/postgres"
	"github.com/berth-registry/berth/internal/testserver/versitygw"
	blobs3 "github.com/berth-registry/berth/storage/blob/s3"
)

// gw is the S3 server of this package's tests, pg its PostgreSQL.
var (
	gw = versitygw.New()
	pg = postgres.New()
)

func TestMain(m *testing.M) {
	code := gw.Run(m)
	if err := pg.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "testserver/postgres:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// s3Config is the configuration of a fresh bucket of gw.
func s3Config(t *testing.T) *S3Config {
	t.Helper()
	b := gw.Bucket(t)
	return &S3Config{Endpoint: b.Endpoint, Region: b.Region, Bucket: b.Name, AccessKey: b.AccessKey, SecretKey: b.SecretKey, ForcePathStyle: true}
}

// bucketKeys lists the keys of a bucket of gw.
func bucketKeys(t *testing.T, bucket string) []string {
	t.Helper()
	out, err := gw.Client().ListObjectsV2(t.Context(), &awss3.ListObjectsV2Input{Bucket: &bucket})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range out.Contents {
		keys = append(keys, aws.ToString(o.Key))
	}
	return keys
}

// TestStorageConfig reads the storage keys exactly as documented, takes
// the secrets from the environment, and refuses settings that cannot work.
func TestStorageConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "berth.yaml")
	yaml := `storage:
  blobs:
    s3: {endpoint: http://127.0.0.1:9000, region: us-east-1, bucket: berth, prefix: "", accessKey: a, secretKey: s, forcePathStyle: true, redirect: false}
`
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := S3Config{Endpoint: "http://127.0.0.1:9000", Region: "us-east-1", Bucket: "berth", AccessKey: "a", SecretKey: "s", ForcePathStyle: true}
	if cfg.Storage.Blobs.S3 == nil || *cfg.Storage.Blobs.S3 != want {
		t.Fatalf("storage.blobs.s3 = %+v, want %+v", cfg.Storage.Blobs.S3, want)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg, err = LoadConfig(path, env(map[string]string{"BERTH_S3_ACCESS_KEY": "ak", "BERTH_S3_SECRET_KEY": "sk"}))
	if err != nil {
		t.Fatal(err)
	}
	if c := cfg.Storage.Blobs.S3; c.AccessKey != "ak" || c.SecretKey != "sk" {
		t.Fatalf("the environment's keys are not applied: %+v", c)
	}
	// Files stay the default, and the environment alone does not make S3.
	cfg, err = LoadConfig("", env(map[string]string{"BERTH_S3_ACCESS_KEY": "ak", "BERTH_S3_SECRET_KEY": "sk"}))
	if err != nil || cfg.Storage.Blobs.S3 != nil {
		t.Fatalf("default storage: %+v, %v", cfg.Storage, err)
	}

	for _, tc := range []struct{ yaml, want string }{
		{"storage:\n  blobs:\n    s3: {endpoint: http://127.0.0.1:9000}\n", "bucket is required"},
		{"storage:\n  blobs:\n    s3: {bucket: b, endpoint: '127.0.0.1:9000'}\n", "want an http or https URL"},
		{"storage:\n  blobs:\n    s3: {bucket: b, accessKey: a}\n", "accessKey and secretKey go together"},
		{"storage:\n  blobs:\n    s3: {bucket: b, secretkey: a}\n", "secretkey"},
	} {
		if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := LoadConfig(path, env(nil))
		if err == nil {
			err = cfg.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error naming %q", tc.yaml, err, tc.want)
		}
	}
}

// TestOpenStoreS3: with storage.blobs.s3 the blobs go to the bucket and
// nowhere under the data directory; redirect picks the store that
// redirects.
func TestOpenStoreS3(t *testing.T) {
	ctx := t.Context()
	c := s3Config(t)
	dir := t.TempDir()
	s, err := OpenStore(ctx, dir, StoreOptions{Storage: StorageConfig{Blobs: BlobsConfig{S3: c}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Blobs.(*blobs3.Store); !ok {
		t.Fatalf("blob store %T, want *s3.Store", s.Blobs)
	}
	data := []byte("a layer in a bucket")
	d := digest.FromBytes(data)
	if _, err := s.PutBlob(ctx, "r", d, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if keys := bucketKeys(t, c.Bucket); len(keys) != 1 || keys[0] != "blobs/sha256/"+d.Encoded() {
		t.Fatalf("bucket holds %v", keys)
	}
	if _, err := os.Stat(filepath.Join(dir, "blobs")); !os.IsNotExist(err) {
		t.Fatalf("blobs/ under the data directory: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	c.Redirect = true
	s, err = OpenStore(ctx, dir, StoreOptions{Storage: StorageConfig{Blobs: BlobsConfig{S3: c}}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, ok := s.Blobs.(blobs3.Redirecting); !ok {
		t.Fatalf("blob store %T with redirect, want s3.Redirecting", s.Blobs)
	}
	url, _, err := s.BlobURL(ctx, "r", d)
	if err != nil || !strings.HasPrefix(url, c.Endpoint+"/"+c.Bucket+"/blobs/sha256/"+d.Encoded()+"?") {
		t.Fatalf("blob URL %q, %v", url, err)
	}
}

// TestNewStopsOnABadBucket: a bucket that is not there stops the start
// with one line naming it, and leaves the index free for the next start.
func TestNewStopsOnABadBucket(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Data = t.TempDir()
	cfg.Storage.Blobs.S3 = s3Config(t)
	cfg.Storage.Blobs.S3.Bucket = "no-such-bucket"
	_, err := New(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), `bucket "no-such-bucket" does not exist`) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("start on a missing bucket: %v", err)
	}
	s, err := OpenStore(t.Context(), cfg.Data, StoreOptions{})
	if err != nil {
		t.Fatalf("the index is not free after the failed start: %v", err)
	}
	s.Close()
}

// refusingProxy stands between Berth and the S3 server, and answers every
// request 503 SlowDown while refuse is set.
func refusingProxy(t *testing.T, endpoint string, refuse *atomic.Bool) string {
	t.Helper()
	u, err := url.Parse(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if refuse.Load() {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>`)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestS3RefusingForAMoment: while the object store refuses, pushes and
// pulls are answered 503 with the specification's error body and
// Retry-After, and nothing partial remains; once it serves again, so does
// Berth, by itself.
func TestS3RefusingForAMoment(t *testing.T) {
	var refuse atomic.Bool
	c := s3Config(t)
	bucket := c.Bucket
	c.Endpoint = refusingProxy(t, c.Endpoint, &refuse)
	cfg := DefaultConfig()
	cfg.Data = t.TempDir()
	cfg.Storage.Blobs.S3 = c
	srv, err := New(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.store.Close() })
	api := httptest.NewServer(srv.http.Handler)
	defer api.Close()
	do := func(method, path string, body []byte) *http.Response {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, api.URL+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	want503 := func(resp *http.Response, what string) {
		t.Helper()
		var body struct {
			Errors []struct{ Code, Message string }
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatalf("%s: %s, not an error body: %v", what, resp.Status, err)
		}
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
			len(body.Errors) != 1 || body.Errors[0].Code != "UNAVAILABLE" {
			t.Fatalf("%s: %s, Retry-After %q, %+v; want 503 UNAVAILABLE with Retry-After", what, resp.Status, resp.Header.Get("Retry-After"), body)
		}
	}

	stored := []byte("pushed before the refusal")
	ds := digest.FromBytes(stored)
	if resp := do(http.MethodPost, "/v2/r/blobs/uploads/?digest="+ds.String(), stored); resp.StatusCode != http.StatusCreated {
		t.Fatalf("push: %s", resp.Status)
	}
	refuse.Store(true)
	data := []byte("pushed while the object store refuses")
	d := digest.FromBytes(data)
	want503(do(http.MethodPost, "/v2/r/blobs/uploads/?digest="+d.String(), data), "monolithic push")
	want503(do(http.MethodPost, "/v2/r/blobs/uploads/", nil), "upload start")
	want503(do(http.MethodGet, "/v2/r/blobs/"+ds.String(), nil), "pull")
	refuse.Store(false)

	// Nothing partial: the refused push left no blob and no session.
	if keys := bucketKeys(t, bucket); len(keys) != 1 || keys[0] != "blobs/sha256/"+ds.Encoded() {
		t.Fatalf("after the refusal the bucket holds %v", keys)
	}
	if resp := do(http.MethodGet, "/v2/r/blobs/"+d.String(), nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("the refused blob: %s", resp.Status)
	}
	// Service resumes by itself.
	if resp := do(http.MethodPost, "/v2/r/blobs/uploads/?digest="+d.String(), data); resp.StatusCode != http.StatusCreated {
		t.Fatalf("push once the store serves: %s", resp.Status)
	}
	resp := do(http.MethodGet, "/v2/r/blobs/"+ds.String(), nil)
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, stored) {
		t.Fatalf("pull once the store serves: %s, %q", resp.Status, got)
	}
}
