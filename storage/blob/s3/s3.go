// Package s3 is Berth's blob store in an S3-compatible object store. It
// owns the objects of committed content, the content in flight (upload
// sessions and anonymous content), the quarantine, and the way content in
// flight becomes an object under its digest.
//
// Its layout under the configured prefix of one bucket:
//
//	blobs/<algorithm>/<hex>          committed content of <algorithm>:<hex>
//	uploads/<session id>/state       an upload session: its pieces, size, hash state
//	uploads/<session id>/<piece>     the session's content, in pieces
//	tmp/<random>/<piece>             anonymous content in flight
//	quarantine/<algorithm>-<hex>     content set aside by Quarantine
//
// Content in flight is kept in pieces, plain objects that any process can
// read: the state object of a session lists them, so a session begun on one
// replica goes on, and reads back the same, on any other (anonymous
// content, which only its Staged value reaches, keeps that list in
// memory). Every piece but the last few is exactly one part long (the part
// size, 8 MiB unless configured, at least S3's minimum of 5 MiB); the
// pieces after them are smaller and together shorter than a part. An
// append reads at most one part from its client at a time into a buffer,
// so memory per append is one part whatever the content's size: when the
// buffer fills, the small pieces before it are read back into its head
// and the whole is written as one full piece; what remains at the end is
// written as one more small piece. The append then replaces the state
// object, conditionally on the version it read (If-Match), and only that
// makes the new pieces part of the content: an append that fails at any
// point before leaves the state as it was (the pieces it wrote are
// removed, or left as debris no state names), so appends are all or
// nothing. The state also keeps the state of the hash the
// appends were given, so that a commit can check that the content it makes
// visible is the content its caller verified, and so that a process that
// has not seen the session can resume hashing without reading the content
// back.
//
// Commit makes the content visible under its digest in one step, never
// partially: small content is written with one conditional PUT; content of
// one full piece is copied; longer content is assembled on the server by
// a multipart upload whose parts are copies of the full pieces
// (UploadPartCopy, no byte through Berth) and, last, the small pieces read
// back and uploaded as one part. Content already present is not assembled
// again. Then the session's state is deleted, which ends it, and its
// pieces after it. Multipart uploads exist only while a commit or a large
// copy runs; those a crashed process left, and pieces in directories
// without a state (debris of ended sessions, anonymous content of dead
// processes), are removed by Open once they are older than
// Options.StaleAfter.
//
// Errors say what failed and wrap the SDK's error; a missing object is
// blob.ErrNotFound, and throttling, server errors and an unreachable
// endpoint are blob.ErrUnavailable, which the API answers with 503 and
// Retry-After.
package s3

import (
	"context"
	"crypto/rand"
	_ "crypto/sha256" // digests of these algorithms must validate
	_ "crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/blob"
)

// The store's areas under its prefix.
const (
	blobsDir      = "blobs/"
	uploadsDir    = "uploads/"
	tmpDir        = "tmp/"
	quarantineDir = "quarantine/"
	stateName     = "state"
)

// Sizes of parts.
const (
	// MinPartSize is S3's smallest part of a multipart upload but the
	// last, and so the smallest part size a Store accepts.
	MinPartSize = 5 << 20
	// DefaultPartSize is the part size of a Store whose options set none.
	DefaultPartSize = 8 << 20
	// maxPartSize bounds the part size a state object may name, and so
	// the buffer an append allocates for it.
	maxPartSize = 512 << 20
	// maxParts is S3's largest number of parts of a multipart upload.
	maxParts = 10000
	// maxCopySize is the largest object CopyObject copies in one request.
	maxCopySize = 5 << 30
	// copyPartSize is the part size of a multipart copy of an object
	// larger than maxCopySize.
	copyPartSize = 1 << 30
)

