package storage

import (
	"regexp"

	"github.com/opencontainers/go-digest"
)

// Registries without the referrers API are given signatures, attestations
// and SBOMs by cosign and similar tools under tags of the referrers
// tag-schema fallback: sha256-<hex>.sig, .att and .sbom, naming the
// signature, attestation or SBOM of the manifest sha256:<hex>. Promotion
// carries them along with their manifest, and retention keeps them exactly
// as long as that manifest.

// signatureSuffixes are the suffixes of the tag-schema fallback.
var signatureSuffixes = [...]string{".sig", ".att", ".sbom"}

// signatureTagPattern matches a tag of the tag-schema fallback.
var signatureTagPattern = regexp.MustCompile(`^(sha256|sha512)-([a-f0-9]+)\.(sig|att|sbom)$`)

// SignatureTag reports whether tag is a tag of the referrers tag-schema
// fallback, and if so the digest of the manifest it belongs to.
func SignatureTag(tag string) (digest.Digest, bool) {
	m := signatureTagPattern.FindStringSubmatch(tag)
	if m == nil {
		return "", false
	}
	return digest.Digest(m[1] + ":" + m[2]), true
}

// signatureTags returns the tags under which the tag-schema fallback
// attaches signatures, attestations and SBOMs to d.
func signatureTags(d digest.Digest) []string {
	out := make([]string, 0, len(signatureSuffixes))
	for _, suffix := range signatureSuffixes {
		out = append(out, string(d.Algorithm())+"-"+d.Encoded()+suffix)
	}
	return out
}
