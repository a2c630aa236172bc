package proxy

import (
	"context"
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/manifest"
	"github.com/berth-registry/berth/storage/meta"
)

// StatManifest answers for a manifest of a namespace as manifestOf finds
// it; elsewhere as the core does.
func (c *Cache) StatManifest(ctx context.Context, repo, reference string) (storage.ManifestInfo, error) {
	u, rest := c.upstreamOf(repo)
	if u == nil {
		return c.Service.StatManifest(ctx, repo, reference)
	}
	if err := c.manifestOf(ctx, u, repo, rest, reference); err != nil {
		return storage.ManifestInfo{}, err
	}
	return c.Service.StatManifest(ctx, repo, reference)
}

// GetManifest serves a manifest of a namespace as manifestOf finds it;
// elsewhere as the core does.
func (c *Cache) GetManifest(ctx context.Context, repo, reference string) (storage.ManifestInfo, []byte, error) {
	u, rest := c.upstreamOf(repo)
	if u == nil {
		return c.Service.GetManifest(ctx, repo, reference)
	}
	if err := c.manifestOf(ctx, u, repo, rest, reference); err != nil {
		return storage.ManifestInfo{}, nil, err
	}
	info, body, err := c.Service.GetManifest(ctx, repo, reference)
	if err == nil {
		c.markPulled(ctx, u, repo, info.Digest)
		if u.prefetch {
			c.prefetch(ctx, u, repo, rest, info.MediaType, body)
		}
	}
	return info, body, err
}

// prefetch starts the fills of the config and layers of an image manifest
// that repo lacks, before the client asks for them (which it is about to):
// it then reads their first bytes from memory. An index is left alone: a
// client pulls one platform of it.
func (c *Cache) prefetch(ctx context.Context, u *upstream, repo, rest, mediaType string, body []byte) {
	if manifest.IsIndex(mediaType) {
		return
	}
	m, err := manifest.Parse(mediaType, body)
	if err != nil || len(m.Manifests) > 0 {
		return
	}
	for _, b := range m.Blobs {
		if _, err := c.Service.StatBlob(ctx, repo, b.Digest); errors.Is(err, storage.ErrBlobUnknown) {
			c.join(u, repo, rest, b.Digest)
		}
	}
}

// manifestOf makes sure the store holds the manifest reference names in
// repo, as the upstream has it, when it must ask: a digest it lacks, a tag
// it lacks or checked longer ago than the upstream's tagTTL. When the
// upstream fails, a cached copy stands (stale). Concurrent requests for
// the same reference share one question to the upstream.
func (c *Cache) manifestOf(ctx context.Context, u *upstream, repo, rest, reference string) error {
	local, lerr := c.Service.StatManifest(ctx, repo, reference)
	if lerr != nil && !errors.Is(lerr, storage.ErrManifestUnknown) && !errors.Is(lerr, storage.ErrNameUnknown) {
		return lerr
	}
	have := lerr == nil
	d, isDigest := digest.Digest(reference), digest.Digest(reference).Validate() == nil
	if isDigest && have {
		note(ctx, "berth; hit")
		return nil // content addressed: never changes
	}
	if !isDigest && have {
		var check meta.TagCheck
		var checked bool
		if err := c.View(ctx, func(tx meta.Tx) error {
			var err error
			check, checked, err = tx.TagCheck(repo, reference)
			return err
		}); err != nil {
			return err
		}
		if checked && check.Digest == local.Digest && c.now().Sub(check.Checked) < u.ttl {
			note(ctx, fmt.Sprintf("berth; hit; ttl=%d", int((u.ttl-c.now().Sub(check.Checked)).Seconds())))
			return nil
		}
	}
	_, err, shared := c.flights.Do(repo+"\x00"+reference, func() (any, error) {
		// The question outlives the request that asked it: others wait on
		// it, and a client that goes away must not fail them.
		fctx := storage.WithActor(context.WithoutCancel(ctx), actor(u))
		if isDigest {
			return nil, c.fetchManifest(fctx, u, repo, u.remoteName(rest), d, "")
		}
		return nil, c.revalidate(fctx, u, repo, u.remoteName(rest), reference, local.Digest)
	})
	switch {
	case err == nil:
		if shared {
			note(ctx, "berth; fwd=miss; collapsed")
		} else {
			note(ctx, "berth; fwd=miss; stored")
		}
		return nil
	case have && failed(ctx, err):
		c.stale(ctx, u, repo, reference, err)
		return nil
	}
	return clientError(u, "manifest", err)
}

