package distribution_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/distribution"
)

// TestBase pins the API version check.
func TestBase(t *testing.T) {
	t.Parallel()
	e := newEnv(t, distribution.Options{})
	r := e.do(http.MethodGet, "/v2/", nil)
	wantStatus(t, r, http.StatusOK)
	wantHeader(t, r, "Content-Type", "application/json")
	if string(r.Body) != "{}" {
		t.Errorf("body = %q, want {}", r.Body)
	}
	r = e.do(http.MethodHead, "/v2/", nil)
	wantStatus(t, r, http.StatusOK)
	if len(r.Body) != 0 {
		t.Errorf("HEAD body = %q, want none", r.Body)
	}
}

// TestWrongDigestLeavesNothing pushes content under a digest it does not
// hash to, by every upload flow, and checks that the registry refuses it
// and keeps nothing: no blob under either digest, no temporary file, no
// upload file, and no open session.
func TestWrongDigestLeavesNothing(t *testing.T) {
	t.Parallel()
	data := content("real content", 5000)
	real := digest.FromBytes(data)
	claimed := digest.FromBytes([]byte("the content the client claims"))
	const octet = "application/octet-stream"

	cases := []struct {
		name string
		// push sends data as claimed and returns the failing response and
		// the session Location, if the flow used one.
		push func(e *env, repo string) (*response, string)
	}{
		{"monolithic POST", func(e *env, repo string) (*response, string) {
			return e.do(http.MethodPost, "/v2/"+repo+"/blobs/uploads/?digest="+string(claimed), data, "Content-Type", octet), ""
		}},
		{"monolithic POST streamed", func(e *env, repo string) (*response, string) {
			return e.doReader(http.MethodPost, "/v2/"+repo+"/blobs/uploads/?digest="+string(claimed), hideLength(data), "Content-Type", octet), ""
		}},
		{"POST then PUT", func(e *env, repo string) (*response, string) {
			loc := e.startUpload(repo)
			return e.do(http.MethodPut, withQuery(loc, "digest", string(claimed)), data, "Content-Type", octet), loc
		}},
		{"chunked PATCH then empty PUT", func(e *env, repo string) (*response, string) {
			loc := e.startUpload(repo)
			patch(t, e, loc, data[:2000], 0)
			patch(t, e, loc, data[2000:], 2000)
			return e.do(http.MethodPut, withQuery(loc, "digest", string(claimed)), nil), loc
		}},
		{"chunked PATCH then PUT with last chunk", func(e *env, repo string) (*response, string) {
			loc := e.startUpload(repo)
			patch(t, e, loc, data[:3000], 0)
			return e.do(http.MethodPut, withQuery(loc, "digest", string(claimed)), data[3000:],
				"Content-Type", octet, "Content-Range", "3000-4999"), loc
		}},
		{"streamed PATCH then PUT", func(e *env, repo string) (*response, string) {
			loc := e.startUpload(repo)
			r := e.doReader(http.MethodPatch, loc, hideLength(data), "Content-Type", octet)
			wantStatus(t, r, http.StatusAccepted)
			return e.do(http.MethodPut, withQuery(loc, "digest", string(claimed)), nil), loc
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, distribution.Options{})
			const repo = "wrong/digest"
			r, loc := c.push(e, repo)
			ent := wantError(t, r, http.StatusBadRequest, "DIGEST_INVALID")
			if got := ent.Detail["digest"]; got != string(claimed) {
				t.Errorf("detail digest = %v, want %s", got, claimed)
			}
			e.wantBlobAbsent(repo, claimed)
			e.wantBlobAbsent(repo, real)
			e.wantNoBlobFile(claimed, real)
			e.wantEmptyDir("tmp")
			e.wantEmptyDir("uploads")
			if loc != "" {
				e.wantSessionEnded(loc)
				// The ended session cannot be completed with the right digest.
				wantError(t, e.do(http.MethodPut, withQuery(loc, "digest", string(real)), nil), http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")
				e.wantBlobAbsent(repo, real)
			}
		})
	}
}

// hideLength wraps data so that net/http cannot see its length and sends
// it with chunked transfer encoding.
func hideLength(data []byte) io.Reader {
	return io.MultiReader(bytes.NewReader(data))
}

// patch sends one chunk with its Content-Range and checks the 202 answer.
func patch(t *testing.T, e *env, loc string, chunk []byte, start int) *response {
	t.Helper()
	r := e.do(http.MethodPatch, loc, chunk, "Content-Type", "application/octet-stream",
		"Content-Range", fmt.Sprintf("%d-%d", start, start+len(chunk)-1))
	wantStatus(t, r, http.StatusAccepted)
	wantHeader(t, r, "Range", fmt.Sprintf("0-%d", start+len(chunk)-1))
	return r
}

// badDigests are digests no endpoint may accept.
var badDigests = []string{
	"sha256:xyz",
	"md5:d41d8cd98f00b204e9800998ecf8427e",
	"sha256:" + strings.Repeat("a", 63),
	"sha256:" + strings.ToUpper(strings.Repeat("ab", 32)),
	"sha256",
	"sha256:",
	":" + strings.Repeat("a", 64),
}

