package s3

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// sweepStale removes what processes that died left in flight, once it is
// older than s.staleAfter as of now: multipart uploads (which exist only
// while a commit or a copy runs), anonymous content, and the pieces of
// sessions whose state is gone. Other processes may share the bucket, so
// nothing younger is touched: a live session always has its state, and
// the age bound is longer than any request.
func (s *Store) sweepStale(ctx context.Context, now time.Time) error {
	cutoff := now.Add(-s.staleAfter)
	aborted, err := s.abortStaleUploads(ctx, cutoff)
	if err != nil {
		return err
	}
	tmp, err := s.sweepDirs(ctx, tmpDir, cutoff, false)
	if err != nil {
		return err
	}
	orphans, err := s.sweepDirs(ctx, uploadsDir, cutoff, true)
	if err != nil {
		return err
	}
	if aborted+tmp+orphans > 0 {
		s.log.InfoContext(ctx, "removed content in flight that crashed processes left",
			"bucket", s.bucket, "multipartUploads", aborted, "anonymous", tmp, "endedSessions", orphans)
	}
	return nil
}

// abortStaleUploads aborts the multipart uploads under the prefix begun
// before cutoff.
func (s *Store) abortStaleUploads(ctx context.Context, cutoff time.Time) (int, error) {
	n := 0
	in := &awss3.ListMultipartUploadsInput{Bucket: &s.bucket, Prefix: aws.String(s.prefix)}
	for {
		out, err := s.client.ListMultipartUploads(ctx, in)
		if err != nil {
			return n, failed("list multipart uploads", err)
		}
		for _, u := range out.Uploads {
			if u.Initiated == nil || !u.Initiated.Before(cutoff) {
				continue
			}
			_, err := s.client.AbortMultipartUpload(ctx, &awss3.AbortMultipartUploadInput{Bucket: &s.bucket, Key: u.Key, UploadId: u.UploadId})
			if err != nil && apiCode(err) != "NoSuchUpload" {
				return n, failed("abort multipart upload of "+aws.ToString(u.Key), err)
			}
			n++
		}
		if !aws.ToBool(out.IsTruncated) {
			return n, nil
		}
		in.KeyMarker, in.UploadIdMarker = out.NextKeyMarker, out.NextUploadIdMarker
	}
}

// sweepDirs removes the directories under area (tmp/ or uploads/) whose
// every object was last written before cutoff; with stateless, only those
// without a state object.
func (s *Store) sweepDirs(ctx context.Context, area string, cutoff time.Time, stateless bool) (int, error) {
	type dir struct {
		keys     []string
		newest   time.Time
		hasState bool
	}
	dirs := map[string]*dir{}
	var order []string
	err := s.list(ctx, s.key(area), func(o types.Object) error {
		key := aws.ToString(o.Key)
		name, _, ok := strings.Cut(strings.TrimPrefix(s.rel(key), area), "/")
		if !ok {
			return nil // not in a directory of ours
		}
		d := dirs[name]
		if d == nil {
			d = &dir{}
			dirs[name] = d
			order = append(order, name)
		}
		d.keys = append(d.keys, key)
		if t := aws.ToTime(o.LastModified); t.After(d.newest) {
			d.newest = t
		}
		if key == s.key(area+name+"/"+stateName) {
			d.hasState = true
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, name := range order {
		d := dirs[name]
		if !d.newest.Before(cutoff) || (stateless && d.hasState) {
			continue
		}
		if err := s.deleteKeys(ctx, d.keys); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}
