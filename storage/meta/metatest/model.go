package metatest

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage/meta"
)

// model is what the index should hold, kept by plain maps: the suite
// applies random changes to the store and to it, then compares every read,
// the derived indexes included.
type model struct {
	repos     map[string]bool
	links     map[string]map[digest.Digest]meta.Link
	manifests map[string]map[digest.Digest]meta.Manifest
	tags      map[string]map[string]digest.Digest
}

func newModel() *model {
	return &model{repos: map[string]bool{}, links: map[string]map[digest.Digest]meta.Link{},
		manifests: map[string]map[digest.Digest]meta.Manifest{}, tags: map[string]map[string]digest.Digest{}}
}

func (m *model) ensure(repo string) {
	if !m.repos[repo] {
		m.repos[repo] = true
		m.links[repo] = map[digest.Digest]meta.Link{}
		m.manifests[repo] = map[digest.Digest]meta.Manifest{}
		m.tags[repo] = map[string]digest.Digest{}
	}
}

// op is one random change, applied to the store's Tx and to the model.
type op struct {
	name  string
	apply func(tx meta.Tx) error
	model func()
}

// The universe the random changes draw from: few names, so that they
// collide often.
var (
	modelRepos  = []string{"a", "a/b", "a-b", "b"}
	modelTags   = []string{"latest", "v1", "v1.0"}
	modelPairs  = [][2]string{{"k", "v"}, {"k", "w"}, {"team", "x"}}
	modelDigest = func() []digest.Digest {
		var ds []digest.Digest
		for i := range 6 {
			ds = append(ds, dg(fmt.Sprintf("content %d", i)))
		}
		return ds
	}()
)

func (m *model) randomOp(r *rand.Rand) op {
	repo := modelRepos[r.IntN(len(modelRepos))]
	d := modelDigest[r.IntN(len(modelDigest))]
	switch n := r.IntN(10); {
	case n < 2:
		l := meta.Link{Linked: at(r.IntN(100))}
		if r.IntN(2) == 0 {
			l.Seen = at(r.IntN(100))
		}
		return op{fmt.Sprintf("PutLink(%s, %.12s)", repo, d),
			func(tx meta.Tx) error { return tx.PutLink(repo, d, l) },
			func() { m.ensure(repo); m.links[repo][d] = l }}
	case n < 3:
		return op{fmt.Sprintf("DeleteLink(%s, %.12s)", repo, d),
			func(tx meta.Tx) error { return tx.DeleteLink(repo, d) },
			func() {
				if m.repos[repo] {
					delete(m.links[repo], d)
				}
			}}
	case n < 5:
		rec := randomManifest(r)
		return op{fmt.Sprintf("PutManifest(%s, %.12s)", repo, d),
			func(tx meta.Tx) error { return tx.PutManifest(repo, d, rec) },
			func() { m.ensure(repo); m.manifests[repo][d] = rec }}
	case n < 6:
		return op{fmt.Sprintf("DeleteManifest(%s, %.12s)", repo, d),
			func(tx meta.Tx) error { return tx.DeleteManifest(repo, d) },
			func() {
				if m.repos[repo] {
					delete(m.manifests[repo], d)
				}
			}}
	case n < 8:
		tag := modelTags[r.IntN(len(modelTags))]
		if !m.repos[repo] {
			return m.randomOp(r) // SetTag needs the repository
		}
		return op{fmt.Sprintf("SetTag(%s, %s, %.12s)", repo, tag, d),
			func(tx meta.Tx) error { return tx.SetTag(repo, tag, d) },
			func() { m.tags[repo][tag] = d }}
	case n < 9:
		tag := modelTags[r.IntN(len(modelTags))]
		return op{fmt.Sprintf("DeleteTag(%s, %s)", repo, tag),
			func(tx meta.Tx) error { return tx.DeleteTag(repo, tag) },
			func() {
				if m.repos[repo] {
					delete(m.tags[repo], tag)
				}
			}}
	default:
		empty := m.repos[repo] && len(m.links[repo]) == 0 && len(m.manifests[repo]) == 0 && len(m.tags[repo]) == 0
		return op{fmt.Sprintf("DeleteRepository(%s)", repo),
			func(tx meta.Tx) error {
				ok, err := tx.DeleteRepository(repo)
				if err == nil && ok != empty {
					return fmt.Errorf("DeleteRepository(%s) = %v; the model says %v", repo, ok, empty)
				}
				return err
			},
			func() {
				if empty {
					delete(m.repos, repo)
					delete(m.links, repo)
					delete(m.manifests, repo)
					delete(m.tags, repo)
				}
			}}
	}
}

