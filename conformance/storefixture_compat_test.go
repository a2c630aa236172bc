package conformance_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/conformance/internal/berthtest"
)

// TestStoreFixture serves a store written by an earlier Berth: every
// answer must be what that Berth gave, the store must take writes, and
// fsck must find it consistent before and after.
func TestStoreFixture(t *testing.T) {
	var meta fxMeta
	var golden fxGolden
	readFixtureJSON(t, "fixture.json", &meta)
	readFixtureJSON(t, "golden.json", &golden)
	bin := berthtest.Build(t)

	pristine, _ := copyFixtureStore(t)
	checkFsckClean(t, "fsck of the fixture as written", fsckJSON(t, bin, 0, "--data", pristine, "--verify-content"))

	data, config := copyFixtureStore(t)
	srv := startFixtureServer(t, data, config)
	want := ageObservations(t, golden.Observations, meta.Identities, time.Now())
	got := newObserver(srv.URL, meta.Identities).observeAll(t, want)
	compareObservations(t, want, got)

	checkFixtureWrites(t, srv.URL, meta)
	srv.Stop()
	checkFsckClean(t, "fsck after the writes", fsckJSON(t, bin, 0, "--data", data, "--verify-content"))
}

// checkFsckClean fails unless fsck found nothing at all, not even a
// harmless problem or an orphan file.
func checkFsckClean(t *testing.T, what string, r fsckReport) {
	t.Helper()
	if r.Inconsistencies != 0 || len(r.Problems) != 0 || len(r.Orphans) != 0 || r.Manifests == 0 || r.Blobs == 0 {
		t.Fatalf("%s: %+v", what, r)
	}
}

// TestStoreFixtureAgeing checks the expectation of the fixture once its
// active robots have expired: listed expired, refused as the expired robot
// is, everything else unchanged.
func TestStoreFixtureAgeing(t *testing.T) {
	var meta fxMeta
	var golden fxGolden
	readFixtureJSON(t, "fixture.json", &meta)
	readFixtureJSON(t, "golden.json", &golden)
	later := time.Now().AddDate(2, 0, 0)
	aged := ageObservations(t, golden.Observations, meta.Identities, later)
	changed := 0
	for i, o := range aged {
		g := golden.Observations[i]
		robot := meta.Identities[o.As].Robot
		switch {
		case o.Path == "/_berth/admin/robots" && o.Status == http.StatusOK:
			var robots []fxRobotListing
			if err := json.Unmarshal(o.Body, &robots); err != nil || len(robots) == 0 {
				t.Fatalf("aged listing: %v %s", err, o.Body)
			}
			for _, r := range robots {
				if want := map[bool]string{true: "revoked", false: "expired"}[r.Revoked != nil]; r.Status != want {
					t.Errorf("aged listing: %s is %s, want %s", r.Name, r.Status, want)
				}
			}
			if o.Digest == g.Digest || o.Header["Content-Length"] == g.Header["Content-Length"] {
				t.Errorf("aged listing kept the golden digest or length")
			}
		case robot != "" && o.As != fixtureLapsed:
			if o.Status != http.StatusUnauthorized {
				t.Errorf("%s once its robot expired: status %d, want 401", o.fxRequest, o.Status)
			}
			if g.Status != o.Status {
				changed++
			}
		default:
			if d := diffObservation(g, o); d != "" {
				t.Errorf("%s changed with time:\n%s", g.fxRequest, d)
			}
		}
	}
	if changed == 0 {
		t.Errorf("no robot answer changed once the robots expired")
	}
}

