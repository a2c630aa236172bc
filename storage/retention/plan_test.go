package retention_test

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/retention"
)

// The table tests of MakePlan build snapshots by hand: manifests and tags
// are named by short words, and ages are in days before planNow.

// planNow is the time the plans are made at.
func planNow() time.Time { return time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC) }

const day = 24 * time.Hour

func ago(days float64) time.Time { return planNow().Add(-time.Duration(days * float64(day))) }

// dg is the digest of a manifest named by a word.
func dg(name string) digest.Digest { return digest.FromString(name) }

// sig is the tag-schema fallback signature tag of the manifest named.
func sig(name, suffix string) string { return "sha256-" + dg(name).Encoded() + suffix }

// snap is a snapshot under construction.
type snap struct{ s retention.Snapshot }

func repo() *snap {
	return &snap{retention.Snapshot{Repo: "apps/web", Manifests: map[digest.Digest]retention.ManifestState{}}}
}

// manifest adds a manifest pushed daysAgo referencing children.
func (b *snap) manifest(name string, daysAgo float64, children ...string) *snap {
	m := retention.ManifestState{Created: ago(daysAgo)}
	for _, c := range children {
		m.References = append(m.References, dg(c))
	}
	b.s.Manifests[dg(name)] = m
	return b
}

// cached makes the last manifest added the pull-through cache's, last
// pulled pulledDaysAgo.
func (b *snap) cached(name string, pulledDaysAgo float64) *snap {
	m := b.s.Manifests[dg(name)]
	m.Cached, m.Pulled = true, ago(pulledDaysAgo)
	b.s.Manifests[dg(name)] = m
	return b
}

// referrer adds a manifest pushed daysAgo whose subject is subject.
func (b *snap) referrer(name, subject string, daysAgo float64) *snap {
	b.s.Manifests[dg(name)] = retention.ManifestState{Created: ago(daysAgo), Subject: dg(subject)}
	return b
}

// pulled records that the manifest named was last pulled daysAgo.
func (b *snap) pulled(name string, daysAgo float64) *snap {
	m := b.s.Manifests[dg(name)]
	m.LastPulled = ago(daysAgo)
	b.s.Manifests[dg(name)] = m
	return b
}

// tag adds tag naming the manifest named, last moved daysAgo (a negative
// daysAgo: no history).
func (b *snap) tag(tag, name string, daysAgo float64, recent ...storage.TagMove) *snap {
	t := retention.TagState{Name: tag, Digest: dg(name), Recent: recent}
	if daysAgo >= 0 {
		t.LastMove = ago(daysAgo)
	}
	b.s.Tags = append(b.s.Tags, t)
	return b
}

// immutable makes the last tag added immutable.
func (b *snap) immutable() *snap {
	b.s.Tags[len(b.s.Tags)-1].Immutable = true
	return b
}

// move is a history entry daysAgo, from the manifest named from (empty:
// none) to the one named to.
func move(daysAgo float64, from, to string) storage.TagMove {
	m := storage.TagMove{Time: ago(daysAgo), Action: storage.MovePush}
	if from != "" {
		m.Previous = dg(from)
	}
	if to != "" {
		m.Digest = dg(to)
	}
	return m
}

// words matches exactly the names given, or with a trailing "*" a prefix.
type words []string

func (w words) Match(name string) bool {
	for _, p := range w {
		if pre, ok := strings.CutSuffix(p, "*"); ok && strings.HasPrefix(name, pre) || p == name {
			return true
		}
	}
	return false
}

