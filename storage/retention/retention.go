// Package retention applies retention policies: which tags and manifests
// of a repository may go. It is a client of the storage core.
//
// The rules are a pure function, Plan, from a Snapshot of one repository
// (its tags, their recent history, its manifests and when each was last
// pulled) to what goes; Apply reads
// each repository's snapshot, plans and deletes in one transaction of the
// core, so the plan is exactly what is deleted and no concurrent push slips
// in between. A dry run plans the same way and deletes nothing. Blobs are
// left to garbage collection.
package retention

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/meta"
)

// Matcher matches names against a set of patterns; registry/glob.Set is
// one. A nil Matcher matches nothing.
type Matcher interface {
	Match(name string) bool
}

// Policy says which tags and manifests of the repositories it covers may
// go. The zero durations and counts mean "no such rule".
type Policy struct {
	// Repositories selects the repositories the policy covers.
	Repositories Matcher
	// KeepLast, when positive, keeps the KeepLast newest release tags.
	KeepLast int
	// KeepTags matches release tags that are always kept.
	KeepTags Matcher
	// DeleteTagsOlderThan, when positive, lets release tags that last
	// moved longer ago than it go.
	DeleteTagsOlderThan time.Duration
	// DeleteUntaggedAfter, when positive, lets manifests that nothing keeps
	// go once they were pushed longer ago than it. Zero: no manifest is
	// ever deleted by retention, but for EvictUnpulledAfter.
	DeleteUntaggedAfter time.Duration
	// KeepPulledWithin, when positive, keeps every manifest pulled within
	// it (by the pull record) and the tags naming it: what deploy targets
	// run stays.
	KeepPulledWithin time.Duration
	// EvictUnpulledAfter, when positive, evicts the pull-through cache's
	// manifests that no client pulled for longer than it: the tags naming
	// them and the manifests go (the cache fetches them again when asked).
	EvictUnpulledAfter time.Duration
}

// Options tune one application of the retention policies.
type Options struct {
	// DryRun plans without deleting anything.
	DryRun bool
	// Now is the time ages are measured from; zero means the current time.
	Now time.Time
	// HistoryWindow is how far back the history of kept tags protects the
	// digests it names; zero: history protects nothing.
	HistoryWindow time.Duration
}

// Report lists what a retention run deleted, or in a dry run, would
// delete.
type Report struct {
	DryRun bool `json:"dryRun"`
	// Repositories is how many repositories a policy covered.
	Repositories int `json:"repositories"`
	// Tags are the deleted tags, sorted by repository and tag.
	Tags []Tag `json:"tags"`
	// Manifests are the deleted manifests, sorted by repository and digest.
	Manifests []Manifest `json:"manifests"`
}

// Tag is a tag a retention run deleted.
type Tag struct {
	Repository string        `json:"repository"`
	Tag        string        `json:"tag"`
	Digest     digest.Digest `json:"digest"`
	// Reason is one of the TagReason constants.
	Reason string `json:"reason"`
}

// Manifest is a manifest a retention run deleted.
type Manifest struct {
	Repository string        `json:"repository"`
	Digest     digest.Digest `json:"digest"`
	// Reason is one of the ManifestReason constants.
	Reason string `json:"reason"`
}

// Why retention deleted a tag or a manifest.
const (
	// TagReasonKeepLast: the tag was beyond the newest KeepLast tags.
	TagReasonKeepLast = "keep-last"
	// TagReasonOlderThan: the tag last moved before DeleteTagsOlderThan
	// (and, when KeepLast is set too, was beyond the newest KeepLast).
	TagReasonOlderThan = "older-than"
	// TagReasonSubjectDeleted: a signature tag whose manifest went.
	TagReasonSubjectDeleted = "subject-deleted"
	// TagReasonUnpulled: the tag named a manifest of the pull-through
	// cache that no client pulled within EvictUnpulledAfter.
	TagReasonUnpulled = "unpulled"
	// ManifestReasonUntagged: nothing kept the manifest and it was pushed
	// before DeleteUntaggedAfter.
	ManifestReasonUntagged = "untagged"
	// ManifestReasonSubjectDeleted: a referrer whose subject went.
	ManifestReasonSubjectDeleted = "subject-deleted"
	// ManifestReasonUnpulled: a manifest of the pull-through cache that no
	// client pulled within EvictUnpulledAfter.
	ManifestReasonUnpulled = "unpulled"
)

// Snapshot is one repository as retention sees it.
type Snapshot struct {
	Repo string
	// Tags are the repository's tags.
	Tags []TagState
	// Manifests are the repository's manifests.
	Manifests map[digest.Digest]ManifestState
}

// TagState is a tag of a Snapshot.
type TagState struct {
	Name   string
	Digest digest.Digest
	// LastMove is the time of the tag's newest move; zero if it has no
	// history.
	LastMove time.Time
	// Immutable says the tag rules make the tag immutable.
	Immutable bool
	// Recent are the tag's moves within the history window, newest first.
	Recent []storage.TagMove
}

// ManifestState is a manifest of a Snapshot.
type ManifestState struct {
	// Created is the push time.
	Created time.Time
	// References are the blobs and child manifests it references.
	References []digest.Digest
	// Subject is the manifest it refers to, if any.
	Subject digest.Digest
	// LastPulled is the time of its latest pull by anyone, from the pull
	// record; zero if it was never pulled (or not since pulls were
	// recorded).
	LastPulled time.Time
	// Cached says the pull-through cache recorded it from an upstream;
	// Pulled is then when a client last pulled it through the cache (the
	// cache refreshes it at most once an hour).
	Cached bool
	Pulled time.Time
}