// TestMalformedDigests sends malformed digests to every endpoint that takes
// one and checks each is refused as DIGEST_INVALID without storing anything.
func TestMalformedDigests(t *testing.T) {
	t.Parallel()
	e := newEnv(t, distribution.Options{})
	const repo = "bad/digests"
	img := e.pushImage(repo, "latest", "bad-digests")
	data := []byte("some blob content")

	for _, bad := range badDigests {
		q := url.QueryEscape(bad)
		cases := []struct {
			method, path string
			body         []byte
		}{
			{http.MethodPost, "/v2/" + repo + "/blobs/uploads/?digest=" + q, data},
			{http.MethodPost, "/v2/" + repo + "/blobs/uploads/?mount=" + q + "&from=" + repo, nil},
			{http.MethodGet, "/v2/" + repo + "/blobs/" + bad, nil},
			{http.MethodDelete, "/v2/" + repo + "/blobs/" + bad, nil},
			{http.MethodGet, "/v2/" + repo + "/referrers/" + bad, nil},
		}
		if strings.Contains(bad, ":") {
			// Without a colon a manifest reference is a tag.
			cases = append(cases, []struct {
				method, path string
				body         []byte
			}{
				{http.MethodGet, "/v2/" + repo + "/manifests/" + bad, nil},
				{http.MethodDelete, "/v2/" + repo + "/manifests/" + bad, nil},
				{http.MethodPut, "/v2/" + repo + "/manifests/" + bad, img.Body},
			}...)
		}
		for _, c := range cases {
			t.Run(c.method+" "+c.path, func(t *testing.T) {
				hdr := []string{"Content-Type", "application/octet-stream"}
				if strings.Contains(c.path, "/manifests/") {
					hdr = []string{"Content-Type", ocispec.MediaTypeImageManifest}
				}
				wantError(t, e.do(c.method, c.path, c.body, hdr...), http.StatusBadRequest, "DIGEST_INVALID")
			})
		}
		t.Run("HEAD blob "+bad, func(t *testing.T) {
			r := e.do(http.MethodHead, "/v2/"+repo+"/blobs/"+bad, nil)
			wantStatus(t, r, http.StatusBadRequest)
			wantHeader(t, r, "Content-Type", "application/json")
		})
		t.Run("PUT upload "+bad, func(t *testing.T) {
			loc := e.startUpload(repo)
			wantError(t, e.do(http.MethodPut, withQuery(loc, "digest", bad), data), http.StatusBadRequest, "DIGEST_INVALID")
			// A malformed request does not end the session: it is still
			// where it was and can be completed.
			r := e.do(http.MethodGet, loc, nil)
			wantStatus(t, r, http.StatusNoContent)
			wantHeader(t, r, "Range", "0-0")
			wantStatus(t, e.do(http.MethodDelete, loc, nil), http.StatusNoContent)
		})
	}

	t.Run("PUT upload without digest", func(t *testing.T) {
		for _, suffix := range []string{"", "?digest="} {
			loc := e.startUpload(repo)
			r := e.do(http.MethodPut, loc+suffix, data)
			wantError(t, r, http.StatusBadRequest, "DIGEST_INVALID")
			wantHeader(t, r, "Location", loc)
			wantStatus(t, e.do(http.MethodDelete, loc, nil), http.StatusNoContent)
		}
	})
	t.Run("POST with unsupported digest-algorithm", func(t *testing.T) {
		wantError(t, e.do(http.MethodPost, "/v2/"+repo+"/blobs/uploads/?digest-algorithm=md5", nil), http.StatusBadRequest, "DIGEST_INVALID")
	})

	e.wantBlobAbsent(repo, digest.FromBytes(data))
	e.wantNoBlobFile(digest.FromBytes(data))
	e.wantEmptyDir("tmp")
	e.wantEmptyDir("uploads")
}

// invalidNames are repository names the specification's grammar refuses,
// as they appear in a URL path.
var invalidNames = []string{
	"Upper",
	"upper/Case",
	"a//b",
	"-a",
	"a-",
	"a/../b",
	"a/./b",
	"a%2Fb",
	"a%2fb",
	"a%00b",
	"a_-b",
	strings.Repeat("a", 256),
	strings.Repeat("a/", 127) + "ab",
}

// TestInvalidNames sends invalid repository names to every endpoint and
// checks each is refused as NAME_INVALID and creates no repository.
func TestInvalidNames(t *testing.T) {
	t.Parallel()
	e := newEnv(t, distribution.Options{})
	blob := []byte("name test blob")
	d := digest.FromBytes(blob)
	cfg := descriptor(ocispec.MediaTypeImageConfig, blob)
	man := imageManifest(t, cfg, nil, "")
	const id = "0123456789abcdef0123456789abcdef"

	for _, name := range invalidNames {
		cases := []struct {
			method, path string
			body         []byte
			hdr          []string
		}{
			{http.MethodGet, "/v2/" + name + "/tags/list", nil, nil},
			{http.MethodPost, "/v2/" + name + "/blobs/uploads/", nil, nil},
			{http.MethodPost, "/v2/" + name + "/blobs/uploads/?digest=" + string(d), blob, nil},
			{http.MethodPost, "/v2/" + name + "/blobs/uploads/?mount=" + string(d) + "&from=ok", nil, nil},
			{http.MethodGet, "/v2/" + name + "/blobs/uploads/" + id, nil, nil},
			{http.MethodPatch, "/v2/" + name + "/blobs/uploads/" + id, blob, nil},
			{http.MethodPut, "/v2/" + name + "/blobs/uploads/" + id + "?digest=" + string(d), blob, nil},
			{http.MethodDelete, "/v2/" + name + "/blobs/uploads/" + id, nil, nil},
			{http.MethodGet, "/v2/" + name + "/blobs/" + string(d), nil, nil},
			{http.MethodDelete, "/v2/" + name + "/blobs/" + string(d), nil, nil},
			{http.MethodGet, "/v2/" + name + "/manifests/latest", nil, nil},
			{http.MethodPut, "/v2/" + name + "/manifests/latest", man, []string{"Content-Type", ocispec.MediaTypeImageManifest}},
			{http.MethodDelete, "/v2/" + name + "/manifests/latest", nil, nil},
			{http.MethodGet, "/v2/" + name + "/referrers/" + string(d), nil, nil},
		}
		for _, c := range cases {
			t.Run(c.method+" "+c.path, func(t *testing.T) {
				ent := wantError(t, e.do(c.method, c.path, c.body, c.hdr...), http.StatusBadRequest, "NAME_INVALID")
				if ent.Detail["name"] == nil {
					t.Errorf("detail %v does not name the repository", ent.Detail)
				}
			})
		}
		t.Run("HEAD blob "+name, func(t *testing.T) {
			r := e.do(http.MethodHead, "/v2/"+name+"/blobs/"+string(d), nil)
			wantStatus(t, r, http.StatusBadRequest)
			wantHeader(t, r, "Content-Type", "application/json")
		})
	}

	// A mount source is a name too.
	e.pushBlob("ok", blob)
	for _, from := range []string{"Upper", "a//b", "-a", "a/../b", strings.Repeat("a", 256)} {
		t.Run("mount from "+from, func(t *testing.T) {
			r := e.do(http.MethodPost, "/v2/ok/blobs/uploads/?mount="+string(d)+"&from="+url.QueryEscape(from), nil)
			wantError(t, r, http.StatusBadRequest, "NAME_INVALID")
		})
	}

	// Escapes of characters other than "/" are plain URL syntax.
	r := e.do(http.MethodGet, "/v2/%6Fk/blobs/"+string(d), nil)
	wantStatus(t, r, http.StatusOK)
	wantHeader(t, r, "Docker-Content-Digest", string(d))

	// The longest valid name is still accepted.
	longest := strings.Repeat("a", 255)
	wantError(t, e.do(http.MethodGet, "/v2/"+longest+"/tags/list", nil), http.StatusNotFound, "NAME_UNKNOWN")

	// Nothing but "ok" was created.
	r = e.do(http.MethodGet, "/v2/_catalog", nil)
	wantStatus(t, r, http.StatusOK)
	if got := string(r.Body); got != `{"repositories":["ok"]}` {
		t.Errorf("catalog = %s, want only ok", got)
	}
	e.wantEmptyDir("tmp")
	e.wantEmptyDir("uploads")
}

