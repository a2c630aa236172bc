package retention_test

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"reflect"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/internal/clienttest"
	"github.com/berth-registry/berth/storage/meta"
	"github.com/berth-registry/berth/storage/retention"
)

// world is a store being set up for one scenario, with a clock. Content
// is pushed through the core; times are set through the index, as the
// core would have recorded them had it run at those times: push times on
// manifest records, and tags moved with a history entry of their time.
type world struct {
	t   *testing.T
	s   *clienttest.Store
	now time.Time
}

const retRepo = "apps/web"

func (w *world) ago(days int) time.Time { return w.now.Add(-time.Duration(days) * day) }

// image pushes an image, pushed daysAgo and tagged then with tags.
func (w *world) image(seed string, daysAgo int, tags ...string) digest.Digest {
	w.t.Helper()
	d := w.s.PutImage(retRepo, seed)
	w.s.SetPushTime(retRepo, d, w.ago(daysAgo))
	for _, tag := range tags {
		w.tag(d, tag, daysAgo)
	}
	return d
}

// tag points tag at d daysAgo, recording the move in its history.
func (w *world) tag(d digest.Digest, tag string, daysAgo int) {
	w.t.Helper()
	w.s.Update(func(tx meta.Tx) error {
		old, _, err := tx.Tag(retRepo, tag)
		if err != nil {
			return err
		}
		if err := tx.SetTag(retRepo, tag, d); err != nil {
			return err
		}
		_, err = tx.AppendMove(retRepo, tag, meta.Move{Time: w.ago(daysAgo), Previous: old, Digest: d,
			Action: storage.MovePush, Actor: meta.Actor{Kind: storage.ActorUser, Name: "dev"}})
		return err
	})
}

// referrer pushes an artifact whose subject is subj, daysAgo.
func (w *world) referrer(subj digest.Digest, seed string, daysAgo int, tags ...string) digest.Digest {
	w.t.Helper()
	cfg := w.s.PutBlob(retRepo, ocispec.MediaTypeEmptyJSON, []byte("{}"))
	layer := w.s.PutBlob(retRepo, "application/vnd.example.sig", []byte("signature "+seed))
	subject := w.s.Descriptor(retRepo, subj)
	d, _ := w.s.PutManifest(retRepo, ocispec.Manifest{
		ArtifactType: "application/vnd.example.sig",
		Config:       cfg,
		Layers:       []ocispec.Descriptor{layer},
		Subject:      &subject,
	})
	w.s.SetPushTime(retRepo, d, w.ago(daysAgo))
	for _, tag := range tags {
		w.tag(d, tag, daysAgo)
	}
	return d
}

// index pushes an image index over children, daysAgo.
func (w *world) index(daysAgo int, children []digest.Digest, tags ...string) digest.Digest {
	w.t.Helper()
	var descs []ocispec.Descriptor
	for _, c := range children {
		descs = append(descs, w.s.Descriptor(retRepo, c))
	}
	d, _ := w.s.PutIndex(retRepo, descs)
	w.s.SetPushTime(retRepo, d, w.ago(daysAgo))
	for _, tag := range tags {
		w.tag(d, tag, daysAgo)
	}
	return d
}

// pulled records that d was pulled daysAgo by robot.
func (w *world) pulled(d digest.Digest, robot string, daysAgo int) {
	w.t.Helper()
	w.s.Update(func(tx meta.Tx) error {
		return tx.PutPull(meta.Pull{Repo: retRepo, Digest: d, Actor: meta.Actor{Kind: storage.ActorRobot, Name: robot}, Time: w.ago(daysAgo)})
	})
}

// sigTag is the tag-schema fallback signature tag of d.
func sigTag(d digest.Digest) string { return "sha256-" + d.Encoded() + ".sig" }

type tagRules func(repo, tag string) bool

func (f tagRules) Immutable(repo, tag string) bool { return f(repo, tag) }

