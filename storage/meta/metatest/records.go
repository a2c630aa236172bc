package metatest

import (
	"errors"
	"slices"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage/meta"
)

func testBlobs(t *testing.T, h *handle) {
	d := dg("blob")
	h.view(t, func(tx meta.Tx) error {
		if _, ok, err := tx.Blob(d); ok || err != nil {
			t.Errorf("Blob of an unknown digest = %v, %v; want absent", ok, err)
		}
		return nil
	})
	h.update(t, func(tx meta.Tx) error { return tx.PutBlob(d, meta.Blob{Size: 42, Created: at(1)}) })
	h.view(t, func(tx meta.Tx) error {
		b, ok, err := tx.Blob(d)
		must(t, err)
		if !ok || b.Size != 42 || !b.Created.Equal(at(1)) {
			t.Errorf("Blob = %+v, %v; want size 42 created %v", b, ok, at(1))
		}
		return nil
	})
	h.update(t, func(tx meta.Tx) error { return tx.PutBlob(d, meta.Blob{Size: 7, Created: at(2)}) })
	h.view(t, func(tx meta.Tx) error {
		if b, _, _ := tx.Blob(d); b.Size != 7 || !b.Created.Equal(at(2)) {
			t.Errorf("Blob after replacing = %+v; want size 7 created %v", b, at(2))
		}
		return nil
	})
	h.update(t, func(tx meta.Tx) error {
		must(t, tx.DeleteBlob(d))
		return tx.DeleteBlob(dg("never recorded"))
	})
	h.view(t, func(tx meta.Tx) error {
		if _, ok, _ := tx.Blob(d); ok {
			t.Error("Blob after DeleteBlob is present")
		}
		return nil
	})
}

func testBlobsWalk(t *testing.T, h *handle) {
	var ds []digest.Digest
	for _, name := range []string{"e", "b", "d", "a", "c"} {
		ds = append(ds, dg(name))
	}
	h.update(t, func(tx meta.Tx) error {
		for i, d := range ds {
			if err := tx.PutBlob(d, meta.Blob{Size: int64(i)}); err != nil {
				return err
			}
		}
		return nil
	})
	size := map[digest.Digest]int64{}
	for i, d := range ds {
		size[d] = int64(i)
	}
	h.view(t, func(tx meta.Tx) error {
		var got []digest.Digest
		must(t, tx.Blobs(func(d digest.Digest, b meta.Blob) error {
			if b.Size != size[d] {
				t.Errorf("Blobs gives %s size %d, want %d", d, b.Size, size[d])
			}
			got = append(got, d)
			return nil
		}))
		equal(t, "Blobs order", got, sorted(ds...))
		got = nil
		must(t, tx.Blobs(func(d digest.Digest, _ meta.Blob) error {
			got = append(got, d)
			if len(got) == 2 {
				return meta.ErrStop
			}
			return nil
		}))
		equal(t, "Blobs stopped after two", got, sorted(ds...)[:2])
		return nil
	})
}

func testRepositories(t *testing.T, h *handle) {
	h.view(t, func(tx meta.Tx) error {
		if ok, err := tx.Repository("a"); ok || err != nil {
			t.Errorf("Repository of an empty store = %v, %v", ok, err)
		}
		return nil
	})
	// SetTag needs the repository: it fails and creates nothing.
	err := h.s.Update(t.Context(), func(tx meta.Tx) error { return tx.SetTag("c", "v1", dg("m")) })
	if err == nil {
		t.Error("SetTag in a repository that does not exist succeeded")
	}
	h.update(t, func(tx meta.Tx) error {
		must(t, tx.PutLink("a", dg("l"), meta.Link{Linked: at(1)}))
		return tx.PutManifest("b", dg("m"), meta.Manifest{MediaType: ocispec.MediaTypeImageManifest, Size: 3, Created: at(1)})
	})
	h.view(t, func(tx meta.Tx) error {
		for repo, want := range map[string]bool{"a": true, "b": true, "c": false, "": false} {
			if ok, err := tx.Repository(repo); ok != want || err != nil {
				t.Errorf("Repository(%q) = %v, %v; want %v", repo, ok, err, want)
			}
		}
		return nil
	})
}

