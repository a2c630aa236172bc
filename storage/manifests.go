package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"

	"github.com/berth-registry/berth/storage/manifest"
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

type manifestRecord struct {
	MediaType    string              `json:"mediaType"`
	Size         int64               `json:"size"`
	ArtifactType string              `json:"artifactType,omitempty"`
	Subject      *ocispec.Descriptor `json:"subject,omitempty"`
	Annotations  map[string]string   `json:"annotations,omitempty"`
	// References are the digests of the blobs and child manifests the
	// manifest points at; garbage collection walks them.
	References []digest.Digest `json:"references,omitempty"`
	// Created is the push time: when the manifest first entered the
	// repository.
	Created time.Time `json:"created"`
	// Labels are the image config's config.Labels; ConfigCreated is its
	// created time. Both are read at push, and absent for indexes,
	// artifacts without an image config, and configs too large or not
	// parsable (see readConfigMeta).
	Labels        map[string]string `json:"labels,omitempty"`
	ConfigCreated *time.Time        `json:"configCreated,omitempty"`
}

func (r manifestRecord) info(d digest.Digest) ManifestInfo {
	return ManifestInfo{Digest: d, MediaType: r.MediaType, Size: r.Size, ArtifactType: r.ArtifactType,
		Subject: r.Subject, Annotations: r.Annotations, Labels: r.Labels, Created: r.Created, ConfigCreated: r.ConfigCreated}
}

