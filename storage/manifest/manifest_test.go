package manifest

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Digests of the seed manifests: sha256 of their names, so well formed and
// distinct. emptyDigest is the digest of "{}", the OCI empty descriptor.
const (
	configDigest  = "sha256:b79606fb3afea5bd1609ed40b622142f1c98125abcfe89a76a661b0e8e343910"
	layer1Digest  = "sha256:77ea7eee3d80b1a38f83906dd3048e2689457eb90e18a7d12f839c5ae37106a2"
	layer2Digest  = "sha256:95cf1a2e1698fe3ca1fcc3f653119146b271d0b62e487ec264441e886a11bd06"
	child1Digest  = "sha256:c56d62f1e317670d153efd4673f39b7141249845c6d885f974aca96ae66858c0"
	child2Digest  = "sha256:2c7c4f92b804280c22e7c3c6386322f12f16296942fd7a3b450c2eed107aa5ab"
	subjectDigest = "sha256:a9491f4c1bf7b0cffbadcba2db8f028e4b3f2867cb59e1f3a0bc1968f3c51242"
	foreignDigest = "sha256:656771905e1ef731f65cd0a0d9fb061238380a1a012e6abdf846ecc7d2ea36fd"
	emptyDigest   = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
	sha512Digest  = "sha512:9b71d224bd62f3785d96d46ad3ea3d73319bfbc2890caadae2dff72519673ca72323c3d99ba5c11d7c7acc6e14b8c5da0c4663475c2e5c3adef46f73bcdec043"
)

// Real manifests of each supported type, as clients push them.
const (
	ociImage = `{
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.manifest.v1+json",
  "config": {
    "mediaType": "application/vnd.oci.image.config.v1+json",
    "digest": "` + configDigest + `",
    "size": 1470
  },
  "layers": [
    {
      "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
      "digest": "` + layer1Digest + `",
      "size": 3623807
    },
    {
      "mediaType": "application/vnd.oci.image.layer.v1.tar+zstd",
      "digest": "` + layer2Digest + `",
      "size": 32,
      "annotations": {"org.opencontainers.image.title": "app.tar.zst"}
    }
  ],
  "annotations": {"org.opencontainers.image.created": "2024-01-02T03:04:05Z"}
}`

	// ociArtifact is a signature-like artifact: artifactType, the empty
	// config carried inline in its data field, and a subject.
	ociArtifact = `{
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.manifest.v1+json",
  "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json",
  "config": {
    "mediaType": "application/vnd.oci.empty.v1+json",
    "digest": "` + emptyDigest + `",
    "size": 2,
    "data": "e30="
  },
  "layers": [
    {
      "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
      "digest": "` + sha512Digest + `",
      "size": 5
    }
  ],
  "subject": {
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": "` + subjectDigest + `",
    "size": 1234
  },
  "annotations": {"dev.sigstore.bundle.predicateType": "https://sigstore.dev/cosign/sign/v1"}
}`

	// ociNondistributable names no mediaType of its own: the Content-Type
	// says what it is. Its second layer is non-distributable.
	ociNondistributable = `{
  "schemaVersion": 2,
  "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "` + configDigest + `", "size": 10},
  "layers": [
    {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "` + layer1Digest + `", "size": 20},
    {"mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", "digest": "` + foreignDigest + `", "size": 30}
  ]
}`

	ociIndex = `{
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.index.v1+json",
  "artifactType": "application/vnd.example.bundle",
  "manifests": [
    {
      "mediaType": "application/vnd.oci.image.manifest.v1+json",
      "digest": "` + child1Digest + `",
      "size": 7143,
      "platform": {"architecture": "amd64", "os": "linux"}
    },
    {
      "mediaType": "application/vnd.oci.image.manifest.v1+json",
      "digest": "` + child2Digest + `",
      "size": 7682,
      "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}
    }
  ],
  "subject": {
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "digest": "` + subjectDigest + `",
    "size": 512
  },
  "annotations": {"com.example.key1": "value1"}
}`

	// dockerManifest has a foreign (Windows base) layer with URLs.
	dockerManifest = `{
   "schemaVersion": 2,
   "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
   "config": {
      "mediaType": "application/vnd.docker.container.image.v1+json",
      "size": 7023,
      "digest": "` + configDigest + `"
   },
   "layers": [
      {
         "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
         "size": 1718332879,
         "digest": "` + foreignDigest + `",
         "urls": ["https://mcr.microsoft.com/v2/windows/servercore/blobs/` + foreignDigest + `"]
      },
      {
         "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
         "size": 32654,
         "digest": "` + layer1Digest + `"
      }
   ]
}`

	dockerList = `{
  "schemaVersion": 2,
  "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
  "manifests": [
    {
      "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
      "size": 7143,
      "digest": "` + child1Digest + `",
      "platform": {"architecture": "ppc64le", "os": "linux"}
    },
    {
      "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
      "size": 7682,
      "digest": "` + child2Digest + `",
      "platform": {"architecture": "amd64", "os": "windows", "os.version": "10.0.14393.1066", "features": ["sse4"]}
    }
  ]
}`
)