// repoList returns what Repositories yields after after.
func repoList(t *testing.T, tx meta.Tx, after string) []string {
	t.Helper()
	var out []string
	must(t, tx.Repositories(after, func(repo string) error {
		out = append(out, repo)
		return nil
	}))
	return out
}

func testRepositoriesWalk(t *testing.T, h *handle) {
	names := []string{"b", "a/x", "a", "c", "a-b"}
	h.update(t, func(tx meta.Tx) error {
		for _, n := range names {
			if err := tx.PutLink(n, dg("l"), meta.Link{Linked: at(1)}); err != nil {
				return err
			}
		}
		return nil
	})
	all := slices.Sorted(slices.Values(names)) // a, a-b, a/x, b, c
	h.view(t, func(tx meta.Tx) error {
		equal(t, "Repositories from the start", repoList(t, tx, ""), all)
		equal(t, "Repositories after a", repoList(t, tx, "a"), all[1:])
		equal(t, "Repositories after a/x", repoList(t, tx, "a/x"), all[3:])
		equal(t, "Repositories after a0 (not a repository)", repoList(t, tx, "a0"), all[3:])
		equal(t, "Repositories after c", repoList(t, tx, "c"), nil)
		var got []string
		must(t, tx.Repositories("", func(repo string) error {
			got = append(got, repo)
			return meta.ErrStop
		}))
		equal(t, "Repositories stopped", got, all[:1])
		return nil
	})
}

func testDeleteRepository(t *testing.T, h *handle) {
	m := meta.Manifest{MediaType: ocispec.MediaTypeImageManifest, Size: 10, Created: at(1)}
	h.update(t, func(tx meta.Tx) error {
		must(t, tx.PutLink("links", dg("l"), meta.Link{Linked: at(1)}))
		must(t, tx.PutManifest("manifests", dg("m"), m))
		must(t, tx.PutLink("tags", dg("l"), meta.Link{Linked: at(1)}))
		must(t, tx.SetTag("tags", "v1", dg("m")))
		must(t, tx.DeleteLink("tags", dg("l")))
		_, err := tx.AppendMove("tags", "v1", meta.Move{Time: at(1), Digest: dg("m"), Action: "push"})
		return err
	})
	deleteRepo := func(repo string) bool {
		var ok bool
		h.update(t, func(tx meta.Tx) error {
			var err error
			ok, err = tx.DeleteRepository(repo)
			return err
		})
		return ok
	}
	for _, repo := range []string{"links", "manifests", "tags"} {
		if deleteRepo(repo) {
			t.Errorf("DeleteRepository(%s) deleted a repository that holds something", repo)
		}
	}
	if deleteRepo("absent") {
		t.Error("DeleteRepository of an absent repository says it deleted it")
	}
	h.update(t, func(tx meta.Tx) error {
		must(t, tx.DeleteLink("links", dg("l")))
		must(t, tx.DeleteManifest("manifests", dg("m")))
		return tx.DeleteTag("tags", "v1")
	})
	for _, repo := range []string{"links", "manifests", "tags"} {
		if !deleteRepo(repo) {
			t.Errorf("DeleteRepository(%s) kept an empty repository", repo)
		}
	}
	h.view(t, func(tx meta.Tx) error {
		equal(t, "Repositories after deleting them all", repoList(t, tx, ""), nil)
		if ok, _ := tx.Repository("tags"); ok {
			t.Error("a deleted repository exists")
		}
		// History outlives the repository.
		var moves []meta.Move
		must(t, tx.Moves("tags", "v1", 0, func(m meta.Move) error {
			moves = append(moves, m)
			return nil
		}))
		if len(moves) != 1 || moves[0].Digest != dg("m") {
			t.Errorf("history of a deleted repository = %+v; want its one move", moves)
		}
		return nil
	})
	// The name can be used again.
	h.update(t, func(tx meta.Tx) error { return tx.PutLink("tags", dg("l2"), meta.Link{Linked: at(2)}) })
	h.view(t, func(tx meta.Tx) error {
		equal(t, "Repositories after reuse", repoList(t, tx, ""), []string{"tags"})
		if _, ok, _ := tx.Tag("tags", "v1"); ok {
			t.Error("a repository created again has the tag of its predecessor")
		}
		return nil
	})
}

