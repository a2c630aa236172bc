package storage

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// Matcher matches names against a set of patterns; registry/glob.Set is
// one. A nil Matcher matches nothing.
type Matcher interface {
	Match(name string) bool
}

// RetentionPolicy says which tags and manifests of the repositories it
// covers may go. The zero durations and counts mean "no such rule".
type RetentionPolicy struct {
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
	// ever deleted by retention.
	DeleteUntaggedAfter time.Duration
}

// RetentionOptions tune one application of the retention policies.
type RetentionOptions struct {
	// DryRun plans without deleting anything.
	DryRun bool
	// Now is the time ages are measured from; zero means the current time.
	Now time.Time
	// HistoryWindow is how far back the history of kept tags protects the
	// digests it names; zero: history protects nothing.
	HistoryWindow time.Duration
}

// RetentionReport lists what a retention run deleted, or in a dry run,
// would delete.
type RetentionReport struct {
	DryRun bool `json:"dryRun"`
	// Repositories is how many repositories a policy covered.
	Repositories int `json:"repositories"`
	// Tags are the deleted tags, sorted by repository and tag.
	Tags []RetainedTag `json:"tags"`
	// Manifests are the deleted manifests, sorted by repository and digest.
	Manifests []RetainedManifest `json:"manifests"`
}

// RetainedTag is a tag a retention run deleted.
type RetainedTag struct {
	Repository string        `json:"repository"`
	Tag        string        `json:"tag"`
	Digest     digest.Digest `json:"digest"`
	// Reason is one of the TagReason constants.
	Reason string `json:"reason"`
}

// RetainedManifest is a manifest a retention run deleted.
type RetainedManifest struct {
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
	// ManifestReasonUntagged: nothing kept the manifest and it was pushed
	// before DeleteUntaggedAfter.
	ManifestReasonUntagged = "untagged"
	// ManifestReasonSubjectDeleted: a referrer whose subject went.
	ManifestReasonSubjectDeleted = "subject-deleted"
)

// ApplyRetention applies to each repository the first policy whose
// Repositories match it (a repository no policy matches is untouched) and
// reports what went. Each repository is planned and, unless opts.DryRun,
// cleaned in one transaction, so the plan is exactly what is deleted and
// no concurrent push slips in between; a dry run plans the same way in a
// read transaction. Deleted tags are recorded in their history as
// MoveRetention moves by the actor ctx carries. Blobs are left to garbage
// collection.
//
// Within a repository, tags are release tags or signature tags (see
// SignatureTag). What is kept:
//
//   - A release tag's age is the time of its last move, or if it has no
//     history, the push time of the manifest it names. Ordered newest
//     first (ties by name), the first KeepLast are the newest.
//   - A release tag is protected, and kept, if it is immutable, matches
//     KeepTags or is among the newest KeepLast.
//   - An unprotected release tag goes when the rules that are set all let
//     it go: KeepLast alone deletes the tags beyond the newest KeepLast,
//     DeleteTagsOlderThan alone those older than it, and with both set a
//     tag goes only if it is beyond the newest KeepLast and older than
//     DeleteTagsOlderThan (each rule keeps what it keeps). With neither
//     set, no release tag goes.
//   - Rollback targets: every digest named (as previous or new digest) by
//     a history entry of a kept tag no older than opts.HistoryWindow is
//     kept, and a release tag naming such a digest is kept too, whose
//     history then counts in turn.
//   - A signature tag goes exactly when the manifest it belongs to is
//     deleted in the same run; one whose manifest is not in the
//     repository (signatures stored apart) is left alone. An immutable
//     tag of any kind is never deleted.
//   - Kept manifests are those named by kept tags or kept history entries,
//     the children of kept indexes and the referrers of kept manifests,
//     recursively.
//   - Only when DeleteUntaggedAfter is set do manifests go: every manifest
//     that is not kept and was pushed before it, and every referrer (of
//     any age) whose subject goes, unless it is itself kept; a manifest a
//     signature tag names counts as a referrer of the manifest the tag
//     belongs to. A manifest pushed within DeleteUntaggedAfter, with its
//     children and referrers, is kept unless its subject goes. A referrer
//     never keeps its subject.
func (s *Store) ApplyRetention(ctx context.Context, policies []RetentionPolicy, opts RetentionOptions) (RetentionReport, error) {
	report := RetentionReport{DryRun: opts.DryRun, Tags: []RetainedTag{}, Manifests: []RetainedManifest{}}
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	var repos []string
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRepos).ForEach(func(k, _ []byte) error {
			repos = append(repos, string(k))
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
		run := s.db.Update
		if opts.DryRun {
			run = s.db.View
		}
		var plan retentionPlan
		err := run(func(tx *bolt.Tx) error {
			var err error
			if plan, err = s.planRetention(tx, repo, p, opts); err != nil {
				return err
			}
			if opts.DryRun {
				return nil
			}
			if len(plan.tags) == 0 && len(plan.manifests) == 0 {
				return errNothingToRetain // roll back: no commit to write
			}
			return s.applyPlan(ctx, tx, repo, plan)
		})
		if err != nil && !errors.Is(err, errNothingToRetain) {
			return report, fmt.Errorf("retention in %s: %w", repo, err)
		}
		report.Tags = append(report.Tags, plan.tags...)
		report.Manifests = append(report.Manifests, plan.manifests...)
	}
	slices.SortFunc(report.Tags, func(a, b RetainedTag) int {
		return cmp.Or(cmp.Compare(a.Repository, b.Repository), cmp.Compare(a.Tag, b.Tag))
	})
	slices.SortFunc(report.Manifests, func(a, b RetainedManifest) int {
		return cmp.Or(cmp.Compare(a.Repository, b.Repository), cmp.Compare(a.Digest, b.Digest))
	})
	return report, nil
}

