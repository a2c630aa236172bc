package distribution

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage"
)

// uploadLocation is the URL of an upload session.
func uploadLocation(repo, id string) string {
	return "/v2/" + repo + "/blobs/uploads/" + id
}

// blobLocation is the URL of a blob.
func blobLocation(repo string, d digest.Digest) string {
	return "/v2/" + repo + "/blobs/" + string(d)
}

// writeUploadState sets the headers that tell a client where an upload
// stands: its Location, the Range received so far and its id.
func writeUploadState(w http.ResponseWriter, info storage.UploadInfo) {
	h := w.Header()
	h.Set("Location", uploadLocation(info.Repo, info.ID))
	h.Set("Docker-Upload-UUID", info.ID)
	end := info.Offset - 1
	if end < 0 {
		end = 0
	}
	h.Set("Range", fmt.Sprintf("0-%d", end))
	h.Set("Content-Length", "0")
}

func writeBlobCreated(w http.ResponseWriter, repo string, info storage.BlobInfo) {
	h := w.Header()
	h.Set("Location", blobLocation(repo, info.Digest))
	h.Set("Docker-Content-Digest", string(info.Digest))
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
}

// startUpload handles POST /v2/<name>/blobs/uploads/: a cross-repository
// mount (?mount=&from=), a monolithic upload (?digest=), or a new session.
func (a *API) startUpload(w http.ResponseWriter, r *http.Request) {
	repo, err := repoName(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	if m := q.Get("mount"); m != "" {
		if a.tryMount(w, r, repo, m, q.Get("from")) {
			return
		}
		// Not mountable: fall through to a new upload session, as the
		// specification asks.
	} else if ds := q.Get("digest"); ds != "" {
		d, err := parseDigest(ds)
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		info, err := a.store.PutBlob(r.Context(), repo, d, r.Body, r.ContentLength)
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		writeBlobCreated(w, repo, info)
		return
	}
	var alg digest.Algorithm
	if s := q.Get("digest-algorithm"); s != "" {
		alg = digest.Algorithm(s)
		if !alg.Available() {
			a.writeError(w, r, newError(CodeDigestInvalid, map[string]string{"algorithm": s}, "unsupported digest algorithm %q", s))
			return
		}
	}
	info, err := a.store.StartUpload(r.Context(), repo, alg)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeUploadState(w, info)
	w.WriteHeader(http.StatusAccepted)
}

// tryMount links the blob into repo from another repository, or from the
// store when from is empty. It reports whether it answered the request:
// with 201, or with an error. When the blob cannot be mounted (it is not
// there, or the caller may not read the source) it answers nothing, and the
// caller opens an upload session instead.
func (a *API) tryMount(w http.ResponseWriter, r *http.Request, repo, mount, from string) bool {
	d, err := parseDigest(mount)
	if err != nil {
		a.writeError(w, r, err)
		return true
	}
	if from != "" && !validName(from) {
		a.writeError(w, r, newError(CodeNameInvalid, map[string]string{"name": from}, "invalid mount source %q", from))
		return true
	}
	if !a.mountable(r, from) {
		return false
	}
	info, err := a.store.MountBlob(r.Context(), repo, from, d)
	if err != nil {
		if asError(err).Code == CodeBlobUnknown {
			return false
		}
		a.writeError(w, r, err)
		return true
	}
	writeBlobCreated(w, repo, info)
	return true
}

// mountable reports whether the caller may mount from the source: it must
// be allowed to pull from it. An anonymous mount (no source) reads from the
// whole store, so it is only for callers under no access rules at all.
func (a *API) mountable(r *http.Request, from string) bool {
	if a.access == nil {
		return true
	}
	return from != "" && a.access.Granted(r.Context(), from, "pull")
}

// uploadTarget reads and checks the repository and session of a request.
func uploadTarget(r *http.Request) (string, string, error) {
	repo, err := repoName(r)
	if err != nil {
		return "", "", err
	}
	id := pathVar(r, "id")
	if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
		return "", "", newError(CodeBlobUploadUnknown, map[string]string{"id": id}, "unknown upload %q", id)
	}
	return repo, id, nil
}

