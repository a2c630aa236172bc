package distribution

import (
	"errors"
	"io"
	"net"
	"net/http"
	"time"
)

// limitUploads bounds the upload requests in flight. One over the bound is
// answered at once with 429 TOO_MANY_REQUESTS and a Retry-After, rather than
// queued: a client retries, and the server keeps its memory and file handles.
func (a *API) limitUploads(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		select {
		case a.uploadSlots <- struct{}{}:
			defer func() { <-a.uploadSlots }()
		default:
			w.Header().Set("Retry-After", "1")
			a.writeError(w, r, newError(CodeTooManyRequests, map[string]int{"limit": cap(a.uploadSlots)},
				"too many uploads in progress (limit %d); retry shortly", cap(a.uploadSlots)))
			return
		}
		next(w, r)
	}
}

// guardBody gives the request body a read deadline that moves forward with
// every read: a client that keeps sending is never cut off, however large
// its body, while one that stalls for longer than the timeout is.
func (a *API) guardBody(next http.HandlerFunc) http.HandlerFunc {
	return GuardBody(a.bodyTimeout, next)
}

// GuardBody gives the request body of next a read deadline that moves
// forward with every read, as the API's uploads have: a body that stalls
// for longer than timeout fails with a 408 BLOB_UPLOAD_INVALID error. A
// timeout of zero or less guards nothing.
func GuardBody(timeout time.Duration, next http.HandlerFunc) http.HandlerFunc {
	if timeout <= 0 {
		return next
	}
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = &deadlineBody{ReadCloser: r.Body, rc: http.NewResponseController(w), timeout: timeout}
		next(w, r)
	}
}

type deadlineBody struct {
	io.ReadCloser
	rc      *http.ResponseController
	timeout time.Duration
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	_ = b.rc.SetReadDeadline(time.Now().Add(b.timeout))
	n, err := b.ReadCloser.Read(p)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		err = newError(CodeBlobUploadInvalid, nil, "request body stalled for more than %s", b.timeout).
			withStatus(http.StatusRequestTimeout)
	}
	return n, err
}
