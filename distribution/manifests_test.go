package distribution_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/distribution"
)

// TestManifestPushPull pushes image manifests, a Docker manifest and an
// index, and reads each back by tag and by digest, byte for byte.
func TestManifestPushPull(t *testing.T) {
	t.Parallel()
	e := newEnv(t, distribution.Options{})
	const repo = "push/pull"
	img := e.pushImage(repo, "v1", "push pull")

	get := func(t *testing.T, ref, mediaType string, body []byte, d digest.Digest) {
		t.Helper()
		r := e.do(http.MethodGet, "/v2/"+repo+"/manifests/"+ref, nil)
		wantStatus(t, r, http.StatusOK)
		wantHeader(t, r, "Content-Type", mediaType)
		wantHeader(t, r, "Docker-Content-Digest", string(d))
		wantHeader(t, r, "Content-Length", fmt.Sprint(len(body)))
		if !bytes.Equal(r.Body, body) {
			t.Errorf("GET %s: body differs from what was pushed", ref)
		}
		h := e.do(http.MethodHead, "/v2/"+repo+"/manifests/"+ref, nil)
		wantStatus(t, h, http.StatusOK)
		wantHeader(t, h, "Content-Type", mediaType)
		wantHeader(t, h, "Docker-Content-Digest", string(d))
		wantHeader(t, h, "Content-Length", fmt.Sprint(len(body)))
		if len(h.Body) != 0 {
			t.Errorf("HEAD %s returned a body", ref)
		}
	}
	t.Run("image", func(t *testing.T) {
		get(t, "v1", ocispec.MediaTypeImageManifest, img.Body, img.Digest)
		get(t, string(img.Digest), ocispec.MediaTypeImageManifest, img.Body, img.Digest)
	})
	t.Run("conditional GET", func(t *testing.T) {
		r := e.do(http.MethodGet, "/v2/"+repo+"/manifests/v1", nil, "If-None-Match", `"`+string(img.Digest)+`"`)
		wantStatus(t, r, http.StatusNotModified)
		wantHeader(t, r, "Docker-Content-Digest", string(img.Digest))
		wantHeader(t, r, "ETag", `"`+string(img.Digest)+`"`)
	})
	t.Run("retag and overwrite", func(t *testing.T) {
		if d := e.pushManifest(repo, "v2", ocispec.MediaTypeImageManifest, img.Body); d != img.Digest {
			t.Errorf("same body got digest %s, want %s", d, img.Digest)
		}
		other := e.pushImage(repo, "v2", "push pull 2")
		get(t, "v2", ocispec.MediaTypeImageManifest, other.Body, other.Digest)
		get(t, "v1", ocispec.MediaTypeImageManifest, img.Body, img.Digest)
	})
	t.Run("Docker manifest", func(t *testing.T) {
		const dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
		cfg := []byte(`{"docker":true}`)
		e.pushBlob(repo, cfg)
		body := mustJSON(t, map[string]any{
			"schemaVersion": 2,
			"mediaType":     dockerManifest,
			"config":        descriptor("application/vnd.docker.container.image.v1+json", cfg),
			"layers": []ocispec.Descriptor{{
				MediaType: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
				Digest:    digest.FromBytes([]byte("foreign layer")),
				Size:      13,
				URLs:      []string{"https://example.com/layer"},
			}},
		})
		d := e.pushManifest(repo, "docker", dockerManifest, body)
		get(t, "docker", dockerManifest, body, d)
	})
	t.Run("index", func(t *testing.T) {
		body := imageIndex(t, descriptor(ocispec.MediaTypeImageManifest, img.Body))
		d := e.pushManifest(repo, "multi", ocispec.MediaTypeImageIndex, body)
		get(t, "multi", ocispec.MediaTypeImageIndex, body, d)
	})
	t.Run("media type from the body alone", func(t *testing.T) {
		cfg := []byte(`{"no content type":true}`)
		e.pushBlob(repo, cfg)
		body := imageManifest(t, descriptor(ocispec.MediaTypeImageConfig, cfg), nil, "")
		r := e.do(http.MethodPut, "/v2/"+repo+"/manifests/bare", body)
		wantStatus(t, r, http.StatusCreated)
		get(t, "bare", ocispec.MediaTypeImageManifest, body, digest.FromBytes(body))
	})
	e.wantEmptyDir("tmp")
}