// chunkBounds reads where a chunk starts and how long it is from
// Content-Range and Content-Length. start is -1 when the client did not say
// (a streamed upload); length is -1 when unknown.
func chunkBounds(r *http.Request) (start, length int64, err error) {
	start, length = -1, r.ContentLength
	cr := r.Header.Get("Content-Range")
	if cr == "" {
		return start, length, nil
	}
	spec := strings.TrimPrefix(strings.TrimSpace(cr), "bytes ")
	spec, _, _ = strings.Cut(spec, "/")
	first, last, ok := strings.Cut(spec, "-")
	s, err1 := strconv.ParseInt(first, 10, 64)
	e, err2 := strconv.ParseInt(last, 10, 64)
	// The end must leave room for the offset after it, e+1, which also
	// keeps the length e-s+1 from overflowing.
	if !ok || err1 != nil || err2 != nil || s < 0 || e < s || e == math.MaxInt64 {
		return 0, 0, newError(CodeBlobUploadInvalid, map[string]string{"Content-Range": cr},
			"malformed Content-Range %q, want <start>-<end>", cr).withStatus(http.StatusRequestedRangeNotSatisfiable)
	}
	n := e - s + 1
	if length >= 0 && length != n {
		return 0, 0, newError(CodeSizeInvalid, map[string]string{"Content-Range": cr},
			"Content-Range %q covers %d bytes, Content-Length is %d", cr, n, length)
	}
	return s, n, nil
}

// appendUpload handles PATCH: one chunk, or a stream, of an upload.
func (a *API) appendUpload(w http.ResponseWriter, r *http.Request) {
	repo, id, err := uploadTarget(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	start, length, err := chunkBounds(r)
	if err != nil {
		a.writeUploadError(w, r, repo, id, err)
		return
	}
	info, err := a.store.AppendUpload(r.Context(), repo, id, start, r.Body, length)
	if err != nil {
		a.writeUploadError(w, r, repo, id, err)
		return
	}
	writeUploadState(w, info)
	w.WriteHeader(http.StatusAccepted)
}

// writeUploadError answers a failed chunk. Where the session still exists
// the response says where it stands, so the client can resume.
func (a *API) writeUploadError(w http.ResponseWriter, r *http.Request, repo, id string, err error) {
	if info, serr := a.store.UploadStatus(r.Context(), repo, id); serr == nil {
		writeUploadState(w, info)
	}
	a.writeError(w, r, err)
}

// commitUpload handles PUT ?digest=: the optional last chunk, then the
// digest check that completes the upload.
func (a *API) commitUpload(w http.ResponseWriter, r *http.Request) {
	repo, id, err := uploadTarget(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	ds := r.URL.Query().Get("digest")
	if ds == "" {
		a.writeUploadError(w, r, repo, id, newError(CodeDigestInvalid, nil, "the digest query parameter is required to complete an upload"))
		return
	}
	d, err := parseDigest(ds)
	if err != nil {
		a.writeUploadError(w, r, repo, id, err)
		return
	}
	start, length, err := chunkBounds(r)
	if err != nil {
		a.writeUploadError(w, r, repo, id, err)
		return
	}
	var body io.Reader
	if length != 0 {
		body = r.Body
	}
	info, err := a.store.CommitUpload(r.Context(), repo, id, d, start, body, length)
	if err != nil {
		a.writeUploadError(w, r, repo, id, err)
		return
	}
	writeBlobCreated(w, repo, info)
}

// uploadStatus handles GET of an upload session.
func (a *API) uploadStatus(w http.ResponseWriter, r *http.Request) {
	repo, id, err := uploadTarget(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	info, err := a.store.UploadStatus(r.Context(), repo, id)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeUploadState(w, info)
	w.WriteHeader(http.StatusNoContent)
}

// cancelUpload handles DELETE of an upload session.
func (a *API) cancelUpload(w http.ResponseWriter, r *http.Request) {
	repo, id, err := uploadTarget(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if err := a.store.CancelUpload(r.Context(), repo, id); err != nil {
		a.writeError(w, r, err)
		return
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusNoContent)
}