// TestUnknownResources checks the 404 answer and code for each kind of
// thing a registry may not have.
func TestUnknownResources(t *testing.T) {
	t.Parallel()
	e := newEnv(t, distribution.Options{})
	const repo = "known/repo"
	e.pushImage(repo, "latest", "unknown-resources")
	missing := digest.FromBytes([]byte("nobody pushed this"))
	const id = "0123456789abcdef0123456789abcdef"

	cases := []struct {
		method, path string
		body         []byte
		status       int
		code         string
	}{
		{http.MethodGet, "/v2/" + repo + "/blobs/" + string(missing), nil, 404, "BLOB_UNKNOWN"},
		{http.MethodGet, "/v2/no/such/repo/blobs/" + string(missing), nil, 404, "BLOB_UNKNOWN"},
		{http.MethodDelete, "/v2/" + repo + "/blobs/" + string(missing), nil, 404, "BLOB_UNKNOWN"},
		{http.MethodGet, "/v2/" + repo + "/manifests/nosuchtag", nil, 404, "MANIFEST_UNKNOWN"},
		{http.MethodGet, "/v2/" + repo + "/manifests/" + string(missing), nil, 404, "MANIFEST_UNKNOWN"},
		{http.MethodDelete, "/v2/" + repo + "/manifests/nosuchtag", nil, 404, "MANIFEST_UNKNOWN"},
		{http.MethodDelete, "/v2/" + repo + "/manifests/" + string(missing), nil, 404, "MANIFEST_UNKNOWN"},
		{http.MethodDelete, "/v2/no/such/repo/manifests/" + string(missing), nil, 404, "NAME_UNKNOWN"},
		{http.MethodDelete, "/v2/no/such/repo/manifests/latest", nil, 404, "NAME_UNKNOWN"},
		{http.MethodGet, "/v2/no/such/repo/manifests/latest", nil, 404, "NAME_UNKNOWN"},
		{http.MethodGet, "/v2/" + repo + "/blobs/uploads/" + id, nil, 404, "BLOB_UPLOAD_UNKNOWN"},
		{http.MethodPatch, "/v2/" + repo + "/blobs/uploads/" + id, []byte("chunk"), 404, "BLOB_UPLOAD_UNKNOWN"},
		{http.MethodPut, "/v2/" + repo + "/blobs/uploads/" + id + "?digest=" + string(missing), nil, 404, "BLOB_UPLOAD_UNKNOWN"},
		{http.MethodDelete, "/v2/" + repo + "/blobs/uploads/" + id, nil, 404, "BLOB_UPLOAD_UNKNOWN"},
		{http.MethodGet, "/v2/" + repo + "/blobs/uploads/not-an-id", nil, 404, "BLOB_UPLOAD_UNKNOWN"},
		{http.MethodPatch, "/v2/" + repo + "/blobs/uploads/..", []byte("chunk"), 404, "BLOB_UPLOAD_UNKNOWN"},
		{http.MethodGet, "/v2/no/such/repo/tags/list", nil, 404, "NAME_UNKNOWN"},
	}
	for _, c := range cases {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			wantError(t, e.do(c.method, c.path, c.body), c.status, c.code)
		})
	}
	for _, path := range []string{
		"/v2/" + repo + "/blobs/" + string(missing),
		"/v2/" + repo + "/manifests/nosuchtag",
		"/v2/" + repo + "/manifests/" + string(missing),
	} {
		t.Run("HEAD "+path, func(t *testing.T) {
			r := e.do(http.MethodHead, path, nil)
			wantStatus(t, r, http.StatusNotFound)
			wantHeader(t, r, "Content-Type", "application/json")
			if len(r.Body) != 0 {
				t.Errorf("HEAD answered with a body: %q", r.Body)
			}
		})
	}
	e.wantEmptyDir("uploads")
}