func TestMakePlan(t *testing.T) {
	const (
		keepLast  = retention.TagReasonKeepLast
		olderThan = retention.TagReasonOlderThan
		subjTag   = retention.TagReasonSubjectDeleted
		untagged  = retention.ManifestReasonUntagged
		subjMan   = retention.ManifestReasonSubjectDeleted
		unpulledT = retention.TagReasonUnpulled
		unpulledM = retention.ManifestReasonUnpulled
	)
	cases := []struct {
		name   string
		snap   *snap
		policy retention.Policy
		window time.Duration
		// tags and manifests are what the plan deletes, with the reason.
		tags      map[string]string
		manifests map[string]string
	}{{
		name: "a policy without rules deletes nothing",
		snap: repo().manifest("a", 400).manifest("b", 400).tag("a", "a", 400),
	}, {
		name: "keepLast keeps the newest tags by their last move",
		snap: repo().manifest("a", 50).manifest("b", 50).manifest("c", 50).manifest("d", 50).
			tag("a", "a", 4).tag("b", "b", 3).tag("c", "c", 2).tag("d", "d", 1),
		policy: retention.Policy{KeepLast: 2},
		tags:   map[string]string{"a": keepLast, "b": keepLast},
	}, {
		name: "a tag without history is as old as its manifest's push",
		// "old" has no history and names a manifest pushed 10 days ago;
		// "moved" was moved 5 days ago to a manifest pushed 20 days ago.
		snap:   repo().manifest("m10", 10).manifest("m20", 20).tag("old", "m10", -1).tag("moved", "m20", 5),
		policy: retention.Policy{KeepLast: 1},
		tags:   map[string]string{"old": keepLast},
	}, {
		name: "ties of age are ordered by name",
		snap: repo().manifest("a", 9).manifest("b", 9).manifest("c", 9).
			tag("b", "b", 3).tag("a", "a", 3).tag("c", "c", 3),
		policy: retention.Policy{KeepLast: 1},
		tags:   map[string]string{"b": keepLast, "c": keepLast},
	}, {
		name: "keepTags are always kept, and take their place among the newest",
		snap: repo().manifest("a", 30).manifest("b", 30).manifest("x", 30).manifest("y", 30).
			tag("stable-2", "a", 1).tag("x", "x", 2).tag("y", "y", 3).tag("stable-1", "b", 20),
		policy: retention.Policy{KeepLast: 2, KeepTags: words{"stable*"}},
		tags:   map[string]string{"y": keepLast},
	}, {
		name: "deleteTagsOlderThan alone deletes the tags that last moved before it",
		snap: repo().manifest("o", 30).manifest("m", 30).manifest("n", 30).
			tag("old", "o", 10).tag("limit", "m", 5).tag("new", "n", 1),
		policy: retention.Policy{DeleteTagsOlderThan: 5 * day},
		tags:   map[string]string{"old": olderThan},
	}, {
		name: "with keepLast and an age limit a tag goes only beyond the newest and old",
		snap: repo().manifest("p", 30).manifest("q", 30).manifest("a", 30).manifest("b", 30).
			tag("p", "p", 10).tag("q", "q", 8).tag("r", "a", 3).tag("s", "b", 20),
		// Newest first: r (kept by keepLast), q (beyond it, but younger
		// than the limit), p and s (beyond and older).
		policy: retention.Policy{KeepLast: 1, DeleteTagsOlderThan: 9 * day},
		tags:   map[string]string{"p": olderThan, "s": olderThan},
	}, {
		name:   "the newest tags are kept by keepLast even when older than the limit",
		snap:   repo().manifest("p", 30).manifest("q", 30).tag("p", "p", 10).tag("q", "q", 8),
		policy: retention.Policy{KeepLast: 1, DeleteTagsOlderThan: 5 * day},
		tags:   map[string]string{"p": olderThan},
	}, {
		name: "an immutable tag and its manifest survive every rule",
		snap: repo().manifest("v1", 30).manifest("o", 20).manifest("n", 1).
			tag("v1.0.0", "v1", 30).immutable().tag("other", "o", 20).tag("new", "n", 1),
		policy:    retention.Policy{KeepLast: 1, DeleteTagsOlderThan: time.Nanosecond, DeleteUntaggedAfter: time.Nanosecond},
		tags:      map[string]string{"other": olderThan},
		manifests: map[string]string{"o": untagged},
	}, {
		name:   "an immutable tag takes its place among the newest",
		snap:   repo().manifest("m", 30).manifest("x", 30).tag("pinned", "m", 1).immutable().tag("x", "x", 2),
		policy: retention.Policy{KeepLast: 1},
		tags:   map[string]string{"x": keepLast},
	}, {
		// A tag naming the manifest of a kept tag is kept with it,
		// whatever the history window: the code's rule, broader than the
		// doc comment's (which keeps tags naming the digests of history
		// entries within the window).
		name:   "a tag naming the manifest of a kept tag is kept",
		snap:   repo().manifest("m", 30).manifest("x", 30).tag("new", "m", 1).tag("alias", "m", 5).tag("x", "x", 2),
		policy: retention.Policy{KeepLast: 1},
		tags:   map[string]string{"x": keepLast},
	}, {
		name: "without deleteUntaggedAfter no manifest goes, even one whose tag goes",
		snap: repo().manifest("u", 400).manifest("p", 400).manifest("q", 1).
			tag("p", "p", 400).tag("q", "q", 1),
		policy: retention.Policy{KeepLast: 1},
		tags:   map[string]string{"p": keepLast},
	}, {
		name: "untagged manifests go after deleteUntaggedAfter, with those whose tags go",
		snap: repo().manifest("untagged-old", 10).manifest("untagged-young", 1).manifest("limit", 5).
			manifest("p", 10).manifest("q", 8).tag("p", "p", 10).tag("q", "q", 8),
		policy:    retention.Policy{KeepLast: 1, DeleteUntaggedAfter: 5 * day},
		tags:      map[string]string{"p": keepLast},
		manifests: map[string]string{"untagged-old": untagged, "p": untagged},
	}, {
		name: "rollback targets within the history window survive, with the tags naming them",
		snap: repo().manifest("z", 30).manifest("x", 20).manifest("y", 1).
			// prod: set to z 30 days ago, to x 20 days ago, to y yesterday;
			// the window reaches back 10 days: only the last move counts.
			tag("prod", "y", 1, move(1, "x", "y"), move(20, "z", "x"), move(30, "", "z")).
			tag("latest", "y", 1).
			// Beyond keepLast, but names x, a rollback target of prod.
			tag("rc-1", "x", 20),
		policy:    retention.Policy{KeepLast: 1, KeepTags: words{"prod"}, DeleteUntaggedAfter: 5 * day},
		window:    10 * day,
		manifests: map[string]string{"z": untagged},
	}, {
		name: "a tag kept as a rollback target protects its own history in turn",
		snap: repo().manifest("n", 1).manifest("a", 30).manifest("x", 30).manifest("y", 30).manifest("w", 30).manifest("v", 30).
			tag("newest", "n", 1).
			tag("prod", "a", 3, move(3, "x", "a")).
			// b names x (prod's rollback target), and moved from y.
			tag("b", "x", 4, move(4, "y", "x")).
			// c names y: kept through b's history.
			tag("c", "y", 6).
			// d names w, which nothing protects; its own history names v,
			// which protects nothing since d goes.
			tag("d", "w", 7, move(7, "v", "w")),
		policy:    retention.Policy{KeepLast: 1, KeepTags: words{"prod"}, DeleteUntaggedAfter: 5 * day},
		window:    10 * day,
		tags:      map[string]string{"d": keepLast},
		manifests: map[string]string{"w": untagged, "v": untagged},
	}, {
		name: "with no history window history protects nothing",
		snap: repo().manifest("n", 1).manifest("a", 30).manifest("x", 30).
			tag("newest", "n", 1).
			tag("prod", "a", 3, move(3, "x", "a")).
			tag("b", "x", 4),
		policy:    retention.Policy{KeepLast: 1, KeepTags: words{"prod"}, DeleteUntaggedAfter: 5 * day},
		tags:      map[string]string{"b": keepLast},
		manifests: map[string]string{"x": untagged},
	}, {
		name: "children of a kept index survive; an old untagged index goes with its own",
		snap: repo().manifest("amd64", 10).manifest("arm64", 10).manifest("multi", 10, "amd64", "arm64").
			manifest("old-amd64", 10).manifest("shared", 10).manifest("old", 10, "old-amd64", "shared").
			manifest("multi2", 10, "shared").
			tag("multi", "multi", 10).tag("multi2", "multi2", 10),
		policy:    retention.Policy{DeleteUntaggedAfter: 5 * day},
		manifests: map[string]string{"old": untagged, "old-amd64": untagged},
	}, {
		name:      "a young index keeps its old children",
		snap:      repo().manifest("child", 10).manifest("index", 1, "child").manifest("lone", 10),
		policy:    retention.Policy{DeleteUntaggedAfter: 5 * day},
		manifests: map[string]string{"lone": untagged},
	}, {
		name: "referrers stay with a kept subject and go with a deleted one, whatever their age",
		snap: repo().manifest("kept", 10).referrer("kept-sig", "kept", 10).
			manifest("gone", 10).referrer("gone-sig", "gone", 1).referrer("gone-sig-sig", "gone-sig", 1).
			// A young subject keeps its old referrer.
			manifest("young", 1).referrer("young-sig", "young", 10).
			tag("kept", "kept", 10),
		policy:    retention.Policy{DeleteUntaggedAfter: 5 * day},
		manifests: map[string]string{"gone": untagged, "gone-sig": subjMan, "gone-sig-sig": subjMan},
	}, {
		name: "a referrer never keeps its subject, but a kept referrer stays",
		snap: repo().manifest("subject", 10).referrer("attestation", "subject", 10).referrer("young", "subject", 1).
			tag("attest", "attestation", 10),
		policy: retention.Policy{DeleteUntaggedAfter: 5 * day},
		// attestation is kept by its tag; subject goes all the same,
		// and its young referrer with it.
		manifests: map[string]string{"subject": untagged, "young": subjMan},
	}, {
		name: "signature tags follow their manifest and do not count as releases",
		snap: repo().manifest("old", 10).manifest("v2", 9).manifest("old-sig", 1).manifest("v2-sig", 1).
			manifest("apart-sig", 20).
			tag("old", "old", 10).tag("v2", "v2", 9).
			// Newer than any release tag.
			tag(sig("old", ".sig"), "old-sig", 1).tag(sig("v2", ".att"), "v2-sig", 1).
			// A signature of a manifest kept elsewhere stays.
			tag(sig("elsewhere", ".sbom"), "apart-sig", 20),
		policy:    retention.Policy{KeepLast: 1, DeleteUntaggedAfter: 5 * day},
		tags:      map[string]string{"old": keepLast, sig("old", ".sig"): subjTag},
		manifests: map[string]string{"old": untagged, "old-sig": subjMan},
	}, {
		name: "a signature tag stays while its manifest stays, even without an untagged rule",
		snap: repo().manifest("old", 10).manifest("old-sig", 10).
			tag("old", "old", 10).tag(sig("old", ".sig"), "old-sig", 10),
		policy: retention.Policy{KeepLast: 0, DeleteTagsOlderThan: day},
		tags:   map[string]string{"old": olderThan},
	}, {
		name: "keepPulledWithin keeps a manifest pulled within it and the tags naming it",
		// Newest first: new (kept by keepLast), deployed (beyond it, but
		// its manifest was pulled 2 days ago), stale (pulled 40 days ago).
		snap: repo().manifest("n", 1).manifest("d", 30).manifest("s", 60).manifest("u", 30).
			tag("new", "n", 1).tag("deployed", "d", 30).tag("stale", "s", 60).
			pulled("d", 2).pulled("s", 40).pulled("u", 3),
		policy: retention.Policy{KeepLast: 1, DeleteUntaggedAfter: 5 * day, KeepPulledWithin: 30 * day},
		tags:   map[string]string{"stale": keepLast},
		// u is untagged and old, but pulled 3 days ago: it stays.
		manifests: map[string]string{"s": untagged},
	}, {
		name: "a pulled index keeps its children; a pull exactly at the limit counts",
		snap: repo().manifest("amd64", 30).manifest("multi", 30, "amd64").manifest("edge", 30).
			pulled("multi", 1).pulled("edge", 10),
		policy: retention.Policy{DeleteUntaggedAfter: 5 * day, KeepPulledWithin: 10 * day},
	}, {
		name: "pulls older than keepPulledWithin, or with no such rule, keep nothing",
		snap: repo().manifest("n", 1).manifest("d", 30).tag("new", "n", 1).tag("deployed", "d", 30).
			pulled("d", 2),
		policy:    retention.Policy{KeepLast: 1, DeleteUntaggedAfter: 5 * day},
		tags:      map[string]string{"deployed": keepLast},
		manifests: map[string]string{"d": untagged},
	}, {
		name: "the tag of a pulled manifest brings its history within the window",
		snap: repo().manifest("n", 1).manifest("d", 30).manifest("prev", 30).
			tag("new", "n", 1).tag("deployed", "d", 3, move(3, "prev", "d")).
			pulled("d", 1),
		policy: retention.Policy{KeepLast: 1, DeleteUntaggedAfter: 5 * day, KeepPulledWithin: 7 * day},
		window: 10 * day,
	}, {
		name: "an immutable signature tag stays with its manifest while the subject goes",
		snap: repo().manifest("old", 10).manifest("old-sig", 10).
			tag("old", "old", 10).tag(sig("old", ".sig"), "old-sig", 10).immutable(),
		policy:    retention.Policy{DeleteTagsOlderThan: day, DeleteUntaggedAfter: day},
		tags:      map[string]string{"old": olderThan},
		manifests: map[string]string{"old": untagged},
	}, {
		name: "evictUnpulledAfter evicts cached manifests not pulled within it, and their tags",
		snap: repo().manifest("a", 50).cached("a", 40).manifest("b", 50).cached("b", 1).
			manifest("c", 400). // pushed, not cached: eviction never touches it
			manifest("limit", 50).cached("limit", 30).
			tag("a", "a", 50).tag("b", "b", 50).tag("c", "c", 400).tag("limit", "limit", 50),
		policy:    retention.Policy{EvictUnpulledAfter: 30 * day},
		tags:      map[string]string{"a": unpulledT},
		manifests: map[string]string{"a": unpulledM},
	}, {
		name:      "without evictUnpulledAfter the cache's manifests age as any other",
		snap:      repo().manifest("a", 50).cached("a", 400).tag("a", "a", 50).manifest("b", 50).cached("b", 400),
		policy:    retention.Policy{DeleteUntaggedAfter: 10 * day},
		manifests: map[string]string{"b": untagged},
	}, {
		name: "an unpulled index goes with its children and referrers; a pulled one keeps its unpulled children",
		snap: repo().manifest("old-child", 60).cached("old-child", 40).manifest("old", 60, "old-child").cached("old", 40).
			referrer("old-sig", "old", 60).cached("old-sig", 2).
			manifest("new-child", 60).cached("new-child", 60).manifest("new", 60, "new-child").cached("new", 1).
			tag("old", "old", 60).tag("new", "new", 60),
		policy:    retention.Policy{EvictUnpulledAfter: 30 * day},
		tags:      map[string]string{"old": unpulledT},
		manifests: map[string]string{"old": unpulledM, "old-child": unpulledM, "old-sig": subjMan},
	}, {
		name: "keepTags and immutable tags keep unpulled content, and unpulled tags take no place among keepLast",
		snap: repo().manifest("p", 50).cached("p", 40).manifest("q", 50).cached("q", 40).manifest("e", 50).cached("e", 50).
			manifest("r", 50).cached("r", 1).manifest("s", 50).cached("s", 1).
			tag("e", "e", 0.5).tag("r", "r", 1).tag("s", "s", 2).tag("stable", "p", 3).tag("pinned", "q", 4).immutable(),
		// Newest first without e: r and s are the two newest.
		policy:    retention.Policy{KeepLast: 2, KeepTags: words{"stable"}, EvictUnpulledAfter: 30 * day},
		tags:      map[string]string{"e": unpulledT},
		manifests: map[string]string{"e": unpulledM},
	}, {
		name: "the history window does not protect unpulled manifests",
		snap: repo().manifest("x", 50).cached("x", 40).manifest("y", 50).cached("y", 1).
			tag("prod", "y", 1, move(1, "x", "y")).tag("old", "x", 20),
		policy:    retention.Policy{EvictUnpulledAfter: 30 * day},
		window:    10 * day,
		tags:      map[string]string{"old": unpulledT},
		manifests: map[string]string{"x": unpulledM},
	}, {
		name: "signatures follow their subject: kept with a pulled one, however long unpulled, gone with an evicted one",
		snap: repo().manifest("a", 50).cached("a", 1).referrer("a-sig", "a", 50).cached("a-sig", 100).
			manifest("b", 50).cached("b", 40).manifest("b-sig", 50).cached("b-sig", 40).
			tag("a", "a", 50).tag("b", "b", 50).tag(sig("b", ".sig"), "b-sig", 50),
		policy:    retention.Policy{EvictUnpulledAfter: 30 * day},
		tags:      map[string]string{"b": unpulledT, sig("b", ".sig"): subjTag},
		manifests: map[string]string{"b": unpulledM, "b-sig": subjMan},
	}, {
		name: "a pull in the pull record counts as much as one the cache saw",
		snap: repo().manifest("a", 50).cached("a", 40).pulled("a", 2).tag("a", "a", 50).
			manifest("b", 50).cached("b", 40).tag("b", "b", 50),
		policy:    retention.Policy{EvictUnpulledAfter: 30 * day},
		tags:      map[string]string{"b": unpulledT},
		manifests: map[string]string{"b": unpulledM},
	}, {
		name: "keepPulledWithin keeps what eviction would take",
		snap: repo().manifest("a", 50).cached("a", 40).tag("a", "a", 50).
			manifest("b", 90).cached("b", 70).tag("b", "b", 90),
		policy:    retention.Policy{EvictUnpulledAfter: 30 * day, KeepPulledWithin: 60 * day},
		tags:      map[string]string{"b": unpulledT},
		manifests: map[string]string{"b": unpulledM},
	}}
	names := map[digest.Digest]string{}
	for _, w := range []string{"a", "b", "c", "d", "m", "m10", "m20", "n", "o", "p", "q", "u", "v", "w", "x", "y", "z", "v1", "v2",
		"untagged-old", "untagged-young", "limit", "amd64", "arm64", "multi", "multi2", "old-amd64", "shared", "old", "child",
		"index", "lone", "kept", "kept-sig", "gone", "gone-sig", "gone-sig-sig", "young", "young-sig", "subject",
		"attestation", "old-sig", "v2-sig", "apart-sig", "s", "edge", "prev", "e", "r", "old-child", "new-child", "new", "a-sig", "b-sig"} {
		names[dg(w)] = w
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.policy.Repositories = words{"apps/*"}
			in := fmt.Sprintf("%+v", c.snap.s)
			plan := retention.MakePlan(c.snap.s, c.policy, planNow(), c.window)
			if out := fmt.Sprintf("%+v", c.snap.s); out != in {
				t.Fatalf("MakePlan changed its snapshot:\n%s\n%s", in, out)
			}
			gotTags := map[string]string{}
			for _, tg := range plan.Tags {
				if tg.Repository != "apps/web" {
					t.Errorf("tag %+v: repository", tg)
				}
				if want := c.snap.tagDigest(tg.Tag); tg.Digest != want {
					t.Errorf("tag %s: digest %s, want %s", tg.Tag, tg.Digest, want)
				}
				gotTags[tg.Tag] = tg.Reason
			}
			gotManifests := map[string]string{}
			for _, m := range plan.Manifests {
				if m.Repository != "apps/web" {
					t.Errorf("manifest %+v: repository", m)
				}
				gotManifests[names[m.Digest]] = m.Reason
			}
			if !maps.Equal(gotTags, orEmpty(c.tags)) {
				t.Errorf("tags deleted %v, want %v", gotTags, c.tags)
			}
			if !maps.Equal(gotManifests, orEmpty(c.manifests)) {
				t.Errorf("manifests deleted %v, want %v", gotManifests, c.manifests)
			}
			if !slices.IsSortedFunc(plan.Tags, func(a, b retention.Tag) int { return strings.Compare(a.Tag, b.Tag) }) ||
				!slices.IsSortedFunc(plan.Manifests, func(a, b retention.Manifest) int { return strings.Compare(string(a.Digest), string(b.Digest)) }) {
				t.Errorf("plan not sorted: %+v", plan)
			}
			// The plan is a function of its arguments: the same again,
			// whatever the order of the tags.
			shuffled := c.snap.s
			shuffled.Tags = slices.Clone(shuffled.Tags)
			slices.Reverse(shuffled.Tags)
			if again := retention.MakePlan(shuffled, c.policy, planNow(), c.window); fmt.Sprint(again) != fmt.Sprint(plan) {
				t.Errorf("a second plan differs:\n%+v\n%+v", plan, again)
			}
		})
	}
}

func (b *snap) tagDigest(tag string) digest.Digest {
	for _, t := range b.s.Tags {
		if t.Name == tag {
			return t.Digest
		}
	}
	return ""
}

func orEmpty(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}
