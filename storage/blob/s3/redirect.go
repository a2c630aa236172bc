package s3

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/blob"
)

// Redirecting is a Store whose content clients fetch from the object
// store directly: it implements blob.Redirector with pre-signed GET URLs,
// valid for Options.RedirectExpiry. The configuration's `redirect: true`
// selects it.
type Redirecting struct{ *Store }

var _ blob.Redirector = Redirecting{}

// RedirectURL implements blob.Redirector. It asks nothing of the service:
// the URL is signed with the store's credentials, and a GET of it answers
// 404 if the content is gone by then.
func (r Redirecting) RedirectURL(ctx context.Context, d digest.Digest) (string, error) {
	name, err := blobName(d)
	if err != nil {
		return "", err
	}
	req, err := r.presign.PresignGetObject(ctx, &awss3.GetObjectInput{Bucket: &r.bucket, Key: aws.String(r.key(name))},
		awss3.WithPresignExpires(r.expiry))
	if err != nil {
		return "", fmt.Errorf("sign a URL of blob %s: %w", d, err)
	}
	return req.URL, nil
}