// TestManifestTagParams pushes by digest with tag query parameters.
func TestManifestTagParams(t *testing.T) {
	t.Parallel()
	e := newEnv(t, distribution.Options{})
	const repo = "tag/params"
	img := e.pushImage(repo, "", "tag params")

	r := e.do(http.MethodPut, "/v2/"+repo+"/manifests/"+string(img.Digest), nil)
	wantError(t, r, http.StatusBadRequest, "MANIFEST_INVALID") // no body

	r = e.do(http.MethodPut, "/v2/"+repo+"/manifests/"+string(img.Digest)+"?tag=a&tag=b", img.Body,
		"Content-Type", ocispec.MediaTypeImageManifest)
	wantStatus(t, r, http.StatusCreated)
	wantHeader(t, r, "OCI-Tag", "a, b")
	wantHeader(t, r, "Docker-Content-Digest", string(img.Digest))
	wantHeader(t, r, "Location", "/v2/"+repo+"/manifests/"+string(img.Digest))
	for _, tag := range []string{"a", "b"} {
		g := e.do(http.MethodGet, "/v2/"+repo+"/manifests/"+tag, nil)
		wantStatus(t, g, http.StatusOK)
		wantHeader(t, g, "Docker-Content-Digest", string(img.Digest))
	}
	if tags := e.tags(repo); !slices.Equal(tags, []string{"a", "b"}) {
		t.Errorf("tags = %v, want [a b]", tags)
	}

	// Without tag parameters there is no OCI-Tag.
	r = e.do(http.MethodPut, "/v2/"+repo+"/manifests/"+string(img.Digest), img.Body, "Content-Type", ocispec.MediaTypeImageManifest)
	wantStatus(t, r, http.StatusCreated)
	if v, ok := r.Header["Oci-Tag"]; ok {
		t.Errorf("OCI-Tag = %q without tag parameters", v)
	}
}

