package storagetest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/meta"
)

const revKey = "org.opencontainers.image.revision"

// maxConfigBytes is the size of the largest image config the core reads
// labels from.
const maxConfigBytes = 1 << 20

// putAnnotated stores an image manifest carrying annotations, with a
// config holding labels (if any) and a created time (if not empty).
func putAnnotated(t *testing.T, s *store, repo, seed string, annotations, labels map[string]string, created string, tags ...string) digest.Digest {
	t.Helper()
	cfg := fmt.Sprintf(`{"architecture":"amd64","os":"linux","seed":%q`, seed)
	if created != "" {
		cfg += fmt.Sprintf(`,"created":%q`, created)
	}
	if labels != nil {
		cfg += `,"config":{"Labels":` + string(mustMarshal(t, labels)) + `}`
	}
	cfg += "}"
	c := putBlob(t, s, repo, ocispec.MediaTypeImageConfig, []byte(cfg))
	d, _ := putManifest(t, s, repo, ocispec.Manifest{Config: c, Layers: []ocispec.Descriptor{}, Annotations: annotations}, tags...)
	return d
}

// search runs q and fails the test on error.
func search(t *testing.T, s *store, q storage.Query) ([]storage.SearchResult, string) {
	t.Helper()
	if q.N == 0 {
		q.N = 100
	}
	res, next, err := s.Search(ctx(), q)
	if err != nil {
		t.Fatalf("search %+v: %v", q, err)
	}
	return res, next
}

// found is the set of "repo@digest" of results, in order.
func found(res []storage.SearchResult) []string {
	out := []string{}
	for _, r := range res {
		out = append(out, r.Cursor())
	}
	return out
}

// cursor is the cursor of manifest d of repo.
func cursor(repo string, d digest.Digest) string {
	return storage.SearchResult{Repository: repo, Digest: d}.Cursor()
}

func want(pairs ...any) []string {
	out := []string{}
	for i := 0; i < len(pairs); i += 2 {
		out = append(out, cursor(pairs[i].(string), pairs[i+1].(digest.Digest)))
	}
	sortCursors(out)
	return out
}

// sortCursors sorts "repo@digest" cursors in search order: by repository,
// then digest.
func sortCursors(cs []string) {
	slices.SortFunc(cs, func(a, b string) int {
		ar, ad, _ := strings.Cut(a, "@")
		br, bd, _ := strings.Cut(b, "@")
		if c := strings.Compare(ar, br); c != 0 {
			return c
		}
		return strings.Compare(ad, bd)
	})
}

// The search index follows manifests: pushed, pushed again under a new
// tag, rewritten and deleted.
func testSearchIndexFollowsPushRepushAndDelete(t *testing.T, be Backends) {
	s := open(t, be)
	a := putAnnotated(t, s, "apps/web", "a", map[string]string{revKey: "abc", "team": "web"}, map[string]string{"tier": "front"}, "", "v1")
	b := putAnnotated(t, s, "apps/api", "b", map[string]string{revKey: "abc"}, nil, "")
	checkIndex(t, s)
	res, _ := search(t, s, storage.Query{Annotations: map[string]string{revKey: "abc"}})
	if got, w := found(res), want("apps/web", a, "apps/api", b); !slices.Equal(got, w) {
		t.Fatalf("revision abc: %v, want %v", got, w)
	}

	// A re-push, tagged anew, keeps one entry per pair and the push time.
	info, body, err := s.GetManifest(ctx(), "apps/web", string(a))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutManifest(ctx(), "apps/web", a, body, mustParse(t, body), []string{"production"}); err != nil {
		t.Fatal(err)
	}
	checkIndex(t, s)
	res, _ = search(t, s, storage.Query{Annotations: map[string]string{revKey: "abc"}, Repository: "apps/web"})
	if len(res) != 1 || !slices.Equal(res[0].Tags, []string{"production", "v1"}) || !res[0].Pushed.Equal(info.Created) {
		t.Fatalf("after re-push: %+v", res)
	}

	// A rewrite of the record (as a promotion might do) replaces its entries.
	update(t, s, func(tx meta.Tx) error {
		rec, ok, err := tx.Manifest("apps/web", a)
		if err != nil || !ok {
			return fmt.Errorf("record of %s: %v, %w", a, ok, err)
		}
		rec.Annotations = map[string]string{revKey: "def"}
		return tx.PutManifest("apps/web", a, rec)
	})
	checkIndex(t, s)
	if res, _ := search(t, s, storage.Query{Annotations: map[string]string{"team": "web"}}); len(res) != 0 {
		t.Errorf("old annotation still found: %+v", res)
	}
	if res, _ := search(t, s, storage.Query{Annotations: map[string]string{revKey: "def"}}); !slices.Equal(found(res), want("apps/web", a)) {
		t.Errorf("new annotation: %v", found(res))
	}

	if err := s.DeleteManifest(ctx(), "apps/web", a); err != nil {
		t.Fatal(err)
	}
	checkIndex(t, s)
	for _, q := range []storage.Query{
		{Annotations: map[string]string{revKey: "def"}},
		{Labels: map[string]string{"tier": "front"}},
		{Repository: "apps/web"},
	} {
		if res, _ := search(t, s, q); len(res) != 0 {
			t.Errorf("deleted manifest found by %+v: %v", q, found(res))
		}
	}
	res, _ = search(t, s, storage.Query{Annotations: map[string]string{revKey: "abc"}})
	if !slices.Equal(found(res), want("apps/api", b)) {
		t.Errorf("after delete: %v", found(res))
	}
}

