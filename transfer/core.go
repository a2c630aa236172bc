package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/manifest"
)

// Core is a repository of the storage core as a Source and a Target.
// Blobs it receives are staged as storage.Fill, hashed as they are written
// and committed only when they match their digest; manifests are recorded
// with PutManifestWith, and tags moved with Action in their history.
type Core struct {
	Svc  *storage.Service
	Repo string
	// Action is why the tags a copy sets move (storage.MoveSync, ...);
	// empty means storage.MovePush.
	Action string
}

var (
	_ Source = Core{}
	_ Target = Core{}
)

// Resolve implements Source and Target.
func (c Core) Resolve(ctx context.Context, reference string) (ocispec.Descriptor, error) {
	info, err := c.Svc.StatManifest(ctx, c.Repo, reference)
	if errors.Is(err, storage.ErrManifestUnknown) || errors.Is(err, storage.ErrNameUnknown) {
		return ocispec.Descriptor{}, fmt.Errorf("%w: %s:%s: %w", ErrNotFound, c.Repo, reference, err)
	}
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return ocispec.Descriptor{MediaType: info.MediaType, Digest: info.Digest, Size: info.Size, ArtifactType: info.ArtifactType}, nil
}

// FetchManifest implements Source.
func (c Core) FetchManifest(ctx context.Context, desc ocispec.Descriptor) ([]byte, error) {
	_, body, err := c.Svc.GetManifest(ctx, c.Repo, string(desc.Digest))
	if err != nil {
		return nil, err
	}
	if int64(len(body)) != desc.Size {
		return nil, fmt.Errorf("manifest %s has %d bytes, its descriptor says %d", desc.Digest, len(body), desc.Size)
	}
	return body, nil
}

// FetchBlob implements Source.
func (c Core) FetchBlob(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	rc, _, err := c.Svc.OpenBlob(ctx, c.Repo, desc.Digest)
	return rc, err
}

// Referrers implements Source.
func (c Core) Referrers(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	return c.Svc.Referrers(ctx, c.Repo, desc.Digest, "")
}

// Tags returns every tag of the repository; none when it does not exist.
func (c Core) Tags(ctx context.Context) ([]string, error) {
	var out []string
	last := ""
	for {
		page, more, err := c.Svc.ListTags(ctx, c.Repo, last, 1000)
		if errors.Is(err, storage.ErrNameUnknown) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
		if !more || len(page) == 0 {
			return out, nil
		}
		last = page[len(page)-1]
	}
}

// HasManifest implements Target.
func (c Core) HasManifest(ctx context.Context, desc ocispec.Descriptor) (bool, error) {
	_, err := c.Svc.StatManifest(ctx, c.Repo, string(desc.Digest))
	if errors.Is(err, storage.ErrManifestUnknown) || errors.Is(err, storage.ErrNameUnknown) {
		return false, nil
	}
	return err == nil, err
}

// HasBlob implements Target: a blob the store holds for another
// repository is linked into this one without a transfer.
func (c Core) HasBlob(ctx context.Context, desc ocispec.Descriptor) (bool, error) {
	_, err := c.Svc.StatBlob(ctx, c.Repo, desc.Digest)
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, storage.ErrBlobUnknown) && !errors.Is(err, storage.ErrNameUnknown) {
		return false, err
	}
	_, err = c.Svc.MountBlob(ctx, c.Repo, "", desc.Digest)
	if errors.Is(err, storage.ErrBlobUnknown) {
		return false, nil
	}
	return err == nil, err
}

// PushBlob implements Target: the content is staged, hashed as it is
// written and committed only if it matches desc.
func (c Core) PushBlob(ctx context.Context, desc ocispec.Descriptor, r io.Reader) error {
	f, err := c.Svc.StartFill(ctx, desc.Digest)
	if err != nil {
		return err
	}
	defer func() { _ = f.Cancel(context.WithoutCancel(ctx)) }() // nothing to cancel once committed
	if _, err := f.Append(ctx, r, desc.Size); err != nil {
		return err
	}
	_, err = f.Commit(ctx, c.Repo)
	return err
}

// PushManifest implements Target.
func (c Core) PushManifest(ctx context.Context, desc ocispec.Descriptor, body []byte) error {
	m, err := manifest.Parse(desc.MediaType, body)
	if err != nil {
		return err
	}
	_, err = c.Svc.PutManifestWith(ctx, c.Repo, desc.Digest, body, m, storage.PutOptions{Action: c.Action})
	return err
}

// Tag implements Target, recording the move with Action.
func (c Core) Tag(ctx context.Context, desc ocispec.Descriptor, tag string) error {
	action := c.Action
	if action == "" {
		action = storage.MovePush
	}
	return c.Svc.Update(ctx, func(tx *storage.Tx) error {
		_, err := tx.MoveTag(c.Repo, tag, desc.Digest, action)
		return err
	})
}
