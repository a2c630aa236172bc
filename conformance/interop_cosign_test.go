package conformance_test

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Media types and annotations cosign uses for what it stores in a registry.
const (
	cosignSimpleSigning   = "application/vnd.dev.cosign.simplesigning.v1+json"
	cosignSigArtifactType = "application/vnd.dev.cosign.artifact.sig.v1+json"
	cosignSigAnnotation   = "dev.cosignproject.cosign/signature"
	sigstoreBundleType    = "application/vnd.dev.sigstore.bundle.v0.3+json"
)

// cosign runs the cosign binary offline: a key pair made in a temporary
// directory (the working directory of every command), private TUF and
// Docker configuration directories, no transparency log upload, and the
// tripwire proxy for anything else.
type cosign struct {
	t   *testing.T
	dir string
	env []string
	pub *ecdsa.PublicKey
}

const cosignPassword = "berth-interop-test-password"

// newCosign returns a cosign with a new key pair, logged in to srv with
// cosign login in authenticated mode.
func newCosign(t *testing.T, srv *registryUnderTest) *cosign {
	t.Helper()
	c := newCosignNoLogin(t)
	srv.login(t, c.dir, c.env, "cosign", "login", srv.Addr, "-u", srv.user, "--password-stdin")
	return c
}

// newCosignNoLogin returns a cosign with a new key pair and no
// credentials.
func newCosignNoLogin(t *testing.T) *cosign {
	t.Helper()
	dir := t.TempDir()
	tuf := filepath.Join(dir, "tuf")
	if err := os.MkdirAll(tuf, 0o700); err != nil {
		t.Fatalf("create %s: %v", tuf, err)
	}
	// cosign keeps credentials in $DOCKER_CONFIG/config.json, like crane:
	// clientEnv's private one, empty until cosign login.
	c := &cosign{t: t, dir: dir, env: append(clientEnv(t),
		"COSIGN_PASSWORD="+cosignPassword,
		"TUF_ROOT="+tuf,
		"SIGSTORE_NO_CACHE=true",
		"COSIGN_EXPERIMENTAL=",
	)}
	c.run("generate-key-pair")
	c.pub = readECDSAPublicKey(t, filepath.Join(dir, "cosign.pub"))
	return c
}

// run runs a cosign command that must succeed, bounded by cosign's own
// --timeout as well as the runner's, and returns its output.
func (c *cosign) run(args ...string) string {
	c.t.Helper()
	return c.runEnv(nil, args...)
}

func (c *cosign) runEnv(env []string, args ...string) string {
	c.t.Helper()
	return runClientIn(c.t, c.dir, append(slices.Clone(c.env), env...), "cosign", append([]string{"--timeout", "60s"}, args...)...)
}

// try runs a cosign command that may fail.
func (c *cosign) try(args ...string) clientResult {
	c.t.Helper()
	return execClient(c.t, c.dir, c.env, "cosign", append([]string{"--timeout", "60s"}, args...)...)
}

// sign signs ref with the test's key without contacting Rekor or Fulcio.
func (c *cosign) sign(env []string, ref string, extra ...string) {
	c.t.Helper()
	c.runEnv(env, c.signArgs(ref, extra...)...)
}

func (c *cosign) signArgs(ref string, extra ...string) []string {
	args := append([]string{"sign", "--key", "cosign.key", "--tlog-upload=false", "--allow-http-registry", "--yes"}, extra...)
	return append(args, ref)
}

// TestCosignSignTagSchema signs an image with cosign's default storage:
// a signature manifest under the tag sha256-<hex>.sig.
//
// In authenticated mode cosign logs in with cosign login, and a cosign that
// has not logged in must fail to sign (which pushes the signature).
func TestCosignSignTagSchema(t *testing.T) { forEachMode(t, testCosignSignTagSchema) }