// prefetcher is implemented by transactions that read ahead (see
// meta.Prefetch).
type prefetcher interface {
	Prefetch(p meta.Prefetch) error
}

// readsOp checks the point reads (Link, Manifest, Tag) of repo against
// the model as it is when the op is made, amid the changes of a
// transaction; then, where the transaction reads ahead, it prefetches
// every record of the universe in repo, so that the reads of later ops
// answer from what it read as changed since.
func (m *model) readsOp(repo string) op {
	links, manifests, tags := maps.Clone(m.links[repo]), maps.Clone(m.manifests[repo]), maps.Clone(m.tags[repo])
	return op{fmt.Sprintf("reads(%s)", repo), func(tx meta.Tx) error {
		for _, d := range modelDigest {
			l, ok, err := tx.Link(repo, d)
			if err != nil {
				return err
			}
			if want, wok := links[d]; ok != wok || !l.Linked.Equal(want.Linked) || !l.Seen.Equal(want.Seen) {
				return fmt.Errorf("Link(%s, %.12s) = %v, %v; want %v, %v", repo, d, l, ok, want, wok)
			}
			mf, ok, err := tx.Manifest(repo, d)
			if err != nil {
				return err
			}
			if want, wok := manifests[d]; ok != wok || (ok && norm(mf) != norm(want)) {
				return fmt.Errorf("Manifest(%s, %.12s) = %v, %v; want %v, %v", repo, d, norm(mf), ok, norm(want), wok)
			}
		}
		for _, tag := range modelTags {
			got, ok, err := tx.Tag(repo, tag)
			if err != nil {
				return err
			}
			if want, wok := tags[tag]; ok != wok || got != want {
				return fmt.Errorf("Tag(%s, %s) = %s, %v; want %s, %v", repo, tag, got, ok, want, wok)
			}
		}
		if pf, ok := tx.(prefetcher); ok {
			return pf.Prefetch(meta.Prefetch{Repo: repo, Blobs: modelDigest, Links: modelDigest, Manifests: modelDigest, Tags: modelTags})
		}
		return nil
	}, func() {}}
}

func randomManifest(r *rand.Rand) meta.Manifest {
	rec := meta.Manifest{MediaType: ocispec.MediaTypeImageManifest, Size: int64(r.IntN(1000) + 1), Created: at(r.IntN(100))}
	for range r.IntN(4) {
		rec.References = append(rec.References, modelDigest[r.IntN(len(modelDigest))])
	}
	if r.IntN(3) == 0 {
		rec.Subject = &ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: modelDigest[r.IntN(len(modelDigest))], Size: 5}
		rec.ArtifactType = "application/example"
	}
	for range r.IntN(3) {
		p := modelPairs[r.IntN(len(modelPairs))]
		if r.IntN(2) == 0 {
			if rec.Annotations == nil {
				rec.Annotations = map[string]string{}
			}
			rec.Annotations[p[0]] = p[1]
		} else {
			if rec.Labels == nil {
				rec.Labels = map[string]string{}
			}
			rec.Labels[p[0]] = p[1]
		}
	}
	return rec
}

