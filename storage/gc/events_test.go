package gc_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/gc"
	"github.com/berth-registry/berth/storage/internal/clienttest"
)

// A collection publishes one gc event per manifest, tag, link and blob it
// removes, by the system, after each removal commits; a dry run publishes
// none.
func TestGCEvents(t *testing.T) {
	ctx := context.Background()
	sink := &recorder{}
	s := clienttest.Open(t, "", clienttest.Options{Core: storage.Options{Sinks: []storage.Sink{sink}}})
	subject := s.PutImage("app", "subject")
	s.PutImage("app", "kept", "latest")
	cfg := s.PutBlob("app", ocispec.MediaTypeImageConfig, []byte(`{}`))
	layer := s.PutBlob("app", "application/vnd.test", []byte("signature"))
	sig, sigDesc := s.PutManifest("app", ocispec.Manifest{Config: cfg, Layers: []ocispec.Descriptor{layer},
		Subject: &ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: subject, Size: 2}}, "sig")
	_, subjBody, err := s.Svc.GetManifest(ctx, "app", string(subject))
	if err != nil {
		t.Fatal(err)
	}
	subjM := clienttest.Parse(t, subjBody)
	stray := s.PutBlob("gone", "application/octet-stream", []byte("stray"))
	if err := s.Svc.DeleteManifest(ctx, "app", subject); err != nil {
		t.Fatal(err)
	}
	s.Age(2 * time.Hour)
	sink.take()

	dry := collect(t, s, gc.Options{Grace: time.Hour, DryRun: true})
	if events := sink.take(); len(events) != 0 {
		t.Fatalf("a dry run published %+v", events)
	}
	rep := collect(t, s, gc.Options{Grace: time.Hour})
	events := sink.take()

	// What goes: the orphan referrer sig (and its tag), the links of the
	// subject's blobs and of sig's (the shared {} config is sig's only),
	// the stray's link; the blobs of all of them, with both bodies.
	type ev struct {
		repo, tag string
		d, prev   digest.Digest
		media     string
		size      int64
	}
	want := []ev{
		{repo: "app", d: sig, media: ocispec.MediaTypeImageManifest, size: sigDesc.Size},
		{repo: "app", tag: "sig", prev: sig},
		{repo: "gone", d: stray.Digest},
		{d: subject, size: int64(len(subjBody))},
		{d: sig, size: sigDesc.Size},
		{d: stray.Digest, size: stray.Size},
	}
	for _, b := range append(slices.Clone(subjM.Blobs), cfg, layer) {
		want = append(want, ev{repo: "app", d: b.Digest}, ev{d: b.Digest, size: b.Size})
	}
	var got []ev
	for _, e := range events {
		if e.Action != storage.EventGC || e.Actor.Kind != storage.ActorSystem || e.Time.IsZero() {
			t.Errorf("event %+v: want a gc event by the system, with its time", e)
		}
		got = append(got, ev{repo: e.Repo, tag: e.Tag, d: e.Digest, prev: e.Previous, media: e.MediaType, size: e.Size})
	}
	key := func(e ev) string { return fmt.Sprintf("%+v", e) }
	sortEv := func(es []ev) { slices.SortFunc(es, func(a, b ev) int { return strings.Compare(key(a), key(b)) }) }
	sortEv(got)
	sortEv(want)
	if !slices.Equal(got, want) {
		t.Fatalf("events\n got %+v\nwant %+v", got, want)
	}
	// One event per removal the report counts (the tag is the manifest's).
	if n := rep.ManifestsRemoved*2 + rep.LinksRemoved + rep.BlobsRemoved; n != len(events) {
		t.Fatalf("report %+v counts %d removals, %d events", rep, n, len(events))
	}
	dry.Duration, rep.Duration, dry.DryRun = 0, 0, false
	if dry != rep {
		t.Fatalf("dry run predicted %+v, gc did %+v", dry, rep)
	}
	// Nothing left to remove: nothing published.
	collect(t, s, gc.Options{Grace: time.Hour})
	if events := sink.take(); len(events) != 0 {
		t.Fatalf("a collection that removed nothing published %+v", events)
	}
}