// Options configure a Store.
type Options struct {
	// Endpoint is the URL of the S3 service, such as
	// http://127.0.0.1:9000; empty means AWS's endpoint for Region.
	Endpoint string
	// Region is the bucket's region; empty means us-east-1 unless the
	// environment names one.
	Region string
	// Bucket is the bucket the store keeps its objects in. It must exist.
	Bucket string
	// Prefix is prepended to every key, so that several stores can share
	// a bucket; a slash is added if it does not end with one.
	Prefix string
	// AccessKey and SecretKey are static credentials; empty means the
	// SDK's default chain (environment, shared files, instance role).
	AccessKey string
	SecretKey string
	// ForcePathStyle addresses the bucket in the path rather than the
	// host name, as most S3-compatible servers need.
	ForcePathStyle bool
	// PartSize is the size of a piece of content in flight and of a part
	// of the multipart uploads that assemble it, in bytes: the memory one
	// append uses, and a ten-thousandth of the largest content a session
	// can hold. Zero means DefaultPartSize; less than MinPartSize is an
	// error.
	PartSize int64
	// RedirectExpiry is how long a URL from Redirecting.RedirectURL is
	// valid; zero means 15 minutes.
	RedirectExpiry time.Duration
	// StaleAfter is the age past which Open removes what a crashed
	// process left in flight: multipart uploads, anonymous content, and
	// pieces of sessions whose state is gone. Zero means 24 hours. It must
	// exceed the longest a single request may run, since other processes
	// may share the bucket.
	StaleAfter time.Duration
	// HTTPClient sends the requests; nil means the SDK's default (which
	// honours AWS_CA_BUNDLE, as this one does not).
	HTTPClient *http.Client
	// Logger receives the store's diagnostics; nil discards them.
	Logger *slog.Logger
}

// Store keeps blobs as objects of a bucket. It implements blob.Store,
// blob.Quarantiner and blob.Sweeper (Redirecting adds blob.Redirector),
// is safe for concurrent use, and holds nothing that needs closing.
type Store struct {
	client     *awss3.Client
	presign    *awss3.PresignClient
	bucket     string
	prefix     string
	endpoint   string
	partSize   int64
	expiry     time.Duration
	staleAfter time.Duration
	log        *slog.Logger
	// bufs holds buffers of partSize bytes, so that appends reuse them.
	bufs sync.Pool
}

var (
	_ blob.Store       = (*Store)(nil)
	_ blob.Quarantiner = (*Store)(nil)
	_ blob.Sweeper     = (*Store)(nil)
)

// Open connects to the bucket opts names, checks that it is there and
// reachable with the credentials given, and removes what crashed processes
// left in flight longer ago than opts.StaleAfter. It fails with one line
// that says what is wrong when the endpoint, the credentials or the
// bucket are.
func Open(ctx context.Context, opts Options) (*Store, error) {
	s, err := New(ctx, opts)
	if err != nil {
		return nil, err
	}
	if err := s.Check(ctx); err != nil {
		return nil, err
	}
	if err := s.sweepStale(ctx, time.Now()); err != nil {
		s.log.WarnContext(ctx, "could not remove content in flight that crashed processes left", "bucket", s.bucket, "error", err)
	}
	return s, nil
}

