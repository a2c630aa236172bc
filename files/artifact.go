package files

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/distribution"
	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/manifest"
)

// The layout of a version, as docs/files.md documents it: an OCI image
// manifest of artifact type ArtifactType, with the empty config
// (application/vnd.oci.empty.v1+json, "{}"), one layer per file whose
// org.opencontainers.image.title annotation is the file's name, and the
// version's metadata in its annotations; the version is its tag.
const (
	// ArtifactType is the artifact type of a version uploaded here.
	ArtifactType = "application/vnd.berth.files.v1"
	// DefaultMediaType is the media type of a file's layer when the
	// upload names none.
	DefaultMediaType = "application/octet-stream"
	// maxFiles bounds the files of one version.
	maxFiles = 1000
)

// The annotations the metadata of an upload sets.
const (
	annotationVersion     = ocispec.AnnotationVersion
	annotationRevision    = ocispec.AnnotationRevision
	annotationCreated     = ocispec.AnnotationCreated
	annotationSource      = ocispec.AnnotationSource
	annotationDescription = ocispec.AnnotationDescription
)

// version is a version read from the store.
type version struct {
	info storage.ManifestInfo
	body []byte
	m    ocispec.Manifest
}

// readVersion reads the manifest the version's tag names; nil when there
// is none.
func (h *Handler) readVersion(ctx context.Context, repo, tag string) (*version, error) {
	info, body, err := h.store.GetManifest(ctx, repo, tag)
	if errors.Is(err, storage.ErrManifestUnknown) || errors.Is(err, storage.ErrNameUnknown) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	v := &version{info: info, body: body}
	if !manifest.IsIndex(info.MediaType) {
		// Any manifest decodes; isFiles says whether it is a set of files.
		_ = json.Unmarshal(body, &v.m)
	}
	return v, nil
}

// isFiles reports whether the version is a set of files: an OCI image
// manifest whose layers all have a title, as Berth and oras write them.
func (v *version) isFiles() bool {
	if v.info.MediaType != ocispec.MediaTypeImageManifest {
		return false
	}
	for _, l := range v.m.Layers {
		if l.Annotations[ocispec.AnnotationTitle] == "" {
			return false
		}
	}
	return true
}

// file returns the layer titled name.
func (v *version) file(name string) (ocispec.Descriptor, bool) {
	for _, l := range v.m.Layers {
		if l.Annotations[ocispec.AnnotationTitle] == name {
			return l, true
		}
	}
	return ocispec.Descriptor{}, false
}

// notFiles refuses to treat a version that is no set of files as one.
func notFiles(repo, tag string, v *version, status int) *distribution.Error {
	what := v.info.MediaType
	if v.info.MediaType == ocispec.MediaTypeImageManifest {
		what = "an OCI image manifest with layers that have no title (a container image)"
	}
	return &distribution.Error{Code: distribution.CodeManifestInvalid, Status: status,
		Detail:  map[string]string{"repository": repo, "version": tag, "mediaType": v.info.MediaType},
		Message: fmt.Sprintf("%s:%s is %s, not a set of files", repo, tag, what)}
}

// emptyConfig is the config of a version: the empty JSON object.
var emptyConfig = ocispec.DescriptorEmptyJSON

// build returns the manifest of version tag after adding files (which
// replace the files of the same names) with annotations: a new version
// over nothing, or the next manifest of base, whose config, artifact type,
// other files and annotations it keeps.
func build(base *version, tag string, added []ocispec.Descriptor, annotations map[string]string) ocispec.Manifest {
	m := ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: ArtifactType,
		Config:       emptyConfig,
	}
	if base != nil {
		m = base.m
		m.Versioned, m.MediaType = specs.Versioned{SchemaVersion: 2}, ocispec.MediaTypeImageManifest
		m.Layers = slices.Clone(m.Layers)
		m.Annotations = cloneMap(m.Annotations)
	}
	for _, f := range added {
		title := f.Annotations[ocispec.AnnotationTitle]
		if i := slices.IndexFunc(m.Layers, func(l ocispec.Descriptor) bool { return l.Annotations[ocispec.AnnotationTitle] == title }); i >= 0 {
			m.Layers[i] = f
		} else {
			m.Layers = append(m.Layers, f)
		}
	}
	if m.Layers == nil {
		m.Layers = []ocispec.Descriptor{}
	}
	if m.Annotations == nil {
		m.Annotations = map[string]string{}
	}
	for k, v := range annotations {
		m.Annotations[k] = v
	}
	m.Annotations[annotationVersion] = tag
	return m
}

func cloneMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// metadata is what an upload says about its version and files, from its
// query parameters and form fields.
type metadata struct {
	// annotations are set on the version's manifest.
	annotations map[string]string
	// sums are the digests the client gives, by file name ("" for a
	// digest that names no file, allowed with one file).
	sums map[string]digest.Digest
}

// Bounds of the metadata of one upload.
const (
	maxMetaValue = 4096
	maxMetaKey   = 256
	maxMetaPairs = 64
	maxSums      = maxFiles
)

// metaParams lists the metadata parameters, for messages.
const metaParams = "revision, created, source, description, annotation (KEY=VALUE, repeatable), sha256 (sha256sum lines), digest"

func newMetadata() *metadata {
	return &metadata{annotations: map[string]string{}, sums: map[string]digest.Digest{}}
}

