package storage

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage/manifest"
	"github.com/berth-registry/berth/storage/meta"
)

// What runs where: Holders answers which artifacts hold some content (a
// file found on a server, by its digest), under which tags now, and which
// tags named them before and when. It reads the index's reverse lookup
// (meta.Tx.Uses) and the tags' history, never every manifest.

// How a manifest holds content, in Holder.As.
const (
	// HoldsManifest: the content is the manifest itself.
	HoldsManifest = "manifest"
	// HoldsConfig: the content is the manifest's config.
	HoldsConfig = "config"
	// HoldsLayer: the content is a layer of the manifest; a file of the
	// artifact when the layer has a title.
	HoldsLayer = "layer"
	// HoldsChild: the manifest is an index, and the content is one of its
	// manifests.
	HoldsChild = "child"
	// HoldsIndex: the manifest is an index holding, through one of its
	// manifests (Holder.Via), a manifest that holds the content.
	HoldsIndex = "index"
	// HoldsReference: the manifest references the content some other way.
	HoldsReference = "reference"
)

// maxHolderDepth bounds how many indexes up Holders follows from a
// manifest holding the content.
const maxHolderDepth = 3

// Holder is an artifact holding some content, as Holders finds it.
type Holder struct {
	Repository   string        `json:"repository"`
	Digest       digest.Digest `json:"digest"`
	MediaType    string        `json:"mediaType"`
	ArtifactType string        `json:"artifactType,omitempty"`
	// As says how the manifest holds the content: one of the Holds
	// constants.
	As string `json:"as"`
	// File is the title (org.opencontainers.image.title) of the layer that
	// is the content, when it has one: the name of the file.
	File string `json:"file,omitempty"`
	// Via is, for HoldsIndex, the manifest of the index through which it
	// holds the content.
	Via digest.Digest `json:"via,omitempty"`
	// Created is the artifact's creation time, as SearchResult.Created;
	// Pushed is when the manifest first entered the repository.
	Created time.Time `json:"created"`
	Pushed  time.Time `json:"pushed"`
	// Tags are the tags naming the manifest now, sorted.
	Tags        []string          `json:"tags"`
	Annotations map[string]string `json:"annotations,omitempty"`
	// History lists the spans during which tags of the repository named
	// the manifest, newest first, from the tags' history (current tags
	// included, with no Until).
	History []TagPeriod `json:"history"`
}

// Cursor is the position of h in the order of Holders' results, for
// HolderQuery.Last.
func (h Holder) Cursor() string { return cursor(h.Repository, h.Digest) }

// TagPeriod is a span of time during which a tag named a manifest.
type TagPeriod struct {
	Tag string `json:"tag"`
	// From is when the tag was set to the manifest; Until when it moved
	// away or was deleted, nil while it still names the manifest.
	From  time.Time  `json:"from"`
	Until *time.Time `json:"until,omitempty"`
	// Action and By are why and by whom the tag was set: a push, a
	// promotion, a rollback.
	Action string `json:"action"`
	By     Actor  `json:"by"`
}

// HolderQuery asks Holders for the artifacts holding Digest.
type HolderQuery struct {
	Digest digest.Digest
	// Visible reports whether the caller may see a repository; holders in
	// other repositories are left out before anything is counted. Nil
	// shows every repository.
	Visible func(repo string) bool
	// N is the most results to return; zero or less returns none.
	N int
	// Last is the cursor of the previous page, empty for the first.
	Last string
}

// holderUse is a manifest found to hold the content, before its body is
// read.
type holderUse struct {
	repo string
	d    digest.Digest
	rec  meta.Manifest
	// as is HoldsManifest or HoldsIndex, or empty for a reference whose
	// kind the body tells.
	as  string
	via digest.Digest
}