// New builds a Store from opts without contacting the service: Open does
// that. It fails on options that cannot work.
func New(ctx context.Context, opts Options) (*Store, error) {
	if opts.Bucket == "" {
		return nil, errors.New("s3: a bucket is required")
	}
	prefix, err := cleanPrefix(opts.Prefix)
	if err != nil {
		return nil, err
	}
	s := &Store{bucket: opts.Bucket, prefix: prefix, endpoint: opts.Endpoint, partSize: opts.PartSize,
		expiry: opts.RedirectExpiry, staleAfter: opts.StaleAfter, log: opts.Logger}
	switch {
	case s.partSize == 0:
		s.partSize = DefaultPartSize
	case s.partSize < MinPartSize || s.partSize > maxPartSize:
		return nil, fmt.Errorf("s3: part size %d is outside [%d, %d]", s.partSize, MinPartSize, maxPartSize)
	}
	if s.expiry <= 0 {
		s.expiry = 15 * time.Minute
	}
	if s.staleAfter <= 0 {
		s.staleAfter = 24 * time.Hour
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	load := []func(*config.LoadOptions) error{
		config.WithRetryer(func() aws.Retryer {
			// No client-side rate limit of retries: throttling is the
			// server's to decide, and an exhausted quota would fail
			// requests that a retry would have served.
			std := retry.NewStandard(func(o *retry.StandardOptions) { o.RateLimiter = ratelimit.None })
			// A store on a file system (versitygw's posix backend) may
			// refuse a write with ExistingObjectIsDirectory while a
			// concurrent delete removes the directory the key's parent
			// was; Berth chose the key, so writing it again is safe, and
			// a key that really is a directory fails again.
			return retry.AddWithErrorCodes(std, "ExistingObjectIsDirectory")
		}),
	}
	if opts.Region != "" {
		load = append(load, config.WithRegion(opts.Region))
	}
	if opts.AccessKey != "" || opts.SecretKey != "" {
		if opts.AccessKey == "" || opts.SecretKey == "" {
			return nil, errors.New("s3: accessKey and secretKey go together")
		}
		load = append(load, config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(opts.AccessKey, opts.SecretKey, "")))
	}
	cfg, err := config.LoadDefaultConfig(ctx, load...)
	if err != nil {
		return nil, fmt.Errorf("s3: load configuration: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	s.client = awss3.NewFromConfig(cfg, func(o *awss3.Options) {
		if opts.Endpoint != "" {
			o.BaseEndpoint = aws.String(opts.Endpoint)
		}
		o.UsePathStyle = opts.ForcePathStyle
		// Every object read is checked by what reads it: content by
		// its digest (the core's commit, fsck, and every client that
		// pulls), an upload's saved hash state by the digest it must
		// reach. A CRC of every response body besides cost half the
		// CPU of a pull, for nothing.
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		if opts.HTTPClient != nil {
			o.HTTPClient = opts.HTTPClient
		}
	})
	s.presign = awss3.NewPresignClient(s.client)
	return s, nil
}

// cleanPrefix checks a key prefix and gives it its trailing slash.
func cleanPrefix(p string) (string, error) {
	p = strings.TrimPrefix(p, "/")
	if p == "" {
		return "", nil
	}
	if !strings.HasSuffix(p, "/") {
		p += "/"
	}
	for _, seg := range strings.Split(strings.TrimSuffix(p, "/"), "/") {
		if seg == "" || seg == "." || seg == ".." || strings.ContainsFunc(seg, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '\\' }) {
			return "", fmt.Errorf("s3: prefix %q: every segment must be a plain name", p)
		}
	}
	return p, nil
}

// Check asks the service for the bucket, within ten seconds, and says in
// one line what is wrong if it cannot be used.
func (s *Store) Check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := s.client.HeadBucket(ctx, &awss3.HeadBucketInput{Bucket: &s.bucket})
	if err == nil {
		return nil
	}
	where := s.endpoint
	if where == "" {
		where = "the AWS endpoint"
	}
	var re *smithyhttp.ResponseError
	status := 0
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	var ne net.Error
	switch {
	case status == http.StatusNotFound:
		return fmt.Errorf("s3: bucket %q does not exist at %s", s.bucket, where)
	case status == http.StatusForbidden || status == http.StatusUnauthorized:
		return fmt.Errorf("s3: access to bucket %q at %s denied: check accessKey and secretKey (HTTP %d)", s.bucket, where, status)
	case status == http.StatusMovedPermanently || status == http.StatusBadRequest:
		return fmt.Errorf("s3: bucket %q at %s refused the request (HTTP %d): check region and forcePathStyle", s.bucket, where, status)
	case status != 0:
		return fmt.Errorf("s3: bucket %q at %s: HTTP %d: %w", s.bucket, where, status, err)
	case errors.As(err, &ne):
		return fmt.Errorf("s3: cannot reach %s for bucket %q: %w", where, s.bucket, errors.Unwrap(ne))
	}
	return fmt.Errorf("s3: bucket %q at %s: %w", s.bucket, where, err)
}

// key is the object key of a name relative to the store's prefix.
func (s *Store) key(rel string) string { return s.prefix + rel }

// rel is the name relative to the store's prefix of an object key.
func (s *Store) rel(key string) string { return strings.TrimPrefix(key, s.prefix) }