func testLinks(t *testing.T, h *handle) {
	ds := []digest.Digest{dg("c"), dg("a"), dg("b")}
	h.update(t, func(tx meta.Tx) error {
		for i, d := range ds {
			must(t, tx.PutLink("r", d, meta.Link{Linked: at(i)}))
		}
		return tx.PutLink("other", dg("x"), meta.Link{Linked: at(9)})
	})
	h.view(t, func(tx meta.Tx) error {
		l, ok, err := tx.Link("r", ds[1])
		must(t, err)
		if !ok || !l.Linked.Equal(at(1)) {
			t.Errorf("Link = %+v, %v; want linked %v", l, ok, at(1))
		}
		if _, ok, _ := tx.Link("r", dg("x")); ok {
			t.Error("Link finds another repository's link")
		}
		if _, ok, _ := tx.Link("absent", ds[0]); ok {
			t.Error("Link finds a link in an absent repository")
		}
		var got []digest.Digest
		must(t, tx.Links("r", func(d digest.Digest, _ meta.Link) error {
			got = append(got, d)
			return nil
		}))
		equal(t, "Links order", got, sorted(ds...))
		must(t, tx.Links("absent", func(digest.Digest, meta.Link) error {
			t.Error("Links of an absent repository calls fn")
			return nil
		}))
		return nil
	})
	h.update(t, func(tx meta.Tx) error {
		must(t, tx.PutLink("r", ds[0], meta.Link{Linked: at(5)})) // refreshed
		must(t, tx.DeleteLink("r", ds[1]))
		must(t, tx.DeleteLink("r", dg("never linked")))
		return tx.DeleteLink("absent", ds[0])
	})
	h.view(t, func(tx meta.Tx) error {
		if l, _, _ := tx.Link("r", ds[0]); !l.Linked.Equal(at(5)) {
			t.Errorf("Link after PutLink again = %v; want %v", l.Linked, at(5))
		}
		if _, ok, _ := tx.Link("r", ds[1]); ok {
			t.Error("Link after DeleteLink is present")
		}
		return nil
	})
}

// fullManifest is a manifest record with every field set.
func fullManifest(subject digest.Digest, refs ...digest.Digest) meta.Manifest {
	cc := at(-100)
	m := meta.Manifest{
		MediaType:     ocispec.MediaTypeImageManifest,
		Size:          1234,
		ArtifactType:  "application/vnd.example+type",
		Annotations:   stringMap("org.opencontainers.image.title", "t", "k", "v"),
		References:    refs,
		Created:       at(3),
		Labels:        stringMap("maintainer", "me"),
		ConfigCreated: &cc,
	}
	if subject != "" {
		m.Subject = &ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: subject, Size: 99}
	}
	return m
}

