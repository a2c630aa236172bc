package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage/manifest"
	"github.com/berth-registry/berth/storage/meta"
)

// ManifestInfo describes a stored manifest.
type ManifestInfo struct {
	Digest       digest.Digest
	MediaType    string
	Size         int64
	ArtifactType string
	Subject      *ocispec.Descriptor
	Annotations  map[string]string
	// Labels are the labels of an image's config (config.Labels), when
	// the config could be read at push.
	Labels map[string]string
	// Created is when the manifest was first pushed to the repository.
	Created time.Time
	// ConfigCreated is the image config's created time, if it has one.
	ConfigCreated *time.Time
}

func manifestInfo(d digest.Digest, r meta.Manifest) ManifestInfo {
	return ManifestInfo{Digest: d, MediaType: r.MediaType, Size: r.Size, ArtifactType: r.ArtifactType,
		Subject: r.Subject, Annotations: r.Annotations, Labels: r.Labels, Created: r.Created, ConfigCreated: r.ConfigCreated}
}

// PutManifest stores a manifest body, already parsed as m, in repo, and
// points each of tags at it. The body is hashed once, here: with d set it
// must hash to d (with d's algorithm), otherwise its sha256 digest is used;
// PutManifest returns the digest. Every blob and child manifest m
// references must already be in repo with the size its descriptor gives,
// or ErrManifestBlobUnknown (absent) or ErrManifestInvalid (another size)
// is returned and nothing changes. A manifest with a subject is recorded as
// a referrer of that subject, which need not exist.
func (s *Service) PutManifest(ctx context.Context, repo string, d digest.Digest, body []byte, m *manifest.Manifest, tags []string) (digest.Digest, error) {
	return s.PutManifestWith(ctx, repo, d, body, m, PutOptions{Tags: tags})
}

// PutOptions say how PutManifestWith records a manifest.
type PutOptions struct {
	// Tags are moved to the manifest.
	Tags []string
	// Action is why the tags move, as their history records it: MovePush
	// when empty; MoveMirror, MoveSync or MoveImport for content that came
	// from elsewhere.
	Action string
	// Upstream, when set, records the manifest as the pull-through cache's
	// copy of that upstream's: the blobs and child manifests it references
	// that the repository does not hold yet are pending from the upstream,
	// and the manifest is recorded without them. What the repository does
	// hold must still have the size the descriptors give. A cache record
	// (meta.Cached) says so, for fsck and the cache; RemoveManifest removes
	// it with the manifest. Pushes never set it: their references are
	// checked in full.
	Upstream string
}

// PutManifestWith is PutManifest with options: tags moved for another
// reason than a push, and manifests of the pull-through cache.
func (s *Service) PutManifestWith(ctx context.Context, repo string, d digest.Digest, body []byte, m *manifest.Manifest, opts PutOptions) (digest.Digest, error) {
	if opts.Action == "" {
		opts.Action = MovePush
	}
	alg := digest.Canonical
	if d != "" {
		if err := validDigest(d); err != nil {
			return "", err
		}
		alg = d.Algorithm()
	}
	got := alg.FromBytes(body)
	if d != "" && got != d {
		return "", detailf(ErrDigestMismatch, map[string]any{"digest": string(d)}, "manifest hashes to %s", got)
	}
	d = got
	rec := meta.Manifest{
		MediaType:    m.MediaType,
		Size:         int64(len(body)),
		ArtifactType: m.ArtifactType,
		Subject:      m.Subject,
		Annotations:  m.Annotations,
		Created:      s.now(),
	}
	// Read outside the transaction: a config that cannot be read only
	// means no labels, never a failed push.
	rec.Labels, rec.ConfigCreated = s.readConfigMeta(ctx, m)
	for _, b := range m.Blobs {
		rec.References = append(rec.References, b.Digest)
	}
	for _, c := range m.Manifests {
		rec.References = append(rec.References, c.Digest)
	}
	// The digest's lock keeps garbage collection from removing the body
	// between placing it (or finding it recorded) and the commit.
	unlock, recorded, err := s.lockRecorded(ctx, d)
	if err != nil {
		return "", err
	}
	defer unlock()
	placed, err := s.placeManifest(ctx, d, body, recorded)
	if err != nil {
		return "", err
	}
	// The index may read what the push will read together with what
	// the pushes it groups with it will (meta.WithPrefetch).
	reads := pushReads(repo, d, m, opts.Tags)
	// refused is the error of the last run of the function, if it failed:
	// then the transaction rolled back and nothing recorded the body.
	var refused error
	err = s.Update(meta.WithPrefetch(ctx, reads), func(tx *Tx) error {
		refused = s.recordManifest(tx, repo, d, m, rec, reads, opts)
		return refused
	})
	if err != nil {
		if placed && refused != nil && errors.Is(err, refused) {
			// A refused push leaves nothing behind: the body was placed
			// for this push alone, and under d's lock nothing else can
			// have recorded it since.
			if derr := s.blobs.Delete(ctx, d); derr != nil {
				s.log.WarnContext(ctx, "remove the content of a refused manifest", "digest", d, "error", derr)
			}
		}
		return "", fmt.Errorf("store manifest %s: %w", d, err)
	}
	s.bodies.add(d, body)
	return d, nil
}

