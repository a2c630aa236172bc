package distribution

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"syscall"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/blob"
	"github.com/berth-registry/berth/storage/meta"
)

// Code is an error code of the OCI Distribution Specification with the HTTP
// status Berth answers it with.
type Code struct {
	Name    string
	Status  int
	Message string
}

// The specification's error codes. UNKNOWN is Berth's code for internal
// failures, which the specification leaves open.
var (
	CodeBlobUnknown         = Code{"BLOB_UNKNOWN", http.StatusNotFound, "blob unknown to registry"}
	CodeBlobUploadInvalid   = Code{"BLOB_UPLOAD_INVALID", http.StatusBadRequest, "blob upload invalid"}
	CodeBlobUploadUnknown   = Code{"BLOB_UPLOAD_UNKNOWN", http.StatusNotFound, "blob upload unknown to registry"}
	CodeDigestInvalid       = Code{"DIGEST_INVALID", http.StatusBadRequest, "provided digest did not match uploaded content"}
	CodeManifestBlobUnknown = Code{"MANIFEST_BLOB_UNKNOWN", http.StatusBadRequest, "manifest references a manifest or blob unknown to registry"}
	CodeManifestInvalid     = Code{"MANIFEST_INVALID", http.StatusBadRequest, "manifest invalid"}
	CodeManifestUnknown     = Code{"MANIFEST_UNKNOWN", http.StatusNotFound, "manifest unknown to registry"}
	CodeNameInvalid         = Code{"NAME_INVALID", http.StatusBadRequest, "invalid repository name"}
	CodeNameUnknown         = Code{"NAME_UNKNOWN", http.StatusNotFound, "repository name not known to registry"}
	CodeSizeInvalid         = Code{"SIZE_INVALID", http.StatusBadRequest, "provided length did not match content length"}
	CodeUnauthorized        = Code{"UNAUTHORIZED", http.StatusUnauthorized, "authentication required"}
	CodeDenied              = Code{"DENIED", http.StatusForbidden, "requested access to the resource is denied"}
	CodeUnsupported         = Code{"UNSUPPORTED", http.StatusMethodNotAllowed, "the operation is unsupported"}
	// CodeTagImmutable is Berth's own: a push, delete or rollback would
	// move a tag that the configuration makes immutable.
	CodeTagImmutable    = Code{"TAG_IMMUTABLE", http.StatusConflict, "tag is immutable"}
	CodeTooManyRequests = Code{"TOO_MANY_REQUESTS", http.StatusTooManyRequests, "too many requests"}
	CodeUnknown         = Code{"UNKNOWN", http.StatusInternalServerError, "unknown error"}
	// CodeUnavailable is Berth's own: a backend is throttled, failing or
	// out of reach for a moment; the answer carries Retry-After.
	CodeUnavailable = Code{"UNAVAILABLE", http.StatusServiceUnavailable, "service unavailable, retry later"}
)

// Error is one error response: a code, a message for people and an optional
// machine-readable detail. Status overrides the code's usual status when set.
type Error struct {
	Code    Code
	Message string
	Detail  any
	Status  int
}

func (e *Error) Error() string { return e.Code.Name + ": " + e.Message }

// newError builds an Error; the message is formatted from format and args,
// or is the code's own message when format is empty.
func newError(code Code, detail any, format string, args ...any) *Error {
	msg := code.Message
	if format != "" {
		msg = fmt.Sprintf(format, args...)
	}
	return &Error{Code: code, Message: msg, Detail: detail}
}

// withStatus returns e answered with a status other than its code's usual.
func (e *Error) withStatus(status int) *Error {
	e.Status = status
	return e
}

type errorBody struct {
	Errors []errorEntry `json:"errors"`
}

type errorEntry struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

// AsError turns any error of the store (or an *Error) into the response the
// specification names for it, as the API answers it: an internal failure
// becomes UNKNOWN without its cause.
func AsError(err error) *Error { return asError(err) }