// testModel applies random changes, several per transaction, and compares
// the store with the model after each transaction.
func testModel(t *testing.T, h *handle) {
	for seed := range uint64(4) {
		r := rand.New(rand.NewPCG(seed, 42))
		m := newModel()
		for step := range 40 {
			var ops []op
			for range 1 + r.IntN(5) {
				o := m.randomOp(r)
				ops = append(ops, o)
				o.model() // later ops see the effects of earlier ones
				if r.IntN(2) == 0 {
					ops = append(ops, m.readsOp(modelRepos[r.IntN(len(modelRepos))]))
				}
			}
			err := h.s.Update(t.Context(), func(tx meta.Tx) error {
				for _, o := range ops {
					if err := o.apply(tx); err != nil {
						return fmt.Errorf("%s: %w", o.name, err)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatalf("seed %d step %d: %v", seed, step, err)
			}
			h.view(t, func(tx meta.Tx) error {
				m.compare(t, tx)
				return nil
			})
			if t.Failed() {
				var names []string
				for _, o := range ops {
					names = append(names, o.name)
				}
				t.Fatalf("seed %d step %d: the store differs from the model after %v", seed, step, names)
			}
		}
		// Start the next seed from an empty store.
		h.update(t, func(tx meta.Tx) error {
			for repo := range m.repos {
				for tag := range m.tags[repo] {
					must(t, tx.DeleteTag(repo, tag))
				}
				for d := range m.manifests[repo] {
					must(t, tx.DeleteManifest(repo, d))
				}
				for d := range m.links[repo] {
					must(t, tx.DeleteLink(repo, d))
				}
				if ok, err := tx.DeleteRepository(repo); !ok || err != nil {
					t.Fatalf("emptied repository %s not deleted: %v", repo, err)
				}
			}
			return nil
		})
		h.clean(t)
	}
}

// compare checks every read of tx against the model.
func (m *model) compare(t *testing.T, tx meta.Tx) {
	t.Helper()
	equal(t, "repositories", repoList(t, tx, ""), slices.Sorted(maps.Keys(m.repos)))
	for _, repo := range modelRepos {
		// Links and manifests.
		var links, manifests []digest.Digest
		must(t, tx.Links(repo, func(d digest.Digest, l meta.Link) error {
			if want := m.links[repo][d]; !l.Linked.Equal(want.Linked) || !l.Seen.Equal(want.Seen) {
				t.Errorf("link %s of %s: linked %v, want %v", d, repo, l.Linked, want.Linked)
			}
			links = append(links, d)
			return nil
		}))
		equal(t, "links of "+repo, links, slices.Sorted(maps.Keys(m.links[repo])))
		must(t, tx.Manifests(repo, "", func(d digest.Digest, got meta.Manifest) error {
			if want := m.manifests[repo][d]; norm(got) != norm(want) {
				t.Errorf("manifest %s of %s:\n got %s\nwant %s", d, repo, norm(got), norm(want))
			}
			manifests = append(manifests, d)
			return nil
		}))
		equal(t, "manifests of "+repo, manifests, slices.Sorted(maps.Keys(m.manifests[repo])))
		// Tags and TagsOf.
		equal(t, "tags of "+repo, tagList(t, tx, repo, ""), slices.Sorted(maps.Keys(m.tags[repo])))
		for _, d := range modelDigest {
			var want []string
			for tag, to := range m.tags[repo] {
				if to == d {
					want = append(want, tag)
				}
			}
			slices.Sort(want)
			got, err := tx.TagsOf(repo, d)
			must(t, err)
			equal(t, fmt.Sprintf("TagsOf(%s, %.12s)", repo, d), got, want)
			// Referrers.
			var refs []string
			for _, rd := range slices.Sorted(maps.Keys(m.manifests[repo])) {
				if rec := m.manifests[repo][rd]; rec.Subject != nil && rec.Subject.Digest == d {
					refs = append(refs, normDesc(rec.Descriptor(rd)))
				}
			}
			equal(t, fmt.Sprintf("Referrers(%s, %.12s)", repo, d), referrers(t, tx, repo, d), refs)
		}
	}
	// Uses, of every digest, in every repository and in each.
	for _, d := range modelDigest {
		var all []meta.Use
		for _, repo := range modelRepos {
			var in []meta.Use
			if _, ok := m.links[repo][d]; ok {
				in = append(in, meta.Use{Repo: repo, Kind: meta.UseLink})
			}
			if _, ok := m.manifests[repo][d]; ok {
				in = append(in, meta.Use{Repo: repo, Kind: meta.UseManifest})
			}
			for md, rec := range m.manifests[repo] {
				if slices.Contains(rec.References, d) {
					in = append(in, meta.Use{Repo: repo, Kind: meta.UseReference, Manifest: md})
				}
			}
			equal(t, fmt.Sprintf("Uses(%.12s, %s)", d, repo), uses(t, tx, d, repo), useSet(in...))
			all = append(all, in...)
		}
		equal(t, fmt.Sprintf("Uses(%.12s)", d), uses(t, tx, d, ""), useSet(all...))
	}
	// Search, for every pair of the universe.
	for _, p := range modelPairs {
		for _, kind := range []meta.PairKind{meta.Annotation, meta.Label} {
			var want []string
			for repo, ms := range m.manifests {
				for d, rec := range ms {
					pairs := rec.Annotations
					if kind == meta.Label {
						pairs = rec.Labels
					}
					if v, ok := pairs[p[0]]; ok && v == p[1] {
						want = append(want, repo+"@"+string(d))
					}
				}
			}
			slicesSortByRepoDigest(want)
			equal(t, fmt.Sprintf("FindPair(%c, %s=%s)", kind, p[0], p[1]), pairs(t, tx, kind, p[0], p[1], "", ""), want)
		}
	}
}