func testCosignSignTagSchema(t *testing.T, srv *registryUnderTest) {
	cs := newCosign(t, srv)
	repo := "cosign/img"
	d := pushTestImage(t, srv, repo+":v1", hostImage(t, true)).String()
	ref := srv.Addr + "/" + repo + "@" + d

	cs.sign(nil, ref)

	sigTag := "sha256-" + hexOf(t, d) + ".sig"
	if tags := listTags(t, srv, repo); !slices.Equal(tags, []string{sigTag, "v1"}) {
		t.Fatalf("tags of %s = %q, want [%s v1]", repo, tags, sigTag)
	}
	sigDigest := checkManifestTree(t, srv, repo, sigTag)
	sig := fetchManifest(t, srv, repo, sigTag)
	checkSimpleSigning(t, srv, cs.pub, repo, sig, srv.Addr+"/"+repo, d)

	tree := cs.run("tree", "--allow-http-registry", ref)
	for _, want := range []string{sigTag, sig.Layers[0].Digest.String()} {
		if !strings.Contains(tree, want) {
			t.Errorf("cosign tree does not show %s:\n%s", want, tree)
		}
	}
	t.Logf("cosign stored signature manifest %s under the tag %s", sigDigest, sigTag)

	// cosign clean deletes the signature by its tag.
	cs.run("clean", "--type", "signature", "--force", "--allow-http-registry", ref)
	if tags := listTags(t, srv, repo); !slices.Equal(tags, []string{"v1"}) {
		t.Errorf("tags of %s after cosign clean = %q, want [v1]", repo, tags)
	}
	if got := manifestDigest(t, srv, repo, "v1"); got != d {
		t.Errorf("%s:v1 after cosign clean = %s, want %s", repo, got, d)
	}

	if srv.auth() {
		anon := newCosignNoLogin(t)
		srv.expectRefused(t, "cosign sign", anon.try(anon.signArgs(ref)...))
		if tags := listTags(t, srv, repo); !slices.Equal(tags, []string{"v1"}) {
			t.Errorf("tags of %s after a refused cosign sign = %q, want [v1]", repo, tags)
		}
	}
}

// TestCosignSignReferrers signs an image with cosign's OCI 1.1 mode: the
// signature is a manifest whose subject is the image, found through the
// referrers API, with no tag.
func TestCosignSignReferrers(t *testing.T) { forEachMode(t, testCosignSignReferrers) }

func testCosignSignReferrers(t *testing.T, srv *registryUnderTest) {
	cs := newCosign(t, srv)
	repo := "cosign/referrers"
	d := pushTestImage(t, srv, repo+":v1", hostImage(t, true)).String()
	ref := srv.Addr + "/" + repo + "@" + d
	experimental := []string{"COSIGN_EXPERIMENTAL=1"}

	cs.sign(experimental, ref, "--registry-referrers-mode=oci-1-1")

	if tags := listTags(t, srv, repo); !slices.Equal(tags, []string{"v1"}) {
		t.Errorf("tags of %s = %q, want only v1: the referrers API should make a fallback tag unnecessary", repo, tags)
	}
	refs := referrers(t, srv, repo, d, "")
	if len(refs) != 1 || refs[0].ArtifactType != cosignSigArtifactType || refs[0].MediaType != ocispec.MediaTypeImageManifest {
		t.Fatalf("referrers of %s = %+v, want one %s manifest", d, refs, cosignSigArtifactType)
	}
	sigDigest := refs[0].Digest.String()
	if got := checkManifestTree(t, srv, repo, sigDigest); got != sigDigest {
		t.Errorf("signature manifest digest = %s, want %s", got, sigDigest)
	}
	sig := fetchManifest(t, srv, repo, sigDigest)
	if sig.Subject == nil || sig.Subject.Digest.String() != d {
		t.Errorf("signature manifest subject = %+v, want %s", sig.Subject, d)
	}
	if sig.Config.MediaType != cosignSigArtifactType {
		t.Errorf("signature config media type = %q, want %q", sig.Config.MediaType, cosignSigArtifactType)
	}
	checkSimpleSigning(t, srv, cs.pub, repo, sig, srv.Addr+"/"+repo, d)

	tree := cs.runEnv(experimental, "tree", "--allow-http-registry", "--registry-referrers-mode=oci-1-1", ref)
	for _, want := range []string{"via OCI referrer", sigDigest} {
		if !strings.Contains(tree, want) {
			t.Errorf("cosign tree does not show %q:\n%s", want, tree)
		}
	}
}