// blobName is the name, relative to the prefix, of the content of d. It
// refuses digests that are malformed or of an algorithm Berth does not
// hash, so that the encoded part is plain lower-case hex.
func blobName(d digest.Digest) (string, error) {
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("invalid digest %q: %w", d, err)
	}
	enc := d.Encoded()
	if enc == "" || strings.Trim(enc, "0123456789abcdef") != "" {
		return "", fmt.Errorf("invalid digest %q: its encoding is not hex", d)
	}
	return blobsDir + string(d.Algorithm()) + "/" + enc, nil
}

// digestOf returns the digest whose blob name is name, if there is one.
func digestOf(name string) (digest.Digest, bool) {
	rest, ok := strings.CutPrefix(name, blobsDir)
	if !ok {
		return "", false
	}
	alg, enc, ok := strings.Cut(rest, "/")
	if !ok {
		return "", false
	}
	d := digest.Digest(alg + ":" + enc)
	if d.Validate() != nil || strings.Trim(enc, "0123456789abcdef") != "" {
		return "", false
	}
	return d, true
}

// randomName returns 16 random hex digits, for names no one else picks.
func randomName() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// failed describes the failure of an S3 request about what: a missing
// object is blob.ErrNotFound; throttling, server errors and an unreachable
// service are blob.ErrUnavailable. The SDK's error stays wrapped.
func failed(what string, err error) error {
	switch {
	case notFound(err):
		return fmt.Errorf("%w: %s", blob.ErrNotFound, what)
	case unavailable(err):
		return fmt.Errorf("%s: %w: %w", what, blob.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// apiCode is the S3 error code of err, or "".
func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// httpStatus is the HTTP status of the response that failed err, or 0.
func httpStatus(err error) int {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// notFound reports whether err says that a key does not exist (not a
// bucket, nor a multipart upload: those are failures).
func notFound(err error) bool {
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	if errors.As(err, &nsk) || errors.As(err, &nf) {
		return true
	}
	switch apiCode(err) {
	case "NoSuchKey", "NotFound":
		return true
	case "NoSuchBucket", "NoSuchUpload":
		return false
	}
	return httpStatus(err) == http.StatusNotFound
}

// preconditionFailed reports whether err is a conditional write or read
// refused because its condition does not hold.
func preconditionFailed(err error) bool {
	return apiCode(err) == "PreconditionFailed" || httpStatus(err) == http.StatusPreconditionFailed
}

// conflict reports whether err is a conditional write that raced another
// write of the same key.
func conflict(err error) bool {
	return apiCode(err) == "ConditionalRequestConflict" || httpStatus(err) == http.StatusConflict
}

// unavailable reports whether err means that the service cannot serve
// now but may later: throttling, a server error, a timeout, or a service
// that cannot be reached. A request its caller cancelled is not.
func unavailable(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false
	}
	switch apiCode(err) {
	case "SlowDown", "ServiceUnavailable", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError", "RequestTimeTooSkewed":
		return true
	}
	switch httpStatus(err) {
	case http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	case 0:
		var ne net.Error
		return errors.As(err, &ne)
	}
	return false
}

// cleanupContext is the context of the clean-up after a failure: it
// outlives the cancellation of ctx, for a while.
func cleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
}

// Stat implements blob.Store.
func (s *Store) Stat(ctx context.Context, d digest.Digest) (int64, error) {
	name, err := blobName(d)
	if err != nil {
		return 0, err
	}
	out, err := s.client.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: &s.bucket, Key: aws.String(s.key(name))})
	if err != nil {
		return 0, failed("blob "+string(d), err)
	}
	return aws.ToInt64(out.ContentLength), nil
}

// Open implements blob.Store. It asks for the object's size (a HEAD) and
// reads nothing: each Read after a Seek asks for the content from where it
// stands to the end, so that net/http's ServeContent serves a range
// without reading the object from its start.
func (s *Store) Open(ctx context.Context, d digest.Digest) (io.ReadSeekCloser, error) {
	name, err := blobName(d)
	if err != nil {
		return nil, err
	}
	key := s.key(name)
	out, err := s.client.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: &s.bucket, Key: &key})
	if err != nil {
		return nil, failed("blob "+string(d), err)
	}
	return &object{s: s, ctx: ctx, key: key, what: "blob " + string(d), size: aws.ToInt64(out.ContentLength), etag: aws.ToString(out.ETag)}, nil
}