func testManifests(t *testing.T, h *handle) {
	d := dg("manifest")
	full := fullManifest(dg("subject"), dg("config"), dg("layer"))
	h.update(t, func(tx meta.Tx) error { return tx.PutManifest("r", d, full) })
	h.view(t, func(tx meta.Tx) error {
		if got := manifestOf(t, tx, "r", d); norm(got) != norm(full) {
			t.Errorf("Manifest round trip:\n got %s\nwant %s", norm(got), norm(full))
		}
		if _, ok, _ := tx.Manifest("other", d); ok {
			t.Error("Manifest finds another repository's manifest")
		}
		if _, ok, _ := tx.Manifest("r", dg("absent")); ok {
			t.Error("Manifest finds an absent manifest")
		}
		return nil
	})
	// Replacing replaces the whole record.
	bare := meta.Manifest{MediaType: ocispec.MediaTypeImageIndex, Size: 5, Created: at(4)}
	h.update(t, func(tx meta.Tx) error { return tx.PutManifest("r", d, bare) })
	h.view(t, func(tx meta.Tx) error {
		if got := manifestOf(t, tx, "r", d); norm(got) != norm(bare) {
			t.Errorf("Manifest after replacing:\n got %s\nwant %s", norm(got), norm(bare))
		}
		return nil
	})
	h.update(t, func(tx meta.Tx) error {
		must(t, tx.DeleteManifest("r", d))
		must(t, tx.DeleteManifest("r", d)) // absent: fine
		return tx.DeleteManifest("absent", d)
	})
	h.view(t, func(tx meta.Tx) error {
		if _, ok, _ := tx.Manifest("r", d); ok {
			t.Error("Manifest after DeleteManifest is present")
		}
		return nil
	})
}

func testManifestsWalk(t *testing.T, h *handle) {
	var ds []digest.Digest
	h.update(t, func(tx meta.Tx) error {
		for i := range 6 {
			d := dg(string(rune('a' + i)))
			ds = append(ds, d)
			if err := tx.PutManifest("r", d, meta.Manifest{MediaType: "m", Size: int64(i), Created: at(i)}); err != nil {
				return err
			}
		}
		return tx.PutManifest("r2", dg("z"), meta.Manifest{MediaType: "m", Size: 1, Created: at(1)})
	})
	all := sorted(ds...)
	walk := func(tx meta.Tx, after digest.Digest, n int) []digest.Digest {
		var out []digest.Digest
		must(t, tx.Manifests("r", after, func(d digest.Digest, m meta.Manifest) error {
			if m.MediaType != "m" {
				t.Errorf("Manifests gives %s with media type %q", d, m.MediaType)
			}
			out = append(out, d)
			if len(out) == n {
				return meta.ErrStop
			}
			return nil
		}))
		return out
	}
	h.view(t, func(tx meta.Tx) error {
		equal(t, "Manifests", walk(tx, "", -1), all)
		equal(t, "Manifests after the second", walk(tx, all[1], -1), all[2:])
		equal(t, "Manifests after the last", walk(tx, all[5], -1), nil)
		equal(t, "Manifests stopped after three", walk(tx, "", 3), all[:3])
		// Paging by the last one seen covers everything once.
		// Bounded: a walk that repeats its "after" must not loop for ever.
		var paged []digest.Digest
		after := digest.Digest("")
		for range len(all) + 1 {
			page := walk(tx, after, 2)
			if len(page) == 0 {
				break
			}
			paged = append(paged, page...)
			after = page[len(page)-1]
		}
		equal(t, "Manifests paged", paged, all)
		return nil
	})
}