// TestReferrers pushes manifests with a subject and lists, filters and
// deletes them through the referrers API.
func TestReferrers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, distribution.Options{})
	const repo = "ref/errers"
	subject := e.pushImage(repo, "v1", "subject")
	subjectDesc := descriptor(ocispec.MediaTypeImageManifest, subject.Body)

	empty := e.pushBlob(repo, []byte("{}"))
	emptyDesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeEmptyJSON, Digest: empty, Size: 2}
	const sigType, sbomType = "application/vnd.example.signature", "application/vnd.example.sbom+json"

	push := func(artifactType, note string, subj ocispec.Descriptor) ocispec.Descriptor {
		t.Helper()
		m := ocispec.Manifest{
			MediaType:    ocispec.MediaTypeImageManifest,
			ArtifactType: artifactType,
			Config:       emptyDesc,
			Layers:       []ocispec.Descriptor{emptyDesc},
			Subject:      &subj,
			Annotations:  map[string]string{"note": note},
		}
		m.SchemaVersion = 2
		body := mustJSON(t, m)
		d := digest.FromBytes(body)
		r := e.do(http.MethodPut, "/v2/"+repo+"/manifests/"+string(d), body, "Content-Type", ocispec.MediaTypeImageManifest)
		wantStatus(t, r, http.StatusCreated)
		wantHeader(t, r, "OCI-Subject", string(subj.Digest))
		return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: d, Size: int64(len(body)),
			ArtifactType: artifactType, Annotations: map[string]string{"note": note}}
	}
	sig := push(sigType, "signature", subjectDesc)
	sbom := push(sbomType, "sbom", subjectDesc)
	// A referrer may arrive before its subject.
	absent := descriptor(ocispec.MediaTypeImageManifest, []byte(`{"not":"pushed yet"}`))
	early := push(sigType, "early", absent)

	list := func(subj digest.Digest, query string) (*response, []ocispec.Descriptor) {
		t.Helper()
		r := e.do(http.MethodGet, "/v2/"+repo+"/referrers/"+string(subj)+query, nil)
		wantStatus(t, r, http.StatusOK)
		wantHeader(t, r, "Content-Type", ocispec.MediaTypeImageIndex)
		var idx ocispec.Index
		decode(t, r.Body, &idx)
		if idx.SchemaVersion != 2 || idx.MediaType != ocispec.MediaTypeImageIndex || idx.Manifests == nil {
			t.Errorf("referrers response is not an image index: %s", r.Body)
		}
		slices.SortFunc(idx.Manifests, func(a, b ocispec.Descriptor) int {
			return strings.Compare(a.Annotations["note"], b.Annotations["note"])
		})
		return r, idx.Manifests
	}
	wantList := func(got []ocispec.Descriptor, want ...ocispec.Descriptor) {
		t.Helper()
		slices.SortFunc(want, func(a, b ocispec.Descriptor) int {
			return strings.Compare(a.Annotations["note"], b.Annotations["note"])
		})
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("referrers = %+v\nwant %+v", got, want)
		}
	}

	r, got := list(subject.Digest, "")
	wantList(got, sig, sbom)
	if v := r.Header.Get("OCI-Filters-Applied"); v != "" {
		t.Errorf("OCI-Filters-Applied = %q without a filter", v)
	}

	r, got = list(subject.Digest, "?artifactType="+url.QueryEscape(sigType))
	wantList(got, sig)
	wantHeader(t, r, "OCI-Filters-Applied", "artifactType")

	r, got = list(subject.Digest, "?artifactType=application/vnd.example.none")
	wantList(got)
	wantHeader(t, r, "OCI-Filters-Applied", "artifactType")

	_, got = list(absent.Digest, "")
	wantList(got, early)

	// The subject's own digest has no referrers in another repository.
	e.pushBlob("elsewhere", []byte("x"))
	for _, other := range []string{"elsewhere", "no/such/repo"} {
		lr := e.do(http.MethodGet, "/v2/"+other+"/referrers/"+string(subject.Digest), nil)
		wantStatus(t, lr, http.StatusOK)
		if string(lr.Body) != `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}` {
			t.Errorf("%s referrers = %s", other, lr.Body)
		}
	}

	// Deleting a referrer removes it from the list.
	wantStatus(t, e.do(http.MethodDelete, "/v2/"+repo+"/manifests/"+string(sig.Digest), nil), http.StatusAccepted)
	_, got = list(subject.Digest, "")
	wantList(got, sbom)
	wantStatus(t, e.do(http.MethodDelete, "/v2/"+repo+"/manifests/"+string(sbom.Digest), nil), http.StatusAccepted)
	_, got = list(subject.Digest, "")
	wantList(got)
	// The subject itself is untouched.
	wantStatus(t, e.do(http.MethodGet, "/v2/"+repo+"/manifests/v1", nil), http.StatusOK)
}

