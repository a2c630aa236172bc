package storage

import (
	"context"
	"fmt"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Promote points dstTag in dstRepo at the manifest srcRef (a tag or a
// digest) names in srcRepo, and returns the move and the digest. Nothing is
// copied: content is addressed by digest, so the promotion only links into
// dstRepo, creating it if need be, what the manifest needs there:
//   - every blob and child manifest it references, through indexes;
//   - the manifests that refer to it (signatures, attestations, SBOMs),
//     found through the referrers index or through the tags cosign uses
//     ("sha256-<hex>.sig"), and what those need in turn, so that signatures
//     verify in dstRepo as they do in srcRepo. Such a signature tag in
//     dstRepo is moved to the manifest it names in srcRepo.
//
// Blobs that srcRepo does not hold are skipped: foreign, non-distributable
// layers (never recorded as references) and blobs unlinked since the push.
// Everything happens in one transaction: if dstTag is immutable and names
// another digest, ErrTagImmutable is returned and nothing changes. An
// unknown srcRepo is ErrNameUnknown, an unknown srcRef ErrManifestUnknown.
func (s *Service) Promote(ctx context.Context, srcRepo, srcRef, dstRepo, dstTag string) (TagMove, digest.Digest, error) {
	var (
		move TagMove
		d    digest.Digest
	)
	err := s.Update(ctx, func(tx *Tx) error {
		var err error
		d, _, err = resolve(tx, srcRepo, srcRef)
		if err != nil {
			return err
		}
		p := promotion{tx: tx, src: srcRepo, dst: dstRepo, seen: map[digest.Digest]bool{}}
		if err := p.manifest(d); err != nil {
			return err
		}
		move, err = tx.MoveTag(dstRepo, dstTag, d, MovePromote)
		return err
	})
	if err != nil {
		return TagMove{}, "", fmt.Errorf("promote %s:%s to %s:%s: %w", srcRepo, srcRef, dstRepo, dstTag, err)
	}
	return move, d, nil
}

// promotion is one Promote in progress: the repositories it reads from and
// links into, and the manifests it has linked already.
type promotion struct {
	tx       *Tx
	src, dst string
	seen     map[digest.Digest]bool
}

// manifest links manifest d of the source repository into the destination
// with everything it references and everything that refers to it.
func (p *promotion) manifest(d digest.Digest) error {
	if p.seen[d] {
		return nil
	}
	p.seen[d] = true
	rec, ok, err := p.tx.Manifest(p.src, d)
	if err != nil {
		return err
	}
	if !ok {
		return detailf(ErrManifestUnknown, map[string]any{"digest": string(d)}, "manifest %s is not in %s", d, p.src)
	}
	// References first, so that the destination never holds a manifest
	// without what it references (all in one transaction anyway).
	for _, ref := range rec.References {
		if err := p.reference(ref); err != nil {
			return err
		}
	}
	if _, ok, err := p.tx.Manifest(p.dst, d); err != nil {
		return err
	} else if !ok {
		if err := p.tx.PutManifest(p.dst, d, rec); err != nil {
			return err
		}
	}
	if err := p.referrers(d); err != nil {
		return err
	}
	return p.signatureTags(d)
}

// reference links what a promoted manifest references: a child manifest
// with everything it needs, or a blob. What the source does not hold
// (unlinked since the push) is not promoted either; foreign,
// non-distributable layers are never among the references.
func (p *promotion) reference(ref digest.Digest) error {
	if _, ok, err := p.tx.Manifest(p.src, ref); err != nil {
		return err
	} else if ok {
		return p.manifest(ref)
	}
	if _, ok, err := p.tx.Link(p.src, ref); err != nil || !ok {
		return err
	}
	return p.tx.link(p.dst, ref)
}

// referrers links the manifests whose subject is d.
func (p *promotion) referrers(d digest.Digest) error {
	var refs []digest.Digest
	err := p.tx.Referrers(p.src, d, func(desc ocispec.Descriptor) error {
		refs = append(refs, desc.Digest)
		return nil
	})
	if err != nil {
		return fmt.Errorf("referrers of %s: %w", d, err)
	}
	for _, r := range refs {
		if err := p.manifest(r); err != nil {
			return err
		}
	}
	return nil
}

// signatureTags links the manifests the source's signature tags of d name,
// and sets the same tags in the destination.
func (p *promotion) signatureTags(d digest.Digest) error {
	if d.Validate() != nil {
		return nil
	}
	for _, tag := range signatureTags(d) {
		sig, ok, err := p.tx.Tag(p.src, tag)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if err := p.manifest(sig); err != nil {
			return err
		}
		if _, err := p.tx.MoveTag(p.dst, tag, sig, MovePromote); err != nil {
			return err
		}
	}
	return nil
}