func testUploads(t *testing.T, h *handle) {
	ups := map[string]meta.Upload{
		"b": {Repo: "r", Algorithm: "sha256", Started: at(1), Owner: "user:alice"},
		"a": {Repo: "r2", Algorithm: "sha512", Started: at(2)},
		"c": {Repo: "r", Algorithm: "sha256", Started: at(3), Owner: "robot:ci"},
	}
	h.update(t, func(tx meta.Tx) error {
		for id, u := range ups {
			if err := tx.PutUpload(id, u); err != nil {
				return err
			}
		}
		return nil
	})
	h.view(t, func(tx meta.Tx) error {
		u, ok, err := tx.Upload("b")
		must(t, err)
		if !ok || u.Repo != "r" || u.Algorithm != "sha256" || !u.Started.Equal(at(1)) || u.Owner != "user:alice" {
			t.Errorf("Upload = %+v, %v; want %+v", u, ok, ups["b"])
		}
		if _, ok, _ := tx.Upload("absent"); ok {
			t.Error("Upload finds an absent session")
		}
		var ids []string
		must(t, tx.Uploads(func(id string, u meta.Upload) error {
			if u.Owner != ups[id].Owner || u.Repo != ups[id].Repo {
				t.Errorf("Uploads gives %s = %+v, want %+v", id, u, ups[id])
			}
			ids = append(ids, id)
			return nil
		}))
		equal(t, "Uploads order", ids, []string{"a", "b", "c"})
		return nil
	})
	h.update(t, func(tx meta.Tx) error {
		must(t, tx.DeleteUpload("b"))
		return tx.DeleteUpload("absent")
	})
	h.view(t, func(tx meta.Tx) error {
		if _, ok, _ := tx.Upload("b"); ok {
			t.Error("Upload after DeleteUpload is present")
		}
		return nil
	})
}

func testRobots(t *testing.T, h *handle) {
	revoked := at(50)
	ci := meta.Robot{Name: "ci", Scopes: []string{"repository:apps/*:pull,push"}, Created: at(1), Expires: at(1000), Hash: "h1"}
	bot := meta.Robot{Name: "bot", Scopes: []string{"repository:x:pull"}, Created: at(2), Expires: at(2000), Revoked: &revoked, Hash: "h2"}
	h.update(t, func(tx meta.Tx) error {
		must(t, tx.PutRobot(ci))
		return tx.PutRobot(bot)
	})
	h.view(t, func(tx meta.Tx) error {
		r, ok, err := tx.Robot("bot")
		must(t, err)
		if !ok || r.Name != "bot" || !slices.Equal(r.Scopes, bot.Scopes) || !r.Expires.Equal(bot.Expires) ||
			r.Revoked == nil || !r.Revoked.Equal(revoked) || r.Rotated != nil || r.Hash != "h2" {
			t.Errorf("Robot = %+v, %v; want %+v", r, ok, bot)
		}
		for hash, want := range map[string]string{"h1": "ci", "h2": "bot", "h3": ""} {
			name, ok, err := tx.RobotBySecret(hash)
			must(t, err)
			if name != want || ok != (want != "") {
				t.Errorf("RobotBySecret(%s) = %q, %v; want %q", hash, name, ok, want)
			}
		}
		return nil
	})
	// Rotation: the new hash finds the robot, the old one no longer.
	rotated := at(60)
	ci.Hash, ci.Rotated = "h3", &rotated
	h.update(t, func(tx meta.Tx) error { return tx.PutRobot(ci) })
	h.view(t, func(tx meta.Tx) error {
		if name, ok, _ := tx.RobotBySecret("h3"); !ok || name != "ci" {
			t.Errorf("RobotBySecret(new hash) = %q, %v; want ci", name, ok)
		}
		if name, ok, _ := tx.RobotBySecret("h1"); ok {
			t.Errorf("RobotBySecret(old hash) = %q; want nothing", name)
		}
		var names []string
		must(t, tx.Robots(func(r meta.Robot) error {
			names = append(names, r.Name)
			if r.Name == "ci" && (r.Rotated == nil || !r.Rotated.Equal(rotated) || r.Hash != "h3") {
				t.Errorf("Robots gives ci = %+v; want it rotated", r)
			}
			return nil
		}))
		equal(t, "Robots order", names, []string{"bot", "ci"})
		return nil
	})
}

