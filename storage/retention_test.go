package storage

import (
	"context"
	"errors"
	"maps"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"
)

// namesFunc adapts a function to Matcher.
type namesFunc func(string) bool

func (f namesFunc) Match(name string) bool { return f(name) }

// names matches exactly the names given, and with a trailing "*" a prefix.
func names(list ...string) Matcher {
	return namesFunc(func(n string) bool {
		for _, l := range list {
			if p, ok := strings.CutSuffix(l, "*"); ok && strings.HasPrefix(n, p) || l == n {
				return true
			}
		}
		return false
	})
}

// setMoveTimes rewrites the times of the moves of tag, oldest first: the
// way to make a tag's history old without waiting.
func setMoveTimes(t *testing.T, s *Store, repo, tag string, times ...time.Time) {
	t.Helper()
	err := s.db.Update(func(tx *bolt.Tx) error {
		th := tagHistory(tx, repo, tag)
		if th == nil {
			return errors.New("no history")
		}
		for i, when := range times {
			k := seqKey(uint64(i + 1))
			var m TagMove
			if ok, err := getJSON(th, k, &m); err != nil || !ok {
				return errors.Join(err, errors.New("missing move"))
			}
			m.Time = when
			if err := putJSON(th, k, m); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("set move times of %s:%s: %v", repo, tag, err)
	}
}

// setPushTime rewrites the push time of manifest d.
func setPushTime(t *testing.T, s *Store, repo string, d digest.Digest, when time.Time) {
	t.Helper()
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := repoBucket(tx, repo).Bucket(bucketManifests)
		var rec manifestRecord
		if ok, err := getJSON(b, []byte(d), &rec); err != nil || !ok {
			return errors.Join(err, errors.New("missing manifest"))
		}
		rec.Created = when
		return putJSON(b, []byte(d), rec)
	})
	if err != nil {
		t.Fatalf("set push time of %s: %v", d, err)
	}
}

// retentionWorld is a store being set up for one scenario, with a clock.
type retentionWorld struct {
	t   *testing.T
	s   *Store
	now time.Time
}

const retRepo = "apps/web"

// image pushes an image tagged with tags, pushed and tagged daysAgo.
func (w *retentionWorld) image(seed string, daysAgo int, tags ...string) digest.Digest {
	d := putTestImage(w.t, w.s, retRepo, seed, tags...)
	w.age(d, daysAgo, tags...)
	return d
}

// age makes d and the single move of each tag daysAgo old.
func (w *retentionWorld) age(d digest.Digest, daysAgo int, tags ...string) {
	when := w.ago(daysAgo)
	setPushTime(w.t, w.s, retRepo, d, when)
	for _, tag := range tags {
		setMoveTimes(w.t, w.s, retRepo, tag, when)
	}
}

func (w *retentionWorld) ago(days int) time.Time {
	return w.now.Add(-time.Duration(days) * 24 * time.Hour)
}

// tag points tag at d by pushing d's body again under it.
func (w *retentionWorld) tag(d digest.Digest, tag string) {
	_, body, err := w.s.GetManifest(context.Background(), retRepo, string(d))
	if err != nil {
		w.t.Fatal(err)
	}
	if err := w.s.PutManifest(context.Background(), retRepo, d, body, mustParse(w.t, body), []string{tag}); err != nil {
		w.t.Fatal(err)
	}
}

// referrer pushes an artifact whose subject is subj.
func (w *retentionWorld) referrer(subj digest.Digest, seed string, daysAgo int, tags ...string) digest.Digest {
	cfg := putTestBlob(w.t, w.s, retRepo, ocispec.MediaTypeEmptyJSON, []byte("{}"))
	layer := putTestBlob(w.t, w.s, retRepo, "application/vnd.example.sig", []byte("signature "+seed))
	info, err := w.s.StatManifest(context.Background(), retRepo, string(subj))
	if err != nil {
		w.t.Fatal(err)
	}
	d, _ := putTestManifest(w.t, w.s, retRepo, ocispec.Manifest{
		ArtifactType: "application/vnd.example.sig",
		Config:       cfg,
		Layers:       []ocispec.Descriptor{layer},
		Subject:      &ocispec.Descriptor{MediaType: info.MediaType, Digest: subj, Size: info.Size},
	}, tags...)
	w.age(d, daysAgo, tags...)
	return d
}