// checkFixtureWrites writes to the fixture store as its users would: the
// open upload completes, a new manifest made of stored blobs is pushed
// and moves a tag, whose history grows by one, an immutable tag stays put
// and a manifest is deleted.
func checkFixtureWrites(t *testing.T, base string, meta fxMeta) {
	t.Helper()
	o := newObserver(base, meta.Identities)
	up := meta.Upload
	c := o.client(t, up.As)
	repo := strings.Split(strings.TrimPrefix(up.Path, "/v2/"), "/blobs/uploads/")[0]

	blob := fixtureResumeBlob()
	rest := blob[up.Offset:]
	resp, body := c.do(t, http.MethodPatch, up.Path, rest, "Content-Type", "application/octet-stream",
		"Content-Range", fmt.Sprintf("%d-%d", up.Offset, len(blob)-1))
	mustStatus(t, "resume the open upload", resp, body, http.StatusAccepted)
	if r := resp.Header.Get("Range"); r != fmt.Sprintf("0-%d", len(blob)-1) {
		t.Fatalf("resumed upload: Range %q, want 0-%d", r, len(blob)-1)
	}
	bd := digest.FromBytes(blob)
	loc := strings.TrimPrefix(resp.Header.Get("Location"), base)
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	resp, body = c.do(t, http.MethodPut, loc+sep+"digest="+url.QueryEscape(bd.String()), nil)
	mustStatus(t, "commit the resumed upload", resp, body, http.StatusCreated)
	resp, body = c.do(t, http.MethodGet, "/v2/"+repo+"/blobs/"+bd.String(), nil)
	mustStatus(t, "pull the resumed blob", resp, body, http.StatusOK)
	if !bytes.Equal(body, blob) {
		t.Fatalf("resumed blob: got %d bytes, not what was uploaded", len(body))
	}

	// A new image of blobs the fixture holds, and the resumed one, moves latest.
	config, layer := meta.Digests["apps/web config"], meta.Digests["apps/web base layer"]
	cfgSize, layerSize := blobSize(t, c, repo, config), blobSize(t, c, repo, layer)
	m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},`+
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%d},`+
		`{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%d}]}`,
		config, cfgSize, layer, layerSize, bd, len(blob))
	md := digest.FromBytes([]byte(m))
	before := tagHistory(t, c, repo, "latest")
	ct := []string{"Content-Type", "application/vnd.oci.image.manifest.v1+json"}
	resp, body = c.do(t, http.MethodPut, "/v2/"+repo+"/manifests/latest", []byte(m), ct...)
	mustStatus(t, "push a manifest of stored blobs", resp, body, http.StatusCreated)
	resp, body = c.do(t, http.MethodGet, "/v2/"+repo+"/manifests/latest", nil, "Accept", fixtureAccept)
	mustStatus(t, "pull the new manifest", resp, body, http.StatusOK)
	if got := resp.Header.Get("Docker-Content-Digest"); got != md.String() || string(body) != m {
		t.Fatalf("latest after the push: %s, want %s", got, md)
	}
	after := tagHistory(t, c, repo, "latest")
	if len(after) != len(before)+1 {
		t.Fatalf("history of latest: %d moves after a push, want %d", len(after), len(before)+1)
	}
	if n := after[0]; n.Seq <= before[0].Seq || n.Previous != before[0].Digest || n.Digest != md.String() || n.Action != "push" ||
		n.Actor.Name != meta.Identities[up.As].User {
		t.Fatalf("newest move of latest = %+v, want a push %s -> %s by %s after seq %d", n, before[0].Digest, md, up.As, before[0].Seq)
	}

	// Release tags stay immutable.
	resp, body = c.do(t, http.MethodPut, "/v2/"+repo+"/manifests/v1.0.0", []byte(m), ct...)
	mustStatus(t, "move an immutable tag", resp, body, http.StatusConflict)
	if !strings.Contains(string(body), "TAG_IMMUTABLE") {
		t.Fatalf("moving an immutable tag: %s", body)
	}

	// The manifest whose tag was deleted goes, and search forgets it.
	gone := meta.Digests["apps/web untagged"]
	search := "/v2/_berth/search?" + url.Values{"annotation": {"org.opencontainers.image.revision=" + meta.Digests["apps/web untagged revision"]}}.Encode()
	resp, body = c.do(t, http.MethodGet, search, nil)
	mustStatus(t, "search for the manifest to delete", resp, body, http.StatusOK)
	if !strings.Contains(string(body), gone) {
		t.Fatalf("search does not find %s before its deletion: %s", gone, body)
	}
	resp, body = c.do(t, http.MethodDelete, "/v2/"+repo+"/manifests/"+gone, nil)
	mustStatus(t, "delete a manifest", resp, body, http.StatusAccepted)
	resp, body = c.do(t, http.MethodGet, "/v2/"+repo+"/manifests/"+gone, nil, "Accept", fixtureAccept)
	mustStatus(t, "deleted manifest", resp, body, http.StatusNotFound)
	resp, body = c.do(t, http.MethodGet, search, nil)
	mustStatus(t, "search for the deleted manifest", resp, body, http.StatusOK)
	if string(body) != `{"results":[]}` {
		t.Fatalf("search finds the deleted manifest: %s", body)
	}
}

// blobSize is the size of a blob of repo, from a HEAD request.
func blobSize(t *testing.T, c *authClient, repo, d string) int64 {
	t.Helper()
	resp, body := c.do(t, http.MethodHead, "/v2/"+repo+"/blobs/"+d, nil)
	mustStatus(t, "stat "+d, resp, body, http.StatusOK)
	return resp.ContentLength
}

// fxGolden is golden.json.
type fxGolden struct {
	Observations []fxObservation `json:"observations"`
}

