// Package bundle owns Berth's offline bundles: OCI image layout archives
// (a tar of oci-layout, index.json and blobs/<alg>/<hex>) that carry
// images across a network boundary. Export writes one from a registry,
// with every platform of an index and the referrers (signatures, SBOMs,
// attestations, by the referrers API and by cosign's tags), copying
// through package transfer into the archive as a target; Import reads
// one into the storage core, verifying every digest, idempotently, and
// records the tags it sets as import moves.
//
// Each entry of the bundle's index.json names its repository in the
// annotation RepositoryAnnotation; a tagged entry carries its
// "repository:tag" in org.opencontainers.image.ref.name as well, which
// is how skopeo (oci-archive:bundle.tar:repository:tag) and oras find it.
package bundle

import (
	"bytes"
	"io"
	"strings"

	"github.com/opencontainers/go-digest"
)

// RepositoryAnnotation names the repository of an index.json entry.
const RepositoryAnnotation = "io.berth-registry.repository"

// layoutFile is the content of oci-layout.
const layoutFile = `{"imageLayoutVersion":"1.0.0"}`

// blobPath is the path of d in the archive.
func blobPath(d digest.Digest) string {
	return "blobs/" + string(d.Algorithm()) + "/" + d.Encoded()
}

// splitRef splits repository:tag or repository@digest.
func splitRef(ref string) (repo, reference string, ok bool) {
	if i := strings.Index(ref, "@"); i > 0 {
		return ref[:i], ref[i+1:], true
	}
	i := strings.LastIndex(ref, ":")
	if i <= 0 || strings.Contains(ref[i:], "/") {
		return ref, "latest", ref != ""
	}
	return ref[:i], ref[i+1:], true
}

// bytesReader reads b.
func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