// badMeta is the error of a bad metadata parameter.
func badMeta(param, value, format string, args ...any) *distribution.Error {
	if len(value) > 64 {
		value = value[:64] + "..."
	}
	return &distribution.Error{Code: distribution.CodeManifestInvalid, Status: http.StatusBadRequest,
		Detail: map[string]string{param: value}, Message: param + ": " + fmt.Sprintf(format, args...)}
}

// add reads one metadata parameter; known reports whether name is one.
func (md *metadata) add(name, value string) (known bool, err error) {
	if len(value) > maxMetaValue {
		return true, badMeta(name, value, "longer than %d bytes", maxMetaValue)
	}
	setAnn := func(k string) error {
		if prev, ok := md.annotations[k]; ok && prev != value {
			return badMeta(name, value, "given twice with different values")
		}
		if len(md.annotations) >= maxMetaPairs {
			return badMeta(name, value, "more than %d annotations", maxMetaPairs)
		}
		md.annotations[k] = value
		return nil
	}
	switch name {
	case "revision":
		return true, setAnn(annotationRevision)
	case "source":
		return true, setAnn(annotationSource)
	case "description":
		return true, setAnn(annotationDescription)
	case "created":
		if t, perr := time.Parse(time.RFC3339, value); perr != nil || t.IsZero() {
			return true, badMeta(name, value, "want an RFC 3339 time such as 2024-05-01T12:00:00Z, got %q", value)
		}
		return true, setAnn(annotationCreated)
	case "annotation":
		k, v, ok := strings.Cut(value, "=")
		if !ok || k == "" || len(k) > maxMetaKey {
			return true, badMeta(name, value, "want KEY=VALUE with a key of 1 to %d bytes, got %q", maxMetaKey, value)
		}
		if k == annotationVersion {
			return true, badMeta(name, value, "the version is the path's; %s cannot be set", annotationVersion)
		}
		if prev, ok := md.annotations[k]; ok && prev != v {
			return true, badMeta(name, value, "key %q given twice with different values", k)
		}
		if len(md.annotations) >= maxMetaPairs {
			return true, badMeta(name, value, "more than %d annotations", maxMetaPairs)
		}
		md.annotations[k] = v
		return true, nil
	case "sha256":
		return true, md.addSums(value)
	case "digest":
		d, perr := digest.Parse(value)
		if perr != nil {
			return true, &distribution.Error{Code: distribution.CodeDigestInvalid, Detail: map[string]string{"digest": value},
				Message: fmt.Sprintf("digest: %q is not a digest (sha256:<64 hex digits>): %v", value, perr)}
		}
		return true, md.addSum("", d)
	}
	return false, nil
}

// addSums reads lines in the format of sha256sum: "<hex>  <name>" (or
// "<hex> *<name>"), or a bare "<hex>".
func (md *metadata) addSums(value string) error {
	for _, line := range strings.Split(value, "\n") {
		line = strings.TrimRight(line, "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		hex, name, _ := strings.Cut(line, " ")
		name = strings.TrimPrefix(strings.TrimPrefix(name, " "), "*")
		d := digest.NewDigestFromEncoded(digest.SHA256, hex)
		if d.Validate() != nil {
			return badMeta("sha256", line, "want the lines sha256sum prints, \"<64 hex digits>  <file name>\", got %q", line)
		}
		if err := md.addSum(name, d); err != nil {
			return err
		}
	}
	return nil
}

func (md *metadata) addSum(name string, d digest.Digest) error {
	if prev, ok := md.sums[name]; ok && prev != d {
		return badMeta("sha256", name, "two different digests given for %q", name)
	}
	if len(md.sums) >= maxSums {
		return badMeta("sha256", name, "more than %d digests", maxSums)
	}
	md.sums[name] = d
	return nil
}

// fromQuery reads the metadata of the query string; any other parameter
// is an error, so that a typo does not pass silently.
func (md *metadata) fromQuery(q map[string][]string) error {
	for name, values := range q {
		for _, v := range values {
			known, err := md.add(name, v)
			if err != nil {
				return err
			}
			if !known {
				return badMeta(name, v, "unknown parameter; the metadata parameters are %s", metaParams)
			}
		}
	}
	return nil
}

// check verifies the digests the client gave against the files received:
// each must name a file received (a digest without a name needs exactly
// one file) and match its content.
func (md *metadata) check(received []staged) error {
	for name, want := range md.sums {
		var f *staged
		if name == "" {
			if len(received) != 1 {
				return badMeta("digest", string(want), "a digest without a file name needs exactly one file; %d were sent (give sha256 lines \"<hex>  <name>\")", len(received))
			}
			f = &received[0]
		} else {
			for i := range received {
				if received[i].name == name {
					f = &received[i]
				}
			}
			if f == nil {
				return badMeta("sha256", name, "a digest is given for %q, which was not sent", name)
			}
		}
		if want.Algorithm() != digest.SHA256 {
			// The upload hashes with sha256 only.
			return &distribution.Error{Code: distribution.CodeDigestInvalid, Detail: map[string]string{"digest": string(want)},
				Message: fmt.Sprintf("%s: only sha256 digests can be checked", want)}
		}
		if f.digest != want {
			return &distribution.Error{Code: distribution.CodeDigestInvalid,
				Detail:  map[string]string{"file": f.name, "digest": string(want), "received": string(f.digest)},
				Message: fmt.Sprintf("%s: the client says %s, the %d bytes received hash to %s", f.name, want, f.size, f.digest)}
		}
	}
	return nil
}