// TestCosignSignBundle signs an image with --new-bundle-format: a
// Sigstore bundle attached through the referrers API.
func TestCosignSignBundle(t *testing.T) { forEachMode(t, testCosignSignBundle) }

func testCosignSignBundle(t *testing.T, srv *registryUnderTest) {
	cs := newCosign(t, srv)
	repo := "cosign/bundle"
	d := pushTestImage(t, srv, repo+":v1", hostImage(t, true)).String()
	ref := srv.Addr + "/" + repo + "@" + d

	cs.sign(nil, ref, "--new-bundle-format")

	refs := referrers(t, srv, repo, d, "")
	if len(refs) != 1 || refs[0].ArtifactType != sigstoreBundleType {
		t.Fatalf("referrers of %s = %+v, want one %s", d, refs, sigstoreBundleType)
	}
	if filtered := referrers(t, srv, repo, d, sigstoreBundleType); len(filtered) != 1 || filtered[0].Digest != refs[0].Digest {
		t.Errorf("referrers filtered by %s = %+v, want %s", sigstoreBundleType, filtered, refs[0].Digest)
	}
	if other := referrers(t, srv, repo, d, cosignSigArtifactType); len(other) != 0 {
		t.Errorf("referrers filtered by %s = %+v, want none", cosignSigArtifactType, other)
	}
	bundleDigest := refs[0].Digest.String()
	checkManifestTree(t, srv, repo, bundleDigest)
	m := fetchManifest(t, srv, repo, bundleDigest)
	if m.Subject == nil || m.Subject.Digest.String() != d {
		t.Errorf("bundle manifest subject = %+v, want %s", m.Subject, d)
	}
	if len(m.Layers) != 1 || m.Layers[0].MediaType != sigstoreBundleType {
		t.Fatalf("bundle manifest layers = %+v, want one %s", m.Layers, sigstoreBundleType)
	}

	// The bundle holds a DSSE envelope over an in-toto statement about the
	// image; check its signature with the public key.
	var bundle struct {
		MediaType    string `json:"mediaType"`
		DSSEEnvelope struct {
			Payload     string `json:"payload"`
			PayloadType string `json:"payloadType"`
			Signatures  []struct {
				Sig string `json:"sig"`
			} `json:"signatures"`
		} `json:"dsseEnvelope"`
	}
	body := checkBlob(t, srv, repo, m.Layers[0].Digest.String())
	if err := json.Unmarshal(body, &bundle); err != nil {
		t.Fatalf("decode bundle: %v\n%s", err, body)
	}
	if bundle.MediaType != sigstoreBundleType {
		t.Errorf("bundle mediaType = %q, want %q", bundle.MediaType, sigstoreBundleType)
	}
	env := bundle.DSSEEnvelope
	payload := mustBase64(t, "DSSE payload", env.Payload)
	if len(env.Signatures) != 1 {
		t.Fatalf("bundle has %d DSSE signatures, want 1", len(env.Signatures))
	}
	pae := fmt.Sprintf("DSSEv1 %d %s %d %s", len(env.PayloadType), env.PayloadType, len(payload), payload)
	checkECDSA(t, cs.pub, "DSSE envelope", []byte(pae), mustBase64(t, "DSSE signature", env.Signatures[0].Sig))
	var statement struct {
		Subject []struct {
			Digest map[string]string `json:"digest"`
		} `json:"subject"`
	}
	if err := json.Unmarshal(payload, &statement); err != nil {
		t.Fatalf("decode in-toto statement: %v\n%s", err, payload)
	}
	if len(statement.Subject) != 1 || statement.Subject[0].Digest["sha256"] != hexOf(t, d) {
		t.Errorf("in-toto statement subject = %+v, want sha256 %s", statement.Subject, hexOf(t, d))
	}
}

