package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/berth-registry/berth/storage/blob"
)

// copyConcurrency is how many parts a multipart copy or assembly asks for
// at once.
const copyConcurrency = 4

// Put implements blob.Store. Content of up to a part is read into memory
// and written with one PUT that only creates the object (If-None-Match),
// so content already present is not written again; longer content is
// staged and committed as an upload would be.
func (s *Store) Put(ctx context.Context, d digest.Digest, r io.Reader, want int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	name, err := blobName(d)
	if err != nil {
		return err
	}
	if want < 0 || want > s.partSize {
		sg, err := s.Stage(ctx, "")
		if err != nil {
			return err
		}
		if _, err := sg.Append(ctx, r, want, nil); err != nil {
			cctx, cancel := cleanupContext(ctx)
			defer cancel()
			_ = sg.Cancel(cctx)
			return fmt.Errorf("put %s: %w", d, err)
		}
		return sg.Commit(ctx, d)
	}
	data := make([]byte, want)
	n, err := fill(contextReader{ctx, r}, data)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("put %s: read: %w", d, err)
	}
	if n < len(data) {
		return fmt.Errorf("%w: %d bytes, %d declared", blob.ErrSizeMismatch, n, want)
	}
	var one [1]byte
	if k, _ := fill(contextReader{ctx, r}, one[:]); k > 0 {
		return fmt.Errorf("%w: more than the %d bytes declared", blob.ErrSizeMismatch, want)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.putIfAbsent(ctx, s.key(name), data, "blob "+string(d))
}

// unsignedPayload leaves a body out of the request's signature: its
// integrity is the checksum the SDK sends with it, and hashing every byte
// once more for the signature would cost as much as the hash the core
// verifies the content with.
func unsignedPayload(o *awss3.Options) {
	o.APIOptions = append(o.APIOptions, v4.SwapComputePayloadSHA256ForUnsignedPayloadMiddleware)
}

// putPiece writes data as the object key.
func (s *Store) putPiece(ctx context.Context, key string, data []byte) error {
	_, err := s.client.PutObject(ctx, &awss3.PutObjectInput{Bucket: &s.bucket, Key: &key,
		Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data)))}, unsignedPayload)
	if err != nil {
		return failed("write "+s.rel(key), err)
	}
	return nil
}

// putIfAbsent writes data as the object key unless the key exists: a
// write refused because it does is done.
func (s *Store) putIfAbsent(ctx context.Context, key string, data []byte, what string) error {
	for attempt := 0; ; attempt++ {
		_, err := s.client.PutObject(ctx, &awss3.PutObjectInput{Bucket: &s.bucket, Key: &key,
			Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data))), IfNoneMatch: aws.String("*")}, unsignedPayload)
		switch {
		case err == nil || preconditionFailed(err):
			return nil
		case conflict(err) && attempt < 3:
			// Another write of the key raced this one: once it is
			// done, the key exists.
			continue
		}
		return failed("write "+what, err)
	}
}

// copySource names an object of the store's bucket as a copy's source.
func (s *Store) copySource(key string) string {
	segs := strings.Split(key, "/")
	for i, seg := range segs {
		segs[i] = url.PathEscape(seg)
	}
	return url.PathEscape(s.bucket) + "/" + strings.Join(segs, "/")
}

// copyObject copies the object src of size bytes to dst: in one request up
// to S3's limit for that, in parts beyond it.
func (s *Store) copyObject(ctx context.Context, src, dst string, size int64) error {
	if size <= maxCopySize {
		_, err := s.client.CopyObject(ctx, &awss3.CopyObjectInput{Bucket: &s.bucket, Key: &dst, CopySource: aws.String(s.copySource(src))})
		if err != nil {
			return failed(fmt.Sprintf("copy %s to %s", s.rel(src), s.rel(dst)), err)
		}
		return nil
	}
	var ranges []sourceRange
	for off := int64(0); off < size; off += copyPartSize {
		ranges = append(ranges, sourceRange{key: src, off: off, n: min(copyPartSize, size-off)})
	}
	return s.multipart(ctx, dst, ranges, nil)
}

// sourceRange is a part of a multipart upload copied from an object.
type sourceRange struct {
	key    string
	off, n int64 // the range; n < 0 means the whole object
}

