package bundle

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/manifest"
	"github.com/berth-registry/berth/storage/meta"
)

// maxIndex bounds the index.json read into memory.
const maxIndex = 16 << 20

// ErrBundleInvalid is wrapped by the errors of a bundle that is not a
// well-formed OCI image layout archive, or whose content does not match
// its digests.
var ErrBundleInvalid = errors.New("bundle invalid")

// ImportOptions tune Import.
type ImportOptions struct {
	// Prefix is put before every repository name, with a slash.
	Prefix string
	// Valid reports whether a repository name is acceptable; nil accepts
	// any.
	Valid func(repo string) bool
}

// ImportReport says what Import did.
type ImportReport struct {
	// Tags are the repository:tag names the bundle set, with their digest.
	Tags []ImportedTag `json:"tags"`
	// Manifests and Blobs count the content imported (already present
	// included); Bytes is the size of the blobs read.
	Manifests int   `json:"manifests"`
	Blobs     int   `json:"blobs"`
	Bytes     int64 `json:"bytes"`
}

// ImportedTag is a tag an import set.
type ImportedTag struct {
	Repository string        `json:"repository"`
	Tag        string        `json:"tag"`
	Digest     digest.Digest `json:"digest"`
}

// importer is one Import in progress.
type importer struct {
	ctx   context.Context
	svc   *storage.Service
	fills map[digest.Digest]*storage.Fill
	// linked says which repositories a blob is linked into already;
	// recorded, which manifests each repository holds from this import.
	linked   map[digest.Digest][]string
	recorded map[string]bool
	rep      ImportReport
}

// Import reads the archive r into svc: every blob is staged as a fill and
// verified against its name as it is read; then each entry of index.json
// is recorded in its repository (opts.Prefix first), children before their
// index and blobs linked before the manifests that reference them, and its
// tag moved with storage.MoveImport. Everything is checked before anything
// is recorded: a bundle that lacks what it lists, or would move an
// immutable tag, changes nothing. Content already present is recorded
// again at no cost and tags already in place do not move, so importing a
// bundle twice changes nothing the second time. Nothing staged outlives
// the import.
func Import(ctx context.Context, svc *storage.Service, r io.Reader, opts ImportOptions) (ImportReport, error) {
	im := &importer{ctx: ctx, svc: svc, fills: map[digest.Digest]*storage.Fill{}, linked: map[digest.Digest][]string{},
		recorded: map[string]bool{}}
	im.rep.Tags = []ImportedTag{}
	defer func() {
		for _, f := range im.fills {
			_ = f.Cancel(context.WithoutCancel(ctx))
		}
	}()
	var index []byte
	layout := false
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return im.rep, fmt.Errorf("%w: read the archive: %w", ErrBundleInvalid, err)
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "./"))
		switch {
		case h.Typeflag == tar.TypeDir:
		case name == "oci-layout":
			b, err := io.ReadAll(io.LimitReader(tr, 4096))
			if err != nil {
				return im.rep, fmt.Errorf("%w: oci-layout: %w", ErrBundleInvalid, err)
			}
			var l ocispec.ImageLayout
			if json.Unmarshal(b, &l) != nil || l.Version != ocispec.ImageLayoutVersion {
				return im.rep, fmt.Errorf("%w: oci-layout %q: want version %s", ErrBundleInvalid, b, ocispec.ImageLayoutVersion)
			}
			layout = true
		case name == "index.json":
			if index, err = io.ReadAll(io.LimitReader(tr, maxIndex+1)); err != nil || len(index) > maxIndex {
				return im.rep, fmt.Errorf("%w: index.json unreadable or over %d bytes", ErrBundleInvalid, maxIndex)
			}
		case strings.HasPrefix(name, "blobs/") && h.Typeflag == tar.TypeReg:
			if err := im.stage(name, h.Size, tr); err != nil {
				return im.rep, err
			}
		}
	}
	if !layout || index == nil {
		return im.rep, fmt.Errorf("%w: not an OCI image layout archive (oci-layout and index.json are required)", ErrBundleInvalid)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(index, &idx); err != nil {
		return im.rep, fmt.Errorf("%w: index.json: %w", ErrBundleInvalid, err)
	}
	// Everything is checked before anything is recorded, so that a bundle
	// refused for what it holds leaves nothing behind.
	entries := slices.Clone(idx.Manifests)
	for _, e := range entries {
		repo, tag, err := entryName(e, opts.Prefix)
		if err != nil {
			return im.rep, err
		}
		if opts.Valid != nil && !opts.Valid(repo) {
			return im.rep, fmt.Errorf("%w: repository name %q is invalid", ErrBundleInvalid, repo)
		}
		if err := im.check(e, 0); err != nil {
			return im.rep, fmt.Errorf("%s@%s: %w", repo, e.Digest, err)
		}
		if tag != "" && svc.Immutable(repo, tag) {
			if cur, err := svc.StatManifest(ctx, repo, tag); err == nil && cur.Digest != e.Digest {
				return im.rep, fmt.Errorf("tag %s:%s: %w: it names %s and may not move", repo, tag, storage.ErrTagImmutable, cur.Digest)
			}
		}
	}
	// Referrers after what they refer to: their subject must be there for
	// the referrers API (it need not, but this keeps the order of a push).
	for pass := range 2 {
		for _, e := range entries {
			repo, tag, err := entryName(e, opts.Prefix)
			if err != nil {
				return im.rep, err
			}
			if opts.Valid != nil && !opts.Valid(repo) {
				return im.rep, fmt.Errorf("%w: repository name %q is invalid", ErrBundleInvalid, repo)
			}
			if (pass == 0) == (tag != "" && isSignatureTag(tag)) {
				continue // signature tags in the second pass
			}
			if err := im.manifest(repo, e, 0); err != nil {
				return im.rep, fmt.Errorf("import %s@%s: %w", repo, e.Digest, err)
			}
			if tag == "" {
				continue
			}
			err = svc.Update(ctx, func(tx *storage.Tx) error {
				_, err := tx.MoveTag(repo, tag, e.Digest, storage.MoveImport)
				return err
			})
			if err != nil {
				return im.rep, fmt.Errorf("tag %s:%s: %w", repo, tag, err)
			}
			im.rep.Tags = append(im.rep.Tags, ImportedTag{Repository: repo, Tag: tag, Digest: e.Digest})
		}
	}
	return im.rep, nil
}

