package transfer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
	orasremote "oras.land/oras-go/v2/registry/remote"
)

// Remote is a repository of another registry as a Source and a Target,
// through oras-go's client (which package remote configures: credentials,
// TLS, the Bearer token flow).
type Remote struct {
	Repo *orasremote.Repository
}

var (
	_ Source = Remote{}
	_ Target = Remote{}
)

// notFound wraps the registry's "not found" in ErrNotFound.
func notFound(err error) error {
	if errors.Is(err, errdef.ErrNotFound) {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	return err
}

// Resolve implements Source and Target: a HEAD of the manifest.
func (r Remote) Resolve(ctx context.Context, reference string) (ocispec.Descriptor, error) {
	desc, err := r.Repo.Resolve(ctx, reference)
	return desc, notFound(err)
}

// FetchManifest implements Source, verifying the body against desc.
func (r Remote) FetchManifest(ctx context.Context, desc ocispec.Descriptor) ([]byte, error) {
	rc, err := r.Repo.Manifests().Fetch(ctx, desc)
	if err != nil {
		return nil, notFound(err)
	}
	defer rc.Close()
	return content.ReadAll(rc, desc)
}

// FetchBlob implements Source.
func (r Remote) FetchBlob(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	rc, err := r.Repo.Blobs().Fetch(ctx, desc)
	return rc, notFound(err)
}

// Referrers implements Source, through the referrers API or its tag
// fallback; a registry that has neither has none.
func (r Remote) Referrers(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	var out []ocispec.Descriptor
	err := r.Repo.Referrers(ctx, desc, "", func(page []ocispec.Descriptor) error {
		out = append(out, page...)
		return nil
	})
	if errors.Is(err, errdef.ErrNotFound) {
		return nil, nil
	}
	return out, err
}

// Tags returns every tag of the repository; none when it does not exist.
func (r Remote) Tags(ctx context.Context) ([]string, error) {
	var out []string
	err := r.Repo.Tags(ctx, "", func(page []string) error {
		out = append(out, page...)
		return nil
	})
	if errors.Is(err, errdef.ErrNotFound) {
		return nil, nil
	}
	return out, err
}

// HasManifest implements Target.
func (r Remote) HasManifest(ctx context.Context, desc ocispec.Descriptor) (bool, error) {
	return r.Repo.Manifests().Exists(ctx, desc)
}

// HasBlob implements Target.
func (r Remote) HasBlob(ctx context.Context, desc ocispec.Descriptor) (bool, error) {
	return r.Repo.Blobs().Exists(ctx, desc)
}

// PushBlob implements Target: the registry checks the digest.
func (r Remote) PushBlob(ctx context.Context, desc ocispec.Descriptor, rd io.Reader) error {
	return r.Repo.Blobs().Push(ctx, desc, rd)
}

// PushManifest implements Target.
func (r Remote) PushManifest(ctx context.Context, desc ocispec.Descriptor, body []byte) error {
	return r.Repo.Manifests().Push(ctx, desc, bytes.NewReader(body))
}

// Tag implements Target.
func (r Remote) Tag(ctx context.Context, desc ocispec.Descriptor, tag string) error {
	return r.Repo.Tag(ctx, desc, tag)
}
