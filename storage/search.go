package storage

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage/manifest"
	"github.com/berth-registry/berth/storage/meta"
)

// AnnotationCreated is the OCI annotation holding an artifact's creation
// time (RFC 3339); it decides the "created" of a search result.
const AnnotationCreated = ocispec.AnnotationCreated

// MediaTypeDockerConfig is the media type of a Docker image config, whose
// labels are indexed like those of an OCI image config.
const MediaTypeDockerConfig = "application/vnd.docker.container.image.v1+json"

const (
	// maxConfigBytes bounds the image config read at push for its labels.
	maxConfigBytes = 1 << 20
	// DefaultSearchScanLimit bounds how many manifests one Search
	// examines, unless Options.SearchScanLimit says otherwise. A search
	// that reaches it returns the results found so far with a cursor to
	// continue from.
	DefaultSearchScanLimit = 10_000
)

// Query selects manifests for Search. Every filter set must match.
type Query struct {
	// Annotations must all be present on the manifest with these values.
	Annotations map[string]string
	// Labels must all be present in the image config's labels.
	Labels map[string]string
	// Repository is a repository name, matched exactly, or a name
	// followed by "/**", which matches every repository under it
	// ("apps/**" matches apps/web and apps/web/api, not apps).
	Repository string
	// Tag, if set, must name the manifest in its repository.
	Tag string
	// ArtifactType and MediaType, if set, must equal the manifest's.
	ArtifactType string
	MediaType    string
	// CreatedAfter and CreatedBefore bound the artifact's created time
	// (see SearchResult.Created): at or after CreatedAfter, strictly
	// before CreatedBefore. Zero means unbounded.
	CreatedAfter  time.Time
	CreatedBefore time.Time
	// N is the most results to return; zero or less returns none.
	N int
	// Last is the cursor of the previous page, empty for the first.
	Last string
}

