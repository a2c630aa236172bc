package files

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html/template"
	"mime"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/distribution"
	"github.com/berth-registry/berth/storage"
)

// checksumSuffix names the checksum of a file: GET <file>.sha256 answers
// "<hex>  <file>\n", what sha256sum -c reads.
const checksumSuffix = ".sha256"

// fileURL is the path of a file of a version.
func fileURL(repo, tag, name string) string {
	return versionURL(repo, tag) + url.PathEscape(name)
}

// versionURL is the path of the listing of a version.
func versionURL(repo, tag string) string {
	return Prefix + repo + "/" + tag + "/"
}

// lookup reads the version a download names, or says why there is none.
func (h *Handler) lookup(ctx context.Context, t Target) (*version, error) {
	v, err := h.readVersion(ctx, t.Repo, t.Version)
	if err != nil {
		return nil, err
	}
	if v == nil {
		return nil, &distribution.Error{Code: distribution.CodeManifestUnknown,
			Detail:  map[string]string{"repository": t.Repo, "version": t.Version},
			Message: fmt.Sprintf("no version %s in %s", t.Version, t.Repo)}
	}
	if !v.isFiles() {
		return nil, notFiles(t.Repo, t.Version, v, http.StatusNotFound)
	}
	return v, nil
}

// download answers GET and HEAD of a file, or of its checksum.
func (h *Handler) download(w http.ResponseWriter, r *http.Request, t Target) {
	ctx := r.Context()
	v, err := h.lookup(ctx, t)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	layer, ok := v.file(t.File)
	if !ok {
		if name, isSum := strings.CutSuffix(t.File, checksumSuffix); isSum {
			if l, ok := v.file(name); ok && l.Digest.Algorithm() == digest.SHA256 {
				h.checksum(w, r, name, l, v)
				return
			}
		}
		var names []string
		for _, l := range v.m.Layers {
			names = append(names, l.Annotations[ocispec.AnnotationTitle])
		}
		h.fail(w, r, &distribution.Error{Code: distribution.CodeBlobUnknown,
			Detail:  map[string]any{"repository": t.Repo, "version": t.Version, "file": t.File, "files": names},
			Message: fmt.Sprintf("no file %q in %s:%s, which holds %s", t.File, t.Repo, t.Version, strings.Join(quoteAll(names), ", "))})
		return
	}
	f, info, err := h.store.OpenBlob(ctx, t.Repo, layer.Digest)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	defer f.Close()
	if rng := r.Header.Get("Range"); rng != "" && !distribution.Satisfiable(rng, info.Size) {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", info.Size))
		h.fail(w, r, &distribution.Error{Code: distribution.CodeSizeInvalid, Status: http.StatusRequestedRangeNotSatisfiable,
			Detail:  map[string]string{"range": rng},
			Message: fmt.Sprintf("range %q cannot be satisfied by a file of %d bytes", rng, info.Size)})
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", downloadType(layer.MediaType, t.File))
	hd.Set("ETag", `"`+string(layer.Digest)+`"`)
	hd.Set("Docker-Content-Digest", string(layer.Digest))
	if rd := reprDigest(layer.Digest); rd != "" {
		hd.Set("Repr-Digest", rd)
	}
	hd.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": t.File}))
	// The version may move (unless immutable): revalidate, by ETag.
	hd.Set("Cache-Control", "no-cache")
	hd.Set("X-Content-Type-Options", "nosniff")
	if r.Method == http.MethodGet && h.pulls != nil {
		h.pulls.Record(ctx, t.Repo, v.info.Digest)
	}
	http.ServeContent(w, r, "", v.info.Created, f)
}

// checksum answers GET and HEAD of <file>.sha256.
func (h *Handler) checksum(w http.ResponseWriter, r *http.Request, name string, l ocispec.Descriptor, v *version) {
	body := []byte(l.Digest.Encoded() + "  " + name + "\n")
	hd := w.Header()
	hd.Set("Content-Type", "text/plain; charset=utf-8")
	hd.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": name + checksumSuffix}))
	hd.Set("Cache-Control", "no-cache")
	hd.Set("X-Content-Type-Options", "nosniff")
	http.ServeContent(w, r, "", v.info.Created, bytes.NewReader(body))
}

// reprDigest is the Repr-Digest header (RFC 9530) of content d.
func reprDigest(d digest.Digest) string {
	raw, err := hex.DecodeString(d.Encoded())
	if err != nil {
		return ""
	}
	alg := map[digest.Algorithm]string{digest.SHA256: "sha-256", digest.SHA512: "sha-512"}[d.Algorithm()]
	if alg == "" {
		return ""
	}
	return alg + "=:" + base64.StdEncoding.EncodeToString(raw) + ":"
}

// downloadType is the Content-Type of a file: its layer's media type,
// unless that says only "a layer" (as oras writes files), then the type
// its extension suggests, else application/octet-stream.
func downloadType(layerType, name string) string {
	if layerType != "" && !strings.HasPrefix(layerType, "application/vnd.oci.image.layer.") &&
		!strings.HasPrefix(layerType, "application/vnd.docker.image.rootfs.") {
		return layerType
	}
	if t := mime.TypeByExtension(path.Ext(name)); t != "" {
		return t
	}
	return DefaultMediaType
}

// fileEntry is a file of a listing.
type fileEntry struct {
	Name      string        `json:"name"`
	Size      int64         `json:"size"`
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"mediaType"`
	URL       string        `json:"url"`
}

// listing is the answer of GET /artifacts/<repository>/<version>/, and of
// an upload.
type listing struct {
	Repository   string        `json:"repository"`
	Version      string        `json:"version"`
	Digest       digest.Digest `json:"digest"`
	MediaType    string        `json:"mediaType"`
	ArtifactType string        `json:"artifactType,omitempty"`
	// Created and Pushed are as in a search result.
	Created     time.Time         `json:"created"`
	Pushed      time.Time         `json:"pushed"`
	Tags        []string          `json:"tags"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Files       []fileEntry       `json:"files"`
}

// describe lists version v of t, with the tags naming it now.
func (h *Handler) describe(ctx context.Context, t Target, v *version) listing {
	l := listing{Repository: t.Repo, Version: t.Version, Digest: v.info.Digest, MediaType: v.info.MediaType,
		ArtifactType: v.m.ArtifactType, Created: v.info.Created, Pushed: v.info.Created, Tags: []string{t.Version},
		Annotations: v.m.Annotations, Files: []fileEntry{}}
	if res, _, err := h.store.Search(ctx, storage.Query{Repository: t.Repo, Tag: t.Version, N: 1}); err == nil && len(res) == 1 &&
		res[0].Digest == v.info.Digest {
		l.Tags, l.Created, l.Pushed = res[0].Tags, res[0].Created, res[0].Pushed
	}
	for _, layer := range v.m.Layers {
		name := layer.Annotations[ocispec.AnnotationTitle]
		l.Files = append(l.Files, fileEntry{Name: name, Size: layer.Size, Digest: layer.Digest, MediaType: layer.MediaType,
			URL: fileURL(t.Repo, t.Version, name)})
	}
	return l
}

// list answers GET and HEAD of /artifacts/<repository>/<version>/: JSON,
// or HTML for a browser.
func (h *Handler) list(w http.ResponseWriter, r *http.Request, t Target) {
	v, err := h.lookup(r.Context(), t)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.answer(w, r, t, v, http.StatusOK)
}

// answer writes the listing of version v with status: HTML when the
// client prefers it (a browser), JSON otherwise.
func (h *Handler) answer(w http.ResponseWriter, r *http.Request, t Target, v *version, status int) {
	l := h.describe(r.Context(), t, v)
	var body []byte
	ct := "application/json"
	if wantsHTML(r) {
		var buf bytes.Buffer
		if err := listingPage.Execute(&buf, l); err != nil {
			h.fail(w, r, fmt.Errorf("render listing: %w", err))
			return
		}
		body, ct = buf.Bytes(), "text/html; charset=utf-8"
		w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	} else {
		var err error
		if body, err = json.Marshal(l); err != nil {
			h.fail(w, r, fmt.Errorf("encode listing: %w", err))
			return
		}
	}
	hd := w.Header()
	hd.Set("Content-Type", ct)
	hd.Set("Content-Length", strconv.Itoa(len(body)))
	hd.Set("Docker-Content-Digest", string(v.info.Digest))
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Vary", "Accept")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// wantsHTML reports whether the Accept header puts text/html before JSON,
// as a browser's does.
func wantsHTML(r *http.Request) bool {
	accept := r.Header.Get("Accept")
	i := strings.Index(accept, "text/html")
	j := strings.Index(accept, "application/json")
	return i >= 0 && (j < 0 || i < j)
}

func quoteAll(s []string) []string {
	out := slices.Clone(s)
	for i := range out {
		out[i] = strconv.Quote(out[i])
	}
	return out
}

// listingPage is the HTML of a listing.
var listingPage = template.Must(template.New("listing").Funcs(template.FuncMap{
	"short": func(d digest.Digest) string {
		if len(d.Encoded()) < 12 {
			return string(d)
		}
		return string(d.Algorithm()) + ":" + d.Encoded()[:12]
	},
	"when": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Repository}}:{{.Version}}</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{padding:.3em .8em;text-align:left;border-bottom:1px solid #ddd}code{font-size:.9em}</style>
</head><body>
<h1>{{.Repository}} {{.Version}}</h1>
<p>Digest <code>{{.Digest}}</code>, created {{when .Created}}, pushed {{when .Pushed}}. Tags: {{range $i, $t := .Tags}}{{if $i}}, {{end}}<code>{{$t}}</code>{{end}}.</p>
<table><thead><tr><th>File</th><th>Size</th><th>SHA-256</th></tr></thead><tbody>
{{range .Files}}<tr><td><a href="{{.URL}}">{{.Name}}</a></td><td>{{.Size}}</td><td><code title="{{.Digest}}">{{short .Digest}}</code></td></tr>
{{end}}</tbody></table>
{{if .Annotations}}<h2>Metadata</h2><table><tbody>
{{range $k, $v := .Annotations}}<tr><td><code>{{$k}}</code></td><td>{{$v}}</td></tr>
{{end}}</tbody></table>{{end}}
</body></html>
`))