// validCases are the manifests of every supported type, with what Parse
// must learn from them.
var validCases = []struct {
	name, contentType, body     string
	mediaType, artifactType     string
	blobs, manifests            []string
	subject                     string
	annotation, annotationValue string
}{
	{
		name: "oci image", contentType: MediaTypeOCIManifest, body: ociImage,
		mediaType: MediaTypeOCIManifest, artifactType: "application/vnd.oci.image.config.v1+json",
		blobs:      []string{configDigest, layer1Digest, layer2Digest},
		annotation: "org.opencontainers.image.created", annotationValue: "2024-01-02T03:04:05Z",
	},
	{
		name: "oci artifact with subject and data", contentType: MediaTypeOCIManifest + "; charset=utf-8", body: ociArtifact,
		mediaType: MediaTypeOCIManifest, artifactType: "application/vnd.dev.sigstore.bundle.v0.3+json",
		blobs: []string{emptyDigest, sha512Digest}, subject: subjectDigest,
		annotation: "dev.sigstore.bundle.predicateType", annotationValue: "https://sigstore.dev/cosign/sign/v1",
	},
	{
		name: "oci image without mediaType, non-distributable layer", contentType: MediaTypeOCIManifest, body: ociNondistributable,
		mediaType: MediaTypeOCIManifest, artifactType: "application/vnd.oci.image.config.v1+json",
		blobs: []string{configDigest, layer1Digest},
	},
	{
		name: "oci index", contentType: "", body: ociIndex,
		mediaType: MediaTypeOCIIndex, artifactType: "application/vnd.example.bundle",
		manifests: []string{child1Digest, child2Digest}, subject: subjectDigest,
		annotation: "com.example.key1", annotationValue: "value1",
	},
	{
		name: "docker manifest with foreign layer", contentType: MediaTypeDockerManifest, body: dockerManifest,
		mediaType: MediaTypeDockerManifest, artifactType: "application/vnd.docker.container.image.v1+json",
		blobs: []string{configDigest, layer1Digest},
	},
	{
		name: "docker manifest list", contentType: MediaTypeDockerManifestList, body: dockerList,
		mediaType: MediaTypeDockerManifestList, manifests: []string{child1Digest, child2Digest},
	},
}