// SearchResult describes one manifest that matched a Query.
type SearchResult struct {
	Repository   string        `json:"repository"`
	Digest       digest.Digest `json:"digest"`
	MediaType    string        `json:"mediaType"`
	ArtifactType string        `json:"artifactType,omitempty"`
	Size         int64         `json:"size"`
	// Created is the artifact's creation time: its
	// org.opencontainers.image.created annotation if that is valid
	// RFC 3339, else its image config's created time, else Pushed.
	Created time.Time `json:"created"`
	// Pushed is when the manifest first entered the repository.
	Pushed time.Time `json:"pushed"`
	// Tags are the tags naming the manifest in its repository, sorted.
	Tags        []string          `json:"tags"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
}

// Cursor is the position of r in the order of search results, for
// Query.Last.
func (r SearchResult) Cursor() string { return cursor(r.Repository, r.Digest) }

func cursor(repo string, d digest.Digest) string { return repo + "@" + string(d) }

// created is the artifact's creation time, as SearchResult.Created.
func created(r meta.Manifest) time.Time {
	if v, ok := r.Annotations[AnnotationCreated]; ok {
		if t, err := time.Parse(time.RFC3339, v); err == nil && !t.IsZero() {
			return t.UTC()
		}
	}
	if r.ConfigCreated != nil && !r.ConfigCreated.IsZero() {
		return r.ConfigCreated.UTC()
	}
	return r.Created
}

// readConfigMeta reads the labels and created time of an image manifest's
// config, if its config is an OCI image or Docker container config of at
// most maxConfigBytes already in the store. Anything else, a config it
// cannot read or parse included, yields nothing: labels are a convenience
// and never fail a push.
func (s *Service) readConfigMeta(ctx context.Context, m *manifest.Manifest) (map[string]string, *time.Time) {
	if manifest.IsIndex(m.MediaType) || len(m.Blobs) == 0 {
		return nil, nil
	}
	cfg := m.Blobs[0] // an image manifest's config comes first
	if cfg.MediaType != ocispec.MediaTypeImageConfig && cfg.MediaType != MediaTypeDockerConfig {
		return nil, nil
	}
	skip := func(why string, args ...any) (map[string]string, *time.Time) {
		s.log.DebugContext(ctx, "image config not indexed", append([]any{"digest", cfg.Digest, "reason", why}, args...)...)
		return nil, nil
	}
	if cfg.Size > maxConfigBytes {
		return skip("too large", "size", cfg.Size)
	}
	if cfg.Digest.Validate() != nil {
		return skip("invalid digest")
	}
	f, err := s.readContent(ctx, cfg.Digest)
	if err != nil {
		return skip("not readable", "error", err)
	}
	defer f.Close()
	body, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	switch {
	case err != nil:
		return skip("not readable", "error", err)
	case len(body) > maxConfigBytes:
		return skip("too large", "size", len(body))
	case cfg.Digest.Algorithm().FromBytes(body) != cfg.Digest:
		return skip("content does not match its digest")
	}
	var c struct {
		Created string `json:"created"`
		Config  struct {
			Labels map[string]string `json:"Labels"`
		} `json:"config"`
	}
	if err := json.Unmarshal(body, &c); err != nil {
		return skip("not parsable", "error", err)
	}
	var created *time.Time
	// Tools that do not know the time write the zero time
	// (0001-01-01T00:00:00Z): that is no creation time.
	if t, err := time.Parse(time.RFC3339, c.Created); err == nil && !t.IsZero() {
		t = t.UTC()
		created = &t
	}
	if len(c.Config.Labels) == 0 {
		c.Config.Labels = nil
	}
	return c.Config.Labels, created
}

// Search returns up to q.N manifests matching q, in order of repository
// then digest, starting after the cursor q.Last. next is the cursor of the
// following page, empty when there is none. One call examines at most
// Options.SearchScanLimit manifests, so a page may be short, even empty,
// and still have a next.
//
// A query with an annotation or label the index holds walks the index's
// entries of that pair; any other walks the manifests of the repositories
// it names.
func (s *Service) Search(ctx context.Context, q Query) (results []SearchResult, next string, err error) {
	var after struct {
		repo string
		d    digest.Digest
	}
	if q.Last != "" {
		repo, d, ok := strings.Cut(q.Last, "@")
		if !ok || repo == "" || digest.Digest(d).Validate() != nil {
			return []SearchResult{}, "", detailf(ErrQueryInvalid, map[string]any{"last": q.Last}, "last %q is not a search cursor", q.Last)
		}
		after.repo, after.d = repo, digest.Digest(d)
	}
	if q.N <= 0 {
		return []SearchResult{}, "", nil
	}
	err = s.index.View(ctx, func(tx meta.Tx) error {
		results = []SearchResult{}
		w := &searchWalk{tx: tx, q: q, limit: s.searchScan, out: &results}
		var err error
		if kind, k, v, ok := indexedFilter(tx, q); ok {
			err = w.index(kind, k, v, after.repo, after.d)
		} else {
			err = w.scan(after.repo, after.d)
		}
		if err != nil {
			return err
		}
		next = w.next
		return nil
	})
	if err != nil {
		return []SearchResult{}, "", fmt.Errorf("search: %w", err)
	}
	return results, next, nil
}

// indexedFilter picks the filter of q the index answers: the first
// annotation it holds, in key order, else the first such label.
func indexedFilter(tx meta.SearchIndex, q Query) (kind meta.PairKind, k, v string, ok bool) {
	for _, c := range []struct {
		kind  meta.PairKind
		pairs map[string]string
	}{{meta.Annotation, q.Annotations}, {meta.Label, q.Labels}} {
		keys := make([]string, 0, len(c.pairs))
		for k := range c.pairs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if tx.Indexed(k, c.pairs[k]) {
				return c.kind, k, c.pairs[k], true
			}
		}
	}
	return 0, "", "", false
}

// searchWalk collects the results of one Search.
type searchWalk struct {
	tx      meta.Tx
	q       Query
	limit   int
	out     *[]SearchResult
	scanned int
	// seen is the cursor of the last candidate examined.
	seen string
	// next is set when the walk stops before the end of its candidates;
	// stopped then too, so that nested walks end as well.
	next    string
	stopped bool
}

// consider examines one candidate, with its record if the caller has it.
// It returns meta.ErrStop when the walk must stop: the page is full or the
// scan limit reached, and next is set.
func (w *searchWalk) consider(repo string, d digest.Digest, rec *meta.Manifest) error {
	if len(*w.out) >= w.q.N || w.scanned >= w.limit {
		w.next, w.stopped = w.seen, true
		return meta.ErrStop
	}
	w.scanned++
	w.seen = cursor(repo, d)
	if !w.repoMatches(repo) {
		return nil
	}
	if rec == nil {
		r, ok, err := w.tx.Manifest(repo, d)
		if err != nil || !ok {
			return err
		}
		rec = &r
	}
	if ok, err := w.matches(repo, d, *rec); err != nil || !ok {
		return err
	}
	tags, err := w.tx.TagsOf(repo, d)
	if err != nil {
		return err
	}
	if tags == nil {
		tags = []string{}
	}
	*w.out = append(*w.out, SearchResult{Repository: repo, Digest: d, MediaType: rec.MediaType, ArtifactType: rec.ArtifactType,
		Size: rec.Size, Created: created(*rec), Pushed: rec.Created, Tags: tags,
		Annotations: rec.Annotations, Labels: rec.Labels})
	return nil
}

// repoMatches applies the repository filter.
func (w *searchWalk) repoMatches(repo string) bool {
	switch p, ok := repoPrefix(w.q.Repository); {
	case w.q.Repository == "":
		return true
	case ok:
		return strings.HasPrefix(repo, p)
	default:
		return repo == w.q.Repository
	}
}

// repoPrefix reports whether a repository filter is a "/**" prefix, and
// the prefix (ending in "/") it stands for.
func repoPrefix(filter string) (string, bool) {
	if p, ok := strings.CutSuffix(filter, "/**"); ok && p != "" {
		return p + "/", true
	}
	return "", false
}

// firstRepo is the first repository, in byte order, the filter selects
// (a lower bound for a prefix); empty when it selects every repository.
func (w *searchWalk) firstRepo() string {
	if p, ok := repoPrefix(w.q.Repository); ok {
		return p
	}
	return w.q.Repository
}

// matches applies every filter but the repository to a record.
func (w *searchWalk) matches(repo string, d digest.Digest, rec meta.Manifest) (bool, error) {
	q := w.q
	if q.ArtifactType != "" && rec.ArtifactType != q.ArtifactType {
		return false, nil
	}
	if q.MediaType != "" && rec.MediaType != q.MediaType {
		return false, nil
	}
	for k, v := range q.Annotations {
		if got, ok := rec.Annotations[k]; !ok || got != v {
			return false, nil
		}
	}
	for k, v := range q.Labels {
		if got, ok := rec.Labels[k]; !ok || got != v {
			return false, nil
		}
	}
	c := created(rec)
	if !q.CreatedAfter.IsZero() && c.Before(q.CreatedAfter) {
		return false, nil
	}
	if !q.CreatedBefore.IsZero() && !c.Before(q.CreatedBefore) {
		return false, nil
	}
	if q.Tag != "" {
		target, ok, err := w.tx.Tag(repo, q.Tag)
		if err != nil || !ok || target != d {
			return false, err
		}
	}
	return true, nil
}

// index walks the index's entries of one pair, after the candidate
// (afterRepo, afterDigest) when afterRepo is set.
func (w *searchWalk) index(kind meta.PairKind, k, v, afterRepo string, afterDigest digest.Digest) error {
	from := w.firstRepo()
	if afterRepo != "" {
		from = afterRepo
	}
	err := w.tx.FindPair(kind, k, v, from, afterDigest, func(repo string, d digest.Digest) error {
		if w.pastRepos(repo) {
			return meta.ErrStop
		}
		return w.consider(repo, d, nil)
	})
	if err != nil {
		return fmt.Errorf("search index: %w", err)
	}
	return nil
}

// pastRepos reports whether repo, in byte order, comes after every
// repository the filter selects, so a walk can end.
func (w *searchWalk) pastRepos(repo string) bool {
	if w.q.Repository == "" {
		return false
	}
	if p, ok := repoPrefix(w.q.Repository); ok {
		return repo > p && !strings.HasPrefix(repo, p)
	}
	return repo > w.q.Repository
}

// scan walks the manifests of the repositories the query selects, after
// the candidate (afterRepo, afterDigest) when afterRepo is set.
func (w *searchWalk) scan(afterRepo string, afterDigest digest.Digest) error {
	start := max(afterRepo, w.firstRepo())
	visit := func(repo string) error {
		if w.pastRepos(repo) {
			return meta.ErrStop
		}
		if !w.repoMatches(repo) {
			return nil
		}
		var from digest.Digest
		if repo == afterRepo {
			from = afterDigest
		}
		if err := w.scanRepo(repo, from); err != nil || w.stopped {
			return cmp.Or(err, meta.ErrStop)
		}
		return nil
	}
	// The walk of repositories starts after its argument, so the first
	// one is visited by itself.
	if start != "" {
		ok, err := w.tx.Repository(start)
		if err != nil {
			return err
		}
		if ok {
			if err := visit(start); errors.Is(err, meta.ErrStop) {
				return nil
			} else if err != nil {
				return err
			}
		}
	}
	return w.tx.Repositories(start, visit)
}

// scanRepo walks the manifests of one repository after digest from (all of
// them when from is empty); with a tag filter, only the one it names.
func (w *searchWalk) scanRepo(repo string, from digest.Digest) error {
	if w.q.Tag != "" {
		target, ok, err := w.tx.Tag(repo, w.q.Tag)
		if err != nil || !ok || (from != "" && target <= from) {
			return err
		}
		return w.consider(repo, target, nil)
	}
	return w.tx.Manifests(repo, from, func(d digest.Digest, rec meta.Manifest) error {
		return w.consider(repo, d, &rec)
	})
}
