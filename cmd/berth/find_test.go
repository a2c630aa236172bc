package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/distribution"
	"github.com/berth-registry/berth/registry"
	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/manifest"
)

func TestFindFlags(t *testing.T) {
	url, hits := guardServer(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--annotation", "novalue"}, "--annotation"},
		{[]string{"--label", "=v"}, "--label"},
		{[]string{"--created-after", "yesterday"}, "--created-after"},
		{[]string{"--created-before", "-5h"}, "--created-before"},
		{[]string{"extra"}, "unknown command"},
	} {
		_, _, err := runBerth(t, "", append([]string{"find", "--registry", url}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("find %v: error %v, want one naming %s", c.args, err, c.want)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("refused commands sent %d requests", n)
	}
}

// TestFindFollowsPages runs berth find against the real API over a real
// store whose pages hold two results, and gets every result once.
func TestFindFollowsPages(t *testing.T) {
	ctx := context.Background()
	store, err := registry.OpenStore(ctx, t.TempDir(), registry.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	srv := httptest.NewServer(distribution.New(store.Service, distribution.Options{MaxPageSize: 2}).Handler())
	t.Cleanup(srv.Close)

	var want []string
	for i := range 5 {
		repo := fmt.Sprintf("apps/svc%d", i%3)
		cfg := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","n":%d}`, i))
		cd := digest.FromBytes(cfg)
		if _, err := store.PutBlob(ctx, repo, cd, bytes.NewReader(cfg), int64(len(cfg))); err != nil {
			t.Fatal(err)
		}
		body, err := json.Marshal(ocispec.Manifest{
			Versioned: specs.Versioned{SchemaVersion: 2},
			MediaType: ocispec.MediaTypeImageManifest,
			Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cd, Size: int64(len(cfg))},
			Layers:    []ocispec.Descriptor{},
			Annotations: map[string]string{revisionAnnotation: "abc123",
				ocispec.AnnotationCreated: "2024-01-02T03:04:05Z"},
		})
		if err != nil {
			t.Fatal(err)
		}
		m, err := manifest.Parse("", body)
		if err != nil {
			t.Fatal(err)
		}
		d, err := store.PutManifest(ctx, repo, "", body, m, []string{fmt.Sprint("v", i)})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, repo+"@"+string(d))
	}
	slices.Sort(want)

	stdout, stderr, err := runBerth(t, "", "find", "--registry", srv.URL, "--annotation", revisionAnnotation+"=abc123", "--json")
	if err != nil {
		t.Fatalf("find: %v\n%s", err, stderr)
	}
	var out struct {
		Results []storage.SearchResult `json:"results"`
	}
	if err := json.Unmarshal([]byte(stdout), &out); err != nil {
		t.Fatalf("find --json printed %q: %v", stdout, err)
	}
	var got []string
	for _, r := range out.Results {
		got = append(got, r.Repository+"@"+string(r.Digest))
	}
	if !slices.Equal(got, want) {
		t.Errorf("find over pages of 2: %v, want %v", got, want)
	}

	stdout, _, err = runBerth(t, "", "find", "--registry", srv.URL, "--repository", "apps/svc1", "--tag", "v4")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "REPOSITORY") ||
		!strings.Contains(lines[1], "apps/svc1") || !strings.Contains(lines[1], "v4") ||
		!strings.Contains(lines[1], "2024-01-02T03:04:05Z") || !strings.Contains(lines[1], "abc123") {
		t.Errorf("table:\n%s", stdout)
	}

	_, _, err = runBerth(t, "", "find", "--registry", srv.URL, "--repository", "Bad_Name")
	if err == nil || !strings.Contains(err.Error(), "NAME_INVALID") {
		t.Errorf("bad repository: %v, want the registry's NAME_INVALID", err)
	}
}