// TestAcceptNegotiation checks that a manifest is served only when the
// Accept header allows its media type.
func TestAcceptNegotiation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, distribution.Options{})
	img := e.pushImage("accept", "v1", "accept")
	const dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	const dockerList = "application/vnd.docker.distribution.manifest.list.v2+json"

	for _, c := range []struct {
		name   string
		accept []string
		ok     bool
	}{
		{"no Accept", nil, true},
		{"exact", []string{ocispec.MediaTypeImageManifest}, true},
		{"with parameters", []string{ocispec.MediaTypeImageManifest + "; q=0.5"}, true},
		{"wildcard", []string{"*/*"}, true},
		{"application wildcard", []string{"application/*"}, true},
		{"list in one header", []string{dockerManifest + ", " + ocispec.MediaTypeImageManifest}, true},
		{"several headers", []string{dockerManifest, ocispec.MediaTypeImageIndex, ocispec.MediaTypeImageManifest}, true},
		{"Docker only", []string{dockerManifest}, false},
		{"Docker types only", []string{dockerManifest + ", " + dockerList}, false},
		{"index only", []string{ocispec.MediaTypeImageIndex}, false},
		{"garbage", []string{"not a media type"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			var hdr []string
			for _, a := range c.accept {
				hdr = append(hdr, "Accept", a)
			}
			for _, ref := range []string{"v1", string(img.Digest)} {
				r := e.do(http.MethodGet, "/v2/accept/manifests/"+ref, nil, hdr...)
				h := e.do(http.MethodHead, "/v2/accept/manifests/"+ref, nil, hdr...)
				if c.ok {
					wantStatus(t, r, http.StatusOK)
					wantStatus(t, h, http.StatusOK)
					if !bytes.Equal(r.Body, img.Body) {
						t.Error("body differs")
					}
					continue
				}
				ent := wantError(t, r, http.StatusNotFound, "MANIFEST_UNKNOWN")
				if ent.Detail["mediaType"] != ocispec.MediaTypeImageManifest {
					t.Errorf("detail = %v", ent.Detail)
				}
				wantStatus(t, h, http.StatusNotFound)
			}
		})
	}
}

// linkRE is the form of a Link header to the next page.
var linkRE = regexp.MustCompile(`^<(/v2/[^>]+)>; rel="next"$`)

// walkPages follows a paginated listing from first to its end, checking
// every Link header, and returns the pages' items.
func walkPages(t *testing.T, e *env, first, path string, n int, items func([]byte) []string) [][]string {
	t.Helper()
	var pages [][]string
	next := first
	for next != "" {
		if len(pages) > 100 {
			t.Fatal("pagination does not end")
		}
		r := e.do(http.MethodGet, next, nil)
		wantStatus(t, r, http.StatusOK)
		wantHeader(t, r, "Content-Type", "application/json")
		page := items(r.Body)
		pages = append(pages, page)
		link := r.Header.Get("Link")
		if link == "" {
			break
		}
		m := linkRE.FindStringSubmatch(link)
		if m == nil {
			t.Fatalf("Link = %q", link)
		}
		want := path + "?" + url.Values{"last": {page[len(page)-1]}, "n": {fmt.Sprint(n)}}.Encode()
		if m[1] != want {
			t.Errorf("Link target = %q, want %q", m[1], want)
		}
		next = m[1]
	}
	return pages
}

