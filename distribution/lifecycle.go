package distribution

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage"
)

// Berth's release lifecycle extensions, under /v2/<name>/_berth/tags/<tag>/:
//
//	GET  .../history?n=&last=  the tag's moves, newest first, paginated
//	POST .../rollback          point the tag back at an earlier digest
//	POST .../promote           point the tag at a manifest of another
//	                           repository, linking (not copying) its content
//
// Errors use the specification's codes and JSON body, as everywhere else.

// maxLifecycleBody bounds the JSON body of a rollback or promotion.
const maxLifecycleBody = 64 << 10

// tagHistory is the answer to a history request.
type tagHistory struct {
	Name    string            `json:"name"`
	Tag     string            `json:"tag"`
	History []storage.TagMove `json:"history"`
}

// rollbackRequest is the optional body of a rollback.
type rollbackRequest struct {
	// To is the digest to roll back to; empty means the digest the tag
	// named before its last move.
	To string `json:"to"`
}

// promoteRequest is the body of a promotion.
type promoteRequest struct {
	Repository string `json:"repository"`
	Reference  string `json:"reference"`
}

// promoteResponse answers a promotion. Move is absent when the tag named
// the digest already.
type promoteResponse struct {
	Digest digest.Digest    `json:"digest"`
	Move   *storage.TagMove `json:"move,omitempty"`
}

// lifecycleTarget reads and checks the repository and tag of a lifecycle
// request. An invalid tag can have no history, so it is MANIFEST_UNKNOWN,
// as for a manifest GET.
func lifecycleTarget(r *http.Request) (repo, tag string, err error) {
	repo, err = repoName(r)
	if err != nil {
		return "", "", err
	}
	tag = pathVar(r, "tag")
	if !validTag(tag) {
		return "", "", newError(CodeManifestUnknown, map[string]string{"tag": tag}, "invalid tag %q", tag)
	}
	return repo, tag, nil
}

// ReadJSON decodes a JSON request body of at most limit bytes into v, for
// the distribution API's extensions and the admin API alike. An empty body
// leaves v as it is when optional, and is an error otherwise. Malformed
// JSON, unknown fields and trailing data are 400 UNSUPPORTED, as a bad page
// size is; a body over the limit is 413 UNSUPPORTED. It returns nil or the
// error to answer with.
func ReadJSON(r *http.Request, v any, limit int64, optional bool) *Error {
	buf, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			return e
		}
		return newError(CodeUnsupported, nil, "read request body: %v", err).withStatus(http.StatusBadRequest)
	}
	if int64(len(buf)) > limit {
		return newError(CodeUnsupported, map[string]int64{"limit": limit},
			"request body exceeds %d bytes", limit).withStatus(http.StatusRequestEntityTooLarge)
	}
	if len(bytes.TrimSpace(buf)) == 0 {
		if optional {
			return nil
		}
		return newError(CodeUnsupported, nil, "a JSON request body is required").withStatus(http.StatusBadRequest)
	}
	dec := json.NewDecoder(bytes.NewReader(buf))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return newError(CodeUnsupported, nil, "malformed JSON body: %v", err).withStatus(http.StatusBadRequest)
	}
	// Not dec.More, which reports false before a stray "}" or "]".
	if len(bytes.TrimSpace(buf[dec.InputOffset():])) != 0 {
		return newError(CodeUnsupported, nil, "trailing data after the JSON body").withStatus(http.StatusBadRequest)
	}
	return nil
}

// tagHistory answers GET /v2/<name>/_berth/tags/<tag>/history: the tag's
// moves, newest first. Pages run like tags/list, except that last is the
// sequence number of the last move seen, in decimal.
func (a *API) tagHistory(w http.ResponseWriter, r *http.Request) {
	repo, tag, err := lifecycleTarget(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	last, n, err := a.pageRequest(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	var before uint64
	if last != "" {
		before, err = strconv.ParseUint(last, 10, 64)
		if err != nil || before == 0 {
			a.writeError(w, r, newError(CodeUnsupported, map[string]string{"last": last},
				"last must be the positive sequence number of a move, got %q", last).withStatus(http.StatusBadRequest))
			return
		}
	}
	moves, more, err := a.store.TagHistory(r.Context(), repo, tag, before, n)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	var lastSeen []string
	if len(moves) > 0 {
		lastSeen = []string{strconv.FormatUint(moves[len(moves)-1].Seq, 10)}
	}
	writePage(w, "/v2/"+repo+"/_berth/tags/"+tag+"/history", lastSeen, n, more,
		tagHistory{Name: repo, Tag: tag, History: moves})
}

// rollbackTag answers POST /v2/<name>/_berth/tags/<tag>/rollback with the
// move it made. When the tag named the digest already, nothing moves and
// the answer is the tag's newest move, which names it.
func (a *API) rollbackTag(w http.ResponseWriter, r *http.Request) {
	repo, tag, err := lifecycleTarget(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	var req rollbackRequest
	if e := ReadJSON(r, &req, maxLifecycleBody, true); e != nil {
		a.writeError(w, r, e)
		return
	}
	var to digest.Digest
	if req.To != "" {
		if to, err = parseDigest(req.To); err != nil {
			a.writeError(w, r, err)
			return
		}
	}
	move, err := a.store.RollbackTag(r.Context(), repo, tag, to)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, "application/json", move)
}

// promoteTag answers POST /v2/<name>/_berth/tags/<tag>/promote: the tag is
// pointed at the manifest the body names in another (or the same)
// repository. The caller holds push on <name> (the auth middleware saw to
// it) and must be allowed to pull the source: if not, the answer is 403
// DENIED, before the source is looked at, so it tells nothing about what
// the source holds. (A mount from an unreadable source instead falls back
// to an upload, as the specification asks of mounts; a promotion has no
// such fallback.) The answer is 201 with the move, or 200 without one when
// the tag named the digest already.
func (a *API) promoteTag(w http.ResponseWriter, r *http.Request) {
	repo, tag, err := lifecycleTarget(r)
	if err != nil {
		// An invalid tag is a bad request here, as for a manifest push.
		if e := asError(err); e.Code == CodeManifestUnknown {
			err = newError(CodeManifestInvalid, e.Detail, "%s", e.Message)
		}
		a.writeError(w, r, err)
		return
	}
	var req promoteRequest
	if e := ReadJSON(r, &req, maxLifecycleBody, false); e != nil {
		a.writeError(w, r, e)
		return
	}
	if !validName(req.Repository) {
		a.writeError(w, r, newError(CodeNameInvalid, map[string]string{"repository": req.Repository},
			"invalid source repository %q", req.Repository))
		return
	}
	if req.Reference == "" {
		a.writeError(w, r, newError(CodeManifestInvalid, nil, "the source reference is missing"))
		return
	}
	if _, err := parseRef(req.Reference); err != nil {
		a.writeError(w, r, err)
		return
	}
	if !a.granted(r, req.Repository, "pull") {
		a.writeError(w, r, newError(CodeDenied, map[string]string{"repository": req.Repository},
			"pull access to the source repository %s is denied", req.Repository))
		return
	}
	move, d, err := a.store.Promote(r.Context(), req.Repository, req.Reference, repo, tag)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	resp := promoteResponse{Digest: d}
	status := http.StatusOK
	if move != (storage.TagMove{}) {
		resp.Move = &move
		status = http.StatusCreated
	}
	buf, err := json.Marshal(resp)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(buf)))
	h.Set("Docker-Content-Digest", string(d))
	h.Set("Location", "/v2/"+repo+"/manifests/"+string(d))
	w.WriteHeader(status)
	_, _ = w.Write(buf)
}