// PutManifest stores a manifest body, already parsed as m and hashing to d,
// in repo, and points each of tags at it. Every blob and child manifest m
// references must already be in repo, or ErrManifestBlobUnknown is returned
// and nothing changes. A manifest with a subject is recorded as a referrer
// of that subject, which need not exist.
func (s *Store) PutManifest(ctx context.Context, repo string, d digest.Digest, body []byte, m *manifest.Manifest, tags []string) error {
	if err := validDigest(d); err != nil {
		return err
	}
	if got := d.Algorithm().FromBytes(body); got != d {
		return detailf(ErrDigestMismatch, map[string]any{"digest": string(d)}, "manifest hashes to %s", got)
	}
	path, _, _, err := s.writeContent(ctx, bytes.NewReader(body), d.Algorithm(), int64(len(body)))
	if err != nil {
		return err
	}
	defer func() { _ = s.removeFile(path) }() // a no-op once moved into place
	rec := manifestRecord{
		MediaType:    m.MediaType,
		Size:         int64(len(body)),
		ArtifactType: m.ArtifactType,
		Subject:      m.Subject,
		Annotations:  m.Annotations,
		Created:      time.Now().UTC(),
	}
	// Read outside the transaction: the config is a file, and a config
	// that cannot be read only means no labels, never a failed push.
	rec.Labels, rec.ConfigCreated = s.readConfigMeta(ctx, m)
	for _, b := range m.Blobs {
		rec.References = append(rec.References, b.Digest)
	}
	for _, c := range m.Manifests {
		rec.References = append(rec.References, c.Digest)
	}
	// The digest's lock keeps garbage collection from removing the body's
	// file between the check below that its record exists and the commit.
	unlock := s.locks.lock(d)
	defer unlock()
	err = s.db.Update(func(tx *bolt.Tx) error {
		// Check references inside the transaction that records the
		// manifest, so no concurrent delete can slip between them.
		if err := checkReferences(tx, repo, m); err != nil {
			return err
		}
		if tx.Bucket(bucketBlobs).Get([]byte(d)) == nil {
			if err := s.place(path, d); err != nil {
				return err
			}
			if err := recordBlob(tx, BlobInfo{Digest: d, Size: int64(len(body))}); err != nil {
				return err
			}
		}
		rb, err := ensureRepo(tx, repo)
		if err != nil {
			return err
		}
		if err := putManifestRecord(tx, rb, repo, d, rec); err != nil {
			return err
		}
		for _, tag := range tags {
			if _, err := s.moveTag(ctx, tx, rb, repo, tag, d, MovePush); err != nil {
				return err
			}
		}
		if m.Subject != nil {
			subj, err := rb.Bucket(bucketReferrers).CreateBucketIfNotExists([]byte(m.Subject.Digest))
			if err != nil {
				return fmt.Errorf("record referrer: %w", err)
			}
			if err := putJSON(subj, []byte(d), m.Descriptor(d, int64(len(body)))); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store manifest %s: %w", d, err)
	}
	return nil
}

func checkReferences(tx *bolt.Tx, repo string, m *manifest.Manifest) error {
	rb := repoBucket(tx, repo)
	missing := func(what string, d digest.Digest) error {
		return detailf(ErrManifestBlobUnknown, map[string]any{"digest": string(d)}, "%s %s is not in %s", what, d, repo)
	}
	for _, b := range m.Blobs {
		if rb == nil || rb.Bucket(bucketLinks).Get([]byte(b.Digest)) == nil {
			return missing("blob", b.Digest)
		}
	}
	for _, c := range m.Manifests {
		if rb == nil || rb.Bucket(bucketManifests).Get([]byte(c.Digest)) == nil {
			return missing("manifest", c.Digest)
		}
	}
	return nil
}

// resolve finds the manifest a reference names: a digest, or a tag.
func resolve(tx *bolt.Tx, repo, reference string) (digest.Digest, manifestRecord, error) {
	var rec manifestRecord
	rb := repoBucket(tx, repo)
	if rb == nil {
		return "", rec, fmt.Errorf("%w: %s", ErrNameUnknown, repo)
	}
	d := digest.Digest(reference)
	if d.Validate() != nil {
		target := rb.Bucket(bucketTags).Get([]byte(reference))
		if target == nil {
			return "", rec, fmt.Errorf("%w: tag %s in %s", ErrManifestUnknown, reference, repo)
		}
		d = digest.Digest(target)
	}
	ok, err := getJSON(rb.Bucket(bucketManifests), []byte(d), &rec)
	if err != nil {
		return "", rec, err
	}
	if !ok {
		return "", rec, fmt.Errorf("%w: %s in %s", ErrManifestUnknown, d, repo)
	}
	return d, rec, nil
}

// StatManifest describes the manifest a tag or digest names in repo.
func (s *Store) StatManifest(ctx context.Context, repo, reference string) (ManifestInfo, error) {
	var info ManifestInfo
	err := s.db.View(func(tx *bolt.Tx) error {
		d, rec, err := resolve(tx, repo, reference)
		info = rec.info(d)
		return err
	})
	return info, err
}

// GetManifest returns the manifest a tag or digest names in repo, with its
// body. Manifests are small and bounded in size, so the body is read whole.
func (s *Store) GetManifest(ctx context.Context, repo, reference string) (ManifestInfo, []byte, error) {
	info, err := s.StatManifest(ctx, repo, reference)
	if err != nil {
		return info, nil, err
	}
	body, err := os.ReadFile(s.blobPath(info.Digest))
	if errors.Is(err, os.ErrNotExist) {
		// Deleted and collected after the lookup.
		return info, nil, fmt.Errorf("%w: %s in %s", ErrManifestUnknown, info.Digest, repo)
	}
	if err != nil {
		return info, nil, fmt.Errorf("read manifest %s: %w", info.Digest, err)
	}
	if int64(len(body)) != info.Size {
		return info, nil, fmt.Errorf("manifest %s: %d bytes on disk, %d indexed", info.Digest, len(body), info.Size)
	}
	return info, body, nil
}

// DeleteManifest removes a manifest from repo, with every tag pointing at it
// and its entry in its subject's referrers. If one of those tags is
// immutable, nothing changes and ErrTagImmutable is returned.
func (s *Store) DeleteManifest(ctx context.Context, repo string, d digest.Digest) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		_, rec, err := resolve(tx, repo, string(d))
		if err != nil {
			return err
		}
		return s.removeManifest(ctx, tx, repoBucket(tx, repo), repo, d, rec, MoveDeleteManifest)
	})
}

// putManifestRecord writes the index record of manifest d in the
// repository bucket rb, and keeps the search index in step: the entries of
// the record it replaces, if any, are removed and those of rec added. A
// record it replaces keeps its Created, the first push time. Every writer
// of manifest records goes through it.
func putManifestRecord(tx *bolt.Tx, rb *bolt.Bucket, repo string, d digest.Digest, rec manifestRecord) error {
	manifests := rb.Bucket(bucketManifests)
	var old manifestRecord
	if ok, err := getJSON(manifests, []byte(d), &old); err != nil {
		return err
	} else if ok {
		rec.Created = old.Created
		if err := unindexManifest(tx, repo, d, old); err != nil {
			return err
		}
	}
	if err := putJSON(manifests, []byte(d), rec); err != nil {
		return err
	}
	return indexManifest(tx, repo, d, rec)
}

