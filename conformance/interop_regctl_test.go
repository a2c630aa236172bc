package conformance_test

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	ggcrremote "github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestRegctlCLI drives the regctl binary: it copies a multi-platform image
// between repositories, lists and deletes tags, reads manifests, configs
// and blobs, and puts and gets artifacts, one of them a referrer.
//
// In authenticated mode regctl logs in with regctl registry login, which
// keeps the credentials in $REGCTL_CONFIG, and a regctl that has not logged
// in must fail to push.
func TestRegctlCLI(t *testing.T) {
	t.Parallel()
	forEachMode(t, testRegctlCLI)
}

func testRegctlCLI(t *testing.T, srv *registryUnderTest) {
	env := clientEnv(t)
	work := t.TempDir()
	regctl := func(args ...string) string {
		t.Helper()
		return runClientIn(t, work, env, "regctl", args...)
	}
	// Plain HTTP for this registry only, in the private configuration.
	regctl("registry", "set", "--tls", "disabled", srv.Addr)
	srv.login(t, work, env, "regctl", "registry", "login", srv.Addr, "-u", srv.user, "--pass-stdin")

	// Seed a multi-platform image with go-containerregistry.
	platforms := []v1.Platform{
		{OS: "linux", Architecture: "amd64"},
		{OS: "linux", Architecture: "arm64", Variant: "v8"},
		{OS: "linux", Architecture: "s390x"},
	}
	idx, images := randomIndex(t, platforms, types.OCIImageIndex, types.OCIManifestSchema1, types.OCIConfigJSON, types.OCILayer)
	want := mustDigest(t, idx)
	src, err := name.ParseReference(srv.Addr+"/regctl/src:v1", name.Insecure)
	if err != nil {
		t.Fatalf("parse reference: %v", err)
	}
	if err := ggcrremote.WriteIndex(src, idx, srv.remoteOptions(t)...); err != nil {
		t.Fatalf("seed %s: %v", src, err)
	}

	// Copy to another repository under two tags.
	dst := srv.Addr + "/regctl/dst"
	regctl("image", "copy", src.String(), dst+":v1")
	regctl("image", "copy", dst+":v1", dst+":v2")
	for _, tag := range []string{"v1", "v2"} {
		if got := strings.TrimSpace(regctl("image", "digest", dst+":"+tag)); got != want.String() {
			t.Errorf("regctl image digest %s:%s = %s, want %s", dst, tag, got, want)
		}
	}
	if got := strings.Fields(regctl("tag", "ls", dst)); !slices.Equal(got, []string{"v1", "v2"}) {
		t.Errorf("regctl tag ls = %q, want [v1 v2]", got)
	}
	regctl("tag", "delete", dst+":v2")
	if got := strings.Fields(regctl("tag", "ls", dst)); !slices.Equal(got, []string{"v1"}) {
		t.Errorf("regctl tag ls after tag delete = %q, want [v1]", got)
	}

	// The raw manifests are the bytes that were pushed.
	raw := regctl("manifest", "get", "--format", "raw-body", dst+":v1")
	if got := digest.FromString(raw); got.String() != want.String() {
		t.Errorf("regctl manifest get --format raw-body hashes to %s, want %s", got, want)
	}
	if wantRaw, err := idx.RawManifest(); err != nil || raw != string(wantRaw) {
		t.Errorf("regctl manifest get returned different bytes than were pushed (err %v)", err)
	}
	for _, pi := range images {
		plat := pi.platform.OS + "/" + pi.platform.Architecture
		if pi.platform.Variant != "" {
			plat += "/" + pi.platform.Variant
		}
		wantImg := mustDigest(t, pi.img)
		child := regctl("manifest", "get", "--platform", plat, "--format", "raw-body", dst+":v1")
		if got := digest.FromString(child); got.String() != wantImg.String() {
			t.Errorf("regctl manifest get --platform %s hashes to %s, want %s", plat, got, wantImg)
		}
		var cfg v1.ConfigFile
		out := regctl("image", "inspect", "--platform", plat, "--format", "{{json .}}", dst+":v1")
		if err := json.Unmarshal([]byte(out), &cfg); err != nil {
			t.Fatalf("decode regctl image inspect: %v\n%s", err, out)
		}
		if cfg.OS != pi.platform.OS || cfg.Architecture != pi.platform.Architecture || cfg.Variant != pi.platform.Variant {
			t.Errorf("regctl image inspect --platform %s: config names %s/%s/%s", plat, cfg.OS, cfg.Architecture, cfg.Variant)
		}
		layers, err := pi.img.Layers()
		if err != nil {
			t.Fatalf("layers: %v", err)
		}
		for _, l := range layers {
			ld := mustDigest(t, l)
			if got := regctl("blob", "get", dst, ld.String()); !bytes.Equal([]byte(got), readLayer(t, l)) {
				t.Errorf("regctl blob get %s returned different bytes (%d)", ld, len(got))
			}
		}
	}

	// An artifact from a file, and back, uploaded in chunks: the host is
	// now set to PATCH every blob larger than one byte in 64 KiB pieces.
	regctl("registry", "set", "--blob-max", "1", "--blob-chunk", "65536", srv.Addr)
	const artifactType = "application/vnd.berth.test.regctl"
	payload := randomBytes(t, 200_000)
	writeFiles(t, work, map[string][]byte{"payload.bin": payload})
	art := srv.Addr + "/regctl/artifact:v1"
	if srv.auth() {
		// A regctl that has not logged in (plain HTTP set, no user) cannot
		// push.
		anon := clientEnv(t)
		runClientIn(t, work, anon, "regctl", "registry", "set", "--tls", "disabled", srv.Addr)
		srv.expectRefused(t, "regctl artifact put", execClient(t, work, anon, "regctl", "artifact", "put",
			"--artifact-type", artifactType, "--file", "payload.bin", srv.Addr+"/regctl/refused:v1"))
	}
	regctl("artifact", "put", "--artifact-type", artifactType,
		"--file", "payload.bin", "--file-media-type", "application/vnd.berth.test.payload",
		"--annotation", "org.example.kind=payload", art)
	if got := regctl("artifact", "get", art); !bytes.Equal([]byte(got), payload) {
		t.Errorf("regctl artifact get returned %d bytes that differ from the %d put", len(got), len(payload))
	}
	var m ocispec.Manifest
	if err := json.Unmarshal([]byte(regctl("manifest", "get", "--format", "raw-body", art)), &m); err != nil {
		t.Fatalf("decode artifact manifest: %v", err)
	}
	if m.ArtifactType != artifactType || m.Annotations["org.example.kind"] != "payload" || len(m.Layers) != 1 ||
		m.Layers[0].Digest != digest.FromBytes(payload) {
		t.Errorf("artifact manifest = %+v, want artifact type %s, the annotation and one layer of the payload", m, artifactType)
	}

	// A referrer to the image, found by its subject.
	const sbomType = "application/spdx+json"
	sbom := []byte(`{"spdxVersion":"SPDX-2.3","name":"berth-regctl"}`)
	writeFiles(t, work, map[string][]byte{filepath.Join("sbom", "sbom.json"): sbom})
	regctl("artifact", "put", "--artifact-type", sbomType, "--file", filepath.Join("sbom", "sbom.json"),
		"--subject", dst+":v1")
	if got := regctl("artifact", "get", "--subject", dst+":v1", "--filter-artifact-type", sbomType); got != string(sbom) {
		t.Errorf("regctl artifact get --subject returned %q, want %q", got, sbom)
	}
	list := regctl("artifact", "list", "--format", "{{json .Manifest}}", dst+":v1")
	var referrers ocispec.Index
	if err := json.Unmarshal([]byte(list), &referrers); err != nil {
		t.Fatalf("decode regctl artifact list: %v\n%s", err, list)
	}
	if len(referrers.Manifests) != 1 || referrers.Manifests[0].ArtifactType != sbomType {
		t.Errorf("regctl artifact list = %+v, want one %s referrer", referrers.Manifests, sbomType)
	}
	// The registry took the subject itself: no fallback tag was made.
	if got := strings.Fields(regctl("tag", "ls", dst)); !slices.Equal(got, []string{"v1"}) {
		t.Errorf("regctl tag ls after the referrer = %q, want [v1]", got)
	}
}