// Each filter of a query, alone and combined, selects what it says.
func testSearchFilters(t *testing.T, b Backends) {
	s := open(t, b)
	web1 := putAnnotated(t, s, "apps/web", "w1", map[string]string{revKey: "r1", storage.AnnotationCreated: "2024-01-10T00:00:00Z"}, map[string]string{"tier": "front"}, "", "v1")
	web2 := putAnnotated(t, s, "apps/web", "w2", map[string]string{revKey: "r2"}, map[string]string{"tier": "front"}, "2024-03-01T12:00:00Z", "production", "v2")
	api := putAnnotated(t, s, "apps/api", "a1", map[string]string{revKey: "r1", storage.AnnotationCreated: "not a time"}, map[string]string{"tier": "back"}, "2024-02-01T00:00:00Z", "production")
	tools := putAnnotated(t, s, "tools", "t1", nil, nil, "")
	idx, _ := putIndex(t, s, "apps/web", []ocispec.Descriptor{describe(t, s, "apps/web", web1)}, "multi")
	sbom := putBlob(t, s, "apps/web", ocispec.MediaTypeEmptyJSON, []byte("{}"))
	art, _ := putManifest(t, s, "apps/web", ocispec.Manifest{ArtifactType: "application/spdx+json", Config: sbom, Layers: []ocispec.Descriptor{},
		Annotations: map[string]string{revKey: "r1"}})

	pushed, err := s.StatManifest(ctx(), "tools", string(tools))
	if err != nil {
		t.Fatal(err)
	}
	t2024 := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	cases := []struct {
		name string
		q    storage.Query
		want []string
	}{
		{"annotation", storage.Query{Annotations: map[string]string{revKey: "r1"}}, want("apps/web", web1, "apps/api", api, "apps/web", art)},
		{"two annotations", storage.Query{Annotations: map[string]string{revKey: "r1", storage.AnnotationCreated: "2024-01-10T00:00:00Z"}}, want("apps/web", web1)},
		{"label", storage.Query{Labels: map[string]string{"tier": "front"}}, want("apps/web", web1, "apps/web", web2)},
		{"annotation and label", storage.Query{Annotations: map[string]string{revKey: "r1"}, Labels: map[string]string{"tier": "back"}}, want("apps/api", api)},
		{"repository", storage.Query{Repository: "apps/web"}, want("apps/web", web1, "apps/web", web2, "apps/web", idx, "apps/web", art)},
		{"repository prefix", storage.Query{Repository: "apps/**", Annotations: map[string]string{revKey: "r1"}}, want("apps/web", web1, "apps/api", api, "apps/web", art)},
		{"repository is not a prefix", storage.Query{Repository: "apps"}, want()},
		{"tag", storage.Query{Tag: "production"}, want("apps/web", web2, "apps/api", api)},
		{"repository and tag", storage.Query{Repository: "apps/web", Tag: "production"}, want("apps/web", web2)},
		{"unknown tag", storage.Query{Repository: "apps/web", Tag: "nope"}, want()},
		{"artifact type", storage.Query{ArtifactType: "application/spdx+json"}, want("apps/web", art)},
		{"media type", storage.Query{MediaType: ocispec.MediaTypeImageIndex}, want("apps/web", idx)},
		{"created range", storage.Query{CreatedAfter: t2024("2024-01-10T00:00:00Z"), CreatedBefore: t2024("2024-03-01T12:00:00Z")}, want("apps/web", web1, "apps/api", api)},
		{"created after, push time", storage.Query{Repository: "tools", CreatedAfter: pushed.Created}, want("tools", tools)},
		{"created before, push time", storage.Query{Repository: "tools", CreatedBefore: pushed.Created}, want()},
		{"unknown annotation value", storage.Query{Annotations: map[string]string{revKey: "zzz"}}, want()},
		{"unknown repository", storage.Query{Repository: "nope"}, want()},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res, next := search(t, s, c.q)
			if got := found(res); !slices.Equal(got, c.want) {
				t.Errorf("found %v, want %v", got, c.want)
			}
			if next != "" {
				t.Errorf("next = %q on a single page", next)
			}
		})
	}

	// The one call of the issue: what apps/web:production is, which
	// commit built it and when.
	res, _ := search(t, s, storage.Query{Repository: "apps/web", Tag: "production"})
	r := res[0]
	if r.Digest != web2 || r.Annotations[revKey] != "r2" || !r.Created.Equal(t2024("2024-03-01T12:00:00Z")) ||
		!slices.Equal(r.Tags, []string{"production", "v2"}) || r.MediaType != ocispec.MediaTypeImageManifest ||
		r.ArtifactType != ocispec.MediaTypeImageConfig || r.Size == 0 || r.Pushed.IsZero() || r.Labels["tier"] != "front" {
		t.Errorf("apps/web:production = %+v", r)
	}
	// An invalid created annotation falls back to the config's time.
	res, _ = search(t, s, storage.Query{Repository: "apps/api"})
	if !res[0].Created.Equal(t2024("2024-02-01T00:00:00Z")) {
		t.Errorf("apps/api created = %v, want the config's", res[0].Created)
	}
	// The zero time, which go-containerregistry writes into configs it
	// builds without a time, is no creation time: the push time stands.
	zero := putAnnotated(t, s, "tools/zero", "zero", map[string]string{storage.AnnotationCreated: "0001-01-01T00:00:00Z"}, nil, "0001-01-01T00:00:00Z")
	res, _ = search(t, s, storage.Query{Repository: "tools/zero"})
	if len(res) != 1 || res[0].Digest != zero || !res[0].Created.Equal(res[0].Pushed) {
		t.Errorf("tools/zero = %+v, want created = pushed", res)
	}
}