// sigTag is the tag-schema fallback signature tag of d.
func sigTag(d digest.Digest) string { return "sha256-" + d.Encoded() + ".sig" }

const day = 24 * time.Hour

type retentionCase struct {
	name      string
	policy    RetentionPolicy
	window    time.Duration
	immutable func(repo, tag string) bool
	// setup builds the repository and returns the tags and manifests
	// retention must delete, and those it must keep.
	setup func(w *retentionWorld) (delTags map[string]string, delManifests map[digest.Digest]string, keepTags []string, keepManifests []digest.Digest)
}

func all(repos ...string) Matcher { return names(repos...) }

func TestRetentionScenarios(t *testing.T) {
	cases := []retentionCase{{
		name:   "keepLast keeps the newest tags",
		policy: RetentionPolicy{Repositories: all(retRepo), KeepLast: 2},
		setup: func(w *retentionWorld) (map[string]string, map[digest.Digest]string, []string, []digest.Digest) {
			a := w.image("a", 4, "a")
			b := w.image("b", 3, "b")
			c := w.image("c", 2, "c")
			w.image("d", 1, "d")
			// The manifests stay: no untagged rule.
			return map[string]string{"a": TagReasonKeepLast, "b": TagReasonKeepLast}, nil,
				[]string{"c", "d"}, []digest.Digest{a, b, c}
		},
	}, {
		name:   "keepTags are never counted out",
		policy: RetentionPolicy{Repositories: all(retRepo), KeepLast: 1, KeepTags: names("stable*")},
		setup: func(w *retentionWorld) (map[string]string, map[digest.Digest]string, []string, []digest.Digest) {
			w.image("s", 9, "stable-1")
			w.image("x", 5, "x")
			w.image("y", 1, "y")
			return map[string]string{"x": TagReasonKeepLast}, nil, []string{"stable-1", "y"}, nil
		},
	}, {
		name:   "tags older than the limit go",
		policy: RetentionPolicy{Repositories: all(retRepo), DeleteTagsOlderThan: 5 * day},
		setup: func(w *retentionWorld) (map[string]string, map[digest.Digest]string, []string, []digest.Digest) {
			w.image("old", 10, "old")
			w.image("new", 1, "new")
			return map[string]string{"old": TagReasonOlderThan}, nil, []string{"new"}, nil
		},
	}, {
		name:   "with keepLast and an age limit a tag must be both beyond and old",
		policy: RetentionPolicy{Repositories: all(retRepo), KeepLast: 1, DeleteTagsOlderThan: 5 * day},
		setup: func(w *retentionWorld) (map[string]string, map[digest.Digest]string, []string, []digest.Digest) {
			w.image("a", 10, "a")
			w.image("b", 3, "b")
			w.image("c", 1, "c")
			return map[string]string{"a": TagReasonOlderThan}, nil, []string{"b", "c"}, nil
		},
	}, {
		name:   "untagged manifests go after the grace period, with the tags retention removes",
		policy: RetentionPolicy{Repositories: all(retRepo), KeepLast: 1, DeleteUntaggedAfter: 5 * day},
		setup: func(w *retentionWorld) (map[string]string, map[digest.Digest]string, []string, []digest.Digest) {
			u := w.image("untagged-old", 10)
			v := w.image("untagged-young", 1)
			p := w.image("p", 10, "p")
			q := w.image("q", 8, "q")
			return map[string]string{"p": TagReasonKeepLast},
				map[digest.Digest]string{u: ManifestReasonUntagged, p: ManifestReasonUntagged},
				[]string{"q"}, []digest.Digest{v, q}
		},
	}, {
		name:      "an immutable tag and its manifest survive",
		policy:    RetentionPolicy{Repositories: all(retRepo), KeepLast: 1, DeleteTagsOlderThan: time.Nanosecond, DeleteUntaggedAfter: time.Nanosecond},
		immutable: func(_, tag string) bool { return tag == "v1.0.0" },
		setup: func(w *retentionWorld) (map[string]string, map[digest.Digest]string, []string, []digest.Digest) {
			v1 := w.image("v1", 30, "v1.0.0")
			o := w.image("other", 20, "other")
			n := w.image("new", 1, "new")
			return map[string]string{"other": TagReasonOlderThan}, map[digest.Digest]string{o: ManifestReasonUntagged},
				[]string{"v1.0.0", "new"}, []digest.Digest{v1, n}
		},
	}, {
		name:   "rollback targets in the history window survive, older ones do not",
		policy: RetentionPolicy{Repositories: all(retRepo), KeepLast: 1, KeepTags: names("prod"), DeleteUntaggedAfter: 5 * day},
		window: 10 * day,
		setup: func(w *retentionWorld) (map[string]string, map[digest.Digest]string, []string, []digest.Digest) {
			z := w.image("z", 30)
			x := w.image("x", 20, "rc-1")
			y := w.image("y", 1, "latest")
			for _, d := range []digest.Digest{z, x, y} {
				w.tag(d, "prod")
			}
			// prod: set to z 30 days ago, to x 20 days ago, to y yesterday.
			setMoveTimes(w.t, w.s, retRepo, "prod", w.ago(30), w.ago(20), w.ago(1))
			// rc-1 is beyond keepLast, but names x, which prod named
			// within the window: a rollback target, kept with its tag.
			return nil, map[digest.Digest]string{z: ManifestReasonUntagged},
				[]string{"prod", "rc-1", "latest"}, []digest.Digest{x, y}
		},
	}, {
		name:   "children of a kept index survive; an old untagged index goes with its children",
		policy: RetentionPolicy{Repositories: all(retRepo), DeleteUntaggedAfter: 5 * day},
		setup: func(w *retentionWorld) (map[string]string, map[digest.Digest]string, []string, []digest.Digest) {
			a := w.image("amd64", 10)
			b := w.image("arm64", 10)
			info := func(d digest.Digest) ocispec.Descriptor {
				i, err := w.s.StatManifest(context.Background(), retRepo, string(d))
				if err != nil {
					w.t.Fatal(err)
				}
				return ocispec.Descriptor{MediaType: i.MediaType, Digest: d, Size: i.Size}
			}
			multi, _ := putTestIndex(w.t, w.s, retRepo, []ocispec.Descriptor{info(a), info(b)}, "multi")
			w.age(multi, 10, "multi")
			c := w.image("old-amd64", 10)
			e := w.image("old-arm64", 10)
			old, _ := putTestIndex(w.t, w.s, retRepo, []ocispec.Descriptor{info(c), info(e)})
			w.age(old, 10)
			return nil, map[digest.Digest]string{old: ManifestReasonUntagged, c: ManifestReasonUntagged, e: ManifestReasonUntagged},
				[]string{"multi"}, []digest.Digest{multi, a, b}
		},
	}, {
		name:   "referrers stay with a kept subject and go with a deleted one",
		policy: RetentionPolicy{Repositories: all(retRepo), DeleteUntaggedAfter: 5 * day},
		setup: func(w *retentionWorld) (map[string]string, map[digest.Digest]string, []string, []digest.Digest) {
			kept := w.image("kept", 10, "kept")
			keptSig := w.referrer(kept, "kept", 10)
			gone := w.image("gone", 10)
			// Pushed yesterday, within the grace period, but its
			// subject goes, so it goes too; as does its own referrer.
			goneSig := w.referrer(gone, "gone", 1)
			goneSigSig := w.referrer(goneSig, "gone-2", 1)
			return nil, map[digest.Digest]string{gone: ManifestReasonUntagged, goneSig: ManifestReasonSubjectDeleted, goneSigSig: ManifestReasonSubjectDeleted},
				[]string{"kept"}, []digest.Digest{kept, keptSig}
		},
	}, {
		name:   "signature tags follow their manifest and do not count as releases",
		policy: RetentionPolicy{Repositories: all(retRepo), KeepLast: 1, DeleteUntaggedAfter: 5 * day},
		setup: func(w *retentionWorld) (map[string]string, map[digest.Digest]string, []string, []digest.Digest) {
			old := w.image("old", 10, "old")
			v2 := w.image("v2", 9, "v2")
			// The signatures are newer than any release tag.
			oldSig := w.image("old-sig", 1, sigTag(old))
			v2Sig := w.image("v2-sig", 1, sigTag(v2))
			// A signature of a manifest kept elsewhere stays.
			apart := w.image("apart-sig", 20, sigTag(digest.FromString("elsewhere")))
			return map[string]string{"old": TagReasonKeepLast, sigTag(old): TagReasonSubjectDeleted},
				map[digest.Digest]string{old: ManifestReasonUntagged, oldSig: ManifestReasonSubjectDeleted},
				[]string{"v2", sigTag(v2), sigTag(digest.FromString("elsewhere"))}, []digest.Digest{v2, v2Sig, apart}
		},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := Options{}
			if c.immutable != nil {
				opts.Tags = tagRulesFunc(c.immutable)
			}
			s, err := Open(context.Background(), t.TempDir(), opts)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			w := &retentionWorld{t: t, s: s, now: time.Now().UTC()}
			delTags, delManifests, keepTags, keepManifests := c.setup(w)
			// Another repository, which no policy covers, is untouched.
			other := putTestImage(t, s, "other/repo", "o", "o")
			setPushTime(t, s, "other/repo", other, w.ago(100))

			ctx := WithActor(context.Background(), Actor{Kind: ActorSystem, Name: "retention"})
			ropts := RetentionOptions{DryRun: true, Now: w.now, HistoryWindow: c.window}
			// The first policy covering a repository applies: the second
			// would delete everything.
			policies := []RetentionPolicy{c.policy, {Repositories: all(retRepo), DeleteTagsOlderThan: time.Nanosecond, DeleteUntaggedAfter: time.Nanosecond}}
			dry, err := s.ApplyRetention(ctx, policies, ropts)
			if err != nil {
				t.Fatal(err)
			}
			ropts.DryRun = false
			real, err := s.ApplyRetention(ctx, policies, ropts)
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
			if delTags == nil {
				delTags = map[string]string{}
			}
			if delManifests == nil {
				delManifests = map[digest.Digest]string{}
			}
			if !maps.Equal(gotTags, delTags) {
				t.Errorf("deleted tags %v, want %v", gotTags, delTags)
			}
			if !maps.Equal(gotManifests, delManifests) {
				t.Errorf("deleted manifests %v, want %v", gotManifests, delManifests)
			}
			// The store agrees with the report.
			for tag := range delTags {
				if _, err := s.StatManifest(ctx, retRepo, tag); !errors.Is(err, ErrManifestUnknown) {
					t.Errorf("deleted tag %s: %v", tag, err)
				}
				moves, _, err := s.TagHistory(ctx, retRepo, tag, 0, 1)
				if err != nil || moves[0].Action != MoveRetention || moves[0].Actor.Name != "retention" {
					t.Errorf("last move of %s: %+v, %v", tag, moves, err)
				}
			}
			for d := range delManifests {
				if _, err := s.StatManifest(ctx, retRepo, string(d)); !errors.Is(err, ErrManifestUnknown) {
					t.Errorf("deleted manifest %s: %v", d, err)
				}
				refs, err := s.Referrers(ctx, retRepo, d, "")
				if err != nil || len(refs) != 0 {
					t.Errorf("deleted manifest %s still has referrers %v (%v)", d, refs, err)
				}
			}
			for _, tag := range keepTags {
				if _, err := s.StatManifest(ctx, retRepo, tag); err != nil {
					t.Errorf("kept tag %s: %v", tag, err)
				}
			}
			for _, d := range keepManifests {
				if _, err := s.StatManifest(ctx, retRepo, string(d)); err != nil {
					t.Errorf("kept manifest %s: %v", d, err)
				}
			}
			if _, err := s.StatManifest(ctx, "other/repo", "o"); err != nil {
				t.Errorf("uncovered repository: %v", err)
			}
			// Every tag left names a manifest left, and a second run
			// finds nothing more to do.
			left, _, err := s.ListTags(ctx, retRepo, "", 1000)
			if err != nil {
				t.Fatal(err)
			}
			for _, tag := range left {
				if _, err := s.StatManifest(ctx, retRepo, tag); err != nil {
					t.Errorf("tag %s left dangling: %v", tag, err)
				}
			}
			again, err := s.ApplyRetention(ctx, policies, ropts)
			if err != nil || len(again.Tags)+len(again.Manifests) != 0 || again.Repositories != 1 {
				t.Errorf("second run: %+v, %v", again, err)
			}
		})
	}
}
