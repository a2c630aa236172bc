package storage

import (
	"context"
	"fmt"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
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
func (s *Store) Promote(ctx context.Context, srcRepo, srcRef, dstRepo, dstTag string) (TagMove, digest.Digest, error) {
	var (
		move TagMove
		d    digest.Digest
	)
	err := s.db.Update(func(tx *bolt.Tx) error {
		var err error
		d, _, err = resolve(tx, srcRepo, srcRef)
		if err != nil {
			return err
		}
		dst, err := ensureRepo(tx, dstRepo)
		if err != nil {
			return err
		}
		p := promotion{s: s, ctx: ctx, tx: tx, src: repoBucket(tx, srcRepo), dst: dst,
			srcRepo: srcRepo, dstRepo: dstRepo, seen: map[digest.Digest]bool{}}
		if err := p.manifest(d); err != nil {
			return err
		}
		move, err = s.moveTag(ctx, tx, dst, dstRepo, dstTag, d, MovePromote)
		return err
	})
	if err != nil {
		return TagMove{}, "", fmt.Errorf("promote %s:%s to %s:%s: %w", srcRepo, srcRef, dstRepo, dstTag, err)
	}
	return move, d, nil
}

// promotion is one Promote in progress: the repository buckets it reads
// from and links into, and the manifests it has linked already.
type promotion struct {
	s                *Store
	ctx              context.Context
	tx               *bolt.Tx
	src, dst         *bolt.Bucket
	srcRepo, dstRepo string
	seen             map[digest.Digest]bool
}

// manifest links manifest d of the source repository into the destination
// with everything it references and everything that refers to it.
func (p *promotion) manifest(d digest.Digest) error {
	if p.seen[d] {
		return nil
	}
	p.seen[d] = true
	var rec manifestRecord
	ok, err := getJSON(p.src.Bucket(bucketManifests), []byte(d), &rec)
	if err != nil {
		return err
	}
	if !ok {
		return detailf(ErrManifestUnknown, map[string]any{"digest": string(d)}, "manifest %s is not in %s", d, p.srcRepo)
	}
	// References first, so that the destination never holds a manifest
	// without what it references (all in one transaction anyway).
	for _, ref := range rec.References {
		switch {
		case p.src.Bucket(bucketManifests).Get([]byte(ref)) != nil:
			if err := p.manifest(ref); err != nil {
				return err
			}
		case p.src.Bucket(bucketLinks).Get([]byte(ref)) != nil:
			if err := link(p.tx, p.dstRepo, ref); err != nil {
				return err
			}
		default:
			// Not linked into the source (unlinked since the push), so
			// not promoted either. Foreign, non-distributable layers
			// are never among the references in the first place.
		}
	}
	if p.dst.Bucket(bucketManifests).Get([]byte(d)) == nil {
		if err := putManifestRecord(p.tx, p.dst, p.dstRepo, d, rec); err != nil {
			return err
		}
	}
	if rec.Subject != nil {
		if err := p.referrerEntry(rec.Subject.Digest, d); err != nil {
			return err
		}
	}
	if err := p.referrers(d); err != nil {
		return err
	}
	return p.signatureTags(d)
}

// referrerEntry copies the source's referrers entry of referrer under
// subject into the destination.
func (p *promotion) referrerEntry(subject, referrer digest.Digest) error {
	ssub := p.src.Bucket(bucketReferrers).Bucket([]byte(subject))
	if ssub == nil {
		return nil
	}
	desc := ssub.Get([]byte(referrer))
	if desc == nil {
		return nil
	}
	dsub, err := p.dst.Bucket(bucketReferrers).CreateBucketIfNotExists([]byte(subject))
	if err != nil {
		return fmt.Errorf("record referrer: %w", err)
	}
	if err := dsub.Put([]byte(referrer), desc); err != nil {
		return fmt.Errorf("record referrer: %w", err)
	}
	return nil
}

// referrers links the manifests whose subject is d.
func (p *promotion) referrers(d digest.Digest) error {
	sub := p.src.Bucket(bucketReferrers).Bucket([]byte(d))
	if sub == nil {
		return nil
	}
	var refs []digest.Digest
	if err := sub.ForEach(func(k, _ []byte) error {
		refs = append(refs, digest.Digest(k))
		return nil
	}); err != nil {
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
		target := p.src.Bucket(bucketTags).Get([]byte(tag))
		if target == nil {
			continue
		}
		sig := digest.Digest(target)
		if err := p.manifest(sig); err != nil {
			return err
		}
		if _, err := p.s.moveTag(p.ctx, p.tx, p.dst, p.dstRepo, tag, sig, MovePromote); err != nil {
			return err
		}
	}
	return nil
}
