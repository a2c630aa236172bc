package files

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"regexp"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/distribution"
	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/manifest"
)

// An upload streams each file into an upload session of the storage core
// (on disk, hashed as it arrives: memory stays flat whatever the size),
// then, once every file is in and every check passed, commits the
// sessions and pushes the version's next manifest under its tag. Anything
// refused before that leaves nothing: the sessions are cancelled. What is
// refused after (the tag turned immutable meanwhile, a storage failure)
// unlinks what the upload linked.

// staged is a file received into an upload session, not yet committed.
type staged struct {
	name, mediaType string
	id              string
	digest          digest.Digest
	size            int64
}

// descriptor is the layer of the file.
func (f staged) descriptor() ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: f.mediaType, Digest: f.digest, Size: f.size,
		Annotations: map[string]string{ocispec.AnnotationTitle: f.name}}
}

// mediaTypeRE is the grammar of a media type (RFC 6838), parameters left
// out.
var mediaTypeRE = regexp.MustCompile(`^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$`)

// layerType is the media type a file's layer gets from the Content-Type
// the client sent with it: that type without its parameters, or
// DefaultMediaType when there is none, it does not parse, or it describes
// the form rather than the file.
func layerType(contentType string) string {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil || !mediaTypeRE.MatchString(mt) || strings.HasPrefix(mt, "multipart/") ||
		mt == "application/x-www-form-urlencoded" {
		return DefaultMediaType
	}
	return mt
}

// receive streams r, of length bytes (-1: unknown), into a new upload
// session of repo, hashing it with sha256 on the way.
func (h *Handler) receive(ctx context.Context, repo, name, mediaType string, r io.Reader, length int64) (staged, error) {
	up, err := h.store.StartUpload(ctx, repo, digest.SHA256)
	if err != nil {
		return staged{}, err
	}
	hash := sha256.New()
	info, err := h.store.AppendUpload(ctx, repo, up.ID, 0, io.TeeReader(r, hash), length)
	if err != nil {
		_ = h.store.CancelUpload(context.WithoutCancel(ctx), repo, up.ID)
		if errors.Is(err, storage.ErrSizeInvalid) {
			why := "the request body ended before the end of the file"
			if length >= 0 {
				why = fmt.Sprintf("the request body is not the %d bytes its Content-Length declares", length)
			}
			return staged{}, &distribution.Error{Code: distribution.CodeSizeInvalid, Detail: map[string]any{"file": name, "length": length},
				Message: fmt.Sprintf("file %s: %s; nothing was stored", name, why)}
		}
		return staged{}, fmt.Errorf("file %s: %w", name, err)
	}
	return staged{name: name, mediaType: mediaType, id: up.ID, digest: digest.NewDigest(digest.SHA256, hash), size: info.Offset}, nil
}

// cancel ends the sessions of files, removing what they received.
func (h *Handler) cancel(ctx context.Context, repo string, files []staged) {
	ctx = context.WithoutCancel(ctx)
	for _, f := range files {
		if err := h.store.CancelUpload(ctx, repo, f.id); err != nil {
			h.log.WarnContext(ctx, "cancel the upload of a refused file", "repository", repo, "file", f.name, "error", err)
		}
	}
}

// precheck refuses, before any byte is read, an upload into a version
// that cannot take it: an immutable one that exists, or one that is not a
// set of files.
func (h *Handler) precheck(ctx context.Context, t Target) error {
	v, err := h.readVersion(ctx, t.Repo, t.Version)
	if err != nil || v == nil {
		return err
	}
	return h.canExtend(t, v)
}

// canExtend says why files cannot be added to version v of t, if they
// cannot.
func (h *Handler) canExtend(t Target, v *version) error {
	if h.store.Immutable(t.Repo, t.Version) {
		return &distribution.Error{Code: distribution.CodeTagImmutable,
			Detail: map[string]string{"repository": t.Repo, "version": t.Version, "digest": string(v.info.Digest)},
			Message: fmt.Sprintf("version %s of %s exists and is immutable: adding or replacing a file would move its tag "+
				"(it names %s); publish the files under a new version", t.Version, t.Repo, v.info.Digest)}
	}
	if !v.isFiles() {
		return notFiles(t.Repo, t.Version, v, http.StatusConflict)
	}
	return nil
}