// TestUploadThroughOtherRepository checks that an upload session can only
// be reached through the repository it was opened in.
func TestUploadThroughOtherRepository(t *testing.T) {
	t.Parallel()
	e := newEnv(t, distribution.Options{})
	data := content("cross-repo session", 1000)
	d := digest.FromBytes(data)
	loc := e.startUpload("owner")
	patch(t, e, loc, data[:400], 0)
	e.pushBlob("intruder", []byte("make the other repository exist"))

	other := strings.Replace(loc, "/v2/owner/", "/v2/intruder/", 1)
	if other == loc {
		t.Fatalf("Location %q does not name the repository", loc)
	}
	for _, c := range []struct {
		method, path string
		body         []byte
	}{
		{http.MethodGet, other, nil},
		{http.MethodPatch, other, data[400:]},
		{http.MethodPut, withQuery(other, "digest", string(d)), data[400:]},
		{http.MethodDelete, other, nil},
		{http.MethodGet, strings.Replace(loc, "/v2/owner/", "/v2/nonexistent/", 1), nil},
	} {
		wantError(t, e.do(c.method, c.path, c.body), http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")
	}
	e.wantBlobAbsent("intruder", d)

	// The owner's session is untouched and completes.
	r := e.do(http.MethodGet, loc, nil)
	wantStatus(t, r, http.StatusNoContent)
	wantHeader(t, r, "Range", "0-399")
	r = e.do(http.MethodPut, withQuery(loc, "digest", string(d)), data[400:])
	wantStatus(t, r, http.StatusCreated)
	if got := e.blobContent("owner", d); string(got) != string(data) {
		t.Error("completed blob differs from what was sent")
	}
	e.wantBlobAbsent("intruder", d)
}

// TestManifestBlobUnknown pushes manifests whose references are missing from
// the repository and checks they are refused with the missing digest named,
// leaving neither tag nor manifest behind.
func TestManifestBlobUnknown(t *testing.T) {
	t.Parallel()
	cfg := []byte(`{"architecture":"arm64","os":"linux"}`)
	layer := content("layer for missing tests", 700)
	cfgDesc := descriptor(ocispec.MediaTypeImageConfig, cfg)
	layerDesc := descriptor(ocispec.MediaTypeImageLayer, layer)

	cases := []struct {
		name      string
		setup     func(e *env, repo string)
		mediaType string
		body      func(t *testing.T, e *env) []byte
		missing   digest.Digest
	}{
		{"config missing", func(e *env, repo string) { e.pushBlob(repo, layer) },
			ocispec.MediaTypeImageManifest,
			func(t *testing.T, e *env) []byte { return imageManifest(t, cfgDesc, nil, "", layerDesc) },
			cfgDesc.Digest},
		{"layer missing", func(e *env, repo string) { e.pushBlob(repo, cfg) },
			ocispec.MediaTypeImageManifest,
			func(t *testing.T, e *env) []byte { return imageManifest(t, cfgDesc, nil, "", layerDesc) },
			layerDesc.Digest},
		{"layer only in another repository", func(e *env, repo string) {
			e.pushBlob(repo, cfg)
			e.pushBlob("elsewhere", layer)
		},
			ocispec.MediaTypeImageManifest,
			func(t *testing.T, e *env) []byte { return imageManifest(t, cfgDesc, nil, "", layerDesc) },
			layerDesc.Digest},
		{"repository does not exist", func(e *env, repo string) {},
			ocispec.MediaTypeImageManifest,
			func(t *testing.T, e *env) []byte { return imageManifest(t, cfgDesc, nil, "") },
			cfgDesc.Digest},
		{"index child missing", func(e *env, repo string) { e.pushImage(repo, "child", "present child") },
			ocispec.MediaTypeImageIndex,
			func(t *testing.T, e *env) []byte {
				present := e.do(http.MethodGet, "/v2/missing/refs/manifests/child", nil)
				wantStatus(t, present, http.StatusOK)
				return imageIndex(t,
					descriptor(ocispec.MediaTypeImageManifest, present.Body),
					descriptor(ocispec.MediaTypeImageManifest, []byte(`{"absent":"child"}`)))
			},
			digest.FromBytes([]byte(`{"absent":"child"}`))},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, distribution.Options{})
			const repo = "missing/refs"
			c.setup(e, repo)
			body := c.body(t, e)
			md := digest.FromBytes(body)
			for _, ref := range []string{"broken", string(md)} {
				r := e.do(http.MethodPut, "/v2/"+repo+"/manifests/"+ref, body, "Content-Type", c.mediaType)
				ent := wantError(t, r, http.StatusBadRequest, "MANIFEST_BLOB_UNKNOWN")
				if got := ent.Detail["digest"]; got != string(c.missing) {
					t.Errorf("PUT by %s: detail digest = %v, want %s", ref, got, c.missing)
				}
			}
			wantError(t, e.do(http.MethodGet, "/v2/"+repo+"/manifests/broken", nil), http.StatusNotFound, notFoundCode(e, repo))
			wantError(t, e.do(http.MethodGet, "/v2/"+repo+"/manifests/"+string(md), nil), http.StatusNotFound, notFoundCode(e, repo))
			if tags := e.tags(repo); contains(tags, "broken") {
				t.Errorf("tags = %v, the refused tag exists", tags)
			}
			e.wantNoBlobFile(md)
			e.wantEmptyDir("tmp")
		})
	}
}

// notFoundCode is the code for a missing manifest: MANIFEST_UNKNOWN in an
// existing repository, NAME_UNKNOWN otherwise.
func notFoundCode(e *env, repo string) string {
	if e.do(http.MethodGet, "/v2/"+repo+"/tags/list", nil).Status == http.StatusNotFound {
		return "NAME_UNKNOWN"
	}
	return "MANIFEST_UNKNOWN"
}

