// Package transfer owns Berth's one path for copying content between
// registries: a manifest with what it references (every platform of an
// index, configs and layers) and what refers to it (referrers, found
// through the referrers API or its tag fallback, and cosign's
// sha256-<hex>.sig, .att and .sbom tags), from a Source to a Target,
// verifying every digest, and skipping what the target already holds.
//
// Offline bundles (package bundle) export through it; replication (package
// replication) pulls and pushes through it. Remote adapts a repository of
// another registry, Core a repository of the storage core; a bundle's
// archive is a Target of its own.
//
// The order of a copy is the order a registry accepts: blobs before the
// manifest that references them, children before their index, a subject
// before its referrers, a manifest before the tags that name it. So a copy
// that stops half way (a broken connection, a stopped process) leaves the
// target consistent, and the next copy transfers only what is missing.
package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/manifest"
)

// ErrNotFound is wrapped by the errors of a Source or Target that has no
// manifest under a reference.
var ErrNotFound = errors.New("not found")

// DefaultMaxManifestBytes bounds a manifest read into memory when
// Options.MaxManifestBytes is zero.
const DefaultMaxManifestBytes = 4 << 20

// maxDepth bounds the nesting of indexes and referrers a copy follows.
const maxDepth = 16

// Source is a repository content is copied from.
type Source interface {
	// Resolve returns the descriptor of the manifest reference (a tag or
	// a digest) names; an error wrapping ErrNotFound when none.
	Resolve(ctx context.Context, reference string) (ocispec.Descriptor, error)
	// FetchManifest returns the body of manifest desc, verified against
	// its digest and size.
	FetchManifest(ctx context.Context, desc ocispec.Descriptor) ([]byte, error)
	// FetchBlob opens the content of blob desc; the copy verifies what it
	// reads.
	FetchBlob(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error)
	// Referrers returns the descriptors of the manifests whose subject is
	// desc.
	Referrers(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error)
}

// Target is a repository content is copied to.
type Target interface {
	// HasManifest reports whether the target holds manifest desc (and so,
	// as a registry keeps it, everything it references).
	HasManifest(ctx context.Context, desc ocispec.Descriptor) (bool, error)
	// HasBlob reports whether the target holds blob desc, or takes it
	// without a transfer (a mount from another repository of its own).
	HasBlob(ctx context.Context, desc ocispec.Descriptor) (bool, error)
	// PushBlob stores blob desc, reading it from r.
	PushBlob(ctx context.Context, desc ocispec.Descriptor, r io.Reader) error
	// PushManifest stores manifest desc, whose body is body.
	PushManifest(ctx context.Context, desc ocispec.Descriptor, body []byte) error
	// Resolve returns the descriptor of the manifest a tag names; an error
	// wrapping ErrNotFound when none.
	Resolve(ctx context.Context, reference string) (ocispec.Descriptor, error)
	// Tag points tag at manifest desc, which the target holds.
	Tag(ctx context.Context, desc ocispec.Descriptor, tag string) error
}

// Lister is a Target that lists the manifests a copy starts from without
// a tag, and the referrers it finds (as an image layout's index.json
// does). Copy calls List for each.
type Lister interface {
	List(desc ocispec.Descriptor)
}

// Options tune a Copier.
type Options struct {
	// SourceTags, when not nil, holds every tag of the source: cosign's
	// signature tags that are not in it are not asked for.
	SourceTags map[string]bool
	// MaxManifestBytes bounds a manifest; zero means
	// DefaultMaxManifestBytes.
	MaxManifestBytes int64
}

// Stats count what a Copier transferred: manifests and blobs pushed to the
// target (with the bytes of the blobs), and tags it set or moved there.
type Stats struct {
	Manifests int   `json:"manifests"`
	Blobs     int   `json:"blobs"`
	Bytes     int64 `json:"bytes"`
	Tags      int   `json:"tags"`
}

// Copier copies from one Source to one Target. It remembers what it
// copied, so that content shared by several copies (layers of several
// tags) is looked at once. It is not safe for concurrent use.
type Copier struct {
	src   Source
	dst   Target
	opts  Options
	stats Stats
	// graphs holds, for every manifest walked, the manifests its copy
	// covers (itself, children, referrers, signatures); blobs the blobs
	// the target holds.
	graphs map[digest.Digest][]digest.Digest
	blobs  map[digest.Digest]bool
}

// New returns a Copier from src to dst.
func New(src Source, dst Target, opts Options) *Copier {
	if opts.MaxManifestBytes <= 0 {
		opts.MaxManifestBytes = DefaultMaxManifestBytes
	}
	return &Copier{src: src, dst: dst, opts: opts, graphs: map[digest.Digest][]digest.Digest{}, blobs: map[digest.Digest]bool{}}
}

// Stats returns what the Copier transferred so far.
func (c *Copier) Stats() Stats { return c.stats }

// Copy copies manifest desc of the source, with what it references and
// what refers to it, to the target, and points tags at it there (a tag
// already naming it does not move). It returns the digests of the
// manifests the copy covers, sorted: desc, its children, its referrers and
// signatures, recursively. Every manifest is read from the source, so
// that new referrers of content the target already holds are found; blobs
// and manifests the target holds are not transferred again.
func (c *Copier) Copy(ctx context.Context, desc ocispec.Descriptor, tags ...string) ([]digest.Digest, error) {
	graph, err := c.manifest(ctx, desc, 0)
	if err != nil {
		return nil, err
	}
	if l, ok := c.dst.(Lister); ok && len(tags) == 0 {
		l.List(desc)
	}
	for _, tag := range tags {
		if err := c.tag(ctx, desc, tag); err != nil {
			return nil, err
		}
	}
	return graph, nil
}

