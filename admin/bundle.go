package admin

import (
	"context"
	"errors"
	"io"
	"net/http"
	"regexp"

	"github.com/berth-registry/berth/bundle"
	"github.com/berth-registry/berth/registry/auth"
	"github.com/berth-registry/berth/storage"
)

// ImportPath is where the admin API imports an offline bundle:
//
//	POST /_berth/admin/import?prefix=<namespace>
//
// with the archive as the body; the answer is a bundle.ImportReport.
const ImportPath = auth.AdminPrefix + "import"

// codeBundleInvalid answers an archive that is no bundle, or whose
// content does not match its digests.
const codeBundleInvalid = "BUNDLE_INVALID"

// Importer imports the bundle read from r, under prefix.
type Importer func(ctx context.Context, r io.Reader, prefix string) (bundle.ImportReport, error)

// prefixRE is what a prefix may be: the start of a repository name.
var prefixRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)

// importBundle serves POST ImportPath.
func (a *api) importBundle(w http.ResponseWriter, r *http.Request) {
	prefix := r.URL.Query().Get("prefix")
	if prefix != "" && !prefixRE.MatchString(prefix) {
		writeError(w, r, http.StatusBadRequest, codeNameInvalid, "prefix "+prefix+": want the start of a repository name, such as mirror/team")
		return
	}
	rep, err := a.Import(r.Context(), r.Body, prefix)
	if err != nil {
		switch {
		case errors.Is(err, bundle.ErrBundleInvalid), errors.Is(err, storage.ErrManifestInvalid),
			errors.Is(err, storage.ErrManifestBlobUnknown), errors.Is(err, storage.ErrDigestMismatch), errors.Is(err, storage.ErrSizeInvalid):
			writeError(w, r, http.StatusBadRequest, codeBundleInvalid, err.Error())
		case errors.Is(err, storage.ErrTagImmutable):
			writeError(w, r, http.StatusConflict, "TAG_IMMUTABLE", err.Error())
		default:
			a.failed(w, r, err)
		}
		return
	}
	a.Logger.InfoContext(r.Context(), "bundle imported", "prefix", prefix, "tags", len(rep.Tags), "manifests", rep.Manifests,
		"blobs", rep.Blobs, "bytes", rep.Bytes, "by", auth.IdentityFrom(r.Context()).String())
	writeJSON(w, http.StatusOK, rep)
}