// TestTagListPagination lists tags in lexical order, in pages.
func TestTagListPagination(t *testing.T) {
	t.Parallel()
	e := newEnv(t, distribution.Options{})
	const repo = "paged/tags"
	img := e.pushImage(repo, "", "pagination")
	push := []string{"zeta", "v1.2", "alpha", "Beta", "v1.10", "_x", "v1.0"}
	q := url.Values{"tag": push}
	r := e.do(http.MethodPut, "/v2/"+repo+"/manifests/"+string(img.Digest)+"?"+q.Encode(), img.Body, "Content-Type", ocispec.MediaTypeImageManifest)
	wantStatus(t, r, http.StatusCreated)
	all := []string{"Beta", "_x", "alpha", "v1.0", "v1.10", "v1.2", "zeta"}

	tagsOf := func(body []byte) []string {
		var l struct {
			Name string   `json:"name"`
			Tags []string `json:"tags"`
		}
		decode(t, body, &l)
		if l.Name != repo || l.Tags == nil {
			t.Errorf("tag list = %s", body)
		}
		return l.Tags
	}
	path := "/v2/" + repo + "/tags/list"

	if got := e.tags(repo); !slices.Equal(got, all) {
		t.Errorf("tags = %v, want %v", got, all)
	}
	for _, n := range []int{1, 2, 3, 6} {
		t.Run(fmt.Sprintf("n=%d", n), func(t *testing.T) {
			pages := walkPages(t, e, fmt.Sprintf("%s?n=%d", path, n), path, n, tagsOf)
			if want := (len(all) + n - 1) / n; len(pages) != want {
				t.Errorf("%d pages, want %d", len(pages), want)
			}
			if got := slices.Concat(pages...); !slices.Equal(got, all) {
				t.Errorf("walked %v, want %v", got, all)
			}
			for i, p := range pages[:len(pages)-1] {
				if len(p) != n {
					t.Errorf("page %d has %d tags, want %d", i, len(p), n)
				}
			}
		})
	}
	for _, c := range []struct {
		query string
		want  []string
	}{
		{"?n=7", all},
		{"?n=100", all},
		{"?last=v1.10", []string{"v1.2", "zeta"}},
		{"?last=b", []string{"v1.0", "v1.10", "v1.2", "zeta"}},
		{"?last=zeta", []string{}},
		{"?last=zzz", []string{}},
		{"?n=2&last=alpha", []string{"v1.0", "v1.10"}},
		{"?n=0", []string{}},
		{"?n=0&last=alpha", []string{}},
	} {
		t.Run(c.query, func(t *testing.T) {
			r := e.do(http.MethodGet, path+c.query, nil)
			wantStatus(t, r, http.StatusOK)
			if got := tagsOf(r.Body); !slices.Equal(got, c.want) {
				t.Errorf("tags = %v, want %v", got, c.want)
			}
			if c.query == "?n=2&last=alpha" {
				wantHeader(t, r, "Link", `</v2/`+repo+`/tags/list?last=v1.10&n=2>; rel="next"`)
			} else if l := r.Header.Get("Link"); l != "" {
				t.Errorf("Link = %q on the last page", l)
			}
		})
	}
	for _, bad := range []string{"-1", "abc", "1.5", "99999999999999999999"} {
		t.Run("n="+bad, func(t *testing.T) {
			ent := wantError(t, e.do(http.MethodGet, path+"?n="+bad, nil), http.StatusBadRequest, "UNSUPPORTED")
			if ent.Detail["n"] != bad {
				t.Errorf("detail = %v", ent.Detail)
			}
		})
	}

	// An empty repository lists no tags, as [] rather than null.
	e.pushBlob("untagged", []byte("untagged"))
	r = e.do(http.MethodGet, "/v2/untagged/tags/list", nil)
	wantStatus(t, r, http.StatusOK)
	if string(r.Body) != `{"name":"untagged","tags":[]}` {
		t.Errorf("tags of an untagged repository = %s", r.Body)
	}
}

// TestPageSizeLimit checks that n is capped at the page size limit and the
// Link header says so.
func TestPageSizeLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, distribution.Options{MaxPageSize: 2})
	img := e.pushImage("capped", "", "capped")
	r := e.do(http.MethodPut, "/v2/capped/manifests/"+string(img.Digest)+"?tag=a&tag=b&tag=c", img.Body, "Content-Type", ocispec.MediaTypeImageManifest)
	wantStatus(t, r, http.StatusCreated)
	for _, q := range []string{"", "?n=100"} {
		r = e.do(http.MethodGet, "/v2/capped/tags/list"+q, nil)
		wantStatus(t, r, http.StatusOK)
		if string(r.Body) != `{"name":"capped","tags":["a","b"]}` {
			t.Errorf("tags%s = %s", q, r.Body)
		}
		wantHeader(t, r, "Link", `</v2/capped/tags/list?last=b&n=2>; rel="next"`)
	}
}