// tags lists all tags of repo, or nil when the repository does not exist.
func (e *env) tags(repo string) []string {
	e.t.Helper()
	r := e.do(http.MethodGet, "/v2/"+repo+"/tags/list", nil)
	if r.Status == http.StatusNotFound {
		return nil
	}
	wantStatus(e.t, r, http.StatusOK)
	var list struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	decode(e.t, r.Body, &list)
	if list.Name != repo {
		e.t.Errorf("tags/list name = %q, want %q", list.Name, repo)
	}
	return list.Tags
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// TestManifestTooLarge checks the manifest size limit, declared or streamed,
// and that a manifest of exactly the limit is accepted.
func TestManifestTooLarge(t *testing.T) {
	t.Parallel()
	const limit = 1024
	e := newEnv(t, distribution.Options{MaxManifestBytes: limit})
	const repo = "big"
	cfg := []byte(`{"size":"limit"}`)
	e.pushBlob(repo, cfg)
	sized := func(n int) []byte {
		m := ocispec.Manifest{
			MediaType:   ocispec.MediaTypeImageManifest,
			Config:      descriptor(ocispec.MediaTypeImageConfig, cfg),
			Layers:      []ocispec.Descriptor{},
			Annotations: map[string]string{"pad": ""},
		}
		m.SchemaVersion = 2
		base := len(mustJSON(t, m))
		m.Annotations["pad"] = strings.Repeat("x", n-base)
		b := mustJSON(t, m)
		if len(b) != n {
			t.Fatalf("built a %d-byte manifest, want %d", len(b), n)
		}
		return b
	}
	over := sized(limit + 1)
	huge := sized(64 << 10)
	for _, c := range []struct {
		name string
		send func() *response
	}{
		{"one byte over", func() *response {
			return e.do(http.MethodPut, "/v2/"+repo+"/manifests/over", over, "Content-Type", ocispec.MediaTypeImageManifest)
		}},
		{"far over", func() *response {
			return e.do(http.MethodPut, "/v2/"+repo+"/manifests/over", huge, "Content-Type", ocispec.MediaTypeImageManifest)
		}},
		{"streamed", func() *response {
			return e.doReader(http.MethodPut, "/v2/"+repo+"/manifests/over", hideLength(over), "Content-Type", ocispec.MediaTypeImageManifest)
		}},
		{"by digest", func() *response {
			return e.do(http.MethodPut, "/v2/"+repo+"/manifests/"+string(digest.FromBytes(over)), over, "Content-Type", ocispec.MediaTypeImageManifest)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ent := wantError(t, c.send(), http.StatusRequestEntityTooLarge, "SIZE_INVALID")
			if got := ent.Detail["limit"]; got != float64(limit) {
				t.Errorf("detail limit = %v, want %d", got, limit)
			}
		})
	}
	wantError(t, e.do(http.MethodGet, "/v2/"+repo+"/manifests/over", nil), http.StatusNotFound, "MANIFEST_UNKNOWN")
	e.wantNoBlobFile(digest.FromBytes(over), digest.FromBytes(huge))

	exact := sized(limit)
	e.pushManifest(repo, "exact", ocispec.MediaTypeImageManifest, exact)
	e.wantEmptyDir("tmp")
}

// TestManifestInvalid pushes malformed manifests and checks each is refused
// as MANIFEST_INVALID and stored nowhere.
func TestManifestInvalid(t *testing.T) {
	t.Parallel()
	e := newEnv(t, distribution.Options{})
	const repo = "invalid/manifests"
	cfg := []byte(`{"architecture":"amd64"}`)
	e.pushBlob(repo, cfg)
	cfgDesc := descriptor(ocispec.MediaTypeImageConfig, cfg)
	good := imageManifest(t, cfgDesc, nil, "")
	const oci = ocispec.MediaTypeImageManifest
	dockerManifest := "application/vnd.docker.distribution.manifest.v2+json"

	withData := cfgDesc
	withData.Data = []byte(`{"architecture":"arm64"}`)
	withData.Size = int64(len(withData.Data))
	wrongSize := cfgDesc
	wrongSize.Data = cfg
	wrongSize.Size = int64(len(cfg)) + 1
	badDigest := cfgDesc
	badDigest.Digest = "sha256:xyz"
	badLayer := descriptor(ocispec.MediaTypeImageLayer, []byte("layer"))
	badLayer.Digest = "md5:d41d8cd98f00b204e9800998ecf8427e"
	negative := cfgDesc
	negative.Size = -1
	badType := cfgDesc
	badType.MediaType = "not a media type"

	cases := []struct {
		name, contentType string
		body              []byte
	}{
		{"not JSON", oci, []byte("this is not json")},
		{"empty body", oci, []byte{}},
		{"JSON array", oci, []byte(`[1,2,3]`)},
		{"trailing garbage", oci, append(append([]byte{}, good...), "garbage"...)},
		{"second document", oci, append(append([]byte{}, good...), "{}"...)},
		{"schemaVersion 1", oci, []byte(strings.Replace(string(good), `"schemaVersion":2`, `"schemaVersion":1`, 1))},
		{"schemaVersion missing", oci, []byte(strings.Replace(string(good), `"schemaVersion":2,`, ``, 1))},
		{"schemaVersion string", oci, []byte(strings.Replace(string(good), `"schemaVersion":2`, `"schemaVersion":"2"`, 1))},
		{"Content-Type differs from mediaType", ocispec.MediaTypeImageIndex, good},
		{"Docker Content-Type for OCI body", dockerManifest, good},
		{"unsupported media type", "application/vnd.example.thing+json",
			[]byte(strings.Replace(string(good), oci, "application/vnd.example.thing+json", 1))},
		{"no media type anywhere", "", []byte(strings.Replace(string(good), `"mediaType":"`+oci+`",`, ``, 1))},
		{"malformed Content-Type", "application/;;", good},
		{"missing config", oci, mustJSON(t, map[string]any{"schemaVersion": 2, "mediaType": oci, "layers": []any{}})},
		{"invalid config digest", oci, imageManifest(t, badDigest, nil, "")},
		{"invalid layer digest", oci, imageManifest(t, cfgDesc, nil, "", badLayer)},
		{"data does not match digest", oci, imageManifest(t, withData, nil, "")},
		{"data does not match size", oci, imageManifest(t, wrongSize, nil, "")},
		{"negative size", oci, imageManifest(t, negative, nil, "")},
		{"descriptor media type invalid", oci, imageManifest(t, badType, nil, "")},
		{"invalid artifactType", oci, imageManifest(t, cfgDesc, nil, "not/a/type")},
		{"invalid subject", oci, imageManifest(t, cfgDesc, &badDigest, "")},
		{"image manifest with manifests", oci, mustJSON(t, map[string]any{"schemaVersion": 2, "mediaType": oci, "config": cfgDesc, "manifests": []any{}})},
		{"index with config", ocispec.MediaTypeImageIndex, mustJSON(t, map[string]any{"schemaVersion": 2, "mediaType": ocispec.MediaTypeImageIndex, "config": cfgDesc, "manifests": []any{}})},
		{"index without manifests", ocispec.MediaTypeImageIndex, mustJSON(t, map[string]any{"schemaVersion": 2, "mediaType": ocispec.MediaTypeImageIndex})},
		{"Docker manifest without layers", dockerManifest, mustJSON(t, map[string]any{"schemaVersion": 2, "mediaType": dockerManifest, "config": cfgDesc})},
		{"Docker manifest with subject", dockerManifest, mustJSON(t, map[string]any{"schemaVersion": 2, "mediaType": dockerManifest, "config": cfgDesc, "layers": []any{}, "subject": cfgDesc})},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			hdr := []string{}
			if c.contentType != "" {
				hdr = append(hdr, "Content-Type", c.contentType)
			}
			for _, ref := range []string{"bad", string(digest.FromBytes(c.body))} {
				wantError(t, e.do(http.MethodPut, "/v2/"+repo+"/manifests/"+ref, c.body, hdr...), http.StatusBadRequest, "MANIFEST_INVALID")
			}
			wantError(t, e.do(http.MethodGet, "/v2/"+repo+"/manifests/"+string(digest.FromBytes(c.body)), nil), http.StatusNotFound, "MANIFEST_UNKNOWN")
			e.wantNoBlobFile(digest.FromBytes(c.body))
		})
	}

	t.Run("invalid tags", func(t *testing.T) {
		for _, path := range []string{
			"/v2/" + repo + "/manifests/-bad",
			"/v2/" + repo + "/manifests/" + strings.Repeat("t", 129),
			"/v2/" + repo + "/manifests/" + string(digest.FromBytes(good)) + "?tag=-bad",
			"/v2/" + repo + "/manifests/" + string(digest.FromBytes(good)) + "?tag=ok&tag=b%2Fad",
		} {
			wantError(t, e.do(http.MethodPut, path, good, "Content-Type", oci), http.StatusBadRequest, "MANIFEST_INVALID")
		}
		wantError(t, e.do(http.MethodGet, "/v2/"+repo+"/manifests/"+string(digest.FromBytes(good)), nil), http.StatusNotFound, "MANIFEST_UNKNOWN")
	})

	if tags := e.tags(repo); len(tags) != 0 {
		t.Errorf("tags = %v, want none", tags)
	}
	e.wantEmptyDir("tmp")
}