// Delete implements blob.Store; S3 reports no error for an absent key.
func (s *Store) Delete(ctx context.Context, d digest.Digest) error {
	name, err := blobName(d)
	if err != nil {
		return err
	}
	return s.deleteKey(ctx, s.key(name), "blob "+string(d))
}

// deleteKey removes one object; an absent one is fine.
func (s *Store) deleteKey(ctx context.Context, key, what string) error {
	_, err := s.client.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: &s.bucket, Key: &key})
	if err != nil && !notFound(err) {
		return failed("delete "+what, err)
	}
	return nil
}

// deleteKeys removes objects, a thousand to a request.
func (s *Store) deleteKeys(ctx context.Context, keys []string) error {
	for len(keys) > 0 {
		n := min(len(keys), 1000)
		ids := make([]types.ObjectIdentifier, n)
		for i, k := range keys[:n] {
			ids[i] = types.ObjectIdentifier{Key: aws.String(k)}
		}
		out, err := s.client.DeleteObjects(ctx, &awss3.DeleteObjectsInput{Bucket: &s.bucket,
			Delete: &types.Delete{Objects: ids, Quiet: aws.Bool(true)}})
		if err != nil {
			return failed(fmt.Sprintf("delete %d objects", n), err)
		}
		for _, e := range out.Errors {
			if aws.ToString(e.Code) != "NoSuchKey" {
				return fmt.Errorf("delete %s: %s: %s", aws.ToString(e.Key), aws.ToString(e.Code), aws.ToString(e.Message))
			}
		}
		keys = keys[n:]
	}
	return nil
}

// list calls fn for every object whose key starts with prefix, in lexical
// order. An error fn returns stops the listing and is returned as it is.
func (s *Store) list(ctx context.Context, prefix string, fn func(types.Object) error) error {
	p := awss3.NewListObjectsV2Paginator(s.client, &awss3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: &prefix})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return failed("list "+prefix, err)
		}
		for _, o := range page.Contents {
			if err := fn(o); err != nil {
				return err
			}
		}
	}
	return nil
}

// Walk implements blob.Store: it calls fn for every object under blobs/,
// named by its key relative to the prefix ("blobs/sha256/ab12..."), in
// lexical order. An object whose name is not a blob's has an empty
// Digest. An error fn returns stops the walk and is returned as it is.
func (s *Store) Walk(ctx context.Context, fn func(blob.Entry) error) error {
	return s.list(ctx, s.key(blobsDir), func(o types.Object) error {
		name := s.rel(aws.ToString(o.Key))
		e := blob.Entry{Name: name, Size: aws.ToInt64(o.Size)}
		e.Digest, _ = digestOf(name)
		return fn(e)
	})
}

// Quarantine implements blob.Quarantiner: it copies the content of d to
// quarantine/<algorithm>-<hex>, then deletes it, and returns that name.
func (s *Store) Quarantine(ctx context.Context, d digest.Digest) (string, error) {
	name, err := blobName(d)
	if err != nil {
		return "", err
	}
	src := s.key(name)
	size, err := s.Stat(ctx, d)
	if errors.Is(err, blob.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	dst := quarantineDir + string(d.Algorithm()) + "-" + d.Encoded()
	if err := s.copyObject(ctx, src, s.key(dst), size); err != nil {
		return "", fmt.Errorf("quarantine blob %s: %w", d, err)
	}
	if err := s.deleteKey(ctx, src, "blob "+string(d)); err != nil {
		return "", fmt.Errorf("quarantine blob %s: %w", d, err)
	}
	return dst, nil
}

// Sweep implements blob.Sweeper. name must be a name Walk reports without
// a digest: a clean name inside blobs/ that is not a blob's.
func (s *Store) Sweep(ctx context.Context, name string) error {
	if !strings.HasPrefix(name, blobsDir) || strings.Contains(name, "\x00") || path.Clean(name) != strings.TrimSuffix(name, "/") {
		return fmt.Errorf("sweep %q: not a name inside %s", name, blobsDir)
	}
	if _, ok := digestOf(name); ok {
		return fmt.Errorf("sweep %q: it names a blob, which only Delete removes", name)
	}
	return s.deleteKey(ctx, s.key(name), name)
}