// Results page in order, whatever the page size, through the index or a
// scan; a cursor that is not one is refused.
func testSearchPaginates(t *testing.T, b Backends) {
	s := open(t, b)
	var all []string
	for i := range 7 {
		repo := []string{"a", "b/c", "b"}[i%3]
		d := putAnnotated(t, s, repo, fmt.Sprint("p", i), map[string]string{revKey: "same"}, nil, "")
		all = append(all, cursor(repo, d))
	}
	sortCursors(all)
	for _, q := range []storage.Query{{Annotations: map[string]string{revKey: "same"}}, {}} {
		for _, n := range []int{1, 2, 3, 7, 8} {
			q.N, q.Last = n, ""
			var got []string
			for pages := 0; ; pages++ {
				if pages > len(all)+1 {
					t.Fatalf("n=%d: pagination does not end", n)
				}
				res, next := search(t, s, q)
				if len(res) > n {
					t.Fatalf("n=%d: page of %d", n, len(res))
				}
				got = append(got, found(res)...)
				if next == "" {
					break
				}
				q.Last = next
			}
			if !slices.Equal(got, all) {
				t.Errorf("query %+v, n=%d: pages gave %v, want %v", q, n, got, all)
			}
		}
	}
	if _, _, err := s.Search(ctx(), storage.Query{N: 1, Last: "no cursor"}); !errors.Is(err, storage.ErrQueryInvalid) {
		t.Errorf("bad cursor: %v, want storage.ErrQueryInvalid", err)
	}
}

// The labels and created time of an image's config, OCI or Docker, are
// read at push and searchable.
func testSearchConfigLabels(t *testing.T, b Backends) {
	s := open(t, b)
	d := putImage(t, s, "apps/web", "s1")
	info, err := s.StatManifest(ctx(), "apps/web", string(d))
	if err != nil {
		t.Fatal(err)
	}
	if info.Labels["seed"] != "s1" {
		t.Errorf("labels = %v, want seed=s1", info.Labels)
	}
	res, _ := search(t, s, storage.Query{Labels: map[string]string{"seed": "s1"}})
	if !slices.Equal(found(res), want("apps/web", d)) {
		t.Errorf("by label: %v", found(res))
	}

	// A Docker container config counts too.
	cfg := putBlob(t, s, "apps/docker", storage.MediaTypeDockerConfig, []byte(`{"config":{"Labels":{"k":"docker"}},"created":"2023-05-05T05:05:05.5Z"}`))
	dd, _ := putManifest(t, s, "apps/docker", ocispec.Manifest{Config: cfg, Layers: []ocispec.Descriptor{}})
	res, _ = search(t, s, storage.Query{Labels: map[string]string{"k": "docker"}})
	if !slices.Equal(found(res), want("apps/docker", dd)) || !res[0].Created.Equal(time.Date(2023, 5, 5, 5, 5, 5, 5e8, time.UTC)) {
		t.Errorf("docker config: %+v", res)
	}
}

