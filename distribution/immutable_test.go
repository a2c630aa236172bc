package distribution_test

import (
	"net/http"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/distribution"
	"github.com/berth-registry/berth/storage"
)

// releaseTags makes v-prefixed tags immutable.
type releaseTags struct{}

func (releaseTags) Immutable(repo, tag string) bool { return len(tag) > 1 && tag[0] == 'v' }

func TestImmutableTagRefusedOverHTTP(t *testing.T) {
	e := newEnvWithStore(t, distribution.Options{}, storage.Options{Tags: releaseTags{}}, nil)
	const repo = "apps/web"
	first := e.pushImage(repo, "v1", "first")
	second := e.pushImage(repo, "latest", "second")

	// The same digest again under the tag is accepted.
	e.pushManifest(repo, "v1", ocispec.MediaTypeImageManifest, first.Body)

	refusals := map[string]*response{
		"PUT by tag":          e.do(http.MethodPut, "/v2/"+repo+"/manifests/v1", second.Body, "Content-Type", ocispec.MediaTypeImageManifest),
		"PUT by digest ?tag=": e.do(http.MethodPut, "/v2/"+repo+"/manifests/"+string(second.Digest)+"?tag=latest&tag=v1", second.Body, "Content-Type", ocispec.MediaTypeImageManifest),
		"DELETE tag":          e.do(http.MethodDelete, "/v2/"+repo+"/manifests/v1", nil),
		"DELETE the manifest": e.do(http.MethodDelete, "/v2/"+repo+"/manifests/"+string(first.Digest), nil),
	}
	for what, r := range refusals {
		t.Run(what, func(t *testing.T) {
			entry := wantError(t, r, http.StatusConflict, "TAG_IMMUTABLE")
			if entry.Detail["tag"] != "v1" || entry.Detail["digest"] != string(first.Digest) {
				t.Errorf("detail = %v, want the tag and the digest it keeps", entry.Detail)
			}
		})
	}
	// Nothing moved: v1 still names the first image, latest the second.
	for tag, want := range map[string]string{"v1": string(first.Digest), "latest": string(second.Digest)} {
		r := e.do(http.MethodHead, "/v2/"+repo+"/manifests/"+tag, nil, "Accept", ocispec.MediaTypeImageManifest)
		wantStatus(t, r, http.StatusOK)
		wantHeader(t, r, "Docker-Content-Digest", want)
	}
	// A mutable tag still moves, and a new release tag can be created.
	e.pushManifest(repo, "latest", ocispec.MediaTypeImageManifest, first.Body)
	e.pushManifest(repo, "v2", ocispec.MediaTypeImageManifest, second.Body)
}
