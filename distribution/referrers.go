package distribution

import (
	"net/http"

	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// referrers answers GET /v2/<name>/referrers/<digest>: an image index of
// the manifests whose subject is the digest, optionally filtered by
// artifactType. An unknown subject has an empty list, not an error.
func (a *API) referrers(w http.ResponseWriter, r *http.Request) {
	repo, d, err := blobTarget(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	artifactType := r.URL.Query().Get("artifactType")
	descs, err := a.store.Referrers(r.Context(), repo, d, artifactType)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if artifactType != "" {
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	writeJSON(w, ocispec.MediaTypeImageIndex, ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: descs,
	})
}