// The store scenarios of retention: what a run deletes, that a dry run
// reports the same, and the state the store is left in.
func TestApplyScenarios(t *testing.T) {
	type outcome struct {
		delTags       map[string]string
		delManifests  map[digest.Digest]string
		keepTags      []string
		keepManifests []digest.Digest
	}
	cases := []struct {
		name      string
		policy    retention.Policy
		window    time.Duration
		immutable func(repo, tag string) bool
		setup     func(w *world) outcome
	}{{
		name:   "keepLast keeps the newest tags",
		policy: retention.Policy{KeepLast: 2},
		setup: func(w *world) outcome {
			a := w.image("a", 4, "a")
			b := w.image("b", 3, "b")
			c := w.image("c", 2, "c")
			w.image("d", 1, "d")
			// The manifests stay: no untagged rule.
			return outcome{map[string]string{"a": retention.TagReasonKeepLast, "b": retention.TagReasonKeepLast}, nil,
				[]string{"c", "d"}, []digest.Digest{a, b, c}}
		},
	}, {
		name:   "keepTags are never counted out",
		policy: retention.Policy{KeepLast: 1, KeepTags: words{"stable*"}},
		setup: func(w *world) outcome {
			w.image("s", 9, "stable-1")
			w.image("x", 5, "x")
			w.image("y", 1, "y")
			return outcome{map[string]string{"x": retention.TagReasonKeepLast}, nil, []string{"stable-1", "y"}, nil}
		},
	}, {
		name:   "tags older than the limit go",
		policy: retention.Policy{DeleteTagsOlderThan: 5 * day},
		setup: func(w *world) outcome {
			w.image("old", 10, "old")
			w.image("new", 1, "new")
			return outcome{map[string]string{"old": retention.TagReasonOlderThan}, nil, []string{"new"}, nil}
		},
	}, {
		name:   "with keepLast and an age limit a tag must be both beyond and old",
		policy: retention.Policy{KeepLast: 1, DeleteTagsOlderThan: 5 * day},
		setup: func(w *world) outcome {
			w.image("a", 10, "a")
			w.image("b", 3, "b")
			w.image("c", 1, "c")
			return outcome{map[string]string{"a": retention.TagReasonOlderThan}, nil, []string{"b", "c"}, nil}
		},
	}, {
		name:   "untagged manifests go after the grace period, with the tags retention removes",
		policy: retention.Policy{KeepLast: 1, DeleteUntaggedAfter: 5 * day},
		setup: func(w *world) outcome {
			u := w.image("untagged-old", 10)
			v := w.image("untagged-young", 1)
			p := w.image("p", 10, "p")
			q := w.image("q", 8, "q")
			return outcome{map[string]string{"p": retention.TagReasonKeepLast},
				map[digest.Digest]string{u: retention.ManifestReasonUntagged, p: retention.ManifestReasonUntagged},
				[]string{"q"}, []digest.Digest{v, q}}
		},
	}, {
		name:      "an immutable tag and its manifest survive",
		policy:    retention.Policy{KeepLast: 1, DeleteTagsOlderThan: time.Nanosecond, DeleteUntaggedAfter: time.Nanosecond},
		immutable: func(_, tag string) bool { return tag == "v1.0.0" },
		setup: func(w *world) outcome {
			v1 := w.image("v1", 30, "v1.0.0")
			o := w.image("other", 20, "other")
			n := w.image("new", 1, "new")
			return outcome{map[string]string{"other": retention.TagReasonOlderThan}, map[digest.Digest]string{o: retention.ManifestReasonUntagged},
				[]string{"v1.0.0", "new"}, []digest.Digest{v1, n}}
		},
	}, {
		name:   "rollback targets in the history window survive, older ones do not",
		policy: retention.Policy{KeepLast: 1, KeepTags: words{"prod"}, DeleteUntaggedAfter: 5 * day},
		window: 10 * day,
		setup: func(w *world) outcome {
			z := w.image("z", 30)
			x := w.image("x", 20, "rc-1")
			y := w.image("y", 1, "latest")
			// prod: set to z 30 days ago, to x 20 days ago, to y yesterday.
			w.tag(z, "prod", 30)
			w.tag(x, "prod", 20)
			w.tag(y, "prod", 1)
			// rc-1 is beyond keepLast, but names x, which prod named
			// within the window: a rollback target, kept with its tag.
			return outcome{nil, map[digest.Digest]string{z: retention.ManifestReasonUntagged},
				[]string{"prod", "rc-1", "latest"}, []digest.Digest{x, y}}
		},
	}, {
		name:   "what deploy targets pulled within keepPulledWithin stays, read from the pull record",
		policy: retention.Policy{KeepLast: 1, DeleteUntaggedAfter: 5 * day, KeepPulledWithin: 14 * day},
		setup: func(w *world) outcome {
			deployed := w.image("deployed", 30, "1.0.0")
			stale := w.image("stale", 29, "1.1.0")
			old := w.image("untagged", 40)
			n := w.image("new", 1, "1.2.0")
			w.pulled(deployed, "prod-deployer", 20)
			w.pulled(deployed, "staging", 3) // the latest pull counts
			w.pulled(old, "prod-deployer", 7)
			w.pulled(stale, "prod-deployer", 20)
			return outcome{map[string]string{"1.1.0": retention.TagReasonKeepLast},
				map[digest.Digest]string{stale: retention.ManifestReasonUntagged},
				[]string{"1.0.0", "1.2.0"}, []digest.Digest{deployed, old, n}}
		},
	}, {
		name:   "children of a kept index survive; an old untagged index goes with its children",
		policy: retention.Policy{DeleteUntaggedAfter: 5 * day},
		setup: func(w *world) outcome {
			a := w.image("amd64", 10)
			b := w.image("arm64", 10)
			multi := w.index(10, []digest.Digest{a, b}, "multi")
			c := w.image("old-amd64", 10)
			e := w.image("old-arm64", 10)
			old := w.index(10, []digest.Digest{c, e})
			return outcome{nil, map[digest.Digest]string{old: retention.ManifestReasonUntagged, c: retention.ManifestReasonUntagged, e: retention.ManifestReasonUntagged},
				[]string{"multi"}, []digest.Digest{multi, a, b}}
		},
	}, {
		name:   "referrers stay with a kept subject and go with a deleted one",
		policy: retention.Policy{DeleteUntaggedAfter: 5 * day},
		setup: func(w *world) outcome {
			kept := w.image("kept", 10, "kept")
			keptSig := w.referrer(kept, "kept", 10)
			gone := w.image("gone", 10)
			// Pushed yesterday, within the grace period, but its
			// subject goes, so it goes too; as does its own referrer.
			goneSig := w.referrer(gone, "gone", 1)
			goneSigSig := w.referrer(goneSig, "gone-2", 1)
			return outcome{nil, map[digest.Digest]string{gone: retention.ManifestReasonUntagged,
				goneSig: retention.ManifestReasonSubjectDeleted, goneSigSig: retention.ManifestReasonSubjectDeleted},
				[]string{"kept"}, []digest.Digest{kept, keptSig}}
		},
	}, {
		name:   "signature tags follow their manifest and do not count as releases",
		policy: retention.Policy{KeepLast: 1, DeleteUntaggedAfter: 5 * day},
		setup: func(w *world) outcome {
			old := w.image("old", 10, "old")
			v2 := w.image("v2", 9, "v2")
			// The signatures are newer than any release tag.
			oldSig := w.image("old-sig", 1, sigTag(old))
			v2Sig := w.image("v2-sig", 1, sigTag(v2))
			// A signature of a manifest kept elsewhere stays.
			apart := w.image("apart-sig", 20, sigTag(digest.FromString("elsewhere")))
			return outcome{map[string]string{"old": retention.TagReasonKeepLast, sigTag(old): retention.TagReasonSubjectDeleted},
				map[digest.Digest]string{old: retention.ManifestReasonUntagged, oldSig: retention.ManifestReasonSubjectDeleted},
				[]string{"v2", sigTag(v2), sigTag(digest.FromString("elsewhere"))}, []digest.Digest{v2, v2Sig, apart}}
		},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sink := &recorder{}
			opts := clienttest.Options{Core: storage.Options{Sinks: []storage.Sink{sink}}}
			if c.immutable != nil {
				opts.Core.Tags = tagRules(c.immutable)
			}
			s := clienttest.Open(t, "", opts)
			w := &world{t: t, s: s, now: time.Now().UTC()}
			want := c.setup(w)
			// Another repository, which no policy covers, is untouched.
			other := s.PutImage("other/repo", "o", "o")
			s.SetPushTime("other/repo", other, w.ago(100))
			sink.take()

			ctx := storage.WithActor(context.Background(), storage.Actor{Kind: storage.ActorSystem, Name: "retention"})
			ropts := retention.Options{DryRun: true, Now: w.now, HistoryWindow: c.window}
			// The first policy covering a repository applies: the second
			// would delete everything.
			c.policy.Repositories = words{retRepo}
			policies := []retention.Policy{c.policy, {Repositories: words{"apps/*"}, DeleteTagsOlderThan: time.Nanosecond, DeleteUntaggedAfter: time.Nanosecond}}
			dry, err := retention.Apply(ctx, s.Svc, policies, ropts)
			if err != nil {
				t.Fatal(err)
			}
			if events := sink.take(); len(events) != 0 {
				t.Fatalf("a dry run published %+v", events)
			}
			ropts.DryRun = false
			real, err := retention.Apply(ctx, s.Svc, policies, ropts)
			if err != nil {
				t.Fatal(err)
			}
			if !dry.DryRun || real.DryRun {
				t.Fatalf("DryRun flags: dry %v, real %v", dry.DryRun, real.DryRun)
			}
			dry.DryRun = false
			if !reflect.DeepEqual(dry, real) {
				t.Fatalf("dry run reported\n%+v\nthe real run\n%+v", dry, real)
			}
			gotTags := map[string]string{}
			for _, tg := range real.Tags {
				if tg.Repository != retRepo {
					t.Errorf("deleted a tag of %s", tg.Repository)
				}
				gotTags[tg.Tag] = tg.Reason
			}
			gotManifests := map[digest.Digest]string{}
			for _, m := range real.Manifests {
				gotManifests[m.Digest] = m.Reason
			}
			if want.delTags == nil {
				want.delTags = map[string]string{}
			}
			if want.delManifests == nil {
				want.delManifests = map[digest.Digest]string{}
			}
			if !maps.Equal(gotTags, want.delTags) {
				t.Errorf("deleted tags %v, want %v", gotTags, want.delTags)
			}
			if !maps.Equal(gotManifests, want.delManifests) {
				t.Errorf("deleted manifests %v, want %v", gotManifests, want.delManifests)
			}
			// One event per deletion, after the commit.
			events := sink.take()
			if len(events) != len(real.Tags)+len(real.Manifests) {
				t.Errorf("%d events for %d tags and %d manifests: %+v", len(events), len(real.Tags), len(real.Manifests), events)
			}
			for _, e := range events {
				if e.Action != storage.EventRetention || e.Repo != retRepo || e.Actor.Name != "retention" {
					t.Errorf("event %+v", e)
				}
			}
			// The store agrees with the report.
			for tag := range want.delTags {
				if _, err := s.Svc.StatManifest(ctx, retRepo, tag); !errors.Is(err, storage.ErrManifestUnknown) {
					t.Errorf("deleted tag %s: %v", tag, err)
				}
				moves, _, err := s.Svc.TagHistory(ctx, retRepo, tag, 0, 1)
				if err != nil || moves[0].Action != storage.MoveRetention || moves[0].Actor.Name != "retention" {
					t.Errorf("last move of %s: %+v, %v", tag, moves, err)
				}
			}
			for d := range want.delManifests {
				if _, err := s.Svc.StatManifest(ctx, retRepo, string(d)); !errors.Is(err, storage.ErrManifestUnknown) {
					t.Errorf("deleted manifest %s: %v", d, err)
				}
				refs, err := s.Svc.Referrers(ctx, retRepo, d, "")
				if err != nil || len(refs) != 0 {
					t.Errorf("deleted manifest %s still has referrers %v (%v)", d, refs, err)
				}
			}
			for _, tag := range want.keepTags {
				if _, err := s.Svc.StatManifest(ctx, retRepo, tag); err != nil {
					t.Errorf("kept tag %s: %v", tag, err)
				}
			}
			for _, d := range want.keepManifests {
				s.PullAll(retRepo, string(d))
			}
			if _, err := s.Svc.StatManifest(ctx, "other/repo", "o"); err != nil {
				t.Errorf("uncovered repository: %v", err)
			}
			// Every tag left names a manifest left, and a second run
			// finds nothing more to do.
			left, _, err := s.Svc.ListTags(ctx, retRepo, "", 1000)
			if err != nil {
				t.Fatal(err)
			}
			for _, tag := range left {
				if _, err := s.Svc.StatManifest(ctx, retRepo, tag); err != nil {
					t.Errorf("tag %s left dangling: %v", tag, err)
				}
			}
			again, err := retention.Apply(ctx, s.Svc, policies, ropts)
			if err != nil || len(again.Tags)+len(again.Manifests) != 0 || again.Repositories != 1 {
				t.Errorf("second run: %+v, %v", again, err)
			}
			if events := sink.take(); len(events) != 0 {
				t.Errorf("a run that deleted nothing published %+v", events)
			}
		})
	}
}