// TestCatalogPagination lists repositories in lexical order, in pages.
func TestCatalogPagination(t *testing.T) {
	t.Parallel()
	e := newEnv(t, distribution.Options{})
	all := []string{"a", "a-b", "a.b", "a/c", "a/c/d", "b", "c/d/e"}
	for _, i := range []int{5, 0, 6, 3, 1, 4, 2} {
		e.pushBlob(all[i], []byte("catalog "+all[i]))
	}
	reposOf := func(body []byte) []string {
		var l struct {
			Repositories []string `json:"repositories"`
		}
		decode(t, body, &l)
		if l.Repositories == nil {
			t.Errorf("catalog = %s", body)
		}
		return l.Repositories
	}
	r := e.do(http.MethodGet, "/v2/_catalog", nil)
	wantStatus(t, r, http.StatusOK)
	if got := reposOf(r.Body); !slices.Equal(got, all) {
		t.Errorf("catalog = %v, want %v", got, all)
	}
	for _, n := range []int{1, 2, 3} {
		t.Run(fmt.Sprintf("n=%d", n), func(t *testing.T) {
			pages := walkPages(t, e, fmt.Sprintf("/v2/_catalog?n=%d", n), "/v2/_catalog", n, reposOf)
			if got := slices.Concat(pages...); !slices.Equal(got, all) {
				t.Errorf("walked %v, want %v", got, all)
			}
			if want := (len(all) + n - 1) / n; len(pages) != want {
				t.Errorf("%d pages, want %d", len(pages), want)
			}
		})
	}
	r = e.do(http.MethodGet, "/v2/_catalog?n=2&last=a.b", nil)
	wantStatus(t, r, http.StatusOK)
	if got := reposOf(r.Body); !slices.Equal(got, []string{"a/c", "a/c/d"}) {
		t.Errorf("page after a.b = %v", got)
	}
	wantHeader(t, r, "Link", `</v2/_catalog?last=a%2Fc%2Fd&n=2>; rel="next"`)

	r = e.do(http.MethodGet, "/v2/_catalog?n=0", nil)
	wantStatus(t, r, http.StatusOK)
	if string(r.Body) != `{"repositories":[]}` || r.Header.Get("Link") != "" {
		t.Errorf("n=0: body %s, Link %q", r.Body, r.Header.Get("Link"))
	}
	wantError(t, e.do(http.MethodGet, "/v2/_catalog?n=-1", nil), http.StatusBadRequest, "UNSUPPORTED")

	// An empty registry has an empty catalog.
	empty := newEnv(t, distribution.Options{})
	r = empty.do(http.MethodGet, "/v2/_catalog", nil)
	wantStatus(t, r, http.StatusOK)
	if string(r.Body) != `{"repositories":[]}` {
		t.Errorf("empty catalog = %s", r.Body)
	}
}

// TestManifestDelete deletes a manifest by digest, which removes every tag
// naming it, and checks the rest of the repository is untouched.
func TestManifestDelete(t *testing.T) {
	t.Parallel()
	e := newEnv(t, distribution.Options{})
	const repo = "del/manifest"
	img := e.pushImage(repo, "v1", "delete me")
	e.pushManifest(repo, "v2", ocispec.MediaTypeImageManifest, img.Body)
	keep := e.pushImage(repo, "keep", "keep me")

	r := e.do(http.MethodDelete, "/v2/"+repo+"/manifests/"+string(img.Digest), nil)
	wantStatus(t, r, http.StatusAccepted)
	for _, ref := range []string{string(img.Digest), "v1", "v2"} {
		wantError(t, e.do(http.MethodGet, "/v2/"+repo+"/manifests/"+ref, nil), http.StatusNotFound, "MANIFEST_UNKNOWN")
	}
	wantError(t, e.do(http.MethodDelete, "/v2/"+repo+"/manifests/"+string(img.Digest), nil), http.StatusNotFound, "MANIFEST_UNKNOWN")
	if tags := e.tags(repo); !slices.Equal(tags, []string{"keep"}) {
		t.Errorf("tags = %v, want [keep]", tags)
	}
	g := e.do(http.MethodGet, "/v2/"+repo+"/manifests/keep", nil)
	wantStatus(t, g, http.StatusOK)
	wantHeader(t, g, "Docker-Content-Digest", string(keep.Digest))
	// Blobs are not deleted with the manifest.
	e.blobContent(repo, img.Config.Digest)
	e.blobContent(repo, img.Layer.Digest)
	// The manifest can be pushed again.
	e.pushManifest(repo, "v1", ocispec.MediaTypeImageManifest, img.Body)
}

