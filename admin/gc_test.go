package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/manifest"
)

func TestAdminGC(t *testing.T) {
	ctx := context.Background()
	s := adminStore(t)
	h := adminHandler(s)
	content := []byte("a blob no manifest references")
	d := digest.FromBytes(content)
	if _, err := s.PutBlob(ctx, "app", d, bytes.NewReader(content), int64(len(content))); err != nil {
		t.Fatal(err)
	}
	// A grace near the refresh period of lookups protects no lookup.
	for _, q := range []string{"?grace=soon", "?grace=-1h", "?dryRun=maybe", "?grace=30s"} {
		if code := adminErrorCode(t, adminDo(t, h, http.MethodPost, GCPath+q, ""), http.StatusBadRequest); code != codeGraceInvalid {
			t.Fatalf("%s: code %s", q, code)
		}
	}
	adminErrorCode(t, adminDo(t, h, http.MethodGet, GCPath, ""), http.StatusMethodNotAllowed)

	run := func(q string) GCResult {
		t.Helper()
		rec := adminDo(t, h, http.MethodPost, GCPath+q, "")
		if rec.Code != http.StatusOK {
			t.Fatalf("POST %s: %d %s", q, rec.Code, rec.Body)
		}
		var res GCResult
		if err := json.Unmarshal(rec.Body.Bytes(), &res); err != nil {
			t.Fatal(err)
		}
		return res
	}
	// The default grace (none configured here: 0) would collect it; an
	// hour's grace keeps it.
	if res := run("?grace=1h"); res.BlobsRemoved != 0 || res.Grace != "1h0m0s" {
		t.Fatalf("grace 1h: %+v", res)
	}
	if res := run("?grace=0s&dryRun=true"); res.BlobsRemoved != 1 || !res.DryRun || res.BytesReclaimed != int64(len(content)) {
		t.Fatalf("dry run: %+v", res)
	}
	if res := run("?grace=0s"); res.BlobsRemoved != 1 || res.LinksRemoved != 1 || res.RepositoriesRemoved != 1 ||
		res.BytesReclaimed != int64(len(content)) || res.Took == "" {
		t.Fatalf("gc: %+v", res)
	}
}

// A collection that names no grace uses the configured one.
func TestAdminGCDefaultGrace(t *testing.T) {
	ctx := context.Background()
	s := adminStore(t)
	opts := s.options(nil)
	opts.Grace = time.Hour
	h := Handler(opts)
	content := []byte("a blob no manifest references")
	d := digest.FromBytes(content)
	if _, err := s.PutBlob(ctx, "app", d, bytes.NewReader(content), int64(len(content))); err != nil {
		t.Fatal(err)
	}
	rec := adminDo(t, h, http.MethodPost, GCPath, "")
	var res GCResult
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &res) != nil {
		t.Fatalf("POST %s: %d %s", GCPath, rec.Code, rec.Body)
	}
	if res.Grace != "1h0m0s" || res.DryRun || res.BlobsRemoved != 0 || res.LinksRemoved != 0 {
		t.Fatalf("gc with the configured grace: %+v", res)
	}
	if _, err := s.StatBlob(ctx, "app", d); err != nil {
		t.Fatalf("blob within the grace: %v", err)
	}
}

// pushImage pushes a small image to repo, tagged tag, and returns its
// digest.
func pushImage(t *testing.T, s *testStore, repo, tag string) digest.Digest {
	t.Helper()
	ctx := context.Background()
	put := func(b []byte) digest.Digest {
		d := digest.FromBytes(b)
		if _, err := s.PutBlob(ctx, repo, d, bytes.NewReader(b), int64(len(b))); err != nil {
			t.Fatal(err)
		}
		return d
	}
	cfg, layer := []byte(`{"seed":"`+tag+`"}`), []byte("layer of "+tag)
	body := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},`+
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":%q,"size":%d}]}`,
		put(cfg), len(cfg), put(layer), len(layer))
	m, err := manifest.Parse("", body)
	if err != nil {
		t.Fatal(err)
	}
	d, err := s.PutManifest(ctx, repo, "", body, m, []string{tag})
	if err != nil {
		t.Fatal(err)
	}
	return d
}