// invalidCases are bodies Parse must refuse, each with a fragment of the
// error it must give.
var invalidCases = []struct {
	name, contentType, body, want string
	unsupported                   bool
}{
	{name: "empty body", contentType: MediaTypeOCIManifest, body: "", want: "not valid JSON"},
	{name: "not JSON", contentType: MediaTypeOCIManifest, body: "schemaVersion: 2", want: "not valid JSON"},
	{name: "trailing document", contentType: MediaTypeOCIManifest, body: ociImage + "{}", want: "trailing data"},
	{name: "stray closing brace", contentType: MediaTypeOCIManifest, body: ociImage + "}", want: "trailing data"},
	{name: "stray closing bracket", contentType: MediaTypeOCIManifest, body: ociImage + "\n]\n", want: "trailing data"},
	{name: "malformed Content-Type", contentType: "application/", body: ociImage, want: "Content-Type"},
	{name: "no media type anywhere", contentType: "", body: ociNondistributable, want: "neither Content-Type nor mediaType"},
	{name: "Content-Type disagrees with mediaType", contentType: MediaTypeDockerManifest, body: ociImage, want: "does not match mediaType"},
	{name: "unsupported media type", contentType: "application/json", body: ociNondistributable, want: "unsupported", unsupported: true},
	{name: "schema 1", contentType: MediaTypeOCIManifest, body: strings.Replace(ociImage, `"schemaVersion": 2`, `"schemaVersion": 1`, 1), want: "schemaVersion"},
	{name: "no schemaVersion", contentType: MediaTypeOCIManifest, body: strings.Replace(ociImage, `"schemaVersion": 2,`, ``, 1), want: "schemaVersion"},
	{name: "docker manifest with subject", contentType: MediaTypeDockerManifest,
		body: strings.Replace(dockerManifest, `"schemaVersion": 2,`, `"schemaVersion": 2, "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "`+subjectDigest+`", "size": 1},`, 1),
		want: "cannot carry artifactType or subject"},
	{name: "index with layers", contentType: MediaTypeOCIIndex, body: strings.Replace(ociIndex, `"schemaVersion": 2,`, `"schemaVersion": 2, "layers": [],`, 1), want: "no config or layers"},
	{name: "index without manifests", contentType: MediaTypeOCIIndex, body: `{"schemaVersion": 2}`, want: "no manifests field"},
	{name: "image with manifests", contentType: MediaTypeOCIManifest, body: strings.Replace(ociImage, `"schemaVersion": 2,`, `"schemaVersion": 2, "manifests": [],`, 1), want: "no manifests field"},
	{name: "image without config", contentType: MediaTypeOCIManifest, body: `{"schemaVersion": 2, "layers": []}`, want: "config descriptor is missing"},
	{name: "docker manifest without layers", contentType: MediaTypeDockerManifest,
		body: `{"schemaVersion": 2, "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": "` + configDigest + `", "size": 1}}`,
		want: "layers field is missing"},
	{name: "malformed layer digest", contentType: MediaTypeOCIManifest, body: strings.Replace(ociImage, layer2Digest, "sha256:abc", 1), want: "layers[1]: digest"},
	{name: "unknown digest algorithm", contentType: MediaTypeOCIManifest, body: strings.Replace(ociImage, layer1Digest, "md5:d41d8cd98f00b204e9800998ecf8427e", 1), want: "layers[0]: digest"},
	{name: "negative size", contentType: MediaTypeOCIManifest, body: strings.Replace(ociImage, `"size": 1470`, `"size": -1`, 1), want: "negative size"},
	{name: "config media type missing", contentType: MediaTypeOCIManifest, body: strings.Replace(ociImage, `"mediaType": "application/vnd.oci.image.config.v1+json",`, ``, 1), want: "config: mediaType"},
	{name: "data of the wrong size", contentType: MediaTypeOCIManifest, body: strings.Replace(ociArtifact, `"size": 2,`, `"size": 3,`, 1), want: "data holds 2 bytes"},
	{name: "data not matching digest", contentType: MediaTypeOCIManifest, body: strings.Replace(ociArtifact, `"e30="`, `"W10="`, 1), want: "data does not match digest"},
	{name: "artifactType not a media type", contentType: MediaTypeOCIIndex, body: strings.Replace(ociIndex, `"application/vnd.example.bundle"`, `"bundle"`, 1), want: "artifactType"},
	{name: "bad child manifest", contentType: MediaTypeDockerManifestList, body: strings.Replace(dockerList, child2Digest, "sha256:"+strings.Repeat("A", 64), 1), want: "manifests[1]: digest"},
	{name: "duplicate key", contentType: MediaTypeOCIManifest, body: strings.Replace(ociImage, `"schemaVersion": 2,`, `"schemaVersion": 2, "schemaVersion": 2,`, 1), want: "appears twice"},
	{name: "duplicate digest in a descriptor", contentType: MediaTypeOCIManifest, body: strings.Replace(ociImage, `"size": 1470`, `"size": 1470, "digest": "`+layer1Digest+`"`, 1), want: "appears twice"},
	{name: "field in another case", contentType: MediaTypeOCIManifest, body: strings.Replace(ociImage, `"layers"`, `"Layers"`, 1), want: `must be spelled "layers"`},
	{name: "descriptor field in another case", contentType: MediaTypeOCIManifest, body: strings.Replace(ociImage, `"size": 1470`, `"SIZE": 1470`, 1), want: `must be spelled "size"`},
	{name: "bad subject", contentType: MediaTypeOCIManifest, body: strings.Replace(ociArtifact, `"size": 1234`, `"size": -1234`, 1), want: "subject: negative size"},
}