// recordManifest records manifest d in repo and moves tags to it, in the
// transaction of PutManifest.
func (s *Service) recordManifest(tx *Tx, repo string, d digest.Digest, m *manifest.Manifest, rec meta.Manifest, reads meta.Prefetch, opts PutOptions) error {
	if err := prefetch(tx.Tx, reads); err != nil {
		return err
	}
	// Check references inside the transaction that records the manifest,
	// so no concurrent delete can slip between them.
	if err := checkReferences(tx, repo, m, opts.Upstream != ""); err != nil {
		return err
	}
	if err := recordBlob(tx, BlobInfo{Digest: d, Size: rec.Size}); err != nil {
		return err
	}
	if old, ok, err := tx.Manifest(repo, d); err != nil {
		return err
	} else if ok {
		rec.Created = old.Created // the first push time stays
	}
	if err := tx.PutManifest(repo, d, rec); err != nil {
		return err
	}
	if opts.Upstream != "" {
		c := meta.Cached{Upstream: opts.Upstream, Cached: tx.s.now(), Pulled: tx.s.now()}
		if old, ok, err := tx.Cached(repo, d); err != nil {
			return err
		} else if ok {
			c.Cached = old.Cached
		}
		if err := tx.PutCached(repo, d, c); err != nil {
			return fmt.Errorf("record cached manifest: %w", err)
		}
	}
	tx.Publish(Event{Action: EventPush, Repo: repo, Digest: d, MediaType: rec.MediaType, Size: rec.Size, Actor: ActorFrom(tx.ctx)})
	for _, tag := range opts.Tags {
		if _, err := tx.MoveTag(repo, tag, d, opts.Action); err != nil {
			return err
		}
	}
	return nil
}

// placeManifest makes the body durable under d in the blob store before
// the transaction that records it, as blobs are, and reports whether it
// did; a body the index records already (recorded) is not written again.
// The caller holds d's lock.
func (s *Service) placeManifest(ctx context.Context, d digest.Digest, body []byte, recorded bool) (placed bool, err error) {
	if recorded {
		return false, nil
	}
	if err := s.blobs.Put(ctx, d, bytes.NewReader(body), int64(len(body))); err != nil {
		return false, fmt.Errorf("place manifest: %w", err)
	}
	return true, nil
}

// recordedLocker is implemented by indexes that lock a digest and tell
// whether it has a blob record in one round trip (a database), where
// LockDigests and a View take several.
type recordedLocker interface {
	LockRecorded(ctx context.Context, d digest.Digest) (unlock func(), recorded bool, err error)
}

// lockRecorded locks d and reports whether it has a blob record, read
// once the lock is held.
func (s *Service) lockRecorded(ctx context.Context, d digest.Digest) (unlock func(), recorded bool, err error) {
	if rl, ok := indexAs[recordedLocker](s.index); ok {
		return rl.LockRecorded(ctx, d)
	}
	unlock, err = s.index.LockDigests(ctx, d)
	if err != nil {
		return nil, false, err
	}
	err = s.index.View(ctx, func(tx meta.Tx) error {
		var err error
		_, recorded, err = tx.Blob(d)
		return err
	})
	if err != nil {
		unlock()
		return nil, false, err
	}
	return unlock, recorded, nil
}

// prefetcher is implemented by index transactions that read many
// records in one round trip (see meta.Prefetch).
type prefetcher interface {
	Prefetch(p meta.Prefetch) error
}

// pushReads is what recording manifest d of m in repo, with tags, reads:
// the links and records of its blobs, the records of its children and
// its own, and the tags.
func pushReads(repo string, d digest.Digest, m *manifest.Manifest, tags []string) meta.Prefetch {
	p := meta.Prefetch{Repo: repo, Blobs: []digest.Digest{d}, Manifests: []digest.Digest{d}, Tags: tags}
	for _, b := range m.Blobs {
		p.Blobs = append(p.Blobs, b.Digest)
		p.Links = append(p.Links, b.Digest)
	}
	for _, c := range m.Manifests {
		p.Manifests = append(p.Manifests, c.Digest)
	}
	return p
}