// manifest copies manifest desc and what it references and refers to,
// and returns the manifests it covers.
func (c *Copier) manifest(ctx context.Context, desc ocispec.Descriptor, depth int) ([]digest.Digest, error) {
	if g, ok := c.graphs[desc.Digest]; ok {
		return g, nil
	}
	if depth > maxDepth {
		return nil, fmt.Errorf("manifest %s: indexes and referrers nested deeper than %d", desc.Digest, maxDepth)
	}
	if desc.Size > c.opts.MaxManifestBytes {
		return nil, fmt.Errorf("manifest %s: %d bytes, over the limit of %d", desc.Digest, desc.Size, c.opts.MaxManifestBytes)
	}
	body, err := c.src.FetchManifest(ctx, desc)
	if err != nil {
		return nil, fmt.Errorf("fetch manifest %s: %w", desc.Digest, err)
	}
	if err := desc.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("manifest %q: %w", desc.Digest, err)
	}
	if int64(len(body)) != desc.Size || desc.Digest.Algorithm().FromBytes(body) != desc.Digest {
		return nil, fmt.Errorf("manifest %s: %w: the source's body (%d bytes) does not match its descriptor", desc.Digest, content.ErrMismatchedDigest, len(body))
	}
	m, err := manifest.Parse(desc.MediaType, body)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", desc.Digest, err)
	}
	graph := []digest.Digest{desc.Digest}
	have, err := c.dst.HasManifest(ctx, desc)
	if err != nil {
		return nil, fmt.Errorf("look for manifest %s: %w", desc.Digest, err)
	}
	for _, child := range m.Manifests {
		g, err := c.manifest(ctx, child, depth+1)
		if err != nil {
			return nil, err
		}
		graph = append(graph, g...)
	}
	if !have {
		for _, b := range m.Blobs {
			if err := c.blob(ctx, b); err != nil {
				return nil, err
			}
		}
		if err := c.dst.PushManifest(ctx, desc, body); err != nil {
			return nil, fmt.Errorf("push manifest %s: %w", desc.Digest, err)
		}
		c.stats.Manifests++
	}
	// What refers to it: referrers, then cosign's tags.
	refs, err := c.src.Referrers(ctx, desc)
	if err != nil {
		return nil, fmt.Errorf("referrers of %s: %w", desc.Digest, err)
	}
	for _, r := range refs {
		g, err := c.manifest(ctx, r, depth+1)
		if err != nil {
			return nil, err
		}
		graph = append(graph, g...)
		if l, ok := c.dst.(Lister); ok {
			l.List(r)
		}
	}
	for _, tag := range SignatureTags(desc.Digest) {
		if c.opts.SourceTags != nil && !c.opts.SourceTags[tag] {
			continue
		}
		sd, err := c.src.Resolve(ctx, tag)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %w", tag, err)
		}
		g, err := c.manifest(ctx, sd, depth+1)
		if err != nil {
			return nil, err
		}
		graph = append(graph, g...)
		if err := c.tag(ctx, sd, tag); err != nil {
			return nil, err
		}
	}
	slices.Sort(graph)
	graph = slices.Compact(graph)
	c.graphs[desc.Digest] = graph
	return graph, nil
}

// blob copies blob desc unless the target holds it, verifying its digest
// and size as it is read.
func (c *Copier) blob(ctx context.Context, desc ocispec.Descriptor) error {
	if c.blobs[desc.Digest] {
		return nil
	}
	have, err := c.dst.HasBlob(ctx, desc)
	if err != nil {
		return fmt.Errorf("look for blob %s: %w", desc.Digest, err)
	}
	if !have {
		rc, err := c.src.FetchBlob(ctx, desc)
		if err != nil {
			return fmt.Errorf("fetch blob %s: %w", desc.Digest, err)
		}
		defer rc.Close()
		vr := content.NewVerifyReader(rc, desc)
		if err := c.dst.PushBlob(ctx, desc, vr); err != nil {
			return fmt.Errorf("push blob %s: %w", desc.Digest, err)
		}
		if err := vr.Verify(); err != nil {
			return fmt.Errorf("blob %s: %w", desc.Digest, err)
		}
		c.stats.Blobs++
		c.stats.Bytes += desc.Size
	}
	c.blobs[desc.Digest] = true
	return nil
}

// tag points tag at desc in the target, unless it names desc already.
func (c *Copier) tag(ctx context.Context, desc ocispec.Descriptor, tag string) error {
	cur, err := c.dst.Resolve(ctx, tag)
	switch {
	case err == nil && cur.Digest == desc.Digest:
		return nil
	case err != nil && !errors.Is(err, ErrNotFound):
		return fmt.Errorf("resolve %s in the target: %w", tag, err)
	}
	if err := c.dst.Tag(ctx, desc, tag); err != nil {
		return fmt.Errorf("tag %s: %w", tag, err)
	}
	c.stats.Tags++
	return nil
}

// SignatureTags are the tags under which cosign attaches a signature, an
// attestation and an SBOM to manifest d (the referrers tag-schema
// fallback).
func SignatureTags(d digest.Digest) []string {
	base := string(d.Algorithm()) + "-" + d.Encoded()
	return []string{base + ".sig", base + ".att", base + ".sbom"}
}

// IsSignatureTag reports whether tag is one of cosign's.
func IsSignatureTag(tag string) bool {
	_, ok := storage.SignatureTag(tag)
	return ok
}
