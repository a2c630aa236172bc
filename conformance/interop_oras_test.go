package conformance_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// orasDescriptor is the JSON oras prints with --format json for push,
// attach and discover.
type orasDescriptor struct {
	Reference    string            `json:"reference"`
	MediaType    string            `json:"mediaType"`
	Digest       digest.Digest     `json:"digest"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType"`
	Annotations  map[string]string `json:"annotations"`
	Referrers    []orasDescriptor  `json:"referrers"`
}

// TestORASCLIArtifact drives the oras binary: it pushes files as an OCI 1.1
// artifact with an artifact type and annotations, pulls them back byte for
// byte, fetches the manifest, attaches an SBOM and discovers it through the
// referrers API.
//
// In authenticated mode oras logs in with oras login, which keeps the
// credentials in $DOCKER_CONFIG/config.json, and an oras that has not
// logged in must fail to push.
func TestORASCLIArtifact(t *testing.T) {
	t.Parallel()
	forEachMode(t, testORASCLIArtifact)
}

func testORASCLIArtifact(t *testing.T, srv *registryUnderTest) {
	env := clientEnv(t)
	work := t.TempDir()
	oras := func(args ...string) string {
		t.Helper()
		return runClientIn(t, work, env, "oras", append(args, "--plain-http")...)
	}
	srv.login(t, work, env, "oras", "login", "--plain-http", "-u", srv.user, "--password-stdin", srv.Addr)

	const (
		artifactType = "application/vnd.berth.test+type"
		sbomType     = "application/spdx+json"
	)
	files := map[string][]byte{
		"notes.txt":    []byte("berth interop notes\n"),
		"one.bin":      randomBytes(t, 1),
		"data.bin":     randomBytes(t, 1<<20+17),
		"config.yaml":  []byte("key: value\nlist: [1, 2, 3]\n"),
		"payload.json": []byte(`{"hello":"world"}`),
	}
	writeFiles(t, work, files)
	names := slices.Sorted(maps.Keys(files))

	ref := srv.Addr + "/oras/cli:v1"
	pushArgs := append([]string{"push", "--format", "json", "--artifact-type", artifactType,
		"--annotation", "key=value", "--annotation", "org.example.team=berth", ref}, names...)
	srv.expectRefused(t, "oras push", execClient(t, work, clientEnv(t), "oras",
		"push", "--plain-http", srv.Addr+"/oras/refused:v1", names[0]))
	pushed := decodeORAS(t, oras(pushArgs...))
	if pushed.ArtifactType != artifactType || pushed.MediaType != ocispec.MediaTypeImageManifest || pushed.Digest == "" {
		t.Errorf("oras push reported %+v, want an image manifest of artifact type %s", pushed, artifactType)
	}

	// Pull into another directory: the same files, byte for byte.
	out := t.TempDir()
	oras("pull", "-o", out, ref)
	compareFiles(t, out, files)

	// The manifest carries the artifact type, annotations and one titled
	// layer per file.
	raw := oras("manifest", "fetch", ref)
	if got := digest.FromString(raw); got != pushed.Digest {
		t.Errorf("fetched manifest hashes to %s, oras push reported %s", got, pushed.Digest)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		t.Fatalf("decode fetched manifest: %v\n%s", err, raw)
	}
	if m.ArtifactType != artifactType {
		t.Errorf("manifest artifactType = %q, want %q", m.ArtifactType, artifactType)
	}
	if m.Annotations["key"] != "value" || m.Annotations["org.example.team"] != "berth" {
		t.Errorf("manifest annotations = %v, want key=value and org.example.team=berth", m.Annotations)
	}
	var titles []string
	for _, l := range m.Layers {
		title := l.Annotations[ocispec.AnnotationTitle]
		titles = append(titles, title)
		if want, ok := files[title]; !ok || l.Digest != digest.FromBytes(want) || l.Size != int64(len(want)) {
			t.Errorf("layer %s %d %q does not match a pushed file", l.Digest, l.Size, title)
		}
	}
	if slices.Sort(titles); !slices.Equal(titles, names) {
		t.Errorf("layer titles = %q, want %q", titles, names)
	}

	// Attach an SBOM and find it through the referrers API.
	sbom := map[string][]byte{"sbom.spdx.json": []byte(`{"spdxVersion":"SPDX-2.3","name":"berth-oras-cli","packages":[]}`)}
	writeFiles(t, work, sbom)
	attached := decodeORAS(t, oras("attach", "--format", "json", "--artifact-type", sbomType,
		"--annotation", "org.example.kind=sbom", ref, "sbom.spdx.json"))
	if attached.ArtifactType != sbomType || attached.Digest == "" {
		t.Errorf("oras attach reported %+v, want artifact type %s", attached, sbomType)
	}
	found := decodeORAS(t, oras("discover", "--format", "json", "--distribution-spec", "v1.1-referrers-api", ref))
	if found.Digest != pushed.Digest {
		t.Errorf("oras discover resolved %s to %s, want %s", ref, found.Digest, pushed.Digest)
	}
	if len(found.Referrers) != 1 || found.Referrers[0].Digest != attached.Digest ||
		found.Referrers[0].ArtifactType != sbomType || found.Referrers[0].Annotations["org.example.kind"] != "sbom" {
		t.Errorf("oras discover found %+v, want only the SBOM %s", found.Referrers, attached.Digest)
	}
	filtered := decodeORAS(t, oras("discover", "--format", "json", "--artifact-type", "application/vnd.berth.none", ref))
	if len(filtered.Referrers) != 0 {
		t.Errorf("oras discover --artifact-type application/vnd.berth.none found %+v, want none", filtered.Referrers)
	}
	sbomOut := t.TempDir()
	oras("pull", "-o", sbomOut, srv.Addr+"/oras/cli@"+attached.Digest.String())
	compareFiles(t, sbomOut, sbom)

	// Berth answered with OCI-Subject, so oras kept to the referrers API
	// and created no fallback tag.
	if tags := strings.Fields(oras("repo", "tags", srv.Addr+"/oras/cli")); !slices.Equal(tags, []string{"v1"}) {
		t.Errorf("oras repo tags = %q, want [v1]", tags)
	}

	// Copy the artifact with its referrers to another repository.
	copied := srv.Addr + "/oras/copy:v1"
	runClientIn(t, work, env, "oras", "cp", "-r", "--from-plain-http", "--to-plain-http", ref, copied)
	found = decodeORAS(t, oras("discover", "--format", "json", "--distribution-spec", "v1.1-referrers-api", copied))
	if found.Digest != pushed.Digest || len(found.Referrers) != 1 || found.Referrers[0].Digest != attached.Digest {
		t.Errorf("oras discover on the copy = %s with %+v, want %s with the SBOM %s", found.Digest, found.Referrers, pushed.Digest, attached.Digest)
	}
	copyOut := t.TempDir()
	oras("pull", "-o", copyOut, copied)
	compareFiles(t, copyOut, files)
}

