package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// FuzzParse checks that Parse never panics, that every error it returns is
// a validation error, and that what it accepts is consistent: a supported
// media type, valid descriptors, the config first for an image manifest, no
// blobs for an index, and the same result when parsed again.
func FuzzParse(f *testing.F) {
	for _, c := range validCases {
		f.Add(c.contentType, []byte(c.body))
	}
	for _, c := range invalidCases {
		f.Add(c.contentType, []byte(c.body))
	}
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		orig := bytes.Clone(body)
		m, err := Parse(contentType, body)
		if !bytes.Equal(body, orig) {
			t.Fatal("Parse modified the body")
		}
		if err != nil {
			if m != nil {
				t.Fatalf("Parse returned %+v with error %v", m, err)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if !Supported(m.MediaType) {
			t.Fatalf("accepted media type %q", m.MediaType)
		}
		if m.ArtifactType != "" && !validMediaType(m.ArtifactType) {
			t.Fatalf("artifact type %q is not a media type", m.ArtifactType)
		}
		checkDescriptors(t, "blob", m.Blobs)
		checkDescriptors(t, "manifest", m.Manifests)
		if m.Subject != nil {
			checkDescriptors(t, "subject", []ocispec.Descriptor{*m.Subject})
		}

		// What the body says, read independently of Parse.
		var w struct {
			Config *ocispec.Descriptor  `json:"config"`
			Layers []ocispec.Descriptor `json:"layers"`
		}
		if err := json.Unmarshal(body, &w); err != nil {
			t.Fatalf("Parse accepted a body json.Unmarshal refuses: %v", err)
		}
		if IsIndex(m.MediaType) {
			if len(m.Blobs) != 0 {
				t.Fatalf("index has blobs %v", m.Blobs)
			}
			if m.Manifests == nil {
				t.Fatal("index has a nil manifests list")
			}
		} else {
			if m.Manifests != nil {
				t.Fatalf("image manifest has child manifests %v", m.Manifests)
			}
			if w.Config == nil || len(m.Blobs) == 0 || !reflect.DeepEqual(m.Blobs[0], *w.Config) {
				t.Fatalf("Blobs[0] is not the config: blobs %v, config %v", m.Blobs, w.Config)
			}
			if len(m.Blobs) > 1+len(w.Layers) {
				t.Fatalf("%d blobs from %d layers", len(m.Blobs), len(w.Layers))
			}
			if m.ArtifactType == "" {
				t.Fatal("image manifest without an artifact type")
			}
		}

		again, err := Parse(contentType, body)
		if err != nil {
			t.Fatalf("second Parse failed: %v", err)
		}
		if !reflect.DeepEqual(m, again) {
			t.Fatalf("Parse is not deterministic:\n%+v\n%+v", m, again)
		}
	})
}

// checkDescriptors fails the test if a descriptor Parse returned has an
// invalid digest or a negative size.
func checkDescriptors(t *testing.T, what string, ds []ocispec.Descriptor) {
	t.Helper()
	for i, d := range ds {
		if err := d.Digest.Validate(); err != nil {
			t.Fatalf("%s %d: digest %q: %v", what, i, d.Digest, err)
		}
		if d.Size < 0 {
			t.Fatalf("%s %d: size %d", what, i, d.Size)
		}
	}
}
