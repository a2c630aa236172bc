package storagetest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage"
)

// holders runs q and fails the test on error.
func holders(t *testing.T, s *store, q storage.HolderQuery) ([]storage.Holder, string) {
	t.Helper()
	if q.N == 0 {
		q.N = 100
	}
	hs, next, err := s.Holders(ctx(), q)
	if err != nil {
		t.Fatalf("holders %+v: %v", q, err)
	}
	return hs, next
}

// holderKeys describes holders as "repo@digest as file via", in order.
func holderKeys(hs []storage.Holder, names map[digest.Digest]string) []string {
	out := []string{}
	for _, h := range hs {
		k := h.Repository + "@" + names[h.Digest] + " " + h.As
		if h.File != "" {
			k += " " + h.File
		}
		if h.Via != "" {
			k += " via " + names[h.Via]
		}
		out = append(out, k)
	}
	return out
}

// fileArtifact stores an artifact whose layers are files titled by their
// names, with an empty config, in repo under tags.
func fileArtifact(t *testing.T, s *store, repo string, files map[string][]byte, tags ...string) digest.Digest {
	t.Helper()
	cfg := putBlob(t, s, repo, ocispec.MediaTypeEmptyJSON, []byte("{}"))
	var layers []ocispec.Descriptor
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for n := range files {
			if !yield(n) {
				return
			}
		}
	}) {
		l := putBlob(t, s, repo, "application/octet-stream", files[name])
		l.Annotations = map[string]string{ocispec.AnnotationTitle: name}
		layers = append(layers, l)
	}
	d, _ := putManifest(t, s, repo, ocispec.Manifest{ArtifactType: "application/vnd.berth.files.v1", Config: cfg, Layers: layers}, tags...)
	return d
}