// Holders returns up to q.N artifacts that hold content q.Digest, as a
// layer or config, as a manifest, or through an index, in order of
// repository then manifest digest, starting after the cursor q.Last; next
// is the cursor of the following page, empty when there is none. One call
// examines at most Options.SearchScanLimit uses of the digest, so a page
// may be short and still have a next. Repositories q.Visible refuses are
// skipped as if they held nothing.
func (s *Service) Holders(ctx context.Context, q HolderQuery) (holders []Holder, next string, err error) {
	if err := validDigest(q.Digest); err != nil {
		return []Holder{}, "", err
	}
	// A cursor is "repo@digest", or "repo@" past the whole repository.
	var after struct {
		repo  string
		d     digest.Digest
		whole bool
	}
	if q.Last != "" {
		repo, d, ok := strings.Cut(q.Last, "@")
		if !ok || repo == "" || (d != "" && digest.Digest(d).Validate() != nil) {
			return []Holder{}, "", detailf(ErrQueryInvalid, map[string]any{"last": q.Last}, "last %q is not a cursor", q.Last)
		}
		after.repo, after.d, after.whole = repo, digest.Digest(d), d == ""
	}
	if q.N <= 0 {
		return []Holder{}, "", nil
	}
	visible := q.Visible
	if visible == nil {
		visible = func(string) bool { return true }
	}
	var found []holderUse
	history := map[string]map[digest.Digest][]TagPeriod{}
	tags := map[string][]string{}
	err = s.index.View(ctx, func(tx meta.Tx) error {
		found, next = found[:0], ""
		clear(history)
		clear(tags)
		// The uses of the digest, grouped by repository in byte order.
		var repos []string
		byRepo := map[string][]meta.Use{}
		scanned := 0
		err := tx.Uses(q.Digest, "", func(u meta.Use) error {
			if u.Repo < after.repo || (u.Repo == after.repo && after.whole) || !visible(u.Repo) {
				return nil
			}
			// The scan stops at a repository boundary: a repository is
			// examined whole.
			if scanned >= s.searchScan && len(repos) > 0 && u.Repo != repos[len(repos)-1] {
				next = repos[len(repos)-1] + "@"
				return meta.ErrStop
			}
			scanned++
			if _, ok := byRepo[u.Repo]; !ok {
				repos = append(repos, u.Repo)
			}
			byRepo[u.Repo] = append(byRepo[u.Repo], u)
			return nil
		})
		if err != nil {
			return fmt.Errorf("uses of %s: %w", q.Digest, err)
		}
	repos:
		for _, repo := range repos {
			inRepo, err := holdersIn(tx, repo, q.Digest, byRepo[repo])
			if err != nil {
				return err
			}
			for _, h := range inRepo {
				if repo == after.repo && h.d <= after.d {
					continue
				}
				// A page ends between manifests, never between two
				// holdings of one manifest.
				if last := len(found) - 1; last >= q.N-1 && (found[last].repo != h.repo || found[last].d != h.d) {
					next = cursor(found[last].repo, found[last].d)
					break repos
				}
				found = append(found, h)
			}
		}
		for _, h := range found {
			key := h.repo
			if _, ok := history[key]; !ok {
				history[key] = map[digest.Digest][]TagPeriod{}
			}
			history[key][h.d] = nil
		}
		for repo, want := range history {
			if err := tagPeriods(tx, repo, want); err != nil {
				return err
			}
		}
		for _, h := range found {
			k := h.repo + "@" + string(h.d)
			if _, ok := tags[k]; ok {
				continue
			}
			t, err := tx.TagsOf(h.repo, h.d)
			if err != nil {
				return err
			}
			tags[k] = t
		}
		return nil
	})
	if err != nil {
		return []Holder{}, "", fmt.Errorf("holders of %s: %w", q.Digest, err)
	}
	// The bodies tell how a manifest references the content; they are
	// read outside the transaction.
	holders = make([]Holder, 0, len(found))
	for _, h := range found {
		out := Holder{Repository: h.repo, Digest: h.d, MediaType: h.rec.MediaType, ArtifactType: h.rec.ArtifactType,
			As: h.as, Via: h.via, Created: created(h.rec), Pushed: h.rec.Created, Annotations: h.rec.Annotations,
			Tags: tags[h.repo+"@"+string(h.d)], History: history[h.repo][h.d]}
		if out.Tags == nil {
			out.Tags = []string{}
		}
		if out.History == nil {
			out.History = []TagPeriod{}
		}
		if out.As == "" {
			out.As, out.File = s.holding(ctx, h.d, h.rec, q.Digest)
		}
		holders = append(holders, out)
	}
	return holders, next, nil
}

