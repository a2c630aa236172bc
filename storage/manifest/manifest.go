// Package manifest parses and validates the manifest formats Berth stores:
// OCI image manifests and indexes, and Docker schema 2 manifests and manifest
// lists. It extracts what the index needs (references, subject, artifact type,
// annotations) and never alters the bytes it was given.
package manifest

import (
	"bytes"
	_ "crypto/sha256" // digest algorithms must be linked in
	_ "crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"regexp"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Media types of the manifests Berth accepts.
const (
	MediaTypeOCIManifest        = ocispec.MediaTypeImageManifest
	MediaTypeOCIIndex           = ocispec.MediaTypeImageIndex
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"

	mediaTypeDockerForeignLayer = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
)

// ErrInvalid is wrapped by every validation error Parse returns.
var ErrInvalid = errors.New("manifest invalid")

// ErrUnsupportedMediaType is wrapped when the media type is not a manifest
// type Berth stores.
var ErrUnsupportedMediaType = fmt.Errorf("%w: unsupported manifest media type", ErrInvalid)

// Manifest is what Berth learns from a manifest body.
type Manifest struct {
	// MediaType is the manifest's own media type.
	MediaType string
	// ArtifactType is the type reported by the referrers API: the
	// artifactType field, or for an image manifest without one, the config
	// media type.
	ArtifactType string
	// Subject is the manifest this one refers to, if any.
	Subject *ocispec.Descriptor
	// Annotations are the manifest's top-level annotations.
	Annotations map[string]string
	// Blobs are the config and layers the repository must hold for the
	// manifest to be complete. Foreign and non-distributable layers are
	// left out: the registry is not expected to have them.
	Blobs []ocispec.Descriptor
	// Manifests are the child manifests of an index.
	Manifests []ocispec.Descriptor
}

// IsIndex reports whether the media type is an index or manifest list.
func IsIndex(mediaType string) bool {
	return mediaType == MediaTypeOCIIndex || mediaType == MediaTypeDockerManifestList
}

// Supported reports whether mediaType is a manifest media type Berth stores.
func Supported(mediaType string) bool {
	switch mediaType {
	case MediaTypeOCIManifest, MediaTypeOCIIndex, MediaTypeDockerManifest, MediaTypeDockerManifestList:
		return true
	}
	return false
}

// wire is the union of the manifest and index fields Berth reads.
type wire struct {
	SchemaVersion *int                 `json:"schemaVersion"`
	MediaType     string               `json:"mediaType"`
	ArtifactType  string               `json:"artifactType"`
	Config        *ocispec.Descriptor  `json:"config"`
	Layers        []ocispec.Descriptor `json:"layers"`
	Manifests     []ocispec.Descriptor `json:"manifests"`
	Subject       *ocispec.Descriptor  `json:"subject"`
	Annotations   map[string]string    `json:"annotations"`
}

// Parse validates body as a manifest sent with the given Content-Type and
// returns what it references. contentType may carry parameters; it may be
// empty when the body names its own media type.
func Parse(contentType string, body []byte) (*Manifest, error) {
	if err := checkKeys(body); err != nil {
		return nil, err
	}
	var w wire
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&w); err != nil {
		return nil, fmt.Errorf("%w: body is not valid JSON: %v", ErrInvalid, err)
	}
	// Anything but white space after the document is refused. dec.More is
	// not enough: it reports false before a stray "}" or "]".
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: trailing data after the JSON document", ErrInvalid)
	}
	ct := ""
	if contentType != "" {
		parsed, _, err := mime.ParseMediaType(contentType)
		if err != nil {
			return nil, fmt.Errorf("%w: Content-Type %q: %v", ErrInvalid, contentType, err)
		}
		ct = parsed
	}
	mt := w.MediaType
	switch {
	case mt == "" && ct == "":
		return nil, fmt.Errorf("%w: neither Content-Type nor mediaType names the manifest type", ErrInvalid)
	case mt == "":
		mt = ct
	case ct != "" && ct != mt:
		return nil, fmt.Errorf("%w: Content-Type %q does not match mediaType %q", ErrInvalid, ct, mt)
	}
	if !Supported(mt) {
		return nil, fmt.Errorf("%w %q", ErrUnsupportedMediaType, mt)
	}
	if w.SchemaVersion == nil || *w.SchemaVersion != 2 {
		return nil, fmt.Errorf("%w: schemaVersion must be 2", ErrInvalid)
	}
	m := &Manifest{MediaType: mt, Annotations: w.Annotations}
	docker := strings.HasPrefix(mt, "application/vnd.docker.")
	if docker && (w.ArtifactType != "" || w.Subject != nil) {
		return nil, fmt.Errorf("%w: %s cannot carry artifactType or subject", ErrInvalid, mt)
	}
	if w.Subject != nil {
		if err := validateDescriptor("subject", *w.Subject); err != nil {
			return nil, err
		}
		m.Subject = w.Subject
	}
	if w.ArtifactType != "" && !validMediaType(w.ArtifactType) {
		return nil, fmt.Errorf("%w: artifactType %q is not a media type", ErrInvalid, w.ArtifactType)
	}
	m.ArtifactType = w.ArtifactType

	if IsIndex(mt) {
		if w.Config != nil || w.Layers != nil {
			return nil, fmt.Errorf("%w: an index has no config or layers", ErrInvalid)
		}
		if w.Manifests == nil {
			return nil, fmt.Errorf("%w: index has no manifests field", ErrInvalid)
		}
		for i, d := range w.Manifests {
			if err := validateDescriptor(fmt.Sprintf("manifests[%d]", i), d); err != nil {
				return nil, err
			}
		}
		m.Manifests = w.Manifests
		return m, nil
	}

	if w.Manifests != nil {
		return nil, fmt.Errorf("%w: an image manifest has no manifests field", ErrInvalid)
	}
	if w.Config == nil {
		return nil, fmt.Errorf("%w: config descriptor is missing", ErrInvalid)
	}
	if err := validateDescriptor("config", *w.Config); err != nil {
		return nil, err
	}
	if w.Layers == nil && docker {
		return nil, fmt.Errorf("%w: layers field is missing", ErrInvalid)
	}
	if m.ArtifactType == "" {
		m.ArtifactType = w.Config.MediaType
	}
	m.Blobs = append(m.Blobs, *w.Config)
	for i, d := range w.Layers {
		if err := validateDescriptor(fmt.Sprintf("layers[%d]", i), d); err != nil {
			return nil, err
		}
		if foreign(d) {
			continue
		}
		m.Blobs = append(m.Blobs, d)
	}
	return m, nil
}

