package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"

	"github.com/berth-registry/berth/storage/manifest"
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
	// maxIndexedPair bounds the length of an annotation or label (key and
	// value together) that the search index holds. Longer ones, and ones
	// containing a NUL byte, are still searchable, by a scan.
	maxIndexedPair = 1024
	// DefaultSearchScanLimit bounds how many manifests one Search
	// examines, unless Options.SearchScanLimit says otherwise. A search
	// that reaches it returns the results found so far with a cursor to
	// continue from.
	DefaultSearchScanLimit = 10_000

	kindAnnotation = 'a'
	kindLabel      = 'l'
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
func (r manifestRecord) created() time.Time {
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
func (s *Store) readConfigMeta(ctx context.Context, m *manifest.Manifest) (map[string]string, *time.Time) {
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
	f, err := os.Open(s.blobPath(cfg.Digest))
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

// indexable reports whether the search index holds the pair k=v.
func indexable(k, v string) bool {
	return len(k)+len(v) <= maxIndexedPair && !strings.ContainsRune(k, 0) && !strings.ContainsRune(v, 0)
}

// searchPrefix is the part of a search index key naming one pair.
func searchPrefix(kind byte, k, v string) []byte {
	b := make([]byte, 0, len(k)+len(v)+3)
	b = append(b, kind)
	b = append(b, k...)
	b = append(b, 0)
	b = append(b, v...)
	return append(b, 0)
}

// searchKey is the search index key of the pair k=v of manifest d in repo.
func searchKey(kind byte, k, v, repo string, d digest.Digest) []byte {
	b := searchPrefix(kind, k, v)
	b = append(b, repo...)
	b = append(b, 0)
	return append(b, d...)
}

// searchEntries calls fn with the search index key of each indexable
// annotation and label of rec.
func searchEntries(repo string, d digest.Digest, rec manifestRecord, fn func(key []byte) error) error {
	for kind, pairs := range map[byte]map[string]string{kindAnnotation: rec.Annotations, kindLabel: rec.Labels} {
		for k, v := range pairs {
			if !indexable(k, v) {
				continue
			}
			if err := fn(searchKey(kind, k, v, repo, d)); err != nil {
				return err
			}
		}
	}
	return nil
}

// indexManifest adds the search index entries of manifest d in repo.
func indexManifest(tx *bolt.Tx, repo string, d digest.Digest, rec manifestRecord) error {
	b := tx.Bucket(bucketSearch)
	return searchEntries(repo, d, rec, func(key []byte) error {
		if err := b.Put(key, nil); err != nil {
			return fmt.Errorf("index manifest %s: %w", d, err)
		}
		return nil
	})
}

// unindexManifest removes the search index entries of manifest d in repo,
// made from its record rec.
func unindexManifest(tx *bolt.Tx, repo string, d digest.Digest, rec manifestRecord) error {
	b := tx.Bucket(bucketSearch)
	return searchEntries(repo, d, rec, func(key []byte) error {
		if err := b.Delete(key); err != nil {
			return fmt.Errorf("unindex manifest %s: %w", d, err)
		}
		return nil
	})
}

// dropSearchEntries removes the search index entries of manifest key in
// repo. The record is the guide when it can be read; a record fsck cannot
// decode has its entries found by a walk of the whole index.
func dropSearchEntries(tx *bolt.Tx, repo string, rb *bolt.Bucket, key []byte) error {
	var rec manifestRecord
	if ok, err := getJSON(rb.Bucket(bucketManifests), key, &rec); err == nil {
		if !ok {
			return nil
		}
		return unindexManifest(tx, repo, digest.Digest(key), rec)
	}
	suffix := append(append(append([]byte{0}, repo...), 0), key...)
	var stale [][]byte
	_ = tx.Bucket(bucketSearch).ForEach(func(k, _ []byte) error {
		if bytes.HasSuffix(k, suffix) {
			stale = append(stale, bytes.Clone(k))
		}
		return nil
	})
	for _, k := range stale {
		if err := tx.Bucket(bucketSearch).Delete(k); err != nil {
			return fmt.Errorf("unindex manifest %s: %w", key, err)
		}
	}
	return nil
}

// buildSearchIndex fills the (new, empty) search index from every manifest
// record, for a store created before the index existed.
func buildSearchIndex(tx *bolt.Tx) error {
	return tx.Bucket(bucketRepos).ForEach(func(name, _ []byte) error {
		rb := tx.Bucket(bucketRepos).Bucket(name)
		if rb == nil || rb.Bucket(bucketManifests) == nil {
			return nil
		}
		return forEachJSON(rb.Bucket(bucketManifests), func(k []byte, rec manifestRecord) error {
			return indexManifest(tx, string(name), digest.Digest(k), rec)
		})
	})
}

// Search returns up to q.N manifests matching q, in order of repository
// then digest, starting after the cursor q.Last. next is the cursor of the
// following page, empty when there is none. One call examines at most
// Options.SearchScanLimit manifests, so a page may be short, even empty, and still
// have a next.
//
// A query with an annotation or label seeks the search index; any other
// walks the manifests of the repositories it names.
func (s *Store) Search(ctx context.Context, q Query) (results []SearchResult, next string, err error) {
	results = []SearchResult{}
	var after struct {
		repo string
		d    digest.Digest
	}
	if q.Last != "" {
		repo, d, ok := strings.Cut(q.Last, "@")
		if !ok || repo == "" || digest.Digest(d).Validate() != nil {
			return results, "", detailf(ErrQueryInvalid, map[string]any{"last": q.Last}, "last %q is not a search cursor", q.Last)
		}
		after.repo, after.d = repo, digest.Digest(d)
	}
	if q.N <= 0 {
		return results, "", nil
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		w := &searchWalk{tx: tx, q: q, limit: s.searchScan, out: &results, tags: map[string]map[digest.Digest][]string{}}
		var err error
		if kind, k, v, ok := indexedFilter(q); ok {
			err = w.index(searchPrefix(kind, k, v), after.repo, after.d)
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

// indexedFilter picks the filter of q the search index answers: the first
// indexable annotation in key order, else the first indexable label.
func indexedFilter(q Query) (kind byte, k, v string, ok bool) {
	for _, c := range []struct {
		kind  byte
		pairs map[string]string
	}{{kindAnnotation, q.Annotations}, {kindLabel, q.Labels}} {
		keys := make([]string, 0, len(c.pairs))
		for k := range c.pairs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if indexable(k, c.pairs[k]) {
				return c.kind, k, c.pairs[k], true
			}
		}
	}
	return 0, "", "", false
}

// searchWalk collects the results of one Search.
type searchWalk struct {
	tx      *bolt.Tx
	q       Query
	limit   int
	out     *[]SearchResult
	scanned int
	// seen is the cursor of the last candidate examined.
	seen string
	// next is set when the walk stops before the end of its candidates.
	next string
	// tags caches, per repository, the tags naming each digest.
	tags map[string]map[digest.Digest][]string
}

// consider examines one candidate, with its record's JSON if the caller
// has it. It returns false when the walk must stop: the page is full or
// the scan limit reached, and next is set.
func (w *searchWalk) consider(repo string, d digest.Digest, raw []byte) (bool, error) {
	if len(*w.out) >= w.q.N || w.scanned >= w.limit {
		w.next = w.seen
		return false, nil
	}
	w.scanned++
	w.seen = cursor(repo, d)
	if !w.repoMatches(repo) {
		return true, nil
	}
	rb := repoBucket(w.tx, repo)
	if rb == nil {
		return true, nil
	}
	if raw == nil {
		if raw = rb.Bucket(bucketManifests).Get([]byte(d)); raw == nil {
			return true, nil
		}
	}
	var rec manifestRecord
	if err := decodeJSON([]byte(d), raw, &rec); err != nil {
		return false, err
	}
	if !w.matches(rb, d, rec) {
		return true, nil
	}
	r := SearchResult{Repository: repo, Digest: d, MediaType: rec.MediaType, ArtifactType: rec.ArtifactType,
		Size: rec.Size, Created: rec.created(), Pushed: rec.Created, Tags: w.tagsOf(rb, repo, d),
		Annotations: rec.Annotations, Labels: rec.Labels}
	*w.out = append(*w.out, r)
	return true, nil
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

// matches applies every filter but the repository to a record.
func (w *searchWalk) matches(rb *bolt.Bucket, d digest.Digest, rec manifestRecord) bool {
	q := w.q
	if q.ArtifactType != "" && rec.ArtifactType != q.ArtifactType {
		return false
	}
	if q.MediaType != "" && rec.MediaType != q.MediaType {
		return false
	}
	for k, v := range q.Annotations {
		if got, ok := rec.Annotations[k]; !ok || got != v {
			return false
		}
	}
	for k, v := range q.Labels {
		if got, ok := rec.Labels[k]; !ok || got != v {
			return false
		}
	}
	if q.Tag != "" && string(rb.Bucket(bucketTags).Get([]byte(q.Tag))) != string(d) {
		return false
	}
	c := rec.created()
	if !q.CreatedAfter.IsZero() && c.Before(q.CreatedAfter) {
		return false
	}
	if !q.CreatedBefore.IsZero() && !c.Before(q.CreatedBefore) {
		return false
	}
	return true
}

// tagsOf returns the sorted tags naming d in repo, reading the
// repository's tags once per search.
func (w *searchWalk) tagsOf(rb *bolt.Bucket, repo string, d digest.Digest) []string {
	byDigest, ok := w.tags[repo]
	if !ok {
		byDigest = map[digest.Digest][]string{}
		_ = rb.Bucket(bucketTags).ForEach(func(k, v []byte) error {
			byDigest[digest.Digest(v)] = append(byDigest[digest.Digest(v)], string(k))
			return nil
		})
		w.tags[repo] = byDigest
	}
	tags := slices.Clone(byDigest[d]) // keys come sorted from bbolt
	if tags == nil {
		tags = []string{}
	}
	return tags
}

// index walks the search index entries under prefix, after the candidate
// (repo, d) when repo is set.
func (w *searchWalk) index(prefix []byte, repo string, d digest.Digest) error {
	c := w.tx.Bucket(bucketSearch).Cursor()
	start := prefix
	if repo != "" {
		start = append(bytes.Clone(prefix), repo...)
		start = append(start, 0)
		start = append(start, d...)
	} else if p, ok := repoPrefix(w.q.Repository); ok {
		start = append(bytes.Clone(prefix), p...)
	} else if w.q.Repository != "" {
		start = append(bytes.Clone(prefix), w.q.Repository...)
	}
	k, _ := c.Seek(start)
	if repo != "" && bytes.Equal(k, start) {
		k, _ = c.Next()
	}
	for ; k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		candRepo, candDigest, ok := strings.Cut(string(k[len(prefix):]), "\x00")
		if !ok {
			return fmt.Errorf("malformed search index key %q", k)
		}
		if w.pastRepos(candRepo) {
			return nil
		}
		more, err := w.consider(candRepo, digest.Digest(candDigest), nil)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// pastRepos reports whether repo, in lexical order, comes after every
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
// the candidate (repo, d) when repo is set.
func (w *searchWalk) scan(afterRepo string, afterDigest digest.Digest) error {
	repos := w.tx.Bucket(bucketRepos).Cursor()
	start := afterRepo
	if p, ok := repoPrefix(w.q.Repository); ok && start < p {
		start = p
	} else if !ok && w.q.Repository != "" && start < w.q.Repository {
		start = w.q.Repository
	}
	for name, _ := repos.Seek([]byte(start)); name != nil; name, _ = repos.Next() {
		repo := string(name)
		if w.pastRepos(repo) {
			return nil
		}
		if !w.repoMatches(repo) {
			continue
		}
		rb := repoBucket(w.tx, repo)
		if rb == nil {
			continue
		}
		var from digest.Digest
		if repo == afterRepo {
			from = afterDigest
		}
		more, err := w.scanRepo(rb, repo, from)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// scanRepo walks the manifests of one repository after digest from (all of
// them when from is empty); with a tag filter, only the one it names.
func (w *searchWalk) scanRepo(rb *bolt.Bucket, repo string, from digest.Digest) (bool, error) {
	manifests := rb.Bucket(bucketManifests)
	if manifests == nil {
		return true, nil
	}
	if w.q.Tag != "" {
		target := digest.Digest(rb.Bucket(bucketTags).Get([]byte(w.q.Tag)))
		if target == "" || (from != "" && target <= from) {
			return true, nil
		}
		return w.consider(repo, target, nil)
	}
	c := manifests.Cursor()
	var k, v []byte
	if from == "" {
		k, v = c.First()
	} else {
		k, v = c.Seek([]byte(from))
		if k != nil && string(k) == string(from) {
			k, v = c.Next()
		}
	}
	for ; k != nil; k, v = c.Next() {
		more, err := w.consider(repo, digest.Digest(k), v)
		if err != nil || !more {
			return more, err
		}
	}
	return true, nil
}
