package conformance_test

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	ggcrremote "github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-registry/berth/conformance/internal/berthtest"
	"github.com/berth-registry/berth/storage/retention"
)

// TestRetentionDryRunThenRun configures retention policies on a real berth,
// pushes images with go-containerregistry, and runs `berth retention
// --dry-run --json` and then `berth retention --json`: the real run deletes
// exactly what the dry run listed, the deleted tags and manifests answer
// 404, and the protected ones (immutable, kept by pattern, newest, the
// rollback target in the production tag's history, referrers of kept
// images, and an exempt repository) survive.
func TestRetentionDryRunThenRun(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "berth.yaml")
	// deleteUntaggedAfter: 1ns makes every untagged manifest old enough
	// at once, without waiting.
	writeTestFile(t, config, `tags:
  immutable:
    - repositories: ["apps/**"]
      tags: ["v*.*.*"]
retention:
  historyWindow: 720h
  policies:
    - repositories: ["apps/exempt"]
    - repositories: ["apps/**"]
      keepLast: 2
      keepTags: ["production"]
      deleteUntaggedAfter: 1ns
`)
	srv := berthtest.Start(t, berthtest.WithArgs("--config", config))
	reg := &registryUnderTest{Server: srv}
	opts := reg.remoteOptions(t)
	repo, err := name.NewRepository(srv.Addr+"/apps/web", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	push := func(img v1.Image, tag string) v1.Hash {
		t.Helper()
		d := mustDigest(t, img)
		var ref name.Reference = repo.Digest(d.String())
		if tag != "" {
			ref = repo.Tag(tag)
		}
		if err := ggcrremote.Write(ref, img, opts...); err != nil {
			t.Fatalf("push %s: %v", ref, err)
		}
		return d
	}
	image := func() v1.Image {
		t.Helper()
		img, err := random.Image(256, 1)
		if err != nil {
			t.Fatal(err)
		}
		return mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
	}
	referrer := func(subject v1.Image) v1.Image {
		t.Helper()
		d := mustDigest(t, subject)
		raw, err := subject.RawManifest()
		if err != nil {
			t.Fatal(err)
		}
		return mutate.Subject(image(), v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: d, Size: int64(len(raw))}).(v1.Image)
	}

	// In push order, oldest first.
	v100 := push(image(), "v1.0.0") // immutable
	prodOld := push(image(), "production")
	prodNew := push(image(), "production") // prodOld: a rollback target
	img1, img2 := image(), image()
	pr1 := push(img1, "pr-1") // beyond keepLast
	pr1Sig := push(referrer(img1), "")
	pr2 := push(img2, "pr-2") // beyond keepLast
	pr3 := push(image(), "pr-3")
	latestImg := image()
	latest := push(latestImg, "latest")
	latestSig := push(referrer(latestImg), "")
	untagged := push(image(), "")
	exempt, err := name.NewRepository(srv.Addr+"/apps/exempt", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	exemptImg := image()
	if err := ggcrremote.Write(exempt.Digest(mustDigest(t, exemptImg).String()), exemptImg, opts...); err != nil {
		t.Fatal(err)
	}

	env := []string{"BERTH_REGISTRY=" + srv.URL}
	var dry, real retention.Report
	if err := json.Unmarshal([]byte(berthCLI(t, "", env, "retention", "--dry-run", "--json")), &dry); err != nil {
		t.Fatal(err)
	}
	// The dry run deleted nothing.
	for _, ref := range []string{"pr-1", pr1.String(), untagged.String()} {
		mustExist(t, srv.URL, "apps/web", ref, http.StatusOK)
	}
	if err := json.Unmarshal([]byte(berthCLI(t, "", env, "retention", "--json")), &real); err != nil {
		t.Fatal(err)
	}
	if !dry.DryRun || real.DryRun {
		t.Fatalf("dryRun flags: %v, %v", dry.DryRun, real.DryRun)
	}
	dry.DryRun = false
	dryJSON, _ := json.Marshal(dry)
	realJSON, _ := json.Marshal(real)
	if string(dryJSON) != string(realJSON) {
		t.Fatalf("dry run:\n%s\nreal run:\n%s", dryJSON, realJSON)
	}

	var gotTags, gotManifests []string
	for _, tg := range real.Tags {
		gotTags = append(gotTags, tg.Repository+":"+tg.Tag)
	}
	for _, m := range real.Manifests {
		gotManifests = append(gotManifests, m.Repository+"@"+string(m.Digest)+" "+m.Reason)
	}
	wantTags := []string{"apps/web:pr-1", "apps/web:pr-2"}
	wantManifests := []string{
		"apps/web@" + pr1.String() + " untagged",
		"apps/web@" + pr1Sig.String() + " subject-deleted",
		"apps/web@" + pr2.String() + " untagged",
		"apps/web@" + untagged.String() + " untagged",
	}
	slices.Sort(wantManifests)
	if !slices.Equal(gotTags, wantTags) || !slices.Equal(gotManifests, wantManifests) {
		t.Fatalf("deleted tags %v, manifests %v\nwant %v, %v", gotTags, gotManifests, wantTags, wantManifests)
	}
	for _, ref := range []string{"pr-1", "pr-2", pr1.String(), pr1Sig.String(), pr2.String(), untagged.String()} {
		mustExist(t, srv.URL, "apps/web", ref, http.StatusNotFound)
	}
	for _, ref := range []string{"v1.0.0", "production", "pr-3", "latest", v100.String(), prodOld.String(), prodNew.String(),
		pr3.String(), latest.String(), latestSig.String()} {
		mustExist(t, srv.URL, "apps/web", ref, http.StatusOK)
	}
	mustExist(t, srv.URL, "apps/exempt", mustDigest(t, exemptImg).String(), http.StatusOK)

	// Nothing more to do; the human output says so.
	out := berthCLI(t, "", env, "retention", "--dry-run")
	if want := "retention: 2 repositories covered; would delete 0 tags and 0 manifests\n"; out != want {
		t.Fatalf("second dry run printed %q, want %q", out, want)
	}
}

// mustExist checks the status of HEAD /v2/<repo>/manifests/<ref>.
func mustExist(t *testing.T, base, repo, ref string, want int) {
	t.Helper()
	req, err := http.NewRequest(http.MethodHead, base+"/v2/"+repo+"/manifests/"+ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != want {
		t.Errorf("HEAD %s:%s: status %d, want %d", repo, ref, resp.StatusCode, want)
	}
}

// TestRetentionSchedule: with retention.interval set, the server applies
// the policies by itself.
func TestRetentionSchedule(t *testing.T) {
	config := filepath.Join(t.TempDir(), "berth.yaml")
	writeTestFile(t, config, `retention:
  interval: 100ms
  policies:
    - repositories: ["**"]
      deleteUntaggedAfter: 1ns
`)
	srv := berthtest.Start(t, berthtest.WithArgs("--config", config))
	repo, err := name.NewRepository(srv.Addr+"/apps/cron", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	d := mustDigest(t, img)
	opts := (&registryUnderTest{Server: srv}).remoteOptions(t)
	if err := ggcrremote.Write(repo.Digest(d.String()), img, opts...); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the scheduled retention deletes the untagged manifest", func() bool {
		return strings.Contains(srv.Logs(), "retention applied")
	})
	mustExist(t, srv.URL, "apps/cron", d.String(), http.StatusNotFound)
}