// asError turns any error from a handler or the store into the response the
// specification names for it.
func asError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var detail any
	msg := err.Error()
	var de *storage.DetailError
	if errors.As(err, &de) {
		// The store said exactly what went wrong; the operations it was
		// wrapped in add nothing for the client.
		msg = de.Error()
		if de.Detail != nil {
			detail = de.Detail
		}
	}
	code, status := codeFor(err)
	if code == CodeUnavailable {
		// Which backend failed, and how, is logged, not shown.
		return &Error{Code: code, Message: code.Message}
	}
	if code == CodeUnknown {
		// The cause is logged, not shown: it may name paths on the server.
		if errors.Is(err, syscall.ENOSPC) {
			return &Error{Code: CodeUnknown, Message: "insufficient storage", Status: http.StatusInsufficientStorage}
		}
		return &Error{Code: CodeUnknown, Message: "internal error"}
	}
	return &Error{Code: code, Message: msg, Detail: detail, Status: status}
}

// codeFor names the code (and, where it differs from the code's usual one,
// the status) that answers an error from the store.
func codeFor(err error) (Code, int) {
	switch {
	case errors.Is(err, storage.ErrBlobUnknown):
		return CodeBlobUnknown, 0
	case errors.Is(err, storage.ErrManifestUnknown):
		return CodeManifestUnknown, 0
	case errors.Is(err, storage.ErrNameUnknown):
		return CodeNameUnknown, 0
	case errors.Is(err, storage.ErrUploadUnknown):
		return CodeBlobUploadUnknown, 0
	case errors.Is(err, storage.ErrDigestMismatch):
		return CodeDigestInvalid, 0
	case errors.Is(err, storage.ErrRangeInvalid):
		return CodeBlobUploadInvalid, http.StatusRequestedRangeNotSatisfiable
	case errors.Is(err, storage.ErrSizeInvalid):
		return CodeSizeInvalid, 0
	case errors.Is(err, storage.ErrManifestBlobUnknown):
		return CodeManifestBlobUnknown, 0
	case errors.Is(err, storage.ErrManifestInvalid):
		return CodeManifestInvalid, 0
	case errors.Is(err, storage.ErrTagImmutable):
		return CodeTagImmutable, 0
	case errors.Is(err, storage.ErrUnsupported), errors.Is(err, storage.ErrQueryInvalid):
		return CodeUnsupported, http.StatusBadRequest
	case errors.Is(err, blob.ErrUnavailable), errors.Is(err, meta.ErrUnavailable):
		return CodeUnavailable, 0
	}
	return CodeUnknown, 0
}

// writeError answers the request with err in the specification's JSON form.
// Internal failures are logged with their cause and answered without it.
func (a *API) writeError(w http.ResponseWriter, r *http.Request, err error) {
	e := asError(err)
	status := e.status()
	level := slog.LevelDebug
	if status >= 500 {
		level = slog.LevelError
	}
	a.log.Log(r.Context(), level, "request failed", "method", r.Method, "path", r.URL.Path,
		"status", status, "code", e.Code.Name, "error", err)
	WriteError(w, r, e)
}

func (e *Error) status() int {
	if e.Status != 0 {
		return e.Status
	}
	return e.Code.Status
}

// retryAfter is the Retry-After, in seconds, of a 503: backends that are
// throttled or restarting are usually back within seconds.
const retryAfter = "2"

// WriteError answers a request with e in the specification's JSON form:
// {"errors":[{"code","message","detail"}]}, with e's status.
func WriteError(w http.ResponseWriter, r *http.Request, e *Error) {
	body, _ := json.Marshal(errorBody{Errors: []errorEntry{{Code: e.Code.Name, Message: e.Message, Detail: e.Detail}}})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", fmt.Sprint(len(body)))
	h.Del("Docker-Content-Digest")
	if e.status() == http.StatusServiceUnavailable {
		h.Set("Retry-After", retryAfter)
	}
	w.WriteHeader(e.status())
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}