// TestORASCLITagPagination tags one manifest 1,050 times with oras tag and
// checks that oras repo tags follows Berth's Link header past the first
// page of 1,000.
//
// In authenticated mode oras logs in with oras login --registry-config,
// into the same file every command reads its credentials from.
func TestORASCLITagPagination(t *testing.T) {
	t.Parallel()
	forEachMode(t, testORASCLITagPagination)
}

func testORASCLITagPagination(t *testing.T, srv *registryUnderTest) {
	env := clientEnv(t)
	// With --registry-config oras reads credentials only from that file,
	// here an empty one of this test's; the push needs no files, so no
	// working directory either.
	configDir := t.TempDir()
	writeFiles(t, configDir, map[string][]byte{"config.json": []byte(`{"auths":{}}`)})
	registryConfig := filepath.Join(configDir, "config.json")
	oras := func(args ...string) string {
		t.Helper()
		return runClientIn(t, "", env, "oras", append(args, "--plain-http", "--registry-config", registryConfig)...)
	}
	srv.login(t, "", env, "oras", "login", "--plain-http", "--registry-config", registryConfig, "-u", srv.user, "--password-stdin", srv.Addr)

	const count = 1050
	tags := make([]string, count)
	for i := range tags {
		tags[i] = fmt.Sprintf("t%04d", i)
	}
	repo := srv.Addr + "/oras/many"
	oras("push", "--artifact-type", "application/vnd.berth.test+tags", "--annotation", "org.example.kind=tagged", repo+":"+tags[0])
	oras(append([]string{"tag", "--concurrency", "8", repo + ":" + tags[0]}, tags[1:]...)...)

	// Berth pages the list: the first page is full and links to the next.
	ctx, cancel := context.WithTimeout(t.Context(), interopTimeout)
	defer cancel()
	client := srv.httpClient(t)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v2/oras/many/tags/list", nil)
	if err != nil {
		t.Fatalf("tags request: %v", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", req.URL, err)
	}
	var page struct {
		Tags []string `json:"tags"`
	}
	err = json.NewDecoder(resp.Body).Decode(&page)
	_ = resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %s, decode: %v", req.URL, resp.Status, err)
	}
	if len(page.Tags) != 1000 || !strings.Contains(resp.Header.Get("Link"), `rel="next"`) {
		t.Fatalf("first tags page has %d tags and Link %q, want 1000 and a next link", len(page.Tags), resp.Header.Get("Link"))
	}

	got := strings.Fields(oras("repo", "tags", repo))
	if !slices.Equal(got, tags) {
		t.Errorf("oras repo tags listed %d tags, want all %d in order (first missing: %q)", len(got), count, firstMissing(tags, got))
	}
	// Resuming after a tag on the second page lists only what follows.
	if got := strings.Fields(oras("repo", "tags", "--last", "t1039", repo)); !slices.Equal(got, tags[1040:]) {
		t.Errorf("oras repo tags --last t1039 = %q, want %q", got, tags[1040:])
	}
}

// decodeORAS parses the JSON oras prints with --format json.
func decodeORAS(t *testing.T, out string) orasDescriptor {
	t.Helper()
	var d orasDescriptor
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatalf("decode oras output: %v\n%s", err, out)
	}
	return d
}

// randomBytes returns n random bytes.
func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("random data: %v", err)
	}
	return b
}

// firstMissing names the first of want that got lacks, for a short
// failure message.
func firstMissing(want, got []string) string {
	for _, w := range want {
		if !slices.Contains(got, w) {
			return w
		}
	}
	return ""
}
