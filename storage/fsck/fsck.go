// Package fsck checks a Berth store that no server is using: the index
// against the blob store, the index's invariants, and optionally the
// content itself; with repair it fixes what it safely can. It is a client
// of the storage core: it reads through the index and blob seams and
// changes the index through the core's transactions. Invariants that only
// a backend keeps (record encodings, derived indexes such as search) are
// checked by the backend itself, when it implements meta.Checker.
package fsck

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/blob"
	"github.com/berth-registry/berth/storage/meta"
)

// The kinds of Problem that Check reports. The orphan kinds and those marked
// harmless below are findings, not inconsistencies: a crash at any moment
// can leave them, and the store works around them. A backend's own
// findings (meta.Finding) keep the kinds it gives them, such as
// "bad-record", "robot-secret", "dangling-referrer" or "search-index".
const (
	// ProblemMissing: a blob record whose content is absent or not a
	// regular file.
	ProblemMissing = "missing"
	// ProblemSize: content whose size differs from its record.
	ProblemSize = "size"
	// ProblemCorrupt: content that does not hash to its digest, or cannot
	// be read (reported only with VerifyContent).
	ProblemCorrupt = "corrupt"
	// ProblemDanglingLink: a repository blob link with no blob record.
	ProblemDanglingLink = "dangling-link"
	// ProblemDanglingManifest: a repository manifest record with no blob
	// record.
	ProblemDanglingManifest = "dangling-manifest"
	// ProblemDanglingTag: a tag naming a digest absent from the
	// repository's manifests.
	ProblemDanglingTag = "dangling-tag"
	// ProblemDanglingUpload: an upload session record whose content is
	// missing. Harmless: a crash while committing an upload (after its
	// content was committed, before the index commit) leaves one, and such
	// a session simply cannot be resumed until it expires.
	ProblemDanglingUpload = "dangling-upload"
	// ProblemIncompleteManifest: a manifest referencing a blob or child
	// manifest the repository no longer holds. Harmless to the index (a
	// blob deleted through the API leaves the same), and never repaired:
	// removing content people may still pull is not fsck's job.
	ProblemIncompleteManifest = "incomplete-manifest"
	// ProblemBadRecord: an index record that cannot be decoded, or a key
	// that cannot be what it stands for. Reported, never repaired.
	ProblemBadRecord = "bad-record"
	// ProblemPendingUpstream: a manifest the pull-through cache recorded
	// references content the repository does not hold yet: it is pending
	// from the upstream, fetched when a client asks for it. Harmless, and
	// the normal state of a cache.
	ProblemPendingUpstream = "pending-upstream"
	// ProblemStaleCache: a cache record of a manifest the repository does
	// not hold (left by a Berth from before the cache, which deleted the
	// manifest). Harmless: the cache ignores it; repair removes it.
	ProblemStaleCache = "stale-cache"

	// OrphanBlob: content with no record, left by a crash between
	// committing it and recording it, or an object of the blob store that
	// is not a blob at all.
	OrphanBlob = "orphan-blob"
	// OrphanUpload: staged upload content with no session record.
	OrphanUpload = "orphan-upload"
)

// Options choose what Check does beyond checking the index against the
// blob store.
type Options struct {
	// VerifyContent re-hashes all content, streaming it, to detect
	// corruption (bit rot) that leaves the size unchanged.
	VerifyContent bool
	// Repair fixes what can be fixed safely: corrupt and wrong-size
	// content is quarantined, records of missing blobs and dangling
	// records are deleted, derived index entries are rebuilt and orphans
	// are removed.
	Repair bool
	// Logger receives a line per repair; nil discards them.
	Logger *slog.Logger
}

// Problem is one finding of Check.
type Problem struct {
	// Kind is one of the Problem* or Orphan* constants, or a backend's.
	Kind string `json:"kind"`
	// Digest is the blob or manifest concerned, if any.
	Digest string `json:"digest,omitempty"`
	// Repo is the repository concerned, if any.
	Repo string `json:"repo,omitempty"`
	// Tag is the tag of a dangling-tag.
	Tag string `json:"tag,omitempty"`
	// Subject is the subject digest of a dangling-referrer.
	Subject string `json:"subject,omitempty"`
	// Path is the object concerned, as the blob store names it, if any.
	Path string `json:"path,omitempty"`
	// Detail says what is wrong, for people.
	Detail string `json:"detail,omitempty"`
	// Harmless is set for findings that are not inconsistencies: orphans,
	// dangling uploads and incomplete manifests.
	Harmless bool `json:"harmless"`

	// upload is the session id of a dangling upload or orphan upload.
	upload string
	// keep marks an orphan that repair leaves in place: an object that
	// is not a regular file.
	keep bool
	// backend marks a finding of the index backend's own checker.
	backend bool
}