// assemble makes the content of sg that cur describes the object key, in
// one multipart upload: its full pieces copied on the server, then its
// small pieces, read back, as the last part.
func (s *Store) assemble(ctx context.Context, key string, sg *staged, cur state) error {
	full := cur.full()
	ranges := make([]sourceRange, full)
	for i, p := range cur.Pieces[:full] {
		ranges[i] = sourceRange{key: sg.dir + p.Name, n: -1}
	}
	var last []byte
	if full < len(cur.Pieces) {
		last = make([]byte, cur.Size-int64(full)*cur.PartSize)
		if err := sg.readPieces(ctx, cur.Pieces[full:], last); err != nil {
			return err
		}
	}
	return s.multipart(ctx, key, ranges, last)
}

// multipart writes the object key in one multipart upload whose parts are
// the ranges, copied on the server, then last, if not nil. The object
// appears only once every part is in place; on failure the upload is
// aborted.
func (s *Store) multipart(ctx context.Context, key string, ranges []sourceRange, last []byte) (err error) {
	what := "assemble " + s.rel(key)
	out, err := s.client.CreateMultipartUpload(ctx, &awss3.CreateMultipartUploadInput{Bucket: &s.bucket, Key: &key})
	if err != nil {
		return failed(what, err)
	}
	uploadID := out.UploadId
	defer func() {
		if err != nil {
			cctx, cancel := cleanupContext(ctx)
			defer cancel()
			if _, aerr := s.client.AbortMultipartUpload(cctx, &awss3.AbortMultipartUploadInput{Bucket: &s.bucket, Key: &key, UploadId: uploadID}); aerr != nil {
				s.log.WarnContext(ctx, "abort a failed multipart upload", "key", key, "error", aerr)
			}
		}
	}()
	n := len(ranges)
	if last != nil {
		n++
	}
	parts := make([]types.CompletedPart, n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(copyConcurrency)
	for i, r := range ranges {
		num := aws.Int32(int32(i + 1))
		g.Go(func() error {
			in := &awss3.UploadPartCopyInput{Bucket: &s.bucket, Key: &key, UploadId: uploadID, PartNumber: num,
				CopySource: aws.String(s.copySource(r.key))}
			if r.n >= 0 {
				in.CopySourceRange = aws.String(fmt.Sprintf("bytes=%d-%d", r.off, r.off+r.n-1))
			}
			out, err := s.client.UploadPartCopy(gctx, in)
			if err != nil {
				return failed(fmt.Sprintf("%s: copy part %d from %s", what, *num, s.rel(r.key)), err)
			}
			if out.CopyPartResult == nil {
				return fmt.Errorf("%s: copy part %d: no result", what, *num)
			}
			parts[i] = types.CompletedPart{PartNumber: num, ETag: out.CopyPartResult.ETag}
			return nil
		})
	}
	if last != nil {
		num := aws.Int32(int32(n))
		g.Go(func() error {
			out, err := s.client.UploadPart(gctx, &awss3.UploadPartInput{Bucket: &s.bucket, Key: &key, UploadId: uploadID, PartNumber: num,
				Body: bytes.NewReader(last), ContentLength: aws.Int64(int64(len(last)))}, unsignedPayload)
			if err != nil {
				return failed(fmt.Sprintf("%s: write part %d", what, *num), err)
			}
			parts[n-1] = types.CompletedPart{PartNumber: num, ETag: out.ETag}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	_, err = s.client.CompleteMultipartUpload(ctx, &awss3.CompleteMultipartUploadInput{Bucket: &s.bucket, Key: &key, UploadId: uploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}})
	if err != nil {
		return failed(what, err)
	}
	return nil
}

// buffer returns a buffer of size bytes, from the pool when it is of the
// store's part size.
func (s *Store) buffer(size int64) []byte {
	if size == s.partSize {
		if b, ok := s.bufs.Get().(*[]byte); ok {
			return *b
		}
	}
	return make([]byte, size)
}

// release returns a buffer of buffer to the pool.
func (s *Store) release(b []byte) {
	if int64(len(b)) == s.partSize {
		s.bufs.Put(&b)
	}
}
