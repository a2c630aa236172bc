package distribution

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/manifest"
)

// manifestLocation is the URL of a manifest by digest.
func manifestLocation(repo string, d digest.Digest) string {
	return "/v2/" + repo + "/manifests/" + string(d)
}

// manifestTarget reads and checks the repository and reference of a
// manifest request.
func manifestTarget(r *http.Request) (string, reference, error) {
	repo, err := repoName(r)
	if err != nil {
		return "", reference{}, err
	}
	ref, err := parseReference(r)
	return repo, ref, err
}

// getManifest serves GET and HEAD of a manifest by tag or digest.
func (a *API) getManifest(w http.ResponseWriter, r *http.Request) {
	repo, ref, err := manifestTarget(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	var info storage.ManifestInfo
	var body []byte
	if r.Method == http.MethodHead {
		info, err = a.store.StatManifest(r.Context(), repo, ref.String())
	} else {
		info, body, err = a.store.GetManifest(r.Context(), repo, ref.String())
	}
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if !accepts(r.Header.Values("Accept"), info.MediaType) {
		a.writeError(w, r, newError(CodeManifestUnknown, map[string]string{"mediaType": info.MediaType},
			"manifest %s is %s, which the Accept header does not allow", ref, info.MediaType))
		return
	}
	h := w.Header()
	h.Set("Content-Type", info.MediaType)
	h.Set("Content-Length", fmt.Sprint(info.Size))
	h.Set("Docker-Content-Digest", string(info.Digest))
	h.Set("ETag", `"`+string(info.Digest)+`"`)
	if r.Method == http.MethodGet {
		// A pull, even one the client answers from its cache; a HEAD
		// only asks whether the tag moved.
		a.record(r, repo, info.Digest)
	}
	if match := r.Header.Get("If-None-Match"); match != "" && strings.Contains(match, string(info.Digest)) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// accepts reports whether the Accept header values allow mediaType. No
// Accept header, or a wildcard, allows anything: Berth never converts
// manifests, so negotiation only decides whether to answer.
func accepts(values []string, mediaType string) bool {
	if len(values) == 0 {
		return true
	}
	for _, v := range values {
		for _, item := range strings.Split(v, ",") {
			mt, _, err := mime.ParseMediaType(strings.TrimSpace(item))
			if err != nil {
				continue
			}
			if mt == mediaType || mt == "*/*" || mt == "application/*" {
				return true
			}
		}
	}
	return false
}

// putManifest stores a manifest under a tag or digest. With a digest
// reference, tag query parameters tag it in the same request.
func (a *API) putManifest(w http.ResponseWriter, r *http.Request) {
	repo, ref, err := manifestTarget(r)
	if err != nil {
		// An invalid tag is a bad manifest push, not a missing manifest.
		if e := asError(err); e.Code == CodeManifestUnknown {
			err = newError(CodeManifestInvalid, e.Detail, "%s", e.Message)
		}
		a.writeError(w, r, err)
		return
	}
	tags := []string{}
	if ref.tag != "" {
		tags = append(tags, ref.tag)
	}
	paramTags := r.URL.Query()["tag"]
	for _, t := range paramTags {
		if !validTag(t) {
			a.writeError(w, r, newError(CodeManifestInvalid, map[string]string{"tag": t}, "invalid tag %q", t))
			return
		}
		tags = append(tags, t)
	}
	body, err := a.readManifest(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	m, err := manifest.Parse(r.Header.Get("Content-Type"), body)
	if err != nil {
		a.writeError(w, r, newError(CodeManifestInvalid, nil, "%v", err))
		return
	}
	// The store hashes the body, once, and checks it against a digest
	// reference.
	d, err := a.store.PutManifest(r.Context(), repo, ref.digest, body, m, tags)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	h := w.Header()
	h.Set("Location", manifestLocation(repo, d))
	h.Set("Docker-Content-Digest", string(d))
	if m.Subject != nil {
		h.Set("OCI-Subject", string(m.Subject.Digest))
	}
	if len(paramTags) > 0 {
		h.Set("OCI-Tag", strings.Join(paramTags, ", "))
	}
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
}

// readManifest reads a manifest body, refusing one over the size limit
// before reading it where the client declared its length.
func (a *API) readManifest(r *http.Request) ([]byte, error) {
	tooLarge := func() error {
		return newError(CodeSizeInvalid, map[string]int64{"limit": a.maxManifest},
			"manifest exceeds the limit of %d bytes", a.maxManifest).withStatus(http.StatusRequestEntityTooLarge)
	}
	if r.ContentLength > a.maxManifest {
		return nil, tooLarge()
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, a.maxManifest+1))
	if err != nil {
		var stalled *Error
		if errors.As(err, &stalled) {
			return nil, stalled
		}
		return nil, newError(CodeManifestInvalid, nil, "read manifest body: %v", err)
	}
	if int64(len(body)) > a.maxManifest {
		return nil, tooLarge()
	}
	if r.ContentLength >= 0 && int64(len(body)) != r.ContentLength {
		return nil, newError(CodeSizeInvalid, nil, "received %d bytes, Content-Length is %d", len(body), r.ContentLength)
	}
	return body, nil
}

// deleteManifest deletes a manifest by digest, or only a tag by tag.
func (a *API) deleteManifest(w http.ResponseWriter, r *http.Request) {
	repo, ref, err := manifestTarget(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if ref.digest != "" {
		err = a.store.DeleteManifest(r.Context(), repo, ref.digest)
	} else {
		err = a.store.DeleteTag(r.Context(), repo, ref.tag)
	}
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
}