// isSignatureTag reports whether tag is one of cosign's.
func isSignatureTag(tag string) bool {
	_, ok := storage.SignatureTag(tag)
	return ok
}

// entryName reads the repository and tag of an index.json entry: the
// repository annotation, or the repository part of its ref.name.
func entryName(e ocispec.Descriptor, prefix string) (repo, tag string, err error) {
	repo = e.Annotations[RepositoryAnnotation]
	if ref := e.Annotations[ocispec.AnnotationRefName]; ref != "" {
		i := strings.LastIndex(ref, ":")
		switch {
		case i > 0 && !strings.Contains(ref[i:], "/"):
			if repo == "" {
				repo = ref[:i]
			}
			tag = ref[i+1:]
		case repo != "":
			tag = ref
		default:
			return "", "", fmt.Errorf("%w: index.json entry %s: ref.name %q names no repository", ErrBundleInvalid, e.Digest, ref)
		}
	}
	if repo == "" {
		return "", "", fmt.Errorf("%w: index.json entry %s names no repository", ErrBundleInvalid, e.Digest)
	}
	if p := strings.Trim(prefix, "/"); p != "" {
		repo = p + "/" + repo
	}
	return repo, tag, nil
}

// stage reads the blob at name as a fill, verified against its digest.
func (im *importer) stage(name string, size int64, r io.Reader) error {
	parts := strings.Split(name, "/")
	if len(parts) != 3 {
		return fmt.Errorf("%w: %s is no blob's path", ErrBundleInvalid, name)
	}
	d := digest.NewDigestFromEncoded(digest.Algorithm(parts[1]), parts[2])
	if err := d.Validate(); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrBundleInvalid, name, err)
	}
	if im.fills[d] != nil {
		return nil // a duplicate entry: the tar reader skips it
	}
	f, err := im.svc.StartFill(im.ctx, d)
	if err != nil {
		return err
	}
	im.fills[d] = f
	if _, err := f.Append(im.ctx, r, size); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrBundleInvalid, name, err)
	}
	if !f.Verified() {
		return fmt.Errorf("%w: %s does not hash to its name", ErrBundleInvalid, name)
	}
	im.rep.Bytes += size
	return nil
}