// Holders finds every artifact holding some content (as a titled file, a
// layer, a config, a manifest, or through an index), with the tags naming
// it now and the spans during which tags named it before, in the order of
// repository then digest, paged, and never in a repository the caller may
// not see.
func testHoldersFindsWhatHoldsContent(t *testing.T, b Backends) {
	s := open(t, b)
	jar := []byte("the bytes of app.jar")
	jarD := digest.FromBytes(jar)
	names := map[digest.Digest]string{}

	// apps/web: version 1.0.0 holds app.jar; prod named it, then moved to
	// 2.0.0, which holds app.jar and notes.txt.
	v1 := fileArtifact(t, s, "apps/web", map[string][]byte{"app.jar": jar}, "1.0.0", "prod")
	v2 := fileArtifact(t, s, "apps/web", map[string][]byte{"app.jar": jar, "notes.txt": []byte("notes")}, "2.0.0", "prod")
	names[v1], names[v2] = "v1", "v2"
	// apps/api: an image with the same bytes as a layer, in an index.
	cfg := putBlob(t, s, "apps/api", ocispec.MediaTypeImageConfig, []byte(`{"architecture":"amd64","os":"linux"}`))
	layer := putBlob(t, s, "apps/api", ocispec.MediaTypeImageLayer, jar)
	img, imgDesc := putManifest(t, s, "apps/api", ocispec.Manifest{Config: cfg, Layers: []ocispec.Descriptor{layer}})
	idx, _ := putIndex(t, s, "apps/api", []ocispec.Descriptor{imgDesc}, "v1")
	names[img], names[idx] = "img", "idx"
	// hidden/x: the same file, in a repository the caller may not see.
	hidden := fileArtifact(t, s, "hidden/x", map[string][]byte{"app.jar": jar, "secret.txt": []byte("s")}, "secret")
	names[hidden] = "hidden"
	// A blob only linked, referenced by nothing, holds nothing.
	putBlob(t, s, "apps/loose", "application/octet-stream", jar)

	visible := func(repo string) bool { return !strings.HasPrefix(repo, "hidden/") }
	hs, next := holders(t, s, storage.HolderQuery{Digest: jarD, Visible: visible})
	want := []string{"apps/api@img layer", "apps/api@idx index via img", "apps/web@v1 layer app.jar", "apps/web@v2 layer app.jar"}
	// Within a repository, by manifest digest.
	slices.SortStableFunc(want[:2], func(a, b string) int { return strings.Compare(digestOf(names, a), digestOf(names, b)) })
	slices.SortStableFunc(want[2:], func(a, b string) int { return strings.Compare(digestOf(names, a), digestOf(names, b)) })
	if got := holderKeys(hs, names); !slices.Equal(got, want) || next != "" {
		t.Fatalf("holders of app.jar = %q, next %q; want %q and no next", got, next, want)
	}
	for _, h := range hs {
		switch h.Digest {
		case v1:
			if !slices.Equal(h.Tags, []string{"1.0.0"}) {
				t.Errorf("v1 tags = %q, want [1.0.0]", h.Tags)
			}
			// prod named v1 until it moved to v2; 1.0.0 names it still.
			if len(h.History) != 2 {
				t.Fatalf("v1 history = %+v, want two spans", h.History)
			}
			var prod, tag storage.TagPeriod
			for _, p := range h.History {
				switch p.Tag {
				case "prod":
					prod = p
				case "1.0.0":
					tag = p
				}
			}
			if prod.Until == nil || prod.Action != storage.MovePush || prod.From.After(*prod.Until) {
				t.Errorf("v1's span under prod = %+v, want one that ended", prod)
			}
			if tag.Tag != "1.0.0" || tag.Until != nil {
				t.Errorf("v1's span under 1.0.0 = %+v, want one that goes on", tag)
			}
			if h.History[0].From.Before(h.History[1].From) {
				t.Errorf("v1 history not newest first: %+v", h.History)
			}
		case v2:
			if !slices.Equal(h.Tags, []string{"2.0.0", "prod"}) {
				t.Errorf("v2 tags = %q, want [2.0.0 prod]", h.Tags)
			}
			for _, p := range h.History {
				if p.Until != nil {
					t.Errorf("v2 span %+v ended; its tags name it still", p)
				}
			}
			if len(h.History) != 2 {
				t.Errorf("v2 history = %+v, want two spans", h.History)
			}
		case idx:
			if !slices.Equal(h.Tags, []string{"v1"}) || h.MediaType != ocispec.MediaTypeImageIndex {
				t.Errorf("index holder = %+v, want tag v1 and the index type", h)
			}
		case img:
			if len(h.Tags) != 0 || len(h.History) != 0 {
				t.Errorf("untagged image holder = %+v, want no tags and no history", h)
			}
		}
	}
	// Every repository, when all are visible.
	all, _ := holders(t, s, storage.HolderQuery{Digest: jarD})
	if len(all) != len(hs)+1 || all[len(all)-1].Digest != hidden {
		t.Errorf("with every repository visible: %q", holderKeys(all, names))
	}

	// Pages of one: the same holders, in the same order.
	var paged []storage.Holder
	last := ""
	for range 10 {
		page, next := holders(t, s, storage.HolderQuery{Digest: jarD, Visible: visible, N: 1, Last: last})
		paged = append(paged, page...)
		if next == "" {
			break
		}
		if strings.Contains(next, "hidden") {
			t.Fatalf("a cursor names a hidden repository: %q", next)
		}
		last = next
	}
	if got := holderKeys(paged, names); !slices.Equal(got, want) {
		t.Errorf("paged holders = %q, want %q", got, want)
	}

	// The config, and the image manifest itself.
	hs, _ = holders(t, s, storage.HolderQuery{Digest: cfg.Digest, Visible: visible})
	if got := holderKeys(hs, names); !slices.Equal(got, []string{"apps/api@img config", "apps/api@idx index via img"}) &&
		!slices.Equal(got, []string{"apps/api@idx index via img", "apps/api@img config"}) {
		t.Errorf("holders of the config = %q", got)
	}
	hs, _ = holders(t, s, storage.HolderQuery{Digest: img, Visible: visible})
	got := holderKeys(hs, names)
	slices.Sort(got)
	if !slices.Equal(got, []string{"apps/api@idx child", "apps/api@img manifest"}) {
		t.Errorf("holders of the image manifest = %q", got)
	}

	// Content nobody holds; a malformed cursor.
	if hs, next := holders(t, s, storage.HolderQuery{Digest: digest.FromString("nothing")}); len(hs) != 0 || next != "" {
		t.Errorf("holders of unknown content = %+v, %q", hs, next)
	}
	if _, _, err := s.Holders(ctx(), storage.HolderQuery{Digest: jarD, N: 1, Last: "no-cursor"}); !errors.Is(err, storage.ErrQueryInvalid) {
		t.Errorf("a malformed cursor: %v, want ErrQueryInvalid", err)
	}
	if _, _, err := s.Holders(ctx(), storage.HolderQuery{Digest: "sha256:short", N: 1}); err == nil {
		t.Error("a malformed digest was accepted")
	}
}

// digestOf is the digest behind a holder key's short name.
func digestOf(names map[digest.Digest]string, key string) string {
	short := strings.Fields(strings.SplitN(key, "@", 2)[1])[0]
	for d, n := range names {
		if n == short {
			return string(d)
		}
	}
	panic(fmt.Sprintf("no digest named %q", short))
}
