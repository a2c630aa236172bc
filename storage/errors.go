package storage

import (
	"errors"
	"fmt"
)

// Errors returned by the store. Callers test for them with errors.Is; the
// distribution layer maps each to its OCI error code.
var (
	// ErrBlobUnknown means the blob is not linked into the repository.
	ErrBlobUnknown = errors.New("blob unknown to repository")
	// ErrManifestUnknown means no manifest matches the reference.
	ErrManifestUnknown = errors.New("manifest unknown to repository")
	// ErrNameUnknown means the repository does not exist.
	ErrNameUnknown = errors.New("repository name not known to registry")
	// ErrUploadUnknown means there is no such upload session in the repository.
	ErrUploadUnknown = errors.New("blob upload unknown to registry")
	// ErrDigestMismatch means the content does not hash to the digest given.
	ErrDigestMismatch = errors.New("provided digest did not match uploaded content")
	// ErrRangeInvalid means a chunk does not start where the upload stands.
	ErrRangeInvalid = errors.New("chunk does not start at the current upload offset")
	// ErrSizeInvalid means the content length differs from the length declared.
	ErrSizeInvalid = errors.New("content length did not match the declared size")
	// ErrManifestInvalid means the manifest failed validation.
	ErrManifestInvalid = errors.New("manifest invalid")
	// ErrManifestBlobUnknown means a manifest references content the
	// repository does not have.
	ErrManifestBlobUnknown = errors.New("manifest references a blob or manifest unknown to the repository")
	// ErrTagImmutable means the change would move or delete a tag that the
	// tag rules make immutable.
	ErrTagImmutable = errors.New("tag is immutable")
	// ErrUnsupported means the operation or digest algorithm is not supported.
	ErrUnsupported = errors.New("unsupported")
	// ErrQueryInvalid means a search query is malformed, for instance its
	// cursor.
	ErrQueryInvalid = errors.New("search query invalid")
)

// DetailError carries a machine-readable detail alongside a sentinel error,
// for instance the digest a manifest referenced but the repository lacks.
type DetailError struct {
	Err    error
	Detail map[string]any
	Msg    string
}

func (e *DetailError) Error() string {
	if e.Msg != "" {
		return fmt.Sprintf("%v: %s", e.Err, e.Msg)
	}
	return e.Err.Error()
}

func (e *DetailError) Unwrap() error { return e.Err }

func detailf(err error, detail map[string]any, format string, args ...any) error {
	return &DetailError{Err: err, Detail: detail, Msg: fmt.Sprintf(format, args...)}
}