// holdersIn lists the manifests of repo holding d, from its uses there,
// with the indexes above them, sorted by digest.
func holdersIn(tx meta.Tx, repo string, d digest.Digest, uses []meta.Use) ([]holderUse, error) {
	var out []holderUse
	seen := map[string]bool{}
	add := func(h holderUse) error {
		k := string(h.d) + "\x00" + h.as + "\x00" + string(h.via)
		if seen[k] {
			return nil
		}
		rec, ok, err := tx.Manifest(repo, h.d)
		if err != nil || !ok {
			return err
		}
		seen[k] = true
		h.repo, h.rec = repo, rec
		out = append(out, h)
		return nil
	}
	// The manifests referencing d; the manifest d itself, if it is one,
	// is a holding but its indexes are among those references already.
	var level []digest.Digest
	for _, u := range uses {
		switch u.Kind {
		case meta.UseManifest:
			if err := add(holderUse{d: d, as: HoldsManifest}); err != nil {
				return nil, err
			}
		case meta.UseReference:
			if err := add(holderUse{d: u.Manifest}); err != nil {
				return nil, err
			}
			level = append(level, u.Manifest)
		}
	}
	// The indexes above them, a few levels up.
	for depth := 0; depth < maxHolderDepth && len(level) > 0; depth++ {
		var up []digest.Digest
		for _, child := range level {
			err := tx.Uses(child, repo, func(u meta.Use) error {
				if u.Kind != meta.UseReference || u.Manifest == d {
					return nil
				}
				up = append(up, u.Manifest)
				return add(holderUse{d: u.Manifest, as: HoldsIndex, via: child})
			})
			if err != nil {
				return nil, err
			}
		}
		level = up
	}
	slices.SortFunc(out, func(a, b holderUse) int {
		return cmp.Or(cmp.Compare(a.d, b.d), cmp.Compare(a.as, b.as), cmp.Compare(a.via, b.via))
	})
	return out, nil
}

// maxHistoryMoves bounds the moves Holders reads from one repository's
// history.
const maxHistoryMoves = 100_000

// tagPeriods fills want, the manifests of repo asked about, with the
// spans during which tags named them, newest first, from the history of
// every tag of repo.
func tagPeriods(tx meta.Tx, repo string, want map[digest.Digest][]TagPeriod) error {
	read := 0
	err := tx.HistoryTags(repo, "", func(tag string) error {
		var until *time.Time
		return tx.Moves(repo, tag, 0, func(m TagMove) error {
			if read++; read > maxHistoryMoves {
				return meta.ErrStop
			}
			if list, ok := want[m.Digest]; ok && m.Digest != "" {
				want[m.Digest] = append(list, TagPeriod{Tag: tag, From: m.Time, Until: until, Action: m.Action, By: m.Actor})
			}
			t := m.Time
			until = &t
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("history of %s: %w", repo, err)
	}
	// The periods of each manifest came tag by tag.
	for _, list := range want {
		slices.SortStableFunc(list, func(a, b TagPeriod) int { return cmp.Or(b.From.Compare(a.From), cmp.Compare(a.Tag, b.Tag)) })
	}
	return nil
}

// holding reads how manifest d, whose record is rec, references content c:
// as its config, a layer (with the layer's title), or one of an index's
// manifests. A body it cannot read says HoldsReference.
func (s *Service) holding(ctx context.Context, d digest.Digest, rec meta.Manifest, c digest.Digest) (as, file string) {
	if rec.Size > maxConfigBytes*4 {
		return HoldsReference, ""
	}
	r, err := s.readContent(ctx, d)
	if err != nil {
		return HoldsReference, ""
	}
	defer r.Close()
	body, err := io.ReadAll(io.LimitReader(r, rec.Size+1))
	if err != nil || int64(len(body)) != rec.Size {
		return HoldsReference, ""
	}
	var m struct {
		Config    *ocispec.Descriptor  `json:"config"`
		Layers    []ocispec.Descriptor `json:"layers"`
		Manifests []ocispec.Descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return HoldsReference, ""
	}
	for _, l := range m.Layers {
		if l.Digest == c {
			return HoldsLayer, l.Annotations[ocispec.AnnotationTitle]
		}
	}
	if m.Config != nil && m.Config.Digest == c {
		return HoldsConfig, ""
	}
	if manifest.IsIndex(rec.MediaType) || len(m.Manifests) > 0 {
		if slices.ContainsFunc(m.Manifests, func(x ocispec.Descriptor) bool { return x.Digest == c }) {
			return HoldsChild, ""
		}
	}
	return HoldsReference, ""
}
