package bundle

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
	orasremote "oras.land/oras-go/v2/registry/remote"

	"github.com/berth-registry/berth/storage/manifest"
)

// maxManifest bounds a manifest read into memory.
const maxManifest = 4 << 20

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

// exporter is one Export in progress.
type exporter struct {
	ctx     context.Context
	src     Source
	tw      *tar.Writer
	written map[digest.Digest]bool
	entries []ocispec.Descriptor
	listed  map[string]bool
	rep     ExportReport
}

// Export writes to w an OCI image layout archive of the images refs name
// (repository:tag or repository@digest) in src, with everything they
// reference and refer to. Every byte is verified against its digest as it
// is copied; on error what was written is incomplete.
func Export(ctx context.Context, src Source, refs []string, w io.Writer) (ExportReport, error) {
	e := &exporter{ctx: ctx, src: src, tw: tar.NewWriter(w), written: map[digest.Digest]bool{}, listed: map[string]bool{}}
	e.rep.Tags = []string{}
	if err := e.file("oci-layout", []byte(layoutFile)); err != nil {
		return e.rep, err
	}
	for _, ref := range refs {
		name, reference, ok := splitRef(ref)
		if !ok {
			return e.rep, fmt.Errorf("reference %q: want repository:tag or repository@digest", ref)
		}
		repo, err := src.Repository(name)
		if err != nil {
			return e.rep, err
		}
		desc, err := repo.Resolve(ctx, reference)
		if err != nil {
			return e.rep, fmt.Errorf("resolve %s: %w", ref, err)
		}
		tag := ""
		if digest.Digest(reference).Validate() != nil {
			tag = reference
		}
		if err := e.manifest(repo, name, desc, tag); err != nil {
			return e.rep, fmt.Errorf("export %s: %w", ref, err)
		}
	}
	index, err := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: e.entries})
	if err != nil {
		return e.rep, err
	}
	if err := e.file("index.json", index); err != nil {
		return e.rep, err
	}
	return e.rep, e.tw.Close()
}

// list adds desc to index.json for repo, under tag when set.
func (e *exporter) list(repo string, desc ocispec.Descriptor, tag string) {
	key := repo + "@" + string(desc.Digest) + ":" + tag
	if e.listed[key] {
		return
	}
	e.listed[key] = true
	entry := ocispec.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size, ArtifactType: desc.ArtifactType,
		Annotations: map[string]string{RepositoryAnnotation: repo}}
	if tag != "" {
		entry.Annotations[ocispec.AnnotationRefName] = repo + ":" + tag
		e.rep.Tags = append(e.rep.Tags, repo+":"+tag)
	}
	e.entries = append(e.entries, entry)
}

// manifest writes manifest desc of repo with what it references and what
// refers to it, and lists it (the roots and referrers) in index.json.
func (e *exporter) manifest(repo *orasremote.Repository, name string, desc ocispec.Descriptor, tag string) error {
	if tag != "" {
		e.list(name, desc, tag)
	}
	if e.written[desc.Digest] {
		return nil
	}
	rc, err := repo.Fetch(e.ctx, desc)
	if err != nil {
		return fmt.Errorf("fetch manifest %s: %w", desc.Digest, err)
	}
	body, err := content.ReadAll(rc, desc)
	rc.Close()
	if err != nil {
		return fmt.Errorf("manifest %s: %w", desc.Digest, err)
	}
	m, err := manifest.Parse(desc.MediaType, body)
	if err != nil {
		return fmt.Errorf("manifest %s: %w", desc.Digest, err)
	}
	for _, child := range m.Manifests {
		if err := e.manifest(repo, name, child, ""); err != nil {
			return err
		}
	}
	for _, b := range m.Blobs {
		if err := e.blob(repo, b); err != nil {
			return err
		}
	}
	if err := e.write(desc.Digest, int64(len(body)), bytesReader(body)); err != nil {
		return err
	}
	e.rep.Manifests++
	if tag == "" && len(m.Manifests) == 0 && m.Subject == nil {
		// A child of an index: reached through it.
	} else if tag == "" {
		e.list(name, desc, "")
	}
	// Referrers, through the API or its tag fallback, then cosign's tags.
	var refs []ocispec.Descriptor
	err = repo.Referrers(e.ctx, desc, "", func(page []ocispec.Descriptor) error {
		refs = append(refs, page...)
		return nil
	})
	if err != nil && !errors.Is(err, errdef.ErrNotFound) {
		return fmt.Errorf("referrers of %s: %w", desc.Digest, err)
	}
	for _, r := range refs {
		if err := e.manifest(repo, name, r, ""); err != nil {
			return err
		}
		e.list(name, r, "")
	}
	for _, sig := range signatureTags(desc.Digest) {
		sd, err := repo.Resolve(e.ctx, sig)
		if errors.Is(err, errdef.ErrNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("resolve %s: %w", sig, err)
		}
		if err := e.manifest(repo, name, sd, sig); err != nil {
			return err
		}
	}
	return nil
}

// blob copies a blob into the archive, once.
func (e *exporter) blob(repo *orasremote.Repository, desc ocispec.Descriptor) error {
	if e.written[desc.Digest] {
		return nil
	}
	rc, err := repo.Blobs().Fetch(e.ctx, desc)
	if err != nil {
		return fmt.Errorf("fetch blob %s: %w", desc.Digest, err)
	}
	defer rc.Close()
	vr := content.NewVerifyReader(rc, desc)
	if err := e.write(desc.Digest, desc.Size, vr); err != nil {
		return err
	}
	if err := vr.Verify(); err != nil {
		return fmt.Errorf("blob %s: %w", desc.Digest, err)
	}
	e.rep.Blobs++
	return nil
}

// write adds content of d, of size bytes, to the archive.
func (e *exporter) write(d digest.Digest, size int64, r io.Reader) error {
	if e.written[d] {
		return nil
	}
	if err := e.tw.WriteHeader(header(blobPath(d), size)); err != nil {
		return err
	}
	if n, err := io.Copy(e.tw, r); err != nil {
		return fmt.Errorf("copy %s: %w", d, err)
	} else if n != size {
		return fmt.Errorf("copy %s: %d bytes, %d expected", d, n, size)
	}
	e.written[d] = true
	e.rep.Bytes += size
	return nil
}

// file adds a small file to the archive.
func (e *exporter) file(name string, b []byte) error {
	if err := e.tw.WriteHeader(header(name, int64(len(b)))); err != nil {
		return err
	}
	_, err := e.tw.Write(b)
	return err
}

func header(name string, size int64) *tar.Header {
	return &tar.Header{Name: name, Size: size, Mode: 0o644, Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
}
