package storagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/gc"
	"github.com/berth-registry/berth/storage/meta"
	"github.com/berth-registry/berth/storage/retention"
)

// recorder is a storage.Sink that records the events it receives and,
// as it receives each, reads the store to see whether the change is
// there: a change published before its commit is not.
type recorder struct {
	mu     sync.Mutex
	svc    *storage.Service
	events []storage.Event
	// unseen describes the events whose change the store did not show
	// when they were published.
	unseen []string
}

// Publish implements storage.Sink.
func (r *recorder) Publish(ctx context.Context, e storage.Event) {
	r.mu.Lock()
	svc := r.svc
	r.mu.Unlock()
	var problem string
	err := svc.View(ctx, func(tx meta.Tx) error {
		var err error
		problem, err = missingChange(tx, e)
		return err
	})
	if err != nil {
		problem = fmt.Sprintf("reading the store: %v", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
	if problem != "" {
		r.unseen = append(r.unseen, eventKey(e)+": "+problem)
	}
}

// take returns the events recorded since the last take, failing the test
// if any was published before the store showed its change.
func (r *recorder) take(t *testing.T) []storage.Event {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, u := range r.unseen {
		t.Errorf("event published before its change was visible: %s", u)
	}
	events := r.events
	r.events, r.unseen = nil, nil
	return events
}

// missingChange says what the index lacks of the change e reports, or ""
// if the change is there.
func missingChange(tx meta.Tx, e storage.Event) (string, error) {
	tagIs := func(want digest.Digest) (string, error) {
		got, ok, err := tx.Tag(e.Repo, e.Tag)
		if err != nil || got == want || (!ok && want == "") {
			return "", err
		}
		return fmt.Sprintf("tag %s:%s names %q, want %q", e.Repo, e.Tag, got, want), nil
	}
	manifest := func(want bool) (string, error) {
		_, ok, err := tx.Manifest(e.Repo, e.Digest)
		if err != nil || ok == want {
			return "", err
		}
		return fmt.Sprintf("manifest %s in %s: present %v", e.Digest, e.Repo, ok), nil
	}
	link := func(want bool) (string, error) {
		_, ok, err := tx.Link(e.Repo, e.Digest)
		if err != nil || ok == want {
			return "", err
		}
		return fmt.Sprintf("link of %s in %s: present %v", e.Digest, e.Repo, ok), nil
	}
	switch {
	case e.Tag != "":
		return tagIs(e.Digest)
	case e.Action == storage.EventPush:
		return manifest(true)
	case e.Action == storage.EventBlobPush:
		if _, ok, err := tx.Blob(e.Digest); err != nil || !ok {
			return fmt.Sprintf("blob %s not recorded", e.Digest), err
		}
		return link(true)
	case e.Action == storage.EventDeleteManifest, e.Action == storage.EventRetention,
		e.Action == storage.EventGC && e.Repo != "" && e.MediaType != "":
		return manifest(false)
	case e.Action == storage.EventDeleteBlob, e.Action == storage.EventGC && e.Repo != "":
		return link(false)
	case e.Action == storage.EventGC:
		if _, ok, err := tx.Blob(e.Digest); err != nil || ok {
			return fmt.Sprintf("blob %s still recorded", e.Digest), err
		}
		return "", nil
	}
	return "unknown event", nil
}

// eventKey is what identifies the change an event reports: everything but
// its actor and time.
func eventKey(e storage.Event) string {
	where := e.Repo
	if e.Tag != "" {
		where += ":" + e.Tag
	}
	s := fmt.Sprintf("%s %s %s", e.Action, where, e.Digest)
	if e.Previous != "" {
		s += " (was " + string(e.Previous) + ")"
	}
	if e.MediaType != "" || e.Size != 0 {
		s += fmt.Sprintf(" [%s %d]", e.MediaType, e.Size)
	}
	return s
}

// wantEvents checks that got are exactly want, in order, by the actor
// given and with a time.
func wantEvents(t *testing.T, what string, got []storage.Event, actor storage.Actor, want ...storage.Event) {
	t.Helper()
	keys := func(es []storage.Event) []string {
		out := []string{}
		for _, e := range es {
			out = append(out, eventKey(e))
		}
		return out
	}
	if g, w := keys(got), keys(want); !slices.Equal(g, w) {
		t.Errorf("%s: events\n\t%s\nwant\n\t%s", what, strings.Join(g, "\n\t"), strings.Join(w, "\n\t"))
	}
	for _, e := range got {
		if e.Actor != actor || e.Time.IsZero() {
			t.Errorf("%s: event %s by %+v at %s, want by %+v with a time", what, eventKey(e), e.Actor, e.Time, actor)
		}
	}
}

// Every change a client makes publishes exactly one event, after it
// commits, with the actor who made it: blob pushes (monolithic, through
// a session, by mount), manifest pushes and the tags they move, tag and
// manifest deletions, blob deletion, promotion, rollback. Steps that
// change nothing (opening, feeding or cancelling a session) publish
// nothing, and neither does a push that moves no tag but its manifest.
func testEventsOncePerChangeAfterCommit(t *testing.T, b Backends) {
	rec := &recorder{}
	s := open(t, b, withOptions(storage.Options{Sinks: []storage.Sink{rec}}))
	rec.svc = s.Service
	alice := storage.Actor{Kind: storage.ActorUser, Name: "alice", Address: "192.0.2.1"}
	actx := storage.WithActor(ctx(), alice)
	const repo = "apps/web"
	type ev = storage.Event

	cfgBytes := []byte(`{"architecture":"amd64","os":"linux"}`)
	cfg := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfgBytes), Size: int64(len(cfgBytes))}
	if _, err := s.PutBlob(actx, repo, cfg.Digest, bytes.NewReader(cfgBytes), cfg.Size); err != nil {
		t.Fatal(err)
	}
	wantEvents(t, "put blob", rec.take(t), alice, ev{Action: storage.EventBlobPush, Repo: repo, Digest: cfg.Digest, Size: cfg.Size})

	layerBytes := randomBytes(t, 4096)
	layer := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromBytes(layerBytes), Size: 4096}
	up, err := s.StartUpload(actx, repo, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendUpload(actx, repo, up.ID, 0, bytes.NewReader(layerBytes[:1000]), 1000); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UploadStatus(actx, repo, up.ID); err != nil {
		t.Fatal(err)
	}
	wantEvents(t, "open and feed a session", rec.take(t), alice)
	if _, err := s.CommitUpload(actx, repo, up.ID, layer.Digest, 1000, bytes.NewReader(layerBytes[1000:]), 3096); err != nil {
		t.Fatal(err)
	}
	wantEvents(t, "commit a session", rec.take(t), alice, ev{Action: storage.EventBlobPush, Repo: repo, Digest: layer.Digest, Size: layer.Size})
	up, err = s.StartUpload(actx, repo, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendUpload(actx, repo, up.ID, 0, bytes.NewReader(layerBytes), 4096); err != nil {
		t.Fatal(err)
	}
	if err := s.CancelUpload(actx, repo, up.ID); err != nil {
		t.Fatal(err)
	}
	wantEvents(t, "cancel a session", rec.take(t), alice)

	if _, err := s.MountBlob(actx, "apps/other", repo, cfg.Digest); err != nil {
		t.Fatal(err)
	}
	wantEvents(t, "mount", rec.take(t), alice, ev{Action: storage.EventBlobPush, Repo: "apps/other", Digest: cfg.Digest, Size: cfg.Size})

	body1 := imageBody(t, ocispec.Manifest{Config: cfg, Layers: []ocispec.Descriptor{layer}})
	m1 := digest.FromBytes(body1)
	push := func(body []byte, tags ...string) {
		t.Helper()
		if _, err := s.PutManifest(actx, repo, "", body, mustParse(t, body), tags); err != nil {
			t.Fatal(err)
		}
	}
	pushed := func(d digest.Digest, body []byte) ev {
		return ev{Action: storage.EventPush, Repo: repo, Digest: d, MediaType: ocispec.MediaTypeImageManifest, Size: int64(len(body))}
	}
	push(body1, "v1", "latest")
	wantEvents(t, "push with two tags", rec.take(t), alice, pushed(m1, body1),
		ev{Action: storage.EventTag, Repo: repo, Tag: "v1", Digest: m1},
		ev{Action: storage.EventTag, Repo: repo, Tag: "latest", Digest: m1})
	push(body1, "v1", "latest")
	wantEvents(t, "push again, moving no tag", rec.take(t), alice, pushed(m1, body1))

	body2 := imageBody(t, ocispec.Manifest{Config: cfg, Layers: []ocispec.Descriptor{}})
	m2 := digest.FromBytes(body2)
	push(body2, "latest")
	wantEvents(t, "push moving a tag", rec.take(t), alice, pushed(m2, body2),
		ev{Action: storage.EventTag, Repo: repo, Tag: "latest", Digest: m2, Previous: m1})

	if err := s.DeleteTag(actx, repo, "v1"); err != nil {
		t.Fatal(err)
	}
	wantEvents(t, "delete tag", rec.take(t), alice, ev{Action: storage.EventUntag, Repo: repo, Tag: "v1", Previous: m1})

	if _, err := s.RollbackTag(actx, repo, "latest", ""); err != nil {
		t.Fatal(err)
	}
	wantEvents(t, "rollback", rec.take(t), alice, ev{Action: storage.EventRollback, Repo: repo, Tag: "latest", Digest: m1, Previous: m2})
	if _, err := s.RollbackTag(actx, repo, "latest", m1); err != nil {
		t.Fatal(err)
	}
	wantEvents(t, "rollback to where the tag is", rec.take(t), alice)

	if _, _, err := s.Promote(actx, repo, "latest", "apps/prod", "release"); err != nil {
		t.Fatal(err)
	}
	wantEvents(t, "promote", rec.take(t), alice, ev{Action: storage.EventPromote, Repo: "apps/prod", Tag: "release", Digest: m1})
	if _, _, err := s.Promote(actx, repo, "latest", "apps/prod", "release"); err != nil {
		t.Fatal(err)
	}
	wantEvents(t, "promote again", rec.take(t), alice)

	if err := s.DeleteManifest(actx, repo, m2); err != nil {
		t.Fatal(err)
	}
	wantEvents(t, "delete an untagged manifest", rec.take(t), alice,
		ev{Action: storage.EventDeleteManifest, Repo: repo, Digest: m2, MediaType: ocispec.MediaTypeImageManifest, Size: int64(len(body2))})
	if err := s.DeleteManifest(actx, repo, m1); err != nil {
		t.Fatal(err)
	}
	wantEvents(t, "delete a tagged manifest", rec.take(t), alice,
		ev{Action: storage.EventUntag, Repo: repo, Tag: "latest", Previous: m1},
		ev{Action: storage.EventDeleteManifest, Repo: repo, Digest: m1, MediaType: ocispec.MediaTypeImageManifest, Size: int64(len(body1))})

	if err := s.DeleteBlob(actx, repo, layer.Digest); err != nil {
		t.Fatal(err)
	}
	wantEvents(t, "delete blob", rec.take(t), alice, ev{Action: storage.EventDeleteBlob, Repo: repo, Digest: layer.Digest})

	// An anonymous client's changes are the anonymous actor's.
	other := putBlob(t, s, repo, "application/octet-stream", []byte("anonymous"))
	wantEvents(t, "anonymous put blob", rec.take(t), storage.Actor{Kind: storage.ActorAnonymous},
		ev{Action: storage.EventBlobPush, Repo: repo, Digest: other.Digest, Size: other.Size})
}

// indexState is what the index records, as events speak of it.
type indexState struct {
	blobs     map[digest.Digest]int64
	links     map[string]digest.Digest    // repo@digest
	manifests map[string]meta.Manifest    // repo@digest
	tags      map[[2]string]digest.Digest // repo, tag
}

// readState reads the whole index.
func readState(t *testing.T, s *store) indexState {
	t.Helper()
	st := indexState{blobs: map[digest.Digest]int64{}, links: map[string]digest.Digest{},
		manifests: map[string]meta.Manifest{}, tags: map[[2]string]digest.Digest{}}
	view(t, s, func(tx meta.Tx) error {
		if err := tx.Blobs(func(d digest.Digest, b meta.Blob) error { st.blobs[d] = b.Size; return nil }); err != nil {
			return err
		}
		var repos []string
		if err := tx.Repositories("", func(repo string) error { repos = append(repos, repo); return nil }); err != nil {
			return err
		}
		for _, repo := range repos {
			err := tx.Links(repo, func(d digest.Digest, _ meta.Link) error {
				st.links[repo+"@"+string(d)] = d
				return nil
			})
			if err != nil {
				return err
			}
			err = tx.Manifests(repo, "", func(d digest.Digest, m meta.Manifest) error {
				st.manifests[repo+"@"+string(d)] = m
				return nil
			})
			if err != nil {
				return err
			}
			err = tx.Tags(repo, "", func(tag string, d digest.Digest) error {
				st.tags[[2]string{repo, tag}] = d
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	return st
}

// removals are the events of action that report what after lacks of
// before: one per tag, manifest, link and blob removed.
func removals(action string, before, after indexState) []storage.Event {
	var out []storage.Event
	for k, d := range before.tags {
		if _, ok := after.tags[k]; !ok {
			out = append(out, storage.Event{Action: action, Repo: k[0], Tag: k[1], Previous: d})
		}
	}
	for k, m := range before.manifests {
		if _, ok := after.manifests[k]; !ok {
			repo, d, _ := strings.Cut(k, "@")
			out = append(out, storage.Event{Action: action, Repo: repo, Digest: digest.Digest(d), MediaType: m.MediaType, Size: m.Size})
		}
	}
	for k, d := range before.links {
		if _, ok := after.links[k]; !ok {
			repo, _, _ := strings.Cut(k, "@")
			out = append(out, storage.Event{Action: action, Repo: repo, Digest: d})
		}
	}
	for d, size := range before.blobs {
		if _, ok := after.blobs[d]; !ok {
			out = append(out, storage.Event{Action: action, Digest: d, Size: size})
		}
	}
	return out
}

// wantSameEvents checks that got and want report the same changes, each
// once, in any order, by the actor given.
func wantSameEvents(t *testing.T, what string, got []storage.Event, actor storage.Actor, want []storage.Event) {
	t.Helper()
	sorted := func(es []storage.Event) []storage.Event {
		es = slices.Clone(es)
		slices.SortFunc(es, func(a, b storage.Event) int { return strings.Compare(eventKey(a), eventKey(b)) })
		return es
	}
	wantEvents(t, what, sorted(got), actor, sorted(want)...)
}

// repoMatcher matches the repositories named.
type repoMatcher []string

func (m repoMatcher) Match(name string) bool { return slices.Contains(m, name) }

// Retention and garbage collection publish one event per tag, manifest,
// link and blob they remove, after each commit: retention as the actor
// its caller names, garbage collection as Berth itself.
func testEventsOfRetentionAndGC(t *testing.T, b Backends) {
	rec := &recorder{}
	s := open(t, b, withOptions(storage.Options{Sinks: []storage.Sink{rec}}))
	rec.svc = s.Service
	system := storage.System()

	// Retention keeps the newest tag of "r" and deletes the untagged.
	for i := range 3 {
		putImage(t, s, "r", fmt.Sprint("retained", i), fmt.Sprint("t", i))
	}
	// Orphans-to-be for collection in "g": an image with a signature
	// tagged, and the image deleted by a client.
	img := putImage(t, s, "g", "signed")
	subject := describe(t, s, "g", img)
	sigCfg := putBlob(t, s, "g", ocispec.MediaTypeEmptyJSON, []byte("{}"))
	sigLayer := putBlob(t, s, "g", "application/example.sig", []byte("signature"))
	putManifest(t, s, "g", ocispec.Manifest{ArtifactType: "application/example.sig", Config: sigCfg,
		Layers: []ocispec.Descriptor{sigLayer}, Subject: &subject}, "sig")
	if err := s.DeleteManifest(ctx(), "g", img); err != nil {
		t.Fatal(err)
	}
	rec.take(t)

	// Retention deletes as the actor its caller names; collection as
	// Berth itself, always.
	retainer := storage.Actor{Kind: storage.ActorSystem, Name: "retention"}
	rctx := storage.WithActor(ctx(), retainer)
	before := readState(t, s)
	rep, err := retention.Apply(rctx, s.Service, []retention.Policy{{Repositories: repoMatcher{"r"}, KeepLast: 1, DeleteUntaggedAfter: time.Hour}},
		retention.Options{Now: time.Now().Add(2 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Tags) != 2 || len(rep.Manifests) != 2 {
		t.Fatalf("retention deleted %d tags and %d manifests, want 2 and 2: %+v", len(rep.Tags), len(rep.Manifests), rep)
	}
	after := readState(t, s)
	wantSameEvents(t, "retention", rec.take(t), retainer, removals(storage.EventRetention, before, after))

	before = after
	grep, err := gc.Collect(ctx(), s.Service, gc.Options{Grace: 0, Now: time.Now().Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	after = readState(t, s)
	events := rec.take(t)
	wantSameEvents(t, "gc", events, system, removals(storage.EventGC, before, after))
	// The orphan signature, its tag, the links and blobs of everything
	// deleted: each counted by the report as well.
	if grep.ManifestsRemoved != 1 || grep.LinksRemoved == 0 || grep.BlobsRemoved == 0 ||
		len(events) != 1+1+grep.LinksRemoved+grep.BlobsRemoved {
		t.Errorf("gc report %+v, %d events", grep, len(events))
	}

	// A second pass finds nothing and says nothing.
	if _, err := gc.Collect(ctx(), s.Service, gc.Options{Grace: 0, Now: time.Now().Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if _, err := retention.Apply(rctx, s.Service, []retention.Policy{{Repositories: repoMatcher{"r"}, KeepLast: 1, DeleteUntaggedAfter: time.Hour}},
		retention.Options{Now: time.Now().Add(2 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	wantEvents(t, "second passes", rec.take(t), system)
}

// A refused or rolled-back write publishes nothing, even when the part of
// it done before the refusal queued events, and changes nothing.
func testNoEventsForRefusedWrites(t *testing.T, b Backends) {
	rec := &recorder{}
	s := open(t, b, withOptions(storage.Options{
		Sinks: []storage.Sink{rec},
		Tags:  tagRulesFunc(func(repo, tag string) bool { return tag == "stable" }),
	}))
	rec.svc = s.Service
	const repo = "apps/web"
	a := putImage(t, s, repo, "a", "stable", "latest")
	other := putImage(t, s, repo, "other")
	putImage(t, s, "apps/prod", "prod", "stable")
	cfg := putBlob(t, s, repo, ocispec.MediaTypeImageConfig, []byte(`{"architecture":"arm","os":"linux"}`))
	content := []byte("some content")
	rec.take(t)
	before := readState(t, s)

	manifestErr := func(body []byte, tags ...string) error {
		_, err := s.PutManifest(ctx(), repo, "", body, mustParse(t, body), tags)
		return err
	}
	_, otherBody, err := s.GetManifest(ctx(), repo, string(other))
	if err != nil {
		t.Fatal(err)
	}
	failure := errors.New("the function fails")
	refusals := []struct {
		name string
		want error
		do   func() error
	}{
		{"push moving an immutable tag", storage.ErrTagImmutable, func() error { return manifestErr(otherBody, "latest", "stable") }},
		{"delete an immutable tag", storage.ErrTagImmutable, func() error { return s.DeleteTag(ctx(), repo, "stable") }},
		{"delete the manifest of an immutable tag", storage.ErrTagImmutable, func() error { return s.DeleteManifest(ctx(), repo, a) }},
		{"roll back an immutable tag", storage.ErrTagImmutable, func() error { _, err := s.RollbackTag(ctx(), repo, "stable", other); return err }},
		{"promote onto an immutable tag", storage.ErrTagImmutable, func() error { _, _, err := s.Promote(ctx(), repo, string(other), "apps/prod", "stable"); return err }},
		{"push referencing a missing blob", storage.ErrManifestBlobUnknown, func() error {
			missing := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromString("missing"), Size: 7}
			return manifestErr(imageBody(t, ocispec.Manifest{Config: cfg, Layers: []ocispec.Descriptor{missing}}), "new")
		}},
		{"push with a wrong size", storage.ErrManifestInvalid, func() error {
			wrong := cfg
			wrong.Size++
			return manifestErr(imageBody(t, ocispec.Manifest{Config: wrong, Layers: []ocispec.Descriptor{}}), "new")
		}},
		{"push with a digest mismatch", storage.ErrDigestMismatch, func() error {
			body := imageBody(t, ocispec.Manifest{Config: cfg, Layers: []ocispec.Descriptor{}})
			_, err := s.PutManifest(ctx(), repo, digest.FromString("not it"), body, mustParse(t, body), []string{"new"})
			return err
		}},
		{"blob with a digest mismatch", storage.ErrDigestMismatch, func() error {
			_, err := s.PutBlob(ctx(), repo, digest.FromString("not it"), bytes.NewReader(content), int64(len(content)))
			return err
		}},
		{"blob shorter than declared", storage.ErrSizeInvalid, func() error {
			_, err := s.PutBlob(ctx(), repo, digest.FromBytes(content), bytes.NewReader(content), int64(len(content))+1)
			return err
		}},
		{"session with a digest mismatch", storage.ErrDigestMismatch, func() error {
			up, err := s.StartUpload(ctx(), repo, "")
			if err != nil {
				return err
			}
			_, err = s.CommitUpload(ctx(), repo, up.ID, digest.FromString("not it"), 0, bytes.NewReader(content), int64(len(content)))
			return err
		}},
		{"mount of an absent blob", storage.ErrBlobUnknown, func() error {
			_, err := s.MountBlob(ctx(), repo, "", digest.FromBytes(content))
			return err
		}},
		{"delete of an unlinked blob", storage.ErrBlobUnknown, func() error { return s.DeleteBlob(ctx(), repo, digest.FromBytes(content)) }},
		{"delete of an absent manifest", storage.ErrManifestUnknown, func() error { return s.DeleteManifest(ctx(), repo, digest.FromBytes(content)) }},
		{"delete of an absent tag", storage.ErrManifestUnknown, func() error { return s.DeleteTag(ctx(), repo, "nope") }},
		{"rollback to an absent manifest", storage.ErrManifestUnknown, func() error {
			_, err := s.RollbackTag(ctx(), repo, "latest", digest.FromBytes(content))
			return err
		}},
		{"promote of an absent manifest", storage.ErrManifestUnknown, func() error { _, _, err := s.Promote(ctx(), repo, "nope", "apps/prod", "x"); return err }},
		{"update whose function fails", failure, func() error {
			return s.Update(ctx(), func(tx *storage.Tx) error {
				if _, err := tx.MoveTag(repo, "latest", other, storage.MovePush); err != nil {
					return err
				}
				if err := tx.RemoveManifest(repo, other, storage.MoveDeleteManifest); err != nil {
					return err
				}
				tx.Publish(storage.Event{Action: storage.EventPush, Repo: repo, Digest: other})
				return failure
			})
		}},
	}
	for _, r := range refusals {
		if err := r.do(); !errors.Is(err, r.want) {
			t.Errorf("%s: %v, want %v", r.name, err, r.want)
		}
		if events := rec.take(t); len(events) != 0 {
			t.Errorf("%s: published %v", r.name, events)
		}
		if diff := removals("removed", before, readState(t, s)); len(diff) != 0 {
			t.Fatalf("%s: changed the index: %v", r.name, diff)
		}
		if diff := removals("added", readState(t, s), before); len(diff) != 0 {
			t.Fatalf("%s: changed the index: %v", r.name, diff)
		}
	}
}

// A backend may run a transaction's function more than once: only the run
// that committed publishes, so every change still publishes one event.
func testRetriedUpdatePublishesOnce(t *testing.T, b Backends) {
	rec := &recorder{}
	s := open(t, b, withOptions(storage.Options{Sinks: []storage.Sink{rec}}),
		withIndex(func(ix meta.Store) meta.Store { return retryingIndex{ix} }))
	rec.svc = s.Service
	anon := storage.Actor{Kind: storage.ActorAnonymous}
	type ev = storage.Event
	const repo = "r"
	cfg := putBlob(t, s, repo, ocispec.MediaTypeImageConfig, []byte(`{"architecture":"ppc64le","os":"linux"}`))
	wantEvents(t, "put blob", rec.take(t), anon, ev{Action: storage.EventBlobPush, Repo: repo, Digest: cfg.Digest, Size: cfg.Size})
	body := imageBody(t, ocispec.Manifest{Config: cfg, Layers: []ocispec.Descriptor{}})
	d, _ := putBody(t, s, repo, body, "v1")
	wantEvents(t, "push", rec.take(t), anon,
		ev{Action: storage.EventPush, Repo: repo, Digest: d, MediaType: ocispec.MediaTypeImageManifest, Size: int64(len(body))},
		ev{Action: storage.EventTag, Repo: repo, Tag: "v1", Digest: d})
	if err := s.DeleteManifest(ctx(), repo, d); err != nil {
		t.Fatal(err)
	}
	wantEvents(t, "delete", rec.take(t), anon,
		ev{Action: storage.EventUntag, Repo: repo, Tag: "v1", Previous: d},
		ev{Action: storage.EventDeleteManifest, Repo: repo, Digest: d, MediaType: ocispec.MediaTypeImageManifest, Size: int64(len(body))})
	if moves, _, err := s.TagHistory(ctx(), repo, "v1", 0, 10); err != nil || len(moves) != 2 {
		t.Fatalf("history of v1 under retried transactions: %+v, %v; want two moves", moves, err)
	}
}