// errNothingToRetain rolls back the transaction of a repository where
// retention deletes nothing.
var errNothingToRetain = errors.New("nothing to delete")

// policyFor returns the first policy covering repo.
func policyFor(policies []RetentionPolicy, repo string) (RetentionPolicy, bool) {
	for _, p := range policies {
		if p.Repositories != nil && p.Repositories.Match(repo) {
			return p, true
		}
	}
	return RetentionPolicy{}, false
}

// retentionPlan is what retention deletes in one repository.
type retentionPlan struct {
	tags      []RetainedTag
	manifests []RetainedManifest
}

// retentionTag is a tag of the repository being planned.
type retentionTag struct {
	name   string
	digest digest.Digest
	age    time.Time
	// subject is set for signature tags: the manifest they belong to.
	subject digest.Digest
	kept    bool
	reason  string
}

// planRetention computes what p deletes in repo as of opts.Now; see
// ApplyRetention for the rules. It only reads.
func (s *Store) planRetention(tx *bolt.Tx, repo string, p RetentionPolicy, opts RetentionOptions) (retentionPlan, error) {
	var plan retentionPlan
	rb := repoBucket(tx, repo)
	if rb == nil {
		return plan, nil
	}
	manifests := map[digest.Digest]manifestRecord{}
	err := forEachJSON(rb.Bucket(bucketManifests), func(k []byte, rec manifestRecord) error {
		manifests[digest.Digest(k)] = rec
		return nil
	})
	if err != nil {
		return plan, fmt.Errorf("read manifests: %w", err)
	}
	var release, signatures []*retentionTag
	err = rb.Bucket(bucketTags).ForEach(func(k, v []byte) error {
		t := &retentionTag{name: string(k), digest: digest.Digest(v)}
		if s.immutable(repo, t.name) {
			t.kept = true
		}
		if subj, ok := SignatureTag(t.name); ok {
			t.subject = subj
			signatures = append(signatures, t)
			return nil
		}
		last, ok, err := lastMove(tx, repo, t.name)
		if err != nil {
			return err
		}
		if ok {
			t.age = last.Time
		} else {
			t.age = manifests[t.digest].Created
		}
		release = append(release, t)
		return nil
	})
	if err != nil {
		return plan, fmt.Errorf("read tags: %w", err)
	}

	// Release tags: the rules of the policy.
	slices.SortFunc(release, func(a, b *retentionTag) int {
		return cmp.Or(b.age.Compare(a.age), cmp.Compare(a.name, b.name))
	})
	for i, t := range release {
		beyond := p.KeepLast > 0 && i >= p.KeepLast
		old := p.DeleteTagsOlderThan > 0 && opts.Now.Sub(t.age) > p.DeleteTagsOlderThan
		switch {
		case t.kept || (p.KeepTags != nil && p.KeepTags.Match(t.name)):
			t.kept = true
		case p.KeepLast > 0 && p.DeleteTagsOlderThan > 0:
			t.kept = !(beyond && old)
			t.reason = TagReasonOlderThan
		case p.KeepLast > 0:
			t.kept = !beyond
			t.reason = TagReasonKeepLast
		case p.DeleteTagsOlderThan > 0:
			t.kept = !old
			t.reason = TagReasonOlderThan
		default:
			t.kept = true
		}
	}

	// Rollback targets: the recent history of kept tags, to a fixed
	// point, since a tag kept for its digest brings its own history.
	strong := map[digest.Digest]bool{}
	seen := map[string]bool{}
	for range len(release) + 1 {
		grew := false
		for _, t := range release {
			if !t.kept || seen[t.name] {
				continue
			}
			seen[t.name] = true
			strong[t.digest] = true
			if err := recentHistory(tx, repo, t.name, opts.Now.Add(-opts.HistoryWindow), opts.HistoryWindow > 0, strong); err != nil {
				return plan, err
			}
		}
		for _, t := range release {
			if !t.kept && strong[t.digest] {
				t.kept, grew = true, true
			}
		}
		if !grew {
			break
		}
	}

	// Manifests: the referrers of each, then the doomed set, to a fixed
	// point: as manifests go, the signature tags and young referrers that
	// follow them stop keeping what they kept.
	referrers := map[digest.Digest][]digest.Digest{}
	for d, rec := range manifests {
		if rec.Subject != nil {
			referrers[rec.Subject.Digest] = append(referrers[rec.Subject.Digest], d)
		}
	}
	// The tag-schema fallback links a signature to its manifest by a tag
	// instead of a subject: it follows that manifest the same way.
	sigSubjects := map[digest.Digest][]digest.Digest{}
	for _, t := range signatures {
		if !t.kept {
			sigSubjects[t.digest] = append(sigSubjects[t.digest], t.subject)
		}
	}
	subjectDoomed := func(d digest.Digest, doomed map[digest.Digest]bool) bool {
		if subj := manifests[d].Subject; subj != nil && doomed[subj.Digest] {
			return true
		}
		return slices.ContainsFunc(sigSubjects[d], func(s digest.Digest) bool { return doomed[s] })
	}
	grace := p.DeleteUntaggedAfter
	doomed := map[digest.Digest]bool{}
	for range len(manifests) + 2 {
		roots := []digest.Digest{}
		for d := range strong {
			roots = append(roots, d)
		}
		for _, t := range signatures {
			_, present := manifests[t.subject]
			if t.kept || !present || !doomed[t.subject] {
				roots = append(roots, t.digest)
			}
		}
		for d, rec := range manifests {
			young := grace <= 0 || opts.Now.Sub(rec.Created) <= grace
			if young && !subjectDoomed(d, doomed) {
				roots = append(roots, d)
			}
		}
		kept := map[digest.Digest]bool{}
		for len(roots) > 0 {
			d := roots[len(roots)-1]
			roots = roots[:len(roots)-1]
			rec, ok := manifests[d]
			if !ok || kept[d] {
				continue
			}
			kept[d] = true
			roots = append(roots, rec.References...)
			roots = append(roots, referrers[d]...)
		}
		next := map[digest.Digest]bool{}
		for d := range manifests {
			if !kept[d] {
				next[d] = true
			}
		}
		if len(next) == len(doomed) {
			break
		}
		doomed = next
	}

	for _, t := range signatures {
		if _, present := manifests[t.subject]; !t.kept && present && doomed[t.subject] {
			t.reason = TagReasonSubjectDeleted
		} else {
			t.kept = true
		}
	}
	for _, t := range append(release, signatures...) {
		if !t.kept {
			plan.tags = append(plan.tags, RetainedTag{Repository: repo, Tag: t.name, Digest: t.digest, Reason: t.reason})
		}
	}
	for d := range doomed {
		reason := ManifestReasonUntagged
		if subjectDoomed(d, doomed) {
			reason = ManifestReasonSubjectDeleted
		}
		plan.manifests = append(plan.manifests, RetainedManifest{Repository: repo, Digest: d, Reason: reason})
	}
	slices.SortFunc(plan.tags, func(a, b RetainedTag) int { return cmp.Compare(a.Tag, b.Tag) })
	slices.SortFunc(plan.manifests, func(a, b RetainedManifest) int { return cmp.Compare(a.Digest, b.Digest) })
	return plan, nil
}