// prefetch reads p ahead where the index offers it.
func prefetch(tx meta.Tx, p meta.Prefetch) error {
	if pf, ok := tx.(prefetcher); ok {
		return pf.Prefetch(p)
	}
	return nil
}

// checkReferences checks that repo holds everything m references, with the
// sizes m's descriptors give. With pending (a manifest of the pull-through
// cache), what repo does not hold yet is allowed, but what it holds must
// still have those sizes.
func checkReferences(tx meta.Tx, repo string, m *manifest.Manifest, pending bool) error {
	missing := func(what string, d digest.Digest) error {
		return detailf(ErrManifestBlobUnknown, map[string]any{"digest": string(d)}, "%s %s is not in %s", what, d, repo)
	}
	wrongSize := func(what string, desc ocispec.Descriptor, size int64) error {
		return detailf(ErrManifestInvalid, map[string]any{"digest": string(desc.Digest), "size": desc.Size, "stored": size},
			"the descriptor of %s %s gives %d bytes, the repository holds %d", what, desc.Digest, desc.Size, size)
	}
	for _, b := range m.Blobs {
		info, err := linkedBlob(tx, repo, b.Digest)
		if errors.Is(err, ErrBlobUnknown) {
			if pending {
				continue
			}
			return missing("blob", b.Digest)
		}
		if err != nil {
			return err
		}
		if info.Size != b.Size {
			return wrongSize("blob", b, info.Size)
		}
	}
	for _, c := range m.Manifests {
		rec, ok, err := tx.Manifest(repo, c.Digest)
		if err != nil {
			return err
		}
		if !ok {
			if pending {
				continue
			}
			return missing("manifest", c.Digest)
		}
		if rec.Size != c.Size {
			return wrongSize("manifest", c, rec.Size)
		}
	}
	return nil
}

// resolve finds the manifest a reference names: a digest, or a tag. The
// repository's existence is read only when the manifest is not found, to
// tell an unknown name from an unknown manifest: a tag or a manifest
// record implies its repository.
func resolve(tx meta.Tx, repo, reference string) (digest.Digest, meta.Manifest, error) {
	var rec meta.Manifest
	unknown := func(what string) error {
		if ok, err := tx.Repository(repo); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("%w: %s", ErrNameUnknown, repo)
		}
		return fmt.Errorf("%w: %s in %s", ErrManifestUnknown, what, repo)
	}
	d := digest.Digest(reference)
	if d.Validate() != nil {
		target, ok, err := tx.Tag(repo, reference)
		if err != nil {
			return "", rec, err
		}
		if !ok {
			return "", rec, unknown("tag " + reference)
		}
		d = target
	}
	rec, ok, err := tx.Manifest(repo, d)
	if err != nil {
		return "", rec, err
	}
	if !ok {
		return "", rec, unknown(string(d))
	}
	return d, rec, nil
}

// StatManifest describes the manifest a tag or digest names in repo.
func (s *Service) StatManifest(ctx context.Context, repo, reference string) (ManifestInfo, error) {
	var info ManifestInfo
	err := s.index.View(ctx, func(tx meta.Tx) error {
		d, rec, err := resolve(tx, repo, reference)
		info = manifestInfo(d, rec)
		return err
	})
	return info, err
}

// GetManifest returns the manifest a tag or digest names in repo, with its
// body. Manifests are small and bounded in size, so the body is read whole.
func (s *Service) GetManifest(ctx context.Context, repo, reference string) (ManifestInfo, []byte, error) {
	info, err := s.StatManifest(ctx, repo, reference)
	if err != nil {
		return info, nil, err
	}
	if body, ok := s.bodies.get(info.Digest, info.Size); ok {
		return info, body, nil
	}
	r, err := s.readContent(ctx, info.Digest)
	if errors.Is(err, ErrBlobUnknown) {
		// Deleted and collected after the lookup.
		return info, nil, fmt.Errorf("%w: %s in %s", ErrManifestUnknown, info.Digest, repo)
	}
	if err != nil {
		return info, nil, err
	}
	defer r.Close()
	// The index says how long the body is: read exactly that, and check
	// that nothing follows.
	body := make([]byte, info.Size+1)
	n, err := io.ReadFull(r, body)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return info, nil, fmt.Errorf("read manifest %s: %w", info.Digest, err)
	}
	if int64(n) != info.Size {
		return info, nil, fmt.Errorf("manifest %s: %d bytes stored, %d indexed", info.Digest, n, info.Size)
	}
	s.bodies.add(info.Digest, body[:n])
	return info, body[:n], nil
}

