package retention

import (
	"cmp"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage"
)

// MakePlan computes what p deletes in the repository snap describes, as of
// now, with the history within window protecting rollback targets. It is a
// pure function of its arguments.
//
// Within a repository, tags are release tags or signature tags (see
// storage.SignatureTag). What is kept:
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
//   - Pulled manifests: with KeepPulledWithin set, every manifest pulled
//     within it (its LastPulled) is kept, and so is every release tag
//     naming one, whose history then counts as a kept tag's.
//   - Rollback targets: every digest named (as previous or new digest) by
//     a history entry of a kept tag no older than window is kept, and a
//     release tag naming such a digest is kept too, whose history then
//     counts in turn.
//   - A signature tag goes exactly when the manifest it belongs to is
//     deleted in the same run; one whose manifest is not in the
//     repository (signatures stored apart) is left alone. An immutable
//     tag of any kind is never deleted.
//   - Kept manifests are those named by kept tags or kept history entries,
//     the children of kept indexes and the referrers of kept manifests,
//     recursively.
//   - Only when DeleteUntaggedAfter or EvictUnpulledAfter is set do
//     manifests go: every manifest that is not kept and was pushed before
//     DeleteUntaggedAfter, and every referrer (of any age) whose subject
//     goes, unless it is itself kept; a manifest a signature tag names
//     counts as a referrer of the manifest the tag belongs to. A manifest
//     pushed within DeleteUntaggedAfter (any manifest, when it is not
//     set), with its children and referrers, is kept unless its subject
//     goes. A referrer never keeps its subject.
//   - Eviction: with EvictUnpulledAfter set, a manifest of the
//     pull-through cache that no client pulled for longer than it (by the
//     cache's record or the pull record, whichever is later), nor within
//     KeepPulledWithin, is unpulled. A release tag naming one goes (before keepLast counts the
//     newest: an unpulled tag takes no place among them) unless it is
//     immutable or matches KeepTags; an unpulled manifest is kept neither
//     by its age nor by the history window, only by a kept tag naming it,
//     a kept index referencing it or a kept subject it refers to. The
//     cache fetches what went again when a client asks.
func MakePlan(snap Snapshot, p Policy, now time.Time, window time.Duration) Plan {
	manifests := snap.Manifests
	unpulled := func(d digest.Digest) bool {
		m, ok := manifests[d]
		if !ok || !m.Cached || p.EvictUnpulledAfter <= 0 {
			return false
		}
		last := m.Pulled
		if m.LastPulled.After(last) {
			last = m.LastPulled
		}
		age := now.Sub(last)
		return age > p.EvictUnpulledAfter && (p.KeepPulledWithin <= 0 || age > p.KeepPulledWithin)
	}
	var release, signatures []*planTag
	for _, ts := range snap.Tags {
		t := &planTag{TagState: ts, kept: ts.Immutable}
		if subj, ok := storage.SignatureTag(t.Name); ok {
			t.subject = subj
			signatures = append(signatures, t)
			continue
		}
		t.age = ts.LastMove
		if t.age.IsZero() {
			t.age = manifests[t.Digest].Created
		}
		release = append(release, t)
	}

	// Release tags: the rules of the policy.
	slices.SortFunc(release, func(a, b *planTag) int {
		return cmp.Or(b.age.Compare(a.age), cmp.Compare(a.Name, b.Name))
	})
	rank := 0 // among the newest, unpulled tags left out
	for _, t := range release {
		protected := t.kept || (p.KeepTags != nil && p.KeepTags.Match(t.Name))
		if !protected && unpulled(t.Digest) {
			t.reason = TagReasonUnpulled
			continue
		}
		beyond := p.KeepLast > 0 && rank >= p.KeepLast
		rank++
		old := p.DeleteTagsOlderThan > 0 && now.Sub(t.age) > p.DeleteTagsOlderThan
		switch {
		case protected:
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
	// Manifests pulled recently are kept from the start, and keep the
	// tags naming them the same way.
	strong := map[digest.Digest]bool{}
	if p.KeepPulledWithin > 0 {
		for d, m := range manifests {
			if !m.LastPulled.IsZero() && now.Sub(m.LastPulled) <= p.KeepPulledWithin {
				strong[d] = true
			}
		}
	}
	seen := map[string]bool{}
	since := now.Add(-window)
	for range len(release) + 1 {
		grew := false
		for _, t := range release {
			if !t.kept || seen[t.Name] {
				continue
			}
			seen[t.Name] = true
			strong[t.Digest] = true
			if window <= 0 {
				continue
			}
			for _, m := range t.Recent {
				if m.Time.Before(since) {
					continue
				}
				for _, d := range []digest.Digest{m.Previous, m.Digest} {
					if d != "" && !unpulled(d) {
						strong[d] = true
					}
				}
			}
		}
		for _, t := range release {
			if !t.kept && strong[t.Digest] {
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
	for d, m := range manifests {
		if m.Subject != "" {
			referrers[m.Subject] = append(referrers[m.Subject], d)
		}
	}
	// The tag-schema fallback links a signature to its manifest by a tag
	// instead of a subject: it follows that manifest the same way.
	sigSubjects := map[digest.Digest][]digest.Digest{}
	for _, t := range signatures {
		if !t.kept {
			sigSubjects[t.Digest] = append(sigSubjects[t.Digest], t.subject)
		}
	}
	subjectDoomed := func(d digest.Digest, doomed map[digest.Digest]bool) bool {
		if subj := manifests[d].Subject; subj != "" && doomed[subj] {
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
				roots = append(roots, t.Digest)
			}
		}
		for d, m := range manifests {
			young := (grace <= 0 || now.Sub(m.Created) <= grace) && !unpulled(d)
			if young && !subjectDoomed(d, doomed) {
				roots = append(roots, d)
			}
		}
		kept := map[digest.Digest]bool{}
		for len(roots) > 0 {
			d := roots[len(roots)-1]
			roots = roots[:len(roots)-1]
			m, ok := manifests[d]
			if !ok || kept[d] {
				continue
			}
			kept[d] = true
			roots = append(roots, m.References...)
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

	var plan Plan
	for _, t := range signatures {
		if _, present := manifests[t.subject]; !t.kept && present && doomed[t.subject] {
			t.reason = TagReasonSubjectDeleted
		} else {
			t.kept = true
		}
	}
	for _, t := range append(release, signatures...) {
		if !t.kept {
			plan.Tags = append(plan.Tags, Tag{Repository: snap.Repo, Tag: t.Name, Digest: t.Digest, Reason: t.reason})
		}
	}
	for d := range doomed {
		reason := ManifestReasonUntagged
		switch {
		case subjectDoomed(d, doomed):
			reason = ManifestReasonSubjectDeleted
		case unpulled(d):
			reason = ManifestReasonUnpulled
		}
		plan.Manifests = append(plan.Manifests, Manifest{Repository: snap.Repo, Digest: d, Reason: reason})
	}
	slices.SortFunc(plan.Tags, func(a, b Tag) int { return cmp.Compare(a.Tag, b.Tag) })
	slices.SortFunc(plan.Manifests, func(a, b Manifest) int { return cmp.Compare(a.Digest, b.Digest) })
	return plan
}

// planTag is a tag of the repository being planned.
type planTag struct {
	TagState
	age time.Time
	// subject is set for signature tags: the manifest they belong to.
	subject digest.Digest
	kept    bool
	reason  string
}