// String formats the problem on one line.
func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.Kind)
	for _, f := range []struct{ name, v string }{
		{"", p.Digest}, {"repo=", p.Repo}, {"tag=", p.Tag}, {"subject=", p.Subject}, {"path=", p.Path},
	} {
		if f.v != "" {
			b.WriteString(" " + f.name + f.v)
		}
	}
	if p.Detail != "" {
		b.WriteString(": " + p.Detail)
	}
	if p.Harmless {
		b.WriteString(" (harmless)")
	}
	return b.String()
}

// Repair is a fix Check applied to a Problem.
type Repair struct {
	Problem
	// Action says what was done.
	Action string `json:"action"`
}

// Report is what Check found and, with Repair, what it fixed.
type Report struct {
	// VerifyContent and Repair echo the options of the check.
	VerifyContent bool `json:"verifyContent"`
	Repair        bool `json:"repair"`

	// Blobs is the number of blob records checked.
	Blobs int `json:"blobs"`
	// BytesVerified is the number of bytes re-hashed (VerifyContent).
	BytesVerified int64 `json:"bytesVerified"`
	// Repos, Links, Manifests, Tags and Referrers count the repositories
	// and their records (a referrer is a manifest with a subject).
	Repos     int `json:"repos"`
	Links     int `json:"links"`
	Manifests int `json:"manifests"`
	Tags      int `json:"tags"`
	Referrers int `json:"referrers"`
	// Uploads counts upload session records, Robots robot records.
	Uploads int `json:"uploads"`
	Robots  int `json:"robots"`

	// Problems are the findings about the index and the content it names,
	// in index order; those with Harmless set are not inconsistencies.
	Problems []Problem `json:"problems"`
	// Orphans are objects no record names. They are harmless.
	Orphans []Problem `json:"orphans"`
	// Repaired lists the fixes applied (Repair only).
	Repaired []Repair `json:"repaired"`
	// Remaining is what a check run after the repairs still found
	// (Repair only): problems first, then orphans.
	Remaining []Problem `json:"remaining,omitempty"`
}

// Inconsistent returns the number of inconsistencies: problems that are not
// harmless. After a repair it counts those that remain.
func (r *Report) Inconsistent() int {
	list := r.Problems
	if r.Repair {
		list = r.Remaining
	}
	n := 0
	for _, p := range list {
		if !p.Harmless {
			n++
		}
	}
	return n
}

// MarshalJSON encodes the report with its count of inconsistencies.
func (r *Report) MarshalJSON() ([]byte, error) {
	type plain Report
	return json.Marshal(struct {
		*plain
		Inconsistencies int `json:"inconsistencies"`
	}{(*plain)(r), r.Inconsistent()})
}

func (r *Report) add(p Problem) {
	switch p.Kind {
	case OrphanBlob, OrphanUpload:
		p.Harmless = true
		r.Orphans = append(r.Orphans, p)
	default:
		r.Problems = append(r.Problems, p)
	}
}

func newReport(opts Options) *Report {
	return &Report{
		VerifyContent: opts.VerifyContent,
		Repair:        opts.Repair,
		Problems:      []Problem{},
		Orphans:       []Problem{},
		Repaired:      []Repair{},
	}
}

// Check checks the store of svc, whose index is index, and with
// opts.Repair fixes what it safely can.
//
// It is for a store that no server is using, such as berth fsck's: the
// check reads the index in long transactions and walks the blob store.
// Each repair is its own transaction and checks its premise again, so an
// interrupted repair can be run again. A blob that has a record and correct
// content is never removed.
//
// The report is returned even with an error, holding what was done.
func Check(ctx context.Context, svc *storage.Service, index meta.Store, opts Options) (*Report, error) {
	c := &checker{svc: svc, blobs: svc.Blobs(), log: opts.Logger}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.backend, _ = index.(meta.Checker)
	r := newReport(opts)
	if err := c.check(ctx, r, opts.VerifyContent); err != nil {
		return r, err
	}
	if !opts.Repair {
		return r, nil
	}
	if err := c.repair(ctx, r); err != nil {
		return r, err
	}
	// Content was verified (or not) above; what repair changed is the
	// index and the blob store, which a plain check covers.
	after := newReport(Options{})
	if err := c.check(ctx, after, false); err != nil {
		return r, fmt.Errorf("check after repair: %w", err)
	}
	r.Remaining = append(append([]Problem{}, after.Problems...), after.Orphans...)
	return r, nil
}

// checker is one Check in progress.
type checker struct {
	svc     *storage.Service
	blobs   blob.Store
	backend meta.Checker
	log     *slog.Logger
}