// Read takes the snapshot MakePlan needs: every manifest with its push
// time, references and subject, and every tag with its last move, the
// moves within the window (newest first) and its immutability.
func TestRead(t *testing.T) {
	s := clienttest.Open(t, "", clienttest.Options{Core: storage.Options{Tags: tagRules(func(_, tag string) bool { return tag == "pinned" })}})
	w := &world{t: t, s: s, now: time.Now().UTC()}
	a := w.image("a", 30, "prod", "pinned")
	b := w.image("b", 20)
	c := w.image("c", 2)
	w.tag(b, "prod", 20)
	w.tag(c, "prod", 2)
	ref := w.referrer(c, "sig", 1)
	idx := w.index(1, []digest.Digest{a, b})

	read := func(window time.Duration) retention.Snapshot {
		var snap retention.Snapshot
		err := s.Svc.View(context.Background(), func(tx meta.Tx) error {
			var err error
			snap, err = retention.Read(tx, s.Svc, retRepo, w.now, window)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return snap
	}
	snap := read(10 * day)
	if snap.Repo != retRepo || len(snap.Manifests) != 5 {
		t.Fatalf("snapshot %+v", snap)
	}
	if m := snap.Manifests[ref]; m.Subject != c || !m.Created.Equal(w.ago(1)) {
		t.Fatalf("referrer %+v", m)
	}
	if m := snap.Manifests[idx]; len(m.References) != 2 || m.References[0] != a || m.References[1] != b {
		t.Fatalf("index %+v", m)
	}
	if m := snap.Manifests[a]; len(m.References) != 2 || !m.Created.Equal(w.ago(30)) {
		t.Fatalf("image %+v", m)
	}
	if len(snap.Tags) != 2 {
		t.Fatalf("tags %+v", snap.Tags)
	}
	pinned, prod := snap.Tags[0], snap.Tags[1]
	if pinned.Name != "pinned" || !pinned.Immutable || pinned.Digest != a || !pinned.LastMove.Equal(w.ago(30)) || len(pinned.Recent) != 0 {
		t.Fatalf("pinned %+v", pinned)
	}
	if prod.Name != "prod" || prod.Immutable || prod.Digest != c || !prod.LastMove.Equal(w.ago(2)) ||
		len(prod.Recent) != 1 || prod.Recent[0].Digest != c || prod.Recent[0].Previous != b {
		t.Fatalf("prod %+v", prod)
	}
	if wide := read(25 * day).Tags[1]; len(wide.Recent) != 2 || wide.Recent[1].Digest != b {
		t.Fatalf("prod within 25 days %+v", wide)
	}
	if none := read(0).Tags[1]; len(none.Recent) != 0 || !none.LastMove.Equal(w.ago(2)) {
		t.Fatalf("prod without a window %+v", none)
	}
}

// recorder is a storage.Sink that keeps the events it receives.
type recorder struct{ events []storage.Event }

func (r *recorder) Publish(_ context.Context, e storage.Event) { r.events = append(r.events, e) }

func (r *recorder) take() []storage.Event {
	out := r.events
	r.events = nil
	return out
}

// TestApplyEvictsUnpulled: with evictUnpulledAfter, a run evicts the
// manifests the pull-through cache recorded that no client pulled within
// it, with their tags (recorded in history as retention moves); a cached
// manifest pulled recently and a pushed one stay.
func TestApplyEvictsUnpulled(t *testing.T) {
	s := clienttest.Open(t, "", clienttest.Options{})
	ctx := storage.WithActor(context.Background(), storage.Actor{Kind: storage.ActorSystem, Name: "mirror:hub"})
	const repo = "hub/library/app"
	now := time.Now().UTC()
	cache := func(seed, tag string, pulled time.Time) digest.Digest {
		t.Helper()
		// A manifest of the cache: its layers are pending from the
		// upstream, so none is stored.
		layer := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromString("layer " + seed), Size: 10}
		cfg := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromString("config " + seed), Size: 10}
		body := []byte(`{"schemaVersion":2,"mediaType":"` + ocispec.MediaTypeImageManifest + `","config":` + mustJSON(t, cfg) +
			`,"layers":[` + mustJSON(t, layer) + `]}`)
		d, err := s.Svc.PutManifestWith(ctx, repo, "", body, clienttest.Parse(t, body),
			storage.PutOptions{Tags: []string{tag}, Action: storage.MoveMirror, Upstream: "hub"})
		if err != nil {
			t.Fatal(err)
		}
		s.Update(func(tx meta.Tx) error {
			c, _, err := tx.Cached(repo, d)
			if err != nil {
				return err
			}
			c.Pulled = pulled
			return tx.PutCached(repo, d, c)
		})
		return d
	}
	old := cache("old", "old", now.Add(-40*day))
	fresh := cache("fresh", "fresh", now.Add(-2*day))
	pushed := s.PutImage("hub-local/app", "pushed", "v1")
	s.SetPushTime("hub-local/app", pushed, now.Add(-400*day))

	policies := []retention.Policy{{Repositories: words{"hub/*", "hub-local/*"}, EvictUnpulledAfter: 30 * day}}
	rep, err := retention.Apply(context.Background(), s.Svc, policies, retention.Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	wantTags := []retention.Tag{{Repository: repo, Tag: "old", Digest: old, Reason: retention.TagReasonUnpulled}}
	wantManifests := []retention.Manifest{{Repository: repo, Digest: old, Reason: retention.ManifestReasonUnpulled}}
	if !reflect.DeepEqual(rep.Tags, wantTags) || !reflect.DeepEqual(rep.Manifests, wantManifests) {
		t.Errorf("report %+v %+v; want %+v %+v", rep.Tags, rep.Manifests, wantTags, wantManifests)
	}
	bg := context.Background()
	if _, err := s.Svc.StatManifest(bg, repo, string(old)); !errors.Is(err, storage.ErrManifestUnknown) {
		t.Errorf("the unpulled manifest after the run: %v; want it gone", err)
	}
	for _, c := range []struct{ repo, ref string }{{repo, "fresh"}, {repo, string(fresh)}, {"hub-local/app", "v1"}} {
		if _, err := s.Svc.StatManifest(bg, c.repo, c.ref); err != nil {
			t.Errorf("%s:%s after the run: %v; want it kept", c.repo, c.ref, err)
		}
	}
	s.Svc.View(bg, func(tx meta.Tx) error {
		if _, ok, _ := tx.Cached(repo, old); ok {
			t.Error("the evicted manifest's cache record stayed")
		}
		return nil
	})
	moves, _, err := s.Svc.TagHistory(bg, repo, "old", 0, 10)
	if err != nil || len(moves) != 2 || moves[0].Action != storage.MoveRetention || moves[1].Action != storage.MoveMirror {
		t.Errorf("history of the evicted tag: %+v, %v; want a retention move after the mirror's", moves, err)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