// TestTagDelete deletes a tag, which keeps its manifest.
func TestTagDelete(t *testing.T) {
	t.Parallel()
	e := newEnv(t, distribution.Options{})
	const repo = "del/tag"
	img := e.pushImage(repo, "v1", "tag delete")
	e.pushManifest(repo, "v2", ocispec.MediaTypeImageManifest, img.Body)

	wantStatus(t, e.do(http.MethodDelete, "/v2/"+repo+"/manifests/v1", nil), http.StatusAccepted)
	wantError(t, e.do(http.MethodGet, "/v2/"+repo+"/manifests/v1", nil), http.StatusNotFound, "MANIFEST_UNKNOWN")
	wantError(t, e.do(http.MethodDelete, "/v2/"+repo+"/manifests/v1", nil), http.StatusNotFound, "MANIFEST_UNKNOWN")
	for _, ref := range []string{"v2", string(img.Digest)} {
		r := e.do(http.MethodGet, "/v2/"+repo+"/manifests/"+ref, nil)
		wantStatus(t, r, http.StatusOK)
		if !bytes.Equal(r.Body, img.Body) {
			t.Errorf("GET %s: body differs", ref)
		}
	}
	if tags := e.tags(repo); !slices.Equal(tags, []string{"v2"}) {
		t.Errorf("tags = %v, want [v2]", tags)
	}
}

// A manifest whose descriptor gives a blob or child manifest another size
// than the repository holds is refused with MANIFEST_INVALID, naming the
// digest and both sizes, and nothing of it is stored.
func TestManifestDescriptorSizeMustMatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t, distribution.Options{})
	const repo = "sizes/app"
	config := content("config of sizes", 64)
	layer := content("layer of sizes", 1000)
	e.pushBlob(repo, config)
	e.pushBlob(repo, layer)
	wrongLayer := descriptor(ocispec.MediaTypeImageLayer, layer)
	wrongLayer.Size++
	body := imageManifest(t, descriptor(ocispec.MediaTypeImageConfig, config), nil, "", wrongLayer)
	r := e.do(http.MethodPut, "/v2/"+repo+"/manifests/v1", body, "Content-Type", ocispec.MediaTypeImageManifest)
	entry := wantError(t, r, http.StatusBadRequest, "MANIFEST_INVALID")
	if entry.Detail["digest"] != string(wrongLayer.Digest) || entry.Detail["size"] != float64(wrongLayer.Size) || entry.Detail["stored"] != float64(len(layer)) {
		t.Errorf("detail %v: want the layer's digest, the size given and the size stored", entry.Detail)
	}
	wantError(t, e.do(http.MethodGet, "/v2/"+repo+"/manifests/v1", nil), http.StatusNotFound, "MANIFEST_UNKNOWN")
	wantError(t, e.do(http.MethodGet, "/v2/"+repo+"/manifests/"+digest.FromBytes(body).String(), nil), http.StatusNotFound, "MANIFEST_UNKNOWN")
	e.wantNoBlobFile(digest.FromBytes(body))

	// A child of an index with another size than the manifest it names.
	child := e.pushImage(repo, "child", "child")
	wrongChild := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: child.Digest, Size: int64(len(child.Body)) - 1}
	index := imageIndex(t, wrongChild)
	r = e.do(http.MethodPut, "/v2/"+repo+"/manifests/multi", index, "Content-Type", ocispec.MediaTypeImageIndex)
	wantError(t, r, http.StatusBadRequest, "MANIFEST_INVALID")
	wantError(t, e.do(http.MethodGet, "/v2/"+repo+"/manifests/multi", nil), http.StatusNotFound, "MANIFEST_UNKNOWN")
}