// publish commits the files received and points the version's tag at its
// next manifest, holding them and the metadata. It returns the version as
// stored.
func (h *Handler) publish(ctx context.Context, t Target, files []staged, md *metadata) (*version, error) {
	unlock := h.repoLocks.lock(t.Repo)
	defer unlock()
	base, err := h.readVersion(ctx, t.Repo, t.Version)
	if err != nil {
		h.cancel(ctx, t.Repo, files)
		return nil, err
	}
	if base != nil {
		if err := h.canExtend(t, base); err != nil {
			h.cancel(ctx, t.Repo, files)
			return nil, err
		}
	}
	// What this upload links, and only that, is unlinked if it fails.
	var linked []digest.Digest
	undo := func(committed int, cause error) (*version, error) {
		h.cancel(ctx, t.Repo, files[committed:])
		uctx := context.WithoutCancel(ctx)
		for _, d := range linked {
			if err := h.store.DeleteBlob(uctx, t.Repo, d); err != nil {
				h.log.WarnContext(ctx, "unlink the file of a refused upload", "repository", t.Repo, "digest", d, "error", err)
			}
		}
		return nil, cause
	}
	for i, f := range files {
		_, statErr := h.store.StatBlob(ctx, t.Repo, f.digest)
		if _, err := h.store.CommitUpload(ctx, t.Repo, f.id, f.digest, -1, nil, -1); err != nil {
			return undo(i, fmt.Errorf("file %s: %w", f.name, err))
		}
		if statErr != nil {
			linked = append(linked, f.digest)
		}
	}
	if base == nil {
		if _, err := h.store.StatBlob(ctx, t.Repo, emptyConfig.Digest); err != nil {
			if _, err := h.store.PutBlob(ctx, t.Repo, emptyConfig.Digest, bytes.NewReader(emptyConfig.Data), emptyConfig.Size); err != nil {
				return undo(len(files), err)
			}
			linked = append(linked, emptyConfig.Digest)
		}
	}
	added := make([]ocispec.Descriptor, len(files))
	for i, f := range files {
		added[i] = f.descriptor()
	}
	m := build(base, t.Version, added, md.annotations)
	if len(m.Layers) > maxFiles {
		return undo(len(files), &distribution.Error{Code: distribution.CodeManifestInvalid, Status: http.StatusBadRequest,
			Message: fmt.Sprintf("%s:%s would hold %d files; a version holds at most %d", t.Repo, t.Version, len(m.Layers), maxFiles)})
	}
	body, err := json.Marshal(m)
	if err != nil {
		return undo(len(files), fmt.Errorf("encode manifest: %w", err))
	}
	if int64(len(body)) > h.maxManifest {
		return undo(len(files), &distribution.Error{Code: distribution.CodeManifestInvalid, Status: http.StatusBadRequest,
			Message: fmt.Sprintf("the manifest of %s:%s would be %d bytes, over the limit of %d: fewer files or shorter metadata", t.Repo, t.Version, len(body), h.maxManifest)})
	}
	parsed, err := manifest.Parse(ocispec.MediaTypeImageManifest, body)
	if err != nil {
		return undo(len(files), fmt.Errorf("the manifest built for %s:%s: %w", t.Repo, t.Version, err))
	}
	d, err := h.store.PutManifest(ctx, t.Repo, "", body, parsed, []string{t.Version})
	if err != nil {
		return undo(len(files), err)
	}
	v := &version{body: body, m: m}
	v.info.Digest, v.info.MediaType, v.info.ArtifactType, v.info.Size = d, m.MediaType, m.ArtifactType, int64(len(body))
	return v, nil
}

// put answers PUT /artifacts/<repository>/<version>/<file>: the body is
// the file (curl -T). Metadata comes in the query string; the file's
// digest may come as digest=, sha256=, or a Repr-Digest or Content-Digest
// header with sha-256.
func (h *Handler) put(w http.ResponseWriter, r *http.Request, t Target) {
	ctx := r.Context()
	md := newMetadata()
	if err := md.fromQuery(r.URL.Query()); err != nil {
		h.fail(w, r, err)
		return
	}
	for _, name := range []string{"Repr-Digest", "Content-Digest"} {
		if err := md.fromDigestHeader(name, r.Header.Values(name)); err != nil {
			h.fail(w, r, err)
			return
		}
	}
	if err := h.precheck(ctx, t); err != nil {
		h.fail(w, r, err)
		return
	}
	f, err := h.receive(ctx, t.Repo, t.File, layerType(r.Header.Get("Content-Type")), r.Body, r.ContentLength)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	files := []staged{f}
	if err := md.check(files); err != nil {
		h.cancel(ctx, t.Repo, files)
		h.fail(w, r, err)
		return
	}
	v, err := h.publish(ctx, t, files, md)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Location", fileURL(t.Repo, t.Version, t.File))
	h.answer(w, r, t, v, http.StatusCreated)
}

// fromDigestHeader reads the sha-256 member of a Repr-Digest or
// Content-Digest header (RFC 9530): sha-256=:<base64>:. Other algorithms
// are ignored, as the RFC allows.
func (md *metadata) fromDigestHeader(name string, values []string) error {
	for _, v := range values {
		for _, member := range strings.Split(v, ",") {
			alg, val, ok := strings.Cut(strings.TrimSpace(member), "=")
			if !ok || !strings.EqualFold(strings.TrimSpace(alg), "sha-256") {
				continue
			}
			val = strings.TrimSpace(val)
			raw, err := base64.StdEncoding.DecodeString(strings.TrimSuffix(strings.TrimPrefix(val, ":"), ":"))
			if err != nil || len(raw) != sha256.Size || !strings.HasPrefix(val, ":") || !strings.HasSuffix(val, ":") {
				return &distribution.Error{Code: distribution.CodeDigestInvalid, Detail: map[string]string{name: v},
					Message: fmt.Sprintf("%s: want sha-256=:<base64 of the 32-byte digest>:, got %q", name, v)}
			}
			if err := md.addSum("", digest.NewDigestFromBytes(digest.SHA256, raw)); err != nil {
				return err
			}
		}
	}
	return nil
}