// Annotation keys are the user's own: spec field names in another case
// are fine there, though a duplicate is not.
func TestAnnotationKeys(t *testing.T) {
	body := strings.Replace(ociImage, `"size": 1470`, `"size": 1470, "annotations": {"Size": "1", "Digest": "x", "Data": "y"}`, 1)
	if _, err := Parse(MediaTypeOCIManifest, []byte(body)); err != nil {
		t.Fatalf("annotations with spec-like keys refused: %v", err)
	}
	body = strings.Replace(ociImage, `"size": 1470`, `"size": 1470, "annotations": {"a": "1", "a": "2"}`, 1)
	if _, err := Parse(MediaTypeOCIManifest, []byte(body)); err == nil || !strings.Contains(err.Error(), "appears twice") {
		t.Fatalf("duplicate annotation key: %v", err)
	}
}

func TestParse(t *testing.T) {
	for _, c := range validCases {
		t.Run(c.name, func(t *testing.T) {
			m, err := Parse(c.contentType, []byte(c.body))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if m.MediaType != c.mediaType {
				t.Errorf("MediaType = %q, want %q", m.MediaType, c.mediaType)
			}
			if m.ArtifactType != c.artifactType {
				t.Errorf("ArtifactType = %q, want %q", m.ArtifactType, c.artifactType)
			}
			if got := digests(m.Blobs); !reflect.DeepEqual(got, c.blobs) {
				t.Errorf("Blobs = %v, want %v", got, c.blobs)
			}
			if got := digests(m.Manifests); !reflect.DeepEqual(got, c.manifests) {
				t.Errorf("Manifests = %v, want %v", got, c.manifests)
			}
			switch {
			case c.subject == "" && m.Subject != nil:
				t.Errorf("Subject = %v, want none", m.Subject)
			case c.subject != "" && (m.Subject == nil || m.Subject.Digest != digest.Digest(c.subject)):
				t.Errorf("Subject = %v, want %s", m.Subject, c.subject)
			}
			if c.annotation != "" && m.Annotations[c.annotation] != c.annotationValue {
				t.Errorf("Annotations = %v, want %s=%s", m.Annotations, c.annotation, c.annotationValue)
			}
			if IsIndex(m.MediaType) != (c.manifests != nil) {
				t.Errorf("IsIndex(%q) = %v", m.MediaType, IsIndex(m.MediaType))
			}
		})
	}
	for _, c := range invalidCases {
		t.Run(c.name, func(t *testing.T) {
			m, err := Parse(c.contentType, []byte(c.body))
			if err == nil {
				t.Fatalf("Parse accepted it: %+v", m)
			}
			if m != nil {
				t.Errorf("Parse returned %+v with its error", m)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			if errors.Is(err, ErrUnsupportedMediaType) != c.unsupported {
				t.Errorf("error %v: wraps ErrUnsupportedMediaType = %v, want %v", err, !c.unsupported, c.unsupported)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not mention %q", err, c.want)
			}
		})
	}
}

// digests lists the digests of descriptors, nil for none.
func digests(ds []ocispec.Descriptor) []string {
	var out []string
	for _, d := range ds {
		out = append(out, string(d.Digest))
	}
	return out
}