// ageObservations returns the golden observations as of now. Robots live
// at most a year, so the fixture's active robots expire: once one has, the
// listing must say so and its secret must be refused exactly as the
// fixture's expired robot's is. The listing is re-encoded even when
// nothing expired, so that every run checks the re-encoding is the
// server's, byte for byte.
func ageObservations(t *testing.T, obs []fxObservation, ids map[string]fxIdentity, now time.Time) []fxObservation {
	t.Helper()
	out := slices.Clone(obs)
	expired := map[string]bool{}
	for i, o := range out {
		if o.Method != http.MethodGet || o.Path != "/_berth/admin/robots" || o.Status != http.StatusOK {
			continue
		}
		var robots []fxRobotListing
		if err := json.Unmarshal(o.Body, &robots); err != nil {
			t.Fatalf("golden robot listing: %v", err)
		}
		for j, r := range robots {
			if r.Status == "active" && !now.Before(r.Expires) {
				robots[j].Status, expired[r.Name] = "expired", true
			}
		}
		var buf bytes.Buffer
		if err := json.NewEncoder(&buf).Encode(robots); err != nil {
			t.Fatal(err)
		}
		out[i] = withBody(o, buf.Bytes())
	}
	lapsed := map[fxRequest]fxObservation{}
	for _, o := range out {
		if o.As == fixtureLapsed {
			lapsed[o.fxRequest] = o
		}
	}
	for i, o := range out {
		if !expired[ids[o.As].Robot] {
			continue
		}
		r := o.fxRequest
		r.As = fixtureLapsed
		l, ok := lapsed[r]
		if !ok {
			t.Fatalf("robot %s has expired and the golden file has no answer of the expired robot to %s", ids[o.As].Robot, r)
		}
		l.As = o.As
		out[i] = l
	}
	return out
}

// withBody returns o answering body instead, its length and digest too.
func withBody(o fxObservation, body []byte) fxObservation {
	o.Length, o.Digest = len(body), digest.FromBytes(body).String()
	var c bytes.Buffer
	_ = json.Compact(&c, body)
	o.Body = c.Bytes()
	if _, ok := o.Header["Content-Length"]; ok {
		o.Header = maps.Clone(o.Header)
		o.Header["Content-Length"] = fmt.Sprint(len(body))
	}
	return o
}

// readFixtureJSON reads a JSON file of the fixture into v.
func readFixtureJSON(t *testing.T, name string, v any) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(fixtureRoot, name))
	if err != nil {
		t.Fatalf("read fixture: %v", err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("fixture %s: %v", name, err)
	}
}

// TestFixtureCursorNormalisation checks what the fixture's comparison
// loosens: only the cursor of search paths and Links, and that a page
// counts as following its Link only when it is the page the Link names.
func TestFixtureCursorNormalisation(t *testing.T) {
	for in, want := range map[string]string{
		"/v2/_berth/search?last=Zm9vYmFy-_&n=4":                     "/v2/_berth/search?last={cursor}&n=4",
		"/v2/_berth/search?last=apps%2Fweb%40sha256%3Aab&n=1&tag=x": "/v2/_berth/search?last={cursor}&n=1&tag=x",
		`</v2/_berth/search?last=Zm9v&n=4>; rel="next"`:             `</v2/_berth/search?last={cursor}&n=4>; rel="next"`,
		"/v2/_berth/search?n=4":                                     "/v2/_berth/search?n=4",
		"/v2/_catalog?last=apps%2Fapi&n=2":                          "/v2/_catalog?last=apps%2Fapi&n=2",
		`</v2/_catalog?last=apps%2Fapi&n=2>; rel="next"`:            `</v2/_catalog?last=apps%2Fapi&n=2>; rel="next"`,
		"/v2/apps/web/tags/list?last=latest&n=2":                    "/v2/apps/web/tags/list?last=latest&n=2",
		"/v2/apps/_berth/search?last=x":                             "/v2/apps/_berth/search?last=x",
	} {
		if got := normaliseCursor(in); got != want {
			t.Errorf("normaliseCursor(%q) = %q, want %q", in, got, want)
		}
	}
	page := func(as, path, link string) fxObservation {
		o := fxObservation{fxRequest: fxRequest{As: as, Method: http.MethodGet, Path: path}, Header: map[string]string{}}
		if link != "" {
			o.Header["Link"] = `<` + link + `>; rel="next"`
		}
		return o
	}
	script := []fxObservation{
		page("admin", "/v2/_catalog?n=2", "/v2/_catalog?last=b&n=2"),
		page("admin", "/v2/_catalog?last=b&n=2", ""),
		page("admin", "/v2/_berth/search?n=1", "/v2/_berth/search?last=c2VhbGVk&n=1"),
		page("admin", "/v2/_berth/search?last={cursor}&n=1", "/v2/_berth/search?last=b3RoZXI&n=1"),
		page("alice", "/v2/_berth/search?last={cursor}&n=1", ""),
		page("alice", "/v2/_catalog?last=c&n=2", ""),
	}
	for i, want := range []bool{false, true, false, true, false, false} {
		if got := followsLink(script, i); got != want {
			t.Errorf("followsLink(%s) = %t, want %t", script[i].fxRequest, got, want)
		}
	}
}