// recentHistory adds to keep every digest the history of tag names in
// entries no older than since, if limited; otherwise it adds nothing.
func recentHistory(tx *bolt.Tx, repo, tag string, since time.Time, limited bool, keep map[digest.Digest]bool) error {
	th := tagHistory(tx, repo, tag)
	if th == nil || !limited {
		return nil
	}
	c := th.Cursor()
	for k, v := c.Last(); k != nil; k, v = c.Prev() {
		var m TagMove
		if err := decodeJSON(k, v, &m); err != nil {
			return err
		}
		if m.Time.Before(since) {
			return nil // moves are in time order: the rest are older
		}
		for _, d := range []digest.Digest{m.Previous, m.Digest} {
			if d != "" {
				keep[d] = true
			}
		}
	}
	return nil
}

// applyPlan deletes what plan lists from repo: tags first, then manifests.
func (s *Store) applyPlan(ctx context.Context, tx *bolt.Tx, repo string, plan retentionPlan) error {
	rb := repoBucket(tx, repo)
	for _, t := range plan.tags {
		if _, err := s.moveTag(ctx, tx, rb, repo, t.Tag, "", MoveRetention); err != nil {
			return err
		}
	}
	for _, m := range plan.manifests {
		var rec manifestRecord
		ok, err := getJSON(rb.Bucket(bucketManifests), []byte(m.Digest), &rec)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("planned manifest %s vanished", m.Digest)
		}
		if err := s.removeManifest(ctx, tx, rb, repo, m.Digest, rec, MoveRetention); err != nil {
			return err
		}
	}
	return nil
}
