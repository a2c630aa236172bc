package bundle

import (
	"archive/tar"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	orasremote "oras.land/oras-go/v2/registry/remote"

	"github.com/berth-registry/berth/transfer"
)

// Source opens the repositories Export reads; *remote.Registry is one.
type Source interface {
	Repository(name string) (*orasremote.Repository, error)
}

// ExportReport says what Export wrote.
type ExportReport struct {
	// Tags are the repository:tag names in the bundle, cosign's included.
	Tags []string `json:"tags"`
	// Manifests and Blobs count what the bundle holds; Bytes is the size
	// of all of it.
	Manifests int   `json:"manifests"`
	Blobs     int   `json:"blobs"`
	Bytes     int64 `json:"bytes"`
}

// archive is the image layout archive an Export writes.
type archive struct {
	tw      *tar.Writer
	written map[digest.Digest]bool
	entries []ocispec.Descriptor
	listed  map[string]bool
	// tags maps repository:tag to the digest listed under it.
	tags map[string]digest.Digest
	rep  ExportReport
}

// Export writes to w an OCI image layout archive of the images refs name
// (repository:tag or repository@digest) in src, with everything they
// reference and refer to, copied through package transfer. Every byte is
// verified against its digest as it is copied; on error what was written
// is incomplete.
func Export(ctx context.Context, src Source, refs []string, w io.Writer) (ExportReport, error) {
	a := &archive{tw: tar.NewWriter(w), written: map[digest.Digest]bool{}, listed: map[string]bool{}, tags: map[string]digest.Digest{}}
	a.rep.Tags = []string{}
	if err := a.file("oci-layout", []byte(layoutFile)); err != nil {
		return a.rep, err
	}
	copiers := map[string]*transfer.Copier{}
	for _, ref := range refs {
		name, reference, ok := splitRef(ref)
		if !ok {
			return a.rep, fmt.Errorf("reference %q: want repository:tag or repository@digest", ref)
		}
		repo, err := src.Repository(name)
		if err != nil {
			return a.rep, err
		}
		from := transfer.Remote{Repo: repo}
		c := copiers[name]
		if c == nil {
			c = transfer.New(from, &layoutRepo{a: a, name: name}, transfer.Options{MaxManifestBytes: maxManifest})
			copiers[name] = c
		}
		desc, err := from.Resolve(ctx, reference)
		if err != nil {
			return a.rep, fmt.Errorf("resolve %s: %w", ref, err)
		}
		var tags []string
		if digest.Digest(reference).Validate() != nil {
			tags = []string{reference}
		}
		if _, err := c.Copy(ctx, desc, tags...); err != nil {
			return a.rep, fmt.Errorf("export %s: %w", ref, err)
		}
	}
	index, err := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: a.entries})
	if err != nil {
		return a.rep, err
	}
	if err := a.file("index.json", index); err != nil {
		return a.rep, err
	}
	return a.rep, a.tw.Close()
}

// maxManifest bounds a manifest read into memory.
const maxManifest = 4 << 20

// list adds desc to index.json for repo, under tag when set.
func (a *archive) list(repo string, desc ocispec.Descriptor, tag string) {
	key := repo + "@" + string(desc.Digest) + ":" + tag
	if a.listed[key] {
		return
	}
	a.listed[key] = true
	entry := ocispec.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size, ArtifactType: desc.ArtifactType,
		Annotations: map[string]string{RepositoryAnnotation: repo}}
	if tag != "" {
		entry.Annotations[ocispec.AnnotationRefName] = repo + ":" + tag
		a.rep.Tags = append(a.rep.Tags, repo+":"+tag)
		a.tags[repo+":"+tag] = desc.Digest
	}
	a.entries = append(a.entries, entry)
}

// write adds content of d, of size bytes, to the archive.
func (a *archive) write(d digest.Digest, size int64, r io.Reader) error {
	if a.written[d] {
		return nil
	}
	if err := a.tw.WriteHeader(header(blobPath(d), size)); err != nil {
		return err
	}
	if n, err := io.Copy(a.tw, r); err != nil {
		return fmt.Errorf("copy %s: %w", d, err)
	} else if n != size {
		return fmt.Errorf("copy %s: %d bytes, %d expected", d, n, size)
	}
	a.written[d] = true
	a.rep.Bytes += size
	return nil
}

// file adds a small file to the archive.
func (a *archive) file(name string, b []byte) error {
	if err := a.tw.WriteHeader(header(name, int64(len(b)))); err != nil {
		return err
	}
	_, err := a.tw.Write(b)
	return err
}

func header(name string, size int64) *tar.Header {
	return &tar.Header{Name: name, Size: size, Mode: 0o644, Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
}

// layoutRepo is one repository of the archive, as the target of a copy:
// content goes under blobs/ once, whatever the repository; tags and
// listings go to index.json under the repository's name.
type layoutRepo struct {
	a    *archive
	name string
}

var (
	_ transfer.Target = (*layoutRepo)(nil)
	_ transfer.Lister = (*layoutRepo)(nil)
)

func (l *layoutRepo) HasManifest(_ context.Context, desc ocispec.Descriptor) (bool, error) {
	return l.a.written[desc.Digest], nil
}

func (l *layoutRepo) HasBlob(_ context.Context, desc ocispec.Descriptor) (bool, error) {
	return l.a.written[desc.Digest], nil
}

// PushBlob writes the blob; the copy verifies it once read.
func (l *layoutRepo) PushBlob(_ context.Context, desc ocispec.Descriptor, r io.Reader) error {
	if err := l.a.write(desc.Digest, desc.Size, r); err != nil {
		return err
	}
	l.a.rep.Blobs++
	return nil
}

func (l *layoutRepo) PushManifest(_ context.Context, desc ocispec.Descriptor, body []byte) error {
	if err := l.a.write(desc.Digest, int64(len(body)), bytesReader(body)); err != nil {
		return err
	}
	l.a.rep.Manifests++
	return nil
}

func (l *layoutRepo) Resolve(_ context.Context, reference string) (ocispec.Descriptor, error) {
	if d, ok := l.a.tags[l.name+":"+reference]; ok {
		return ocispec.Descriptor{Digest: d}, nil
	}
	return ocispec.Descriptor{}, fmt.Errorf("%w: %s:%s in the bundle", transfer.ErrNotFound, l.name, reference)
}

// Tag lists the manifest under its repository and tag.
func (l *layoutRepo) Tag(_ context.Context, desc ocispec.Descriptor, tag string) error {
	l.a.list(l.name, desc, tag)
	return nil
}

// List lists the manifest under its repository, untagged.
func (l *layoutRepo) List(desc ocispec.Descriptor) { l.a.list(l.name, desc, "") }