// TestManifestDigestMismatch pushes a manifest by a digest its body does not
// hash to.
func TestManifestDigestMismatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t, distribution.Options{})
	const repo = "mismatch"
	cfg := []byte(`{"mismatch":true}`)
	e.pushBlob(repo, cfg)
	body := imageManifest(t, descriptor(ocispec.MediaTypeImageConfig, cfg), nil, "")
	claimed := digest.FromBytes(append(append([]byte{}, body...), ' '))
	sha512 := digest.SHA512.FromBytes([]byte("other"))

	for _, d := range []digest.Digest{claimed, sha512} {
		r := e.do(http.MethodPut, "/v2/"+repo+"/manifests/"+string(d)+"?tag=mis", body, "Content-Type", ocispec.MediaTypeImageManifest)
		ent := wantError(t, r, http.StatusBadRequest, "DIGEST_INVALID")
		if got := ent.Detail["digest"]; got != string(d) {
			t.Errorf("detail digest = %v, want %s", got, d)
		}
		wantError(t, e.do(http.MethodGet, "/v2/"+repo+"/manifests/"+string(d), nil), http.StatusNotFound, "MANIFEST_UNKNOWN")
	}
	wantError(t, e.do(http.MethodGet, "/v2/"+repo+"/manifests/"+string(digest.FromBytes(body)), nil), http.StatusNotFound, "MANIFEST_UNKNOWN")
	wantError(t, e.do(http.MethodGet, "/v2/"+repo+"/manifests/mis", nil), http.StatusNotFound, "MANIFEST_UNKNOWN")
	e.wantNoBlobFile(claimed, digest.FromBytes(body))
	e.wantEmptyDir("tmp")

	// The same body under its own sha512 digest is fine.
	d512 := digest.SHA512.FromBytes(body)
	r := e.do(http.MethodPut, "/v2/"+repo+"/manifests/"+string(d512), body, "Content-Type", ocispec.MediaTypeImageManifest)
	wantStatus(t, r, http.StatusCreated)
	wantHeader(t, r, "Docker-Content-Digest", string(d512))
}

// TestContentRange covers Content-Range on PATCH and PUT: malformed values,
// chunks out of order (which the client can resume from), and lengths that
// disagree with Content-Length or with the body.
func TestContentRange(t *testing.T) {
	t.Parallel()
	data := content("content range", 3000)
	d := digest.FromBytes(data)
	const octet = "application/octet-stream"

	t.Run("malformed", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, distribution.Options{})
		loc := e.startUpload("cr")
		patch(t, e, loc, data[:1000], 0)
		for _, cr := range []string{"abc", "1000-", "-1999", "1999-1000", "bytes=1000-1999", "1000-1999-2000", "1000:1999", "-1-5"} {
			for _, method := range []string{http.MethodPatch, http.MethodPut} {
				path := loc
				if method == http.MethodPut {
					path = withQuery(loc, "digest", string(d))
				}
				r := e.do(method, path, data[1000:2000], "Content-Type", octet, "Content-Range", cr)
				ent := wantError(t, r, http.StatusRequestedRangeNotSatisfiable, "BLOB_UPLOAD_INVALID")
				if ent.Detail["Content-Range"] != cr {
					t.Errorf("%s Content-Range %q: detail %v", method, cr, ent.Detail)
				}
				wantHeader(t, r, "Location", loc)
				wantHeader(t, r, "Range", "0-999")
			}
		}
		// "bytes " prefixed ranges are understood.
		r := e.do(http.MethodPatch, loc, data[1000:2000], "Content-Type", octet, "Content-Range", "bytes 1000-1999/3000")
		wantStatus(t, r, http.StatusAccepted)
		wantHeader(t, r, "Range", "0-1999")
		wantStatus(t, e.do(http.MethodPut, withQuery(loc, "digest", string(d)), data[2000:], "Content-Range", "2000-2999"), http.StatusCreated)
		if got := e.blobContent("cr", d); string(got) != string(data) {
			t.Error("blob content differs")
		}
	})

	t.Run("out of order", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, distribution.Options{})
		loc := e.startUpload("cr")
		patch(t, e, loc, data[:1000], 0)
		for _, start := range []int{2000, 500, 0, 1001} {
			r := e.do(http.MethodPatch, loc, data[start:start+500], "Content-Type", octet,
				"Content-Range", fmt.Sprintf("%d-%d", start, start+499))
			ent := wantError(t, r, http.StatusRequestedRangeNotSatisfiable, "BLOB_UPLOAD_INVALID")
			if ent.Detail["offset"] != float64(1000) {
				t.Errorf("chunk at %d: detail %v, want offset 1000", start, ent.Detail)
			}
			wantHeader(t, r, "Location", loc)
			wantHeader(t, r, "Range", "0-999")
		}
		// A last chunk out of order on PUT is refused the same way and
		// does not end the session.
		r := e.do(http.MethodPut, withQuery(loc, "digest", string(d)), data[2000:], "Content-Range", "2000-2999")
		wantError(t, r, http.StatusRequestedRangeNotSatisfiable, "BLOB_UPLOAD_INVALID")
		wantHeader(t, r, "Range", "0-999")

		// The client resumes from the Range it was given.
		next := r.Header.Get("Location")
		patch(t, e, next, data[1000:2000], 1000)
		st := e.do(http.MethodGet, next, nil)
		wantStatus(t, st, http.StatusNoContent)
		wantHeader(t, st, "Range", "0-1999")
		wantStatus(t, e.do(http.MethodPut, withQuery(next, "digest", string(d)), data[2000:], "Content-Range", "2000-2999"), http.StatusCreated)
		if got := e.blobContent("cr", d); string(got) != string(data) {
			t.Error("blob content differs after resuming")
		}
		e.wantEmptyDir("uploads")
	})

	t.Run("length disagrees with Content-Length", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, distribution.Options{})
		loc := e.startUpload("cr")
		patch(t, e, loc, data[:1000], 0)
		for _, method := range []string{http.MethodPatch, http.MethodPut} {
			path := loc
			if method == http.MethodPut {
				path = withQuery(loc, "digest", string(d))
			}
			// Content-Range claims 1000 bytes, Content-Length says 500 or
			// 1500: refused before any byte is read.
			for _, body := range [][]byte{data[1000:1500], data[1000:2500]} {
				r := e.do(method, path, body, "Content-Type", octet, "Content-Range", "1000-1999")
				ent := wantError(t, r, http.StatusBadRequest, "SIZE_INVALID")
				if ent.Detail["Content-Range"] != "1000-1999" {
					t.Errorf("%s with %d bytes: detail %v", method, len(body), ent.Detail)
				}
				wantHeader(t, r, "Range", "0-999")
			}
		}
		e.wantUploadSize(loc, 1000)
		wantStatus(t, e.do(http.MethodPut, withQuery(loc, "digest", string(d)), data[1000:], "Content-Range", "1000-2999"), http.StatusCreated)
	})

	t.Run("length disagrees with streamed body", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, distribution.Options{})
		loc := e.startUpload("cr")
		patch(t, e, loc, data[:1000], 0)
		for _, c := range []struct {
			method string
			body   []byte
			cr     string
		}{
			{http.MethodPatch, data[1000:1500], "1000-1999"}, // short
			{http.MethodPatch, data[1000:2500], "1000-1999"}, // long
			{http.MethodPut, data[1000:2000], "1000-2999"},
		} {
			path := loc
			if c.method == http.MethodPut {
				path = withQuery(loc, "digest", string(d))
			}
			r := e.doReader(c.method, path, hideLength(c.body), "Content-Type", octet, "Content-Range", c.cr)
			wantError(t, r, http.StatusBadRequest, "SIZE_INVALID")
			wantHeader(t, r, "Range", "0-999")
			// The chunk was rolled back.
			e.wantUploadSize(loc, 1000)
		}
		wantStatus(t, e.do(http.MethodPut, withQuery(loc, "digest", string(d)), data[1000:], "Content-Range", "1000-2999"), http.StatusCreated)
		if got := e.blobContent("cr", d); string(got) != string(data) {
			t.Error("blob content differs after rollbacks")
		}
	})
}