// DeleteManifest removes a manifest from repo, with every tag pointing at it
// and its entry in its subject's referrers. If one of those tags is
// immutable, nothing changes and ErrTagImmutable is returned.
func (s *Service) DeleteManifest(ctx context.Context, repo string, d digest.Digest) error {
	return s.Update(ctx, func(tx *Tx) error {
		if _, _, err := resolve(tx, repo, string(d)); err != nil {
			return err
		}
		return tx.RemoveManifest(repo, d, MoveDeleteManifest)
	})
}

// RemoveManifest removes manifest d from repo: the tags naming it (moved
// to nothing, recorded in their history for why, one of the Move
// constants), then its record with its referrers and search entries. Every
// deleter of manifests goes through it.
func (tx *Tx) RemoveManifest(repo string, d digest.Digest, why string) error {
	rec, ok, err := tx.Manifest(repo, d)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: %s in %s", ErrManifestUnknown, d, repo)
	}
	tags, err := tx.TagsOf(repo, d)
	if err != nil {
		return fmt.Errorf("tags of %s: %w", d, err)
	}
	for _, tag := range tags {
		if _, err := tx.MoveTag(repo, tag, "", why); err != nil {
			return err
		}
	}
	if err := tx.DeleteManifest(repo, d); err != nil {
		return fmt.Errorf("delete manifest: %w", err)
	}
	if err := tx.DeleteCached(repo, d); err != nil {
		return fmt.Errorf("delete cache record: %w", err)
	}
	action := EventDeleteManifest
	switch why {
	case MoveRetention:
		action = EventRetention
	case MoveGC:
		action = EventGC
	}
	tx.Publish(Event{Action: action, Repo: repo, Digest: d, MediaType: rec.MediaType, Size: rec.Size, Actor: ActorFrom(tx.ctx)})
	return nil
}

// DeleteTag removes a tag from repo; the manifest it named stays. An
// immutable tag is not removed: ErrTagImmutable.
func (s *Service) DeleteTag(ctx context.Context, repo, tag string) error {
	return s.Update(ctx, func(tx *Tx) error {
		if ok, err := tx.Repository(repo); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("%w: %s", ErrNameUnknown, repo)
		}
		if _, ok, err := tx.Tag(repo, tag); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("%w: tag %s in %s", ErrManifestUnknown, tag, repo)
		}
		_, err := tx.MoveTag(repo, tag, "", MoveDelete)
		return err
	})
}

// ListTags returns up to n tags of repo in lexical order, starting after
// last. more reports whether further tags follow.
func (s *Service) ListTags(ctx context.Context, repo, last string, n int) (tags []string, more bool, err error) {
	err = s.index.View(ctx, func(tx meta.Tx) error {
		if ok, err := tx.Repository(repo); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("%w: %s", ErrNameUnknown, repo)
		}
		tags, more, err = page(n, func(fn func(string) error) error {
			return tx.Tags(repo, last, func(tag string, _ digest.Digest) error { return fn(tag) })
		})
		return err
	})
	return tags, more, err
}

// ListRepositories returns up to n repository names in lexical order,
// starting after last. more reports whether further names follow.
func (s *Service) ListRepositories(ctx context.Context, last string, n int) (repos []string, more bool, err error) {
	err = s.index.View(ctx, func(tx meta.Tx) error {
		repos, more, err = page(n, func(fn func(string) error) error { return tx.Repositories(last, fn) })
		return err
	})
	return repos, more, err
}

// page collects at most n of the items walk yields, in its order, and
// reports whether more followed. Every paginated listing uses it.
func page[T any](n int, walk func(fn func(T) error) error) ([]T, bool, error) {
	out := []T{}
	if n <= 0 {
		return out, false, nil
	}
	more := false
	err := walk(func(item T) error {
		if len(out) == n {
			more = true
			return meta.ErrStop
		}
		out = append(out, item)
		return nil
	})
	if err != nil {
		return []T{}, false, err
	}
	return out, more, nil
}

// Referrers returns the descriptors of the manifests in repo whose subject
// is d, optionally only those of one artifact type. An unknown subject or
// repository has no referrers.
func (s *Service) Referrers(ctx context.Context, repo string, d digest.Digest, artifactType string) ([]ocispec.Descriptor, error) {
	out := []ocispec.Descriptor{}
	err := s.index.View(ctx, func(tx meta.Tx) error {
		out = out[:0]
		return tx.Referrers(repo, d, func(desc ocispec.Descriptor) error {
			if artifactType == "" || desc.ArtifactType == artifactType {
				out = append(out, desc)
			}
			return nil
		})
	})
	return out, err
}