// removeManifest deletes manifest d, whose stored record is rec (read in
// the same transaction), from the repository bucket rb: the tags naming it
// (recorded as moves for why), its record, its search index entries and
// its entry among its subject's referrers. Every deleter of manifests but
// fsck's repair goes through it.
func (s *Store) removeManifest(ctx context.Context, tx *bolt.Tx, rb *bolt.Bucket, repo string, d digest.Digest, rec manifestRecord, why string) error {
	var stale []string
	err := rb.Bucket(bucketTags).ForEach(func(k, v []byte) error {
		if string(v) == string(d) {
			stale = append(stale, string(k))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("scan tags: %w", err)
	}
	for _, tag := range stale {
		if _, err := s.moveTag(ctx, tx, rb, repo, tag, "", why); err != nil {
			return err
		}
	}
	if err := rb.Bucket(bucketManifests).Delete([]byte(d)); err != nil {
		return fmt.Errorf("delete manifest: %w", err)
	}
	// rec is the stored record, which the search entries were made from.
	if err := unindexManifest(tx, repo, d, rec); err != nil {
		return err
	}
	if rec.Subject != nil {
		if _, err := dropReferrer(rb.Bucket(bucketReferrers), []byte(rec.Subject.Digest), []byte(d)); err != nil {
			return err
		}
	}
	return nil
}

// DeleteTag removes a tag from repo; the manifest it named stays. An
// immutable tag is not removed: ErrTagImmutable.
func (s *Store) DeleteTag(ctx context.Context, repo, tag string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		rb := repoBucket(tx, repo)
		if rb == nil {
			return fmt.Errorf("%w: %s", ErrNameUnknown, repo)
		}
		if rb.Bucket(bucketTags).Get([]byte(tag)) == nil {
			return fmt.Errorf("%w: tag %s in %s", ErrManifestUnknown, tag, repo)
		}
		_, err := s.moveTag(ctx, tx, rb, repo, tag, "", MoveDelete)
		return err
	})
}

// ListTags returns up to n tags of repo in lexical order, starting after
// last. more reports whether further tags follow.
func (s *Store) ListTags(ctx context.Context, repo, last string, n int) (tags []string, more bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		rb := repoBucket(tx, repo)
		if rb == nil {
			return fmt.Errorf("%w: %s", ErrNameUnknown, repo)
		}
		tags, more = page(rb.Bucket(bucketTags).Cursor(), last, n)
		return nil
	})
	return tags, more, err
}

// ListRepositories returns up to n repository names in lexical order,
// starting after last. more reports whether further names follow.
func (s *Store) ListRepositories(ctx context.Context, last string, n int) (repos []string, more bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		repos, more = page(tx.Bucket(bucketRepos).Cursor(), last, n)
		return nil
	})
	return repos, more, err
}

// page walks a cursor from just after last, collecting at most n keys.
func page(c *bolt.Cursor, last string, n int) ([]string, bool) {
	out := []string{}
	if n <= 0 {
		return out, false
	}
	var k []byte
	if last == "" {
		k, _ = c.First()
	} else {
		k, _ = c.Seek([]byte(last))
		if k != nil && string(k) == last {
			k, _ = c.Next()
		}
	}
	for ; k != nil; k, _ = c.Next() {
		if len(out) == n {
			return out, true
		}
		out = append(out, string(k))
	}
	return out, false
}

// Referrers returns the descriptors of the manifests in repo whose subject
// is d, optionally only those of one artifact type. An unknown subject or
// repository has no referrers.
func (s *Store) Referrers(ctx context.Context, repo string, d digest.Digest, artifactType string) ([]ocispec.Descriptor, error) {
	out := []ocispec.Descriptor{}
	err := s.db.View(func(tx *bolt.Tx) error {
		rb := repoBucket(tx, repo)
		if rb == nil {
			return nil
		}
		subj := rb.Bucket(bucketReferrers).Bucket([]byte(d))
		if subj == nil {
			return nil
		}
		return subj.ForEach(func(k, v []byte) error {
			var desc ocispec.Descriptor
			if _, err := getJSON(subj, k, &desc); err != nil {
				return err
			}
			if artifactType == "" || desc.ArtifactType == artifactType {
				out = append(out, desc)
			}
			return nil
		})
	})
	return out, err
}