// post answers POST /artifacts/<repository>/<version>: a multipart form
// (curl -F) with one or more file fields and metadata fields, read as a
// stream, a part at a time.
func (h *Handler) post(w http.ResponseWriter, r *http.Request, t Target) {
	ctx := r.Context()
	md := newMetadata()
	if err := md.fromQuery(r.URL.Query()); err != nil {
		h.fail(w, r, err)
		return
	}
	mr, err := r.MultipartReader()
	if err != nil {
		h.fail(w, r, &distribution.Error{Code: distribution.CodeUnsupported, Status: http.StatusUnsupportedMediaType,
			Detail:  map[string]string{"contentType": r.Header.Get("Content-Type")},
			Message: "a POST sends multipart/form-data (curl -F file=@PATH); to send a file as the body, PUT it to " + Prefix + "<repository>/<version>/<file> (curl -T PATH)"})
		return
	}
	if err := h.precheck(ctx, t); err != nil {
		h.fail(w, r, err)
		return
	}
	files, err := h.readForm(ctx, t, mr, md)
	if err == nil {
		err = md.check(files)
	}
	if err != nil {
		h.cancel(ctx, t.Repo, files)
		h.fail(w, r, err)
		return
	}
	v, err := h.publish(ctx, t, files, md)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Location", versionURL(t.Repo, t.Version))
	h.answer(w, r, t, v, http.StatusCreated)
}

// formError is the error of a malformed form.
func formError(detail any, format string, args ...any) *distribution.Error {
	return &distribution.Error{Code: distribution.CodeBlobUploadInvalid, Status: http.StatusBadRequest, Detail: detail,
		Message: fmt.Sprintf(format, args...)}
}

// readForm reads the parts of the form: files into upload sessions,
// metadata into md. It returns the files received so far even when it
// fails, for the caller to cancel.
func (h *Handler) readForm(ctx context.Context, t Target, mr *multipart.Reader, md *metadata) ([]staged, error) {
	var files []staged
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return files, formError(nil, "malformed multipart body: %v", err)
		}
		f, err := h.readPart(ctx, t, part, md, files)
		_ = part.Close()
		if err != nil {
			return files, err
		}
		if f != nil {
			files = append(files, *f)
		}
	}
	if len(files) == 0 {
		return files, formError(nil, "no file field: send each file as -F file=@PATH")
	}
	return files, nil
}

// readPart reads one part of the form: a file (returned) or a metadata
// field.
func (h *Handler) readPart(ctx context.Context, t Target, part *multipart.Part, md *metadata, files []staged) (*staged, error) {
	field := part.FormName()
	// The file name as sent: Part.FileName would keep only its last
	// element, turning "../../etc/passwd" into "passwd" unseen.
	_, params, err := mime.ParseMediaType(part.Header.Get("Content-Disposition"))
	if err != nil || field == "" {
		return nil, formError(nil, "a part without a valid Content-Disposition form-data name: %v", err)
	}
	filename, isFile := params["filename"]
	switch {
	case field == "file":
		if !isFile {
			return nil, formError(map[string]string{"field": field}, "the file field has no file name: send it as -F file=@PATH")
		}
		if err := CheckFilename(filename); err != nil {
			return nil, err
		}
		for _, f := range files {
			if f.name == filename {
				return nil, formError(map[string]string{"filename": filename}, "file %q sent twice", filename)
			}
		}
		if len(files) >= maxFiles {
			return nil, formError(nil, "more than %d files in one upload", maxFiles)
		}
		f, err := h.receive(ctx, t.Repo, filename, layerType(part.Header.Get("Content-Type")), part, -1)
		if err != nil {
			return nil, err
		}
		return &f, nil
	case isFile:
		return nil, formError(map[string]string{"field": field}, "field %q carries a file; files go in fields named file (-F file=@PATH)", field)
	}
	value, err := io.ReadAll(io.LimitReader(part, maxMetaValue+1))
	if err != nil {
		return nil, formError(map[string]string{"field": field}, "read field %q: %v", field, err)
	}
	known, err := md.add(field, string(value))
	if err != nil {
		return nil, err
	}
	if !known {
		return nil, formError(map[string]string{"field": field}, "unknown field %q: the fields are file (repeatable) and the metadata %s", field, metaParams)
	}
	return nil, nil
}