// A config that cannot be read for labels never fails a push.
func testSearchBadConfigDoesNotFailPush(t *testing.T, b Backends) {
	s := open(t, b)
	huge := []byte(`{"config":{"Labels":{"k":"v"}},"pad":"` + strings.Repeat("x", maxConfigBytes) + `"}`)
	for name, body := range map[string][]byte{
		"huge":        huge,
		"unparsable":  []byte("not json at all"),
		"wrong types": []byte(`{"config":{"Labels":{"k":1}}}`),
	} {
		repo := "bad/" + strings.ReplaceAll(name, " ", "-")
		cfg := putBlob(t, s, repo, ocispec.MediaTypeImageConfig, body)
		d, _ := putManifest(t, s, repo, ocispec.Manifest{Config: cfg, Layers: []ocispec.Descriptor{},
			Annotations: map[string]string{"case": name}})
		info, err := s.StatManifest(ctx(), repo, string(d))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if info.Labels != nil || info.ConfigCreated != nil {
			t.Errorf("%s: labels %v, created %v, want none", name, info.Labels, info.ConfigCreated)
		}
		res, _ := search(t, s, storage.Query{Annotations: map[string]string{"case": name}})
		if !slices.Equal(found(res), want(repo, d)) || !res[0].Created.Equal(res[0].Pushed) {
			t.Errorf("%s: found %+v", name, res)
		}
	}
}

// Pairs an index may not hold (long ones, ones with NUL) are found all
// the same, by scanning.
func testSearchUnindexablePairs(t *testing.T, b Backends) {
	s := open(t, b)
	long := strings.Repeat("v", 64<<10)
	d := putAnnotated(t, s, "apps/web", "u", map[string]string{"long": long, "nul": "a\x00b"}, nil, "")
	checkIndex(t, s)
	for _, q := range []storage.Query{
		{Annotations: map[string]string{"long": long}},
		{Annotations: map[string]string{"nul": "a\x00b"}},
	} {
		res, _ := search(t, s, q)
		if !slices.Equal(found(res), want("apps/web", d)) {
			t.Errorf("unindexed pair: found %v", found(res))
		}
	}
	if res, _ := search(t, s, storage.Query{Annotations: map[string]string{"nul": "a"}}); len(res) != 0 {
		t.Errorf("prefix of a NUL value matched: %v", found(res))
	}
}

// A search examines at most SearchScanLimit manifests, and pages on from
// where it stopped.
func testSearchScanLimitPages(t *testing.T, b Backends) {
	s := open(t, b, withOptions(storage.Options{SearchScanLimit: 2}))
	var matching, all []string
	for i := range 9 {
		repo := []string{"x", "y/z", "y"}[i%3]
		rev := "miss"
		if i%2 == 0 {
			rev = "hit"
		}
		d := putAnnotated(t, s, repo, fmt.Sprint("s", i), map[string]string{revKey: rev, "all": "yes"}, nil, "")
		if rev == "hit" {
			matching = append(matching, cursor(repo, d))
		}
		all = append(all, cursor(repo, d))
	}
	sortCursors(matching)
	sortCursors(all)
	// Indexed on "all", filtered on the revision; and a plain scan.
	for _, c := range []struct {
		q    storage.Query
		want []string
	}{
		{storage.Query{Annotations: map[string]string{revKey: "hit", "all": "yes"}}, matching},
		{storage.Query{MediaType: ocispec.MediaTypeImageManifest}, all},
	} {
		q := c.q
		q.N = 100
		var got []string
		short := false
		for pages := 0; ; pages++ {
			if pages > 20 {
				t.Fatal("pagination does not end")
			}
			res, next := search(t, s, q)
			got = append(got, found(res)...)
			if next == "" {
				break
			}
			short = true
			q.Last = next
		}
		if !short {
			t.Errorf("query %+v: one page despite a scan limit of 2", q)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("query %+v: %v, want %v", q, got, c.want)
		}
	}
}