// specFields are the keys of manifests, indexes and descriptors that Berth
// reads. Go's JSON decoding matches keys without regard to case, so
// "MediaType" would be read as "mediaType" here but ignored by a stricter
// client: such near-misses are refused, so that Berth and every client see
// the same manifest.
var specFields = []string{"schemaVersion", "mediaType", "artifactType", "config", "layers", "manifests",
	"subject", "annotations", "digest", "size", "urls", "data", "platform"}

// checkKeys refuses a body in which an object repeats a key (decoders
// disagree on which one wins) or spells one of specFields in another case.
func checkKeys(body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	// free marks an annotations map, whose keys are the user's own.
	type object struct {
		keys map[string]bool
		free bool
	}
	var stack []*object
	expectKey := false
	lastKey := ""
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return nil // malformed JSON is reported by the decoder itself
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{':
				stack = append(stack, &object{keys: map[string]bool{}, free: lastKey == "annotations"})
				expectKey = true
				lastKey = ""
				continue
			case '}':
				stack = stack[:len(stack)-1]
			case '[':
				stack = append(stack, nil)
				expectKey = false
				continue
			case ']':
				stack = stack[:len(stack)-1]
			}
		case string:
			if expectKey {
				top := stack[len(stack)-1]
				if top.keys[v] {
					return fmt.Errorf("%w: key %q appears twice in one object", ErrInvalid, v)
				}
				top.keys[v] = true
				for _, f := range specFields {
					if !top.free && v != f && strings.EqualFold(v, f) {
						return fmt.Errorf("%w: key %q must be spelled %q", ErrInvalid, v, f)
					}
				}
				expectKey = false
				lastKey = v
				continue
			}
		}
		// After a value inside an object, the next token is a key.
		expectKey = len(stack) > 0 && stack[len(stack)-1] != nil
		lastKey = ""
	}
}

// foreign reports whether a layer lives outside the registry, so that its
// absence does not make a manifest incomplete.
func foreign(d ocispec.Descriptor) bool {
	if len(d.URLs) > 0 {
		return true
	}
	// Non-distributable layer types are deprecated for new content but
	// still valid to receive, so they are named here, not taken from
	// image-spec's deprecated constants.
	switch d.MediaType {
	case mediaTypeDockerForeignLayer,
		"application/vnd.oci.image.layer.nondistributable.v1.tar",
		"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
		"application/vnd.oci.image.layer.nondistributable.v1.tar+zstd":
		return true
	}
	return false
}

// mediaTypeRE is the RFC 6838 type/subtype grammar.
var mediaTypeRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$`)

func validMediaType(s string) bool { return mediaTypeRE.MatchString(s) }

func validateDescriptor(where string, d ocispec.Descriptor) error {
	if !validMediaType(d.MediaType) {
		return fmt.Errorf("%w: %s: mediaType %q is not a media type", ErrInvalid, where, d.MediaType)
	}
	if err := d.Digest.Validate(); err != nil {
		return fmt.Errorf("%w: %s: digest %q: %v", ErrInvalid, where, d.Digest, err)
	}
	if d.Size < 0 {
		return fmt.Errorf("%w: %s: negative size %d", ErrInvalid, where, d.Size)
	}
	if d.Data != nil {
		if int64(len(d.Data)) != d.Size {
			return fmt.Errorf("%w: %s: data holds %d bytes, size says %d", ErrInvalid, where, len(d.Data), d.Size)
		}
		if d.Digest.Algorithm().FromBytes(d.Data) != d.Digest {
			return fmt.Errorf("%w: %s: data does not match digest %s", ErrInvalid, where, d.Digest)
		}
	}
	return nil
}

// Descriptor returns the descriptor of body as a referrer: its media type,
// digest, size, artifact type and annotations.
func (m *Manifest) Descriptor(d digest.Digest, size int64) ocispec.Descriptor {
	return ocispec.Descriptor{
		MediaType:    m.MediaType,
		Digest:       d,
		Size:         size,
		ArtifactType: m.ArtifactType,
		Annotations:  m.Annotations,
	}
}
