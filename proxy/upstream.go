package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/distribution"
	"github.com/berth-registry/berth/remote"
)

// upstream is one configured upstream registry.
type upstream struct {
	name     string
	ns       string // local namespace, without slashes
	remoteNS string
	hosts    []string
	ttl      time.Duration
	reg      *remote.Registry
	def      bool
	prefetch bool
}

// remoteName is the upstream's name of the repository whose name under
// the namespace is rest.
func (u *upstream) remoteName(rest string) string {
	if u.remoteNS == "" {
		return rest
	}
	return u.remoteNS + "/" + rest
}

// manifestTypes are the media types a manifest request accepts.
var manifestTypes = strings.Join([]string{
	ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex,
	"application/vnd.docker.distribution.manifest.v2+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
}, ", ")

// upstreamError is an answer of an upstream other than success: its
// status, and the code and message of its error body when it has one.
type upstreamError struct {
	upstream string
	status   int
	code     string
	message  string
	// retryAfter is the upstream's Retry-After, passed on with a 429.
	retryAfter string
}

func (e *upstreamError) Error() string {
	msg := fmt.Sprintf("upstream %s answered %d %s", e.upstream, e.status, http.StatusText(e.status))
	if e.code != "" || e.message != "" {
		msg += ": " + strings.TrimSpace(e.code+" "+e.message)
	}
	return msg
}

// failed reports whether err means the upstream could not answer: it is
// unreachable, failing (5xx), limiting (429) or refusing Berth's
// credentials (401, 403). A cached copy is then served instead. Any
// other answer (404 above all) is the upstream's word on the content.
func failed(ctx context.Context, err error) bool {
	if remote.Unreachable(ctx, err) {
		return true
	}
	var ue *upstreamError
	if errors.As(err, &ue) {
		return ue.status >= 500 || ue.status == http.StatusTooManyRequests ||
			ue.status == http.StatusUnauthorized || ue.status == http.StatusForbidden
	}
	return errors.Is(err, errBadUpstream)
}

// errBadUpstream marks an answer that breaks the protocol: content that
// does not hash to its digest, a manifest that does not parse.
var errBadUpstream = errors.New("upstream answer invalid")

// readError turns a response that is not a success into an upstreamError,
// closing its body.
func readError(u *upstream, resp *http.Response) error {
	defer resp.Body.Close()
	e := &upstreamError{upstream: u.name, status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After")}
	var body struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<10))
	if json.Unmarshal(raw, &body) == nil && len(body.Errors) > 0 {
		e.code, e.message = body.Errors[0].Code, body.Errors[0].Message
		if len(e.message) > 200 {
			e.message = e.message[:200] + "..."
		}
	}
	return e
}

// request sends method to path of repository name on the upstream.
func (u *upstream) request(ctx context.Context, method, name, path string, hdr http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u.reg.URL("/v2/"+name+path), nil)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", u.name, err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := u.reg.Do(req, name)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return nil, readError(u, resp)
	}
	return resp, nil
}

// headManifest asks the upstream which manifest ref names, and its media
// type and size.
func (u *upstream) headManifest(ctx context.Context, name, ref string) (ocispec.Descriptor, error) {
	resp, err := u.request(ctx, http.MethodHead, name, "/manifests/"+ref, http.Header{"Accept": {manifestTypes}})
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	_ = resp.Body.Close()
	d, err := digest.Parse(resp.Header.Get("Docker-Content-Digest"))
	if err != nil {
		// Without a digest the HEAD says nothing; a GET will.
		return ocispec.Descriptor{}, nil
	}
	return ocispec.Descriptor{MediaType: mediaType(resp), Digest: d, Size: resp.ContentLength}, nil
}

// getManifest fetches the manifest ref names, at most limit bytes, and
// checks it against want (when ref is a tag, against the digest the
// upstream gives, if it gives one).
func (u *upstream) getManifest(ctx context.Context, name, ref string, limit int64) (body []byte, mediaType string, d digest.Digest, err error) {
	resp, err := u.request(ctx, http.MethodGet, name, "/manifests/"+ref, http.Header{"Accept": {manifestTypes}})
	if err != nil {
		return nil, "", "", err
	}
	defer resp.Body.Close()
	if resp.ContentLength > limit {
		return nil, "", "", fmt.Errorf("%w: upstream %s: manifest of %d bytes exceeds the limit of %d", errBadUpstream, u.name, resp.ContentLength, limit)
	}
	body, err = io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, "", "", &remote.UnreachableError{Host: u.reg.Host(), Err: err}
	}
	if int64(len(body)) > limit {
		return nil, "", "", fmt.Errorf("%w: upstream %s: manifest exceeds the limit of %d bytes", errBadUpstream, u.name, limit)
	}
	want, derr := digest.Parse(ref)
	if derr != nil {
		want, _ = digest.Parse(resp.Header.Get("Docker-Content-Digest"))
	}
	alg := digest.Canonical
	if want != "" {
		alg = want.Algorithm()
	}
	d = alg.FromBytes(body)
	if want != "" && d != want {
		return nil, "", "", fmt.Errorf("%w: upstream %s: manifest %s hashes to %s", errBadUpstream, u.name, want, d)
	}
	return body, mediaTypeOf(resp), d, nil
}

// mediaType is the media type of a response, without parameters.
func mediaType(resp *http.Response) string {
	mt, _, _ := strings.Cut(resp.Header.Get("Content-Type"), ";")
	return strings.TrimSpace(mt)
}

// mediaTypeOf is mediaType, kept apart for the manifest parser: empty when
// the upstream sent none, so that the body's own field decides.
func mediaTypeOf(resp *http.Response) string {
	mt := mediaType(resp)
	if mt == "application/octet-stream" || mt == "text/plain" {
		return ""
	}
	return mt
}

// clientError is what a client is told when the upstream did not give
// what it asked for and nothing is cached: the specification's code for
// what the upstream said, with its reason.
func clientError(u *upstream, what string, err error) error {
	var ue *upstreamError
	unknown := distribution.CodeManifestUnknown
	if what == "blob" {
		unknown = distribution.CodeBlobUnknown
	}
	detail := map[string]any{"upstream": u.name}
	switch {
	case errors.As(err, &ue):
		detail["status"] = ue.status
		switch {
		case ue.status == http.StatusNotFound:
			code := unknown
			if ue.code == distribution.CodeNameUnknown.Name {
				code = distribution.CodeNameUnknown
			}
			return &distribution.Error{Code: code, Message: ue.Error(), Detail: detail}
		case ue.status == http.StatusTooManyRequests:
			return &distribution.Error{Code: distribution.CodeTooManyRequests, Message: ue.Error(), Detail: detail}
		case ue.status == http.StatusUnauthorized || ue.status == http.StatusForbidden:
			return &distribution.Error{Code: distribution.CodeDenied, Message: ue.Error() + " (Berth's credentials for it)", Detail: detail}
		}
		return &distribution.Error{Code: distribution.CodeUnknown, Message: ue.Error(), Detail: detail, Status: http.StatusBadGateway}
	case remote.Unreachable(context.Background(), err):
		return &distribution.Error{Code: distribution.CodeUnknown, Message: "upstream " + u.name + " is unreachable", Detail: detail, Status: http.StatusBadGateway}
	case errors.Is(err, errBadUpstream):
		return &distribution.Error{Code: distribution.CodeUnknown, Message: "upstream " + u.name + " gave an invalid " + what, Detail: detail, Status: http.StatusBadGateway}
	}
	return err
}