// wantUploadSize checks that a session stands at offset, both as the
// server reports it and as the file on disk.
func (e *env) wantUploadSize(loc string, offset int64) {
	e.t.Helper()
	r := e.do(http.MethodGet, loc, nil)
	wantStatus(e.t, r, http.StatusNoContent)
	wantHeader(e.t, r, "Range", fmt.Sprintf("0-%d", offset-1))
	fi, err := os.Stat(filepath.Join(e.dir, "uploads", uploadID(loc)))
	if err != nil {
		e.t.Fatalf("upload file: %v", err)
	}
	if fi.Size() != offset {
		e.t.Errorf("upload file holds %d bytes, want %d", fi.Size(), offset)
	}
}

// TestShortBody sends bodies shorter than their Content-Length over a raw
// connection, as a client that dies midway would, and checks that nothing
// is stored and that an interrupted chunk leaves its session resumable.
func TestShortBody(t *testing.T) {
	t.Parallel()
	data := content("short body", 2000)
	d := digest.FromBytes(data)
	head := func(method, path string, declared int, contentType string) string {
		return fmt.Sprintf("%s %s HTTP/1.1\r\nHost: berth.test\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n",
			method, path, contentType, declared)
	}

	t.Run("monolithic POST", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, distribution.Options{})
		r := e.rawRequest(head(http.MethodPost, "/v2/short/blobs/uploads/?digest="+string(d), len(data), "application/octet-stream"), data[:700])
		wantError(t, r, http.StatusBadRequest, "SIZE_INVALID")
		e.wantBlobAbsent("short", d)
		e.wantNoBlobFile(d, digest.FromBytes(data[:700]))
		e.wantEmptyDir("tmp")
		if tags := e.tags("short"); tags != nil {
			t.Errorf("repository short exists with tags %v", tags)
		}
	})

	t.Run("PATCH and PUT", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, distribution.Options{})
		loc := e.startUpload("short")
		patch(t, e, loc, data[:500], 0)
		r := e.rawRequest(head(http.MethodPatch, loc, 1000, "application/octet-stream"), data[500:900])
		wantError(t, r, http.StatusBadRequest, "SIZE_INVALID")
		e.wantUploadSize(loc, 500)
		r = e.rawRequest(head(http.MethodPut, withQuery(loc, "digest", string(d)), 1500, "application/octet-stream"), data[500:1999])
		wantError(t, r, http.StatusBadRequest, "SIZE_INVALID")
		e.wantUploadSize(loc, 500)
		e.wantBlobAbsent("short", d)
		e.wantNoBlobFile(d)

		// The session resumes from where it stood.
		patch(t, e, loc, data[500:1500], 500)
		wantStatus(t, e.do(http.MethodPut, withQuery(loc, "digest", string(d)), data[1500:]), http.StatusCreated)
		if got := e.blobContent("short", d); string(got) != string(data) {
			t.Error("blob content differs")
		}
		e.wantEmptyDir("tmp")
		e.wantEmptyDir("uploads")
	})

	t.Run("manifest PUT", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, distribution.Options{})
		cfg := []byte(`{"short":"manifest"}`)
		e.pushBlob("short", cfg)
		body := imageManifest(t, descriptor(ocispec.MediaTypeImageConfig, cfg), nil, "")
		r := e.rawRequest(head(http.MethodPut, "/v2/short/manifests/v1", len(body), ocispec.MediaTypeImageManifest), body[:len(body)-10])
		wantStatus(t, r, http.StatusBadRequest)
		if _, err := parseError(r); err != nil {
			t.Error(err)
		}
		wantError(t, e.do(http.MethodGet, "/v2/short/manifests/v1", nil), http.StatusNotFound, "MANIFEST_UNKNOWN")
		e.wantNoBlobFile(digest.FromBytes(body))
	})
}