// testReadOnly: every change fails in a View, and changes nothing.
func testReadOnly(t *testing.T, h *handle) {
	h.update(t, func(tx meta.Tx) error {
		must(t, tx.PutBlob(dg("b"), meta.Blob{Size: 1}))
		must(t, tx.PutLink("r", dg("b"), meta.Link{Linked: at(1)}))
		must(t, tx.PutManifest("r", dg("m"), fullManifest("", dg("b"))))
		must(t, tx.SetTag("r", "t", dg("m")))
		must(t, tx.PutUpload("u", meta.Upload{Repo: "r", Algorithm: "sha256", Started: at(1)}))
		return tx.PutRobot(meta.Robot{Name: "x", Scopes: []string{"s"}, Created: at(1), Expires: at(9), Hash: "h"})
	})
	writes := map[string]func(tx meta.Tx) error{
		"PutBlob":    func(tx meta.Tx) error { return tx.PutBlob(dg("n"), meta.Blob{Size: 1}) },
		"DeleteBlob": func(tx meta.Tx) error { return tx.DeleteBlob(dg("b")) },
		"DeleteRepository": func(tx meta.Tx) error {
			_, err := tx.DeleteRepository("r")
			return err
		},
		"PutLink":        func(tx meta.Tx) error { return tx.PutLink("r2", dg("b"), meta.Link{Linked: at(2)}) },
		"DeleteLink":     func(tx meta.Tx) error { return tx.DeleteLink("r", dg("b")) },
		"PutManifest":    func(tx meta.Tx) error { return tx.PutManifest("r2", dg("m"), fullManifest("")) },
		"DeleteManifest": func(tx meta.Tx) error { return tx.DeleteManifest("r", dg("m")) },
		"SetTag":         func(tx meta.Tx) error { return tx.SetTag("r", "t2", dg("m")) },
		"DeleteTag":      func(tx meta.Tx) error { return tx.DeleteTag("r", "t") },
		"AppendMove": func(tx meta.Tx) error {
			_, err := tx.AppendMove("r", "t", meta.Move{Time: at(1), Action: "push"})
			return err
		},
		"PutUpload":    func(tx meta.Tx) error { return tx.PutUpload("u2", meta.Upload{Repo: "r"}) },
		"DeleteUpload": func(tx meta.Tx) error { return tx.DeleteUpload("u") },
		"PutRobot": func(tx meta.Tx) error {
			return tx.PutRobot(meta.Robot{Name: "y", Scopes: []string{"s"}, Created: at(1), Expires: at(9), Hash: "h9"})
		},
		"PutPull": func(tx meta.Tx) error {
			return tx.PutPull(meta.Pull{Repo: "r", Digest: dg("m"), Actor: meta.Actor{Kind: "user", Name: "u"}, Time: at(1)})
		},
	}
	for name, w := range writes {
		h.view(t, func(tx meta.Tx) error {
			if err := w(tx); err == nil {
				t.Errorf("%s in a View succeeded", name)
			}
			return nil
		})
	}
	h.view(t, func(tx meta.Tx) error {
		if _, ok, _ := tx.Blob(dg("n")); ok {
			t.Error("PutBlob in a View left a record")
		}
		if _, ok, _ := tx.Blob(dg("b")); !ok {
			t.Error("DeleteBlob in a View removed the record")
		}
		if ok, _ := tx.Repository("r2"); ok {
			t.Error("a change in a View created a repository")
		}
		if _, ok, _ := tx.Link("r", dg("b")); !ok {
			t.Error("DeleteLink in a View removed the link")
		}
		if _, ok, _ := tx.Manifest("r", dg("m")); !ok {
			t.Error("DeleteManifest in a View removed the manifest")
		}
		if d, ok, _ := tx.Tag("r", "t"); !ok || d != dg("m") {
			t.Error("DeleteTag in a View removed the tag")
		}
		if _, ok, _ := tx.Tag("r", "t2"); ok {
			t.Error("SetTag in a View set the tag")
		}
		if _, ok, _ := tx.Upload("u"); !ok {
			t.Error("DeleteUpload in a View removed the session")
		}
		if _, ok, _ := tx.Robot("y"); ok {
			t.Error("PutRobot in a View recorded the robot")
		}
		must(t, tx.Pulls("r", "", func(p meta.Pull) error {
			t.Errorf("PutPull in a View recorded %+v", p)
			return nil
		}))
		must(t, tx.Moves("r", "t", 0, func(m meta.Move) error {
			t.Errorf("AppendMove in a View recorded %+v", m)
			return nil
		}))
		return nil
	})
}