// revalidate checks tag against the upstream with a HEAD and, when it
// names another manifest than the cached one (had; empty if none), fetches
// that and moves the tag. It records the check.
func (c *Cache) revalidate(ctx context.Context, u *upstream, repo, name, tag string, had digest.Digest) error {
	desc, err := u.headManifest(ctx, name, tag)
	if err != nil {
		return err
	}
	switch {
	case desc.Digest == "":
		// No digest in the HEAD's answer: the GET by tag tells.
		d, err := c.fetchManifestByTag(ctx, u, repo, name, tag)
		if err != nil {
			return err
		}
		desc.Digest = d
	case desc.Digest == had:
		// Unchanged: only the check is new.
	default:
		if err := c.fetchManifest(ctx, u, repo, name, desc.Digest, tag); err != nil {
			return err
		}
	}
	return c.Update(ctx, func(tx *storage.Tx) error {
		return tx.PutTagCheck(repo, tag, meta.TagCheck{Upstream: u.name, Checked: c.now(), Digest: desc.Digest})
	})
}

// fetchManifest makes sure the store holds manifest d, fetching it from
// the upstream if it does not, and points tag at it when tag is set.
func (c *Cache) fetchManifest(ctx context.Context, u *upstream, repo, name string, d digest.Digest, tag string) error {
	if _, err := c.Service.StatManifest(ctx, repo, string(d)); err == nil {
		if tag == "" {
			return nil
		}
		return c.Update(ctx, func(tx *storage.Tx) error {
			_, err := tx.MoveTag(repo, tag, d, storage.MoveMirror)
			return err
		})
	}
	body, mt, got, err := u.getManifest(ctx, name, string(d), c.maxMan)
	if err != nil {
		return err
	}
	return c.record(ctx, u, repo, got, mt, body, tag)
}

// fetchManifestByTag fetches what tag names on the upstream and records it
// under the tag.
func (c *Cache) fetchManifestByTag(ctx context.Context, u *upstream, repo, name, tag string) (digest.Digest, error) {
	body, mt, d, err := u.getManifest(ctx, name, tag, c.maxMan)
	if err != nil {
		return "", err
	}
	return d, c.record(ctx, u, repo, d, mt, body, tag)
}

// record stores a manifest fetched from the upstream as the cache's.
func (c *Cache) record(ctx context.Context, u *upstream, repo string, d digest.Digest, mediaType string, body []byte, tag string) error {
	m, err := manifest.Parse(mediaType, body)
	if err != nil {
		return fmt.Errorf("%w: upstream %s: manifest %s: %v", errBadUpstream, u.name, d, err)
	}
	opts := storage.PutOptions{Action: storage.MoveMirror, Upstream: u.name}
	if tag != "" {
		opts.Tags = []string{tag}
	}
	if _, err := c.PutManifestWith(ctx, repo, d, body, m, opts); err != nil {
		return fmt.Errorf("cache manifest %s of %s: %w", d, repo, err)
	}
	c.log.InfoContext(ctx, "manifest fetched from upstream", "upstream", u.name, "repo", repo, "digest", d, "tag", tag)
	return nil
}

// markPulled refreshes the pull time of a cached manifest, at most once
// per PulledEvery; a failure only costs the refresh.
func (c *Cache) markPulled(ctx context.Context, u *upstream, repo string, d digest.Digest) {
	now := c.now().UTC()
	var rec meta.Cached
	var ok bool
	if err := c.View(ctx, func(tx meta.Tx) error {
		var err error
		rec, ok, err = tx.Cached(repo, d)
		return err
	}); err != nil || !ok || now.Sub(rec.Pulled) < c.pulled {
		return
	}
	err := c.Update(context.WithoutCancel(ctx), func(tx *storage.Tx) error {
		cur, ok, err := tx.Cached(repo, d)
		if err != nil || !ok {
			return err
		}
		cur.Pulled = now
		return tx.PutCached(repo, d, cur)
	})
	if err != nil {
		c.log.WarnContext(ctx, "record the pull of a cached manifest", "upstream", u.name, "repo", repo, "digest", d, "error", err)
	}
}