// TestRangeGet covers Range requests on blobs.
func TestRangeGet(t *testing.T) {
	t.Parallel()
	e := newEnv(t, distribution.Options{})
	data := content("range", 100)
	d := e.pushBlob("ranges", data)
	path := "/v2/ranges/blobs/" + string(d)

	for _, c := range []struct {
		rng, contentRange string
		want              []byte
	}{
		{"bytes=0-9", "bytes 0-9/100", data[:10]},
		{"bytes=-5", "bytes 95-99/100", data[95:]},
		{"bytes=90-", "bytes 90-99/100", data[90:]},
		{"bytes=95-5000", "bytes 95-99/100", data[95:]},
		{"bytes=-500", "bytes 0-99/100", data},
		{"bytes=99-99", "bytes 99-99/100", data[99:]},
	} {
		t.Run(c.rng, func(t *testing.T) {
			r := e.do(http.MethodGet, path, nil, "Range", c.rng)
			wantStatus(t, r, http.StatusPartialContent)
			wantHeader(t, r, "Content-Range", c.contentRange)
			wantHeader(t, r, "Content-Length", fmt.Sprint(len(c.want)))
			wantHeader(t, r, "Docker-Content-Digest", string(d))
			if string(r.Body) != string(c.want) {
				t.Errorf("body = %q, want %q", r.Body, c.want)
			}
		})
	}
	for _, rng := range []string{
		"bytes=5000-", "bytes=100-", "bytes=100-200", "bytes=-0",
		"bytes=abc", "bytes=5-2", "items=0-9", "bytes=-", "bytes=0-x", "0-9", "bytes=--5",
	} {
		t.Run(rng, func(t *testing.T) {
			r := e.do(http.MethodGet, path, nil, "Range", rng)
			wantStatus(t, r, http.StatusRequestedRangeNotSatisfiable)
			if _, err := parseError(r); err != nil {
				t.Error(err)
			}
			wantHeader(t, r, "Content-Range", "bytes */100")
		})
	}
	// Without Range the whole blob is served and ranges are advertised.
	r := e.do(http.MethodGet, path, nil)
	wantStatus(t, r, http.StatusOK)
	wantHeader(t, r, "Accept-Ranges", "bytes")
	if string(r.Body) != string(data) {
		t.Error("full body differs")
	}
}

// TestUnknownEndpointAndMethod checks the JSON answers for paths and
// methods the API does not serve.
func TestUnknownEndpointAndMethod(t *testing.T) {
	t.Parallel()
	e := newEnv(t, distribution.Options{})
	d := e.pushBlob("methods", []byte("methods"))
	for _, c := range []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/", http.StatusNotFound},
		{http.MethodGet, "/v1/", http.StatusNotFound},
		{http.MethodGet, "/v2", http.StatusNotFound},
		{http.MethodGet, "/v2/methods/unknown", http.StatusNotFound},
		{http.MethodGet, "/v2/methods/blobs/", http.StatusNotFound},
		{http.MethodGet, "/v2/methods/tags/list/extra", http.StatusNotFound},
		{http.MethodPost, "/v2/", http.StatusMethodNotAllowed},
		{http.MethodDelete, "/v2/_catalog", http.StatusMethodNotAllowed},
		{http.MethodDelete, "/v2/methods/tags/list", http.StatusMethodNotAllowed},
		{http.MethodPut, "/v2/methods/blobs/" + string(d), http.StatusMethodNotAllowed},
		{http.MethodPost, "/v2/methods/manifests/latest", http.StatusMethodNotAllowed},
		{http.MethodPatch, "/v2/methods/manifests/latest", http.StatusMethodNotAllowed},
		{http.MethodPut, "/v2/methods/blobs/uploads/", http.StatusMethodNotAllowed},
		{http.MethodPost, "/v2/methods/referrers/" + string(d), http.StatusMethodNotAllowed},
	} {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			wantError(t, e.do(c.method, c.path, nil), c.status, "UNSUPPORTED")
		})
	}
	// The blob is untouched by the refused PUT.
	if got := e.blobContent("methods", d); string(got) != "methods" {
		t.Errorf("blob = %q", got)
	}
}

// TestAPIVersionHeader checks Docker-Distribution-API-Version on a spread of
// answers, successful and not. (Every request the tests send checks it.)
func TestAPIVersionHeader(t *testing.T) {
	t.Parallel()
	e := newEnv(t, distribution.Options{})
	img := e.pushImage("version", "v1", "version header")
	loc := e.startUpload("version")
	for _, c := range []struct {
		method, path string
		hdr          []string
		status       int
	}{
		{http.MethodGet, "/v2/", nil, 200},
		{http.MethodGet, "/v2/_catalog", nil, 200},
		{http.MethodGet, "/v2/version/manifests/v1", nil, 200},
		{http.MethodHead, "/v2/version/manifests/" + string(img.Digest), nil, 200},
		{http.MethodHead, "/v2/version/manifests/v2", nil, 404},
		{http.MethodGet, "/v2/version/blobs/" + string(img.Layer.Digest), []string{"Range", "bytes=0-1"}, 206},
		{http.MethodGet, "/v2/version/blobs/" + string(img.Layer.Digest), []string{"Range", "bytes=9999-"}, 416},
		{http.MethodGet, loc, nil, 204},
		{http.MethodPatch, loc, []string{"Content-Range", "abc"}, 416},
		{http.MethodGet, "/v2/Version/tags/list", nil, 400},
		{http.MethodGet, "/nowhere", nil, 404},
		{http.MethodPost, "/v2/", nil, 405},
		{http.MethodDelete, loc, nil, 204},
	} {
		r, err := e.req(c.method, c.path, nil, c.hdr...)
		if err != nil {
			t.Errorf("%s %s: %v", c.method, c.path, err)
			continue
		}
		if r.Status != c.status {
			t.Errorf("%s %s: status %d, want %d", c.method, c.path, r.Status, c.status)
		}
	}
}