// testWalkErrors: an error of fn other than ErrStop ends every walk and
// comes back from it.
func testWalkErrors(t *testing.T, h *handle) {
	m := fullManifest(dg("subject"), dg("b"))
	h.update(t, func(tx meta.Tx) error {
		must(t, tx.PutBlob(dg("b"), meta.Blob{Size: 1}))
		must(t, tx.PutLink("r", dg("b"), meta.Link{Linked: at(1)}))
		must(t, tx.PutManifest("r", dg("m"), m))
		must(t, tx.SetTag("r", "t", dg("m")))
		_, err := tx.AppendMove("r", "t", meta.Move{Time: at(1), Digest: dg("m"), Action: "push"})
		must(t, err)
		must(t, tx.PutUpload("u", meta.Upload{Repo: "r", Algorithm: "sha256", Started: at(1)}))
		must(t, tx.PutPull(meta.Pull{Repo: "r", Digest: dg("m"), Actor: meta.Actor{Kind: "user", Name: "u"}, Time: at(1)}))
		return tx.PutRobot(meta.Robot{Name: "x", Scopes: []string{"s"}, Created: at(1), Expires: at(9), Hash: "h"})
	})
	fail := func(...any) error { return errSentinel }
	walks := map[string]func(tx meta.Tx) error{
		"Blobs": func(tx meta.Tx) error {
			return tx.Blobs(func(d digest.Digest, b meta.Blob) error { return fail(d, b) })
		},
		"Uses":         func(tx meta.Tx) error { return tx.Uses(dg("b"), "", func(u meta.Use) error { return fail(u) }) },
		"Repositories": func(tx meta.Tx) error { return tx.Repositories("", func(r string) error { return fail(r) }) },
		"Links": func(tx meta.Tx) error {
			return tx.Links("r", func(d digest.Digest, l meta.Link) error { return fail(d, l) })
		},
		"Manifests": func(tx meta.Tx) error {
			return tx.Manifests("r", "", func(d digest.Digest, m meta.Manifest) error { return fail(d, m) })
		},
		"Referrers": func(tx meta.Tx) error {
			return tx.Referrers("r", dg("subject"), func(d ocispec.Descriptor) error { return fail(d) })
		},
		"Tags": func(tx meta.Tx) error {
			return tx.Tags("r", "", func(tag string, d digest.Digest) error { return fail(tag, d) })
		},
		"Moves": func(tx meta.Tx) error { return tx.Moves("r", "t", 0, func(m meta.Move) error { return fail(m) }) },
		"FindPair": func(tx meta.Tx) error {
			return tx.FindPair(meta.Annotation, "k", "v", "", "", func(r string, d digest.Digest) error { return fail(r, d) })
		},
		"Uploads": func(tx meta.Tx) error { return tx.Uploads(func(id string, u meta.Upload) error { return fail(id, u) }) },
		"Robots":  func(tx meta.Tx) error { return tx.Robots(func(r meta.Robot) error { return fail(r) }) },
		"Pulls":   func(tx meta.Tx) error { return tx.Pulls("r", "", func(p meta.Pull) error { return fail(p) }) },
		"HistoryTags": func(tx meta.Tx) error {
			return tx.HistoryTags("r", "", func(tag string) error { return fail(tag) })
		},
	}
	for name, w := range walks {
		h.view(t, func(tx meta.Tx) error {
			if err := w(tx); !errors.Is(err, errSentinel) {
				t.Errorf("%s returns %v when fn fails; want fn's error", name, err)
			}
			return nil
		})
	}
}