// checkSimpleSigning checks a cosign signature manifest: one simple-signing
// layer whose payload names the image and whose signature annotation
// verifies with pub.
func checkSimpleSigning(t *testing.T, srv *registryUnderTest, pub *ecdsa.PublicKey, repo string, sig ocispec.Manifest, wantRef, wantDigest string) {
	t.Helper()
	if len(sig.Layers) != 1 || sig.Layers[0].MediaType != cosignSimpleSigning {
		t.Fatalf("signature manifest layers = %+v, want one %s layer", sig.Layers, cosignSimpleSigning)
	}
	layer := sig.Layers[0]
	payload := checkBlob(t, srv, repo, layer.Digest.String())
	var simple struct {
		Critical struct {
			Identity struct {
				DockerReference string `json:"docker-reference"`
			} `json:"identity"`
			Image struct {
				DockerManifestDigest string `json:"docker-manifest-digest"`
			} `json:"image"`
		} `json:"critical"`
	}
	if err := json.Unmarshal(payload, &simple); err != nil {
		t.Fatalf("decode signed payload: %v\n%s", err, payload)
	}
	if got := simple.Critical.Image.DockerManifestDigest; got != wantDigest {
		t.Errorf("signed payload names digest %s, want %s", got, wantDigest)
	}
	if got := simple.Critical.Identity.DockerReference; got != wantRef {
		t.Errorf("signed payload names reference %s, want %s", got, wantRef)
	}
	signature := layer.Annotations[cosignSigAnnotation]
	if signature == "" {
		t.Fatalf("signature layer has no %s annotation: %v", cosignSigAnnotation, layer.Annotations)
	}
	checkECDSA(t, pub, "signed payload", payload, mustBase64(t, "signature", signature))
}

// readECDSAPublicKey reads the PEM public key cosign generate-key-pair wrote.
func readECDSAPublicKey(t *testing.T, path string) *ecdsa.PublicKey {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read cosign public key: %v", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s holds no PEM block:\n%s", path, data)
	}
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatalf("parse cosign public key: %v", err)
	}
	pub, ok := key.(*ecdsa.PublicKey)
	if !ok {
		t.Fatalf("cosign public key is a %T, want ECDSA", key)
	}
	return pub
}

// checkECDSA checks an ASN.1 ECDSA signature over the SHA-256 of msg.
func checkECDSA(t *testing.T, pub *ecdsa.PublicKey, what string, msg, sig []byte) {
	t.Helper()
	sum := sha256.Sum256(msg)
	if !ecdsa.VerifyASN1(pub, sum[:], sig) {
		t.Errorf("the signature over the %s does not verify with the cosign public key", what)
	}
}

func mustBase64(t *testing.T, what, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("decode %s: %v", what, err)
	}
	return b
}

// fetchManifest fetches and decodes an image manifest from Berth.
func fetchManifest(t *testing.T, srv *registryUnderTest, repo, reference string) ocispec.Manifest {
	t.Helper()
	_, body := berthGet(t, srv, "/v2/"+repo+"/manifests/"+reference)
	var m ocispec.Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("decode manifest %s:%s: %v\n%s", repo, reference, err, body)
	}
	return m
}

// listTags lists a repository's tags through the tags API.
func listTags(t *testing.T, srv *registryUnderTest, repo string) []string {
	t.Helper()
	_, body := berthGet(t, srv, "/v2/"+repo+"/tags/list")
	var list struct {
		Tags []string `json:"tags"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatalf("decode tag list: %v\n%s", err, body)
	}
	return sorted(list.Tags)
}

// referrers lists the referrers of digest in repo through the referrers
// API, optionally filtered by artifactType.
func referrers(t *testing.T, srv *registryUnderTest, repo, digest, artifactType string) []ocispec.Descriptor {
	t.Helper()
	path := "/v2/" + repo + "/referrers/" + digest
	if artifactType != "" {
		path += "?artifactType=" + url.QueryEscape(artifactType)
	}
	hdr, body := berthGet(t, srv, path)
	if ct := hdr.Get("Content-Type"); ct != ocispec.MediaTypeImageIndex {
		t.Errorf("referrers Content-Type = %q, want %q", ct, ocispec.MediaTypeImageIndex)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(body, &idx); err != nil {
		t.Fatalf("decode referrers: %v\n%s", err, body)
	}
	return idx.Manifests
}