// Plan is what retention deletes in one repository.
type Plan struct {
	// Tags and Manifests are sorted by tag and by digest.
	Tags      []Tag
	Manifests []Manifest
}

// Apply applies to each repository the first policy whose Repositories
// match it (a repository no policy matches is untouched) and reports what
// went; see the package comment. Deleted tags are recorded in their
// history as storage.MoveRetention moves by the actor ctx carries.
func Apply(ctx context.Context, svc *storage.Service, policies []Policy, opts Options) (Report, error) {
	report := Report{DryRun: opts.DryRun, Tags: []Tag{}, Manifests: []Manifest{}}
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	var repos []string
	err := svc.View(ctx, func(tx meta.Tx) error {
		repos = repos[:0]
		return tx.Repositories("", func(repo string) error {
			repos = append(repos, repo)
			return nil
		})
	})
	if err != nil {
		return report, fmt.Errorf("list repositories: %w", err)
	}
	for _, repo := range repos {
		if err := ctx.Err(); err != nil {
			return report, err
		}
		p, ok := policyFor(policies, repo)
		if !ok {
			continue
		}
		report.Repositories++
		var plan Plan
		run := func(tx meta.Tx) error {
			snap, err := Read(tx, svc, repo, opts.Now, opts.HistoryWindow)
			if err != nil {
				return err
			}
			plan = MakePlan(snap, p, opts.Now, opts.HistoryWindow)
			return nil
		}
		if opts.DryRun {
			err = svc.View(ctx, run)
		} else {
			err = svc.Update(ctx, func(tx *storage.Tx) error {
				if err := run(tx); err != nil {
					return err
				}
				if len(plan.Tags) == 0 && len(plan.Manifests) == 0 {
					return errNothingToDelete // roll back: no commit to write
				}
				return apply(tx, repo, plan)
			})
		}
		if err != nil && !errors.Is(err, errNothingToDelete) {
			return report, fmt.Errorf("retention in %s: %w", repo, err)
		}
		report.Tags = append(report.Tags, plan.Tags...)
		report.Manifests = append(report.Manifests, plan.Manifests...)
	}
	slices.SortFunc(report.Tags, func(a, b Tag) int {
		return cmp.Or(cmp.Compare(a.Repository, b.Repository), cmp.Compare(a.Tag, b.Tag))
	})
	slices.SortFunc(report.Manifests, func(a, b Manifest) int {
		return cmp.Or(cmp.Compare(a.Repository, b.Repository), cmp.Compare(a.Digest, b.Digest))
	})
	return report, nil
}

// errNothingToDelete rolls back the transaction of a repository where
// retention deletes nothing.
var errNothingToDelete = errors.New("nothing to delete")

// policyFor returns the first policy covering repo.
func policyFor(policies []Policy, repo string) (Policy, bool) {
	for _, p := range policies {
		if p.Repositories != nil && p.Repositories.Match(repo) {
			return p, true
		}
	}
	return Policy{}, false
}

// Read takes the snapshot of repo that MakePlan needs, as of now: its
// manifests with the time each was last pulled, and the moves of each tag
// within window of now (none if window is zero).
func Read(tx meta.Tx, svc *storage.Service, repo string, now time.Time, window time.Duration) (Snapshot, error) {
	snap := Snapshot{Repo: repo, Manifests: map[digest.Digest]ManifestState{}}
	err := tx.Manifests(repo, "", func(d digest.Digest, m meta.Manifest) error {
		st := ManifestState{Created: m.Created, References: m.References}
		if m.Subject != nil {
			st.Subject = m.Subject.Digest
		}
		snap.Manifests[d] = st
		return nil
	})
	if err != nil {
		return snap, fmt.Errorf("read manifests: %w", err)
	}
	err = tx.Pulls(repo, "", func(p meta.Pull) error {
		if st, ok := snap.Manifests[p.Digest]; ok && p.Time.After(st.LastPulled) {
			st.LastPulled = p.Time
			snap.Manifests[p.Digest] = st
		}
		return nil
	})
	if err != nil {
		return snap, fmt.Errorf("read pulls: %w", err)
	}
	err = tx.CachedManifests(repo, func(d digest.Digest, c meta.Cached) error {
		if st, ok := snap.Manifests[d]; ok {
			st.Cached, st.Pulled = true, c.Pulled
			snap.Manifests[d] = st
		}
		return nil
	})
	if err != nil {
		return snap, fmt.Errorf("read cache records: %w", err)
	}
	since := now.Add(-window)
	err = tx.Tags(repo, "", func(tag string, d digest.Digest) error {
		t := TagState{Name: tag, Digest: d, Immutable: svc.Immutable(repo, tag)}
		err := tx.Moves(repo, tag, 0, func(m storage.TagMove) error {
			if t.LastMove.IsZero() {
				t.LastMove = m.Time
			}
			if window <= 0 || m.Time.Before(since) {
				return meta.ErrStop // moves are in time order: the rest are older
			}
			t.Recent = append(t.Recent, m)
			return nil
		})
		if err != nil {
			return err
		}
		snap.Tags = append(snap.Tags, t)
		return nil
	})
	if err != nil {
		return snap, fmt.Errorf("read tags: %w", err)
	}
	return snap, nil
}

// apply deletes what plan lists from repo: tags first, then manifests.
func apply(tx *storage.Tx, repo string, plan Plan) error {
	for _, t := range plan.Tags {
		if _, err := tx.MoveTag(repo, t.Tag, "", storage.MoveRetention); err != nil {
			return err
		}
	}
	for _, m := range plan.Manifests {
		if err := tx.RemoveManifest(repo, m.Digest, storage.MoveRetention); err != nil {
			return fmt.Errorf("planned manifest %s: %w", m.Digest, err)
		}
	}
	return nil
}