func (c *checker) check(ctx context.Context, r *Report, verify bool) error {
	err := c.svc.View(ctx, func(tx meta.Tx) error {
		// The blob store first: objects that are not regular files are
		// never opened, so the record pass must know them.
		irregular := map[digest.Digest]string{}
		err := c.blobs.Walk(ctx, func(e blob.Entry) error {
			if e.Irregular != "" && e.Digest != "" {
				irregular[e.Digest] = e.Irregular
			}
			return orphanBlob(tx, r, e)
		})
		if err != nil {
			return fmt.Errorf("walk blob store: %w", err)
		}
		if err := c.checkBlobs(ctx, tx, r, irregular, verify); err != nil {
			return err
		}
		if err := checkRepos(ctx, tx, r); err != nil {
			return err
		}
		if err := c.checkUploads(ctx, tx, r); err != nil {
			return err
		}
		if err := tx.Robots(func(meta.Robot) error { r.Robots++; return nil }); err != nil {
			return fmt.Errorf("count robots: %w", err)
		}
		if err := c.blobs.WalkStaged(ctx, func(e blob.Entry) error { return orphanUpload(tx, r, e) }); err != nil {
			return fmt.Errorf("walk staged content: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("check store: %w", err)
	}
	if c.backend != nil {
		err := c.backend.Check(ctx, false, func(f meta.Finding) { r.add(fromFinding(f)) })
		if err != nil {
			return fmt.Errorf("check index: %w", err)
		}
	}
	return nil
}

// fromFinding is the Problem of a backend's finding.
func fromFinding(f meta.Finding) Problem {
	return Problem{Kind: f.Kind, Repo: f.Repo, Digest: f.Digest, Tag: f.Tag, Subject: f.Subject, Detail: f.Detail, backend: true}
}

// checkBlobs checks each blob record against its content.
func (c *checker) checkBlobs(ctx context.Context, tx meta.Tx, r *Report, irregular map[digest.Digest]string, verify bool) error {
	return tx.Blobs(func(d digest.Digest, rec meta.Blob) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		r.Blobs++
		p := Problem{Digest: string(d)}
		if what, ok := irregular[d]; ok {
			p.Kind, p.Detail = ProblemMissing, "the blob's content is "+what
			r.add(p)
			return nil
		}
		size, err := c.blobs.Stat(ctx, d)
		switch {
		case errors.Is(err, blob.ErrNotFound):
			p.Kind, p.Detail = ProblemMissing, "the blob's content is absent"
		case err != nil:
			return fmt.Errorf("stat blob %s: %w", d, err)
		case size != rec.Size:
			p.Kind, p.Detail = ProblemSize, fmt.Sprintf("the content has %d bytes, the record says %d", size, rec.Size)
		case verify:
			got, n, err := c.hash(ctx, d)
			r.BytesVerified += n
			switch {
			case ctx.Err() != nil:
				return ctx.Err()
			case err != nil:
				p.Kind, p.Detail = ProblemCorrupt, fmt.Sprintf("unreadable after %d bytes: %v", n, err)
			case got != d:
				p.Kind, p.Detail = ProblemCorrupt, "the content hashes to "+string(got)
			}
		}
		if p.Kind != "" {
			r.add(p)
		}
		return nil
	})
}

// hash streams the content of d through its algorithm, returning the
// digest and the number of bytes read.
func (c *checker) hash(ctx context.Context, d digest.Digest) (digest.Digest, int64, error) {
	f, err := c.blobs.Open(ctx, d)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := d.Algorithm().Hash()
	n, err := io.Copy(h, contextReader{ctx, f})
	if err != nil {
		return "", n, err
	}
	return digest.NewDigest(d.Algorithm(), h), n, nil
}

// contextReader stops a copy once its context is done.
type contextReader struct {
	ctx context.Context
	r   io.Reader
}

func (c contextReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// checkRepos checks every repository's links, manifests and tags against
// the blob records and each other.
func checkRepos(ctx context.Context, tx meta.Tx, r *Report) error {
	has := func(repo string, d digest.Digest) (bool, error) {
		if _, ok, err := tx.Link(repo, d); err != nil || ok {
			return ok, err
		}
		_, ok, err := tx.Manifest(repo, d)
		return ok, err
	}
	recorded := func(d digest.Digest) (bool, error) {
		_, ok, err := tx.Blob(d)
		return ok, err
	}
	return tx.Repositories("", func(repo string) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		r.Repos++
		err := tx.Links(repo, func(d digest.Digest, _ meta.Link) error {
			r.Links++
			if ok, err := recorded(d); err != nil || ok {
				return err
			}
			r.add(Problem{Kind: ProblemDanglingLink, Repo: repo, Digest: string(d), Detail: "linked into the repository, but the store has no such blob"})
			return nil
		})
		if err != nil {
			return fmt.Errorf("links of %s: %w", repo, err)
		}
		err = tx.Manifests(repo, "", func(d digest.Digest, m meta.Manifest) error {
			r.Manifests++
			if m.Subject != nil {
				r.Referrers++
			}
			if ok, err := recorded(d); err != nil {
				return err
			} else if !ok {
				r.add(Problem{Kind: ProblemDanglingManifest, Repo: repo, Digest: string(d), Detail: "the store has no blob of the manifest's content"})
			}
			var absent []string
			for _, ref := range m.References {
				held, err := has(repo, ref)
				if err != nil {
					return err
				}
				rec, err := recorded(ref)
				if err != nil {
					return err
				}
				if !held || !rec {
					absent = append(absent, string(ref))
				}
			}
			if len(absent) > 0 {
				p := Problem{Kind: ProblemIncompleteManifest, Repo: repo, Digest: string(d), Harmless: true,
					Detail: "references content the repository does not hold: " + strings.Join(absent, ", ")}
				if c, ok, err := tx.Cached(repo, d); err != nil {
					return err
				} else if ok {
					p.Kind = ProblemPendingUpstream
					p.Detail = fmt.Sprintf("recorded by the pull-through cache from upstream %s; not fetched yet: %s",
						c.Upstream, strings.Join(absent, ", "))
				}
				r.add(p)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("manifests of %s: %w", repo, err)
		}
		err = tx.CachedManifests(repo, func(d digest.Digest, c meta.Cached) error {
			if _, ok, err := tx.Manifest(repo, d); err != nil || ok {
				return err
			}
			r.add(Problem{Kind: ProblemStaleCache, Repo: repo, Digest: string(d), Harmless: true,
				Detail: "a cache record (upstream " + c.Upstream + ") of a manifest the repository does not hold"})
			return nil
		})
		if err != nil {
			return fmt.Errorf("cache records of %s: %w", repo, err)
		}
		err = tx.Tags(repo, "", func(tag string, d digest.Digest) error {
			r.Tags++
			if _, ok, err := tx.Manifest(repo, d); err != nil || ok {
				return err
			}
			r.add(Problem{Kind: ProblemDanglingTag, Repo: repo, Tag: tag, Digest: string(d), Detail: "the tag names a manifest the repository does not hold"})
			return nil
		})
		if err != nil {
			return fmt.Errorf("tags of %s: %w", repo, err)
		}
		return nil
	})
}

// checkUploads checks each upload session record against its content.
func (c *checker) checkUploads(ctx context.Context, tx meta.Tx, r *Report) error {
	return tx.Uploads(func(id string, u meta.Upload) error {
		r.Uploads++
		_, err := c.blobs.Resume(ctx, id)
		switch {
		case errors.Is(err, blob.ErrNotFound):
			r.add(Problem{Kind: ProblemDanglingUpload, Repo: u.Repo, Path: id, Harmless: true, upload: id,
				Detail: "the upload session's content is absent (a crash while it was committed); the session cannot be resumed"})
		case err != nil:
			r.add(Problem{Kind: ProblemBadRecord, Repo: u.Repo, Path: id, Detail: "upload session record: " + err.Error()})
		}
		return nil
	})
}

// orphanBlob reports an object of the blob store that no record names.
func orphanBlob(tx meta.Tx, r *Report, e blob.Entry) error {
	if e.Digest != "" {
		if _, ok, err := tx.Blob(e.Digest); err != nil || ok {
			return err // if recorded, checked with its record
		}
	}
	p := Problem{Kind: OrphanBlob, Digest: string(e.Digest), Path: e.Name}
	switch {
	case e.Irregular != "":
		p.Detail, p.keep = e.Irregular+"; left in place", true
	case e.Digest != "":
		p.Detail = fmt.Sprintf("%d bytes with no index record (an interrupted write)", e.Size)
	default:
		p.Detail = fmt.Sprintf("%d bytes; not a blob's name", e.Size)
	}
	r.add(p)
	return nil
}

// orphanUpload reports staged upload content without a session record.
func orphanUpload(tx meta.Tx, r *Report, e blob.Entry) error {
	if _, ok, err := tx.Upload(e.Name); err != nil || ok {
		return err
	}
	p := Problem{Kind: OrphanUpload, Path: e.Name, upload: e.Name, Detail: "no upload session record"}
	if e.Irregular != "" {
		p.Detail, p.keep = e.Irregular+"; left in place", true
	}
	r.add(p)
	return nil
}