// check checks that the bundle holds manifest desc and what it
// references, recursively, but for blobs the registry holds already.
func (im *importer) check(desc ocispec.Descriptor, depth int) error {
	if depth > 8 {
		return fmt.Errorf("%w: indexes nested deeper than 8", ErrBundleInvalid)
	}
	body, err := im.read(desc)
	if err != nil {
		return err
	}
	m, err := manifest.Parse(desc.MediaType, body)
	if err != nil {
		return fmt.Errorf("%w: manifest %s: %w", ErrBundleInvalid, desc.Digest, err)
	}
	for _, child := range m.Manifests {
		if err := im.check(child, depth+1); err != nil {
			return err
		}
	}
	for _, b := range m.Blobs {
		if f := im.fills[b.Digest]; f != nil {
			if f.Size() != b.Size {
				return fmt.Errorf("%w: blob %s has %d bytes, its descriptor says %d", ErrBundleInvalid, b.Digest, f.Size(), b.Size)
			}
			continue
		}
		var have bool
		err := im.svc.View(im.ctx, func(tx meta.Tx) error {
			_, ok, err := tx.Blob(b.Digest)
			have = ok
			return err
		})
		if err != nil {
			return err
		}
		if !have {
			return fmt.Errorf("%w: blob %s is neither in the bundle nor in the registry", ErrBundleInvalid, b.Digest)
		}
	}
	return nil
}

// manifest records manifest desc in repo after what it references.
func (im *importer) manifest(repo string, desc ocispec.Descriptor, depth int) error {
	if depth > 8 {
		return fmt.Errorf("%w: indexes nested deeper than 8", ErrBundleInvalid)
	}
	key := repo + "@" + string(desc.Digest)
	if im.recorded[key] {
		return nil
	}
	body, err := im.read(desc)
	if err != nil {
		return err
	}
	m, err := manifest.Parse(desc.MediaType, body)
	if err != nil {
		return fmt.Errorf("%w: manifest %s: %w", ErrBundleInvalid, desc.Digest, err)
	}
	for _, child := range m.Manifests {
		if err := im.manifest(repo, child, depth+1); err != nil {
			return err
		}
	}
	for _, b := range m.Blobs {
		if err := im.blob(repo, b.Digest); err != nil {
			return err
		}
	}
	if _, err := im.svc.PutManifestWith(im.ctx, repo, desc.Digest, body, m, storage.PutOptions{Action: storage.MoveImport}); err != nil {
		return err
	}
	im.recorded[key] = true
	im.rep.Manifests++
	return nil
}

// read returns the bytes of manifest desc from the bundle.
func (im *importer) read(desc ocispec.Descriptor) ([]byte, error) {
	f := im.fills[desc.Digest]
	if f == nil {
		return nil, fmt.Errorf("%w: manifest %s is not in the bundle", ErrBundleInvalid, desc.Digest)
	}
	if f.Size() != desc.Size || desc.Size > maxManifest {
		return nil, fmt.Errorf("%w: manifest %s has %d bytes, its descriptor says %d (at most %d)", ErrBundleInvalid, desc.Digest, f.Size(), desc.Size, maxManifest)
	}
	rc, err := f.Reader(im.ctx)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(io.LimitReader(rc, desc.Size))
}

// blob links blob d into repo: the bundle's copy committed there first,
// or linked from the store where an earlier repository of this import, or
// an earlier import, put it.
func (im *importer) blob(repo string, d digest.Digest) error {
	if slices.Contains(im.linked[d], repo) {
		return nil
	}
	if f := im.fills[d]; f != nil && len(im.linked[d]) == 0 {
		if _, err := f.Commit(im.ctx, repo); err != nil {
			return err
		}
		im.rep.Blobs++
	} else if _, err := im.svc.MountBlob(im.ctx, repo, "", d); err != nil {
		if errors.Is(err, storage.ErrBlobUnknown) {
			return fmt.Errorf("%w: blob %s is neither in the bundle nor in the registry", ErrBundleInvalid, d)
		}
		return err
	}
	im.linked[d] = append(im.linked[d], repo)
	return nil
}
