package distribution

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage"
)

// blobTarget reads and checks the repository and digest of a blob request.
func blobTarget(r *http.Request) (string, digest.Digest, error) {
	repo, err := repoName(r)
	if err != nil {
		return "", "", err
	}
	d, err := parseDigest(pathVar(r, "digest"))
	return repo, d, err
}

// getBlob serves GET and HEAD of a blob, with Range support. The file is
// handed to http.ServeContent, which streams it (with sendfile where the
// platform has it) and answers conditional and range requests. When the
// blob store hands out URLs of its content (an object store configured to
// redirect), a GET is answered 307 to one, and the client fetches the
// bytes, and any range of them, from there. A HEAD is never redirected,
// and only looks the blob up: it opens no content (which, through the
// pull-through cache, would fetch it).
func (a *API) getBlob(w http.ResponseWriter, r *http.Request) {
	repo, d, err := blobTarget(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if r.Method == http.MethodGet {
		url, _, err := a.store.BlobURL(r.Context(), repo, d)
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		if url != "" {
			w.Header().Set("Docker-Content-Digest", string(d))
			http.Redirect(w, r, url, http.StatusTemporaryRedirect)
			return
		}
	}
	var f io.ReadSeeker
	var info storage.BlobInfo
	if r.Method == http.MethodHead {
		info, err = a.store.StatBlob(r.Context(), repo, d)
		// ServeContent reads no byte of a HEAD's content (but for a
		// multi-range answer, which it writes nowhere): it only needs
		// the length.
		f = io.NewSectionReader(zeros{}, 0, info.Size)
	} else {
		var rc io.ReadSeekCloser
		rc, info, err = a.store.OpenBlob(r.Context(), repo, d)
		if err == nil {
			defer rc.Close()
			f = rc
		}
	}
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if rng := r.Header.Get("Range"); rng != "" && !satisfiable(rng, info.Size) {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", info.Size))
		a.writeError(w, r, newError(CodeSizeInvalid, map[string]string{"range": rng},
			"range %q cannot be satisfied by a blob of %d bytes", rng, info.Size).withStatus(http.StatusRequestedRangeNotSatisfiable))
		return
	}
	h := w.Header()
	h.Set("Docker-Content-Digest", string(d))
	h.Set("Content-Type", "application/octet-stream")
	h.Set("ETag", `"`+string(d)+`"`)
	h.Set("Cache-Control", "max-age=31536000, immutable")
	if s, ok := f.(Streamer); ok && s.Streaming() && wholeGet(r) {
		h.Set("Accept-Ranges", "bytes")
		h.Set("Content-Length", strconv.FormatInt(info.Size, 10))
		w.WriteHeader(http.StatusOK)
		if _, err := s.WriteTo(w); err != nil {
			// The answer has begun: the client sees a short body.
			lvl := slog.LevelWarn
			if r.Context().Err() != nil {
				lvl = slog.LevelDebug // the client went away
			}
			a.log.Log(r.Context(), lvl, "blob answer cut short", "repository", repo, "digest", d, "error", err)
			panic(http.ErrAbortHandler)
		}
		return
	}
	http.ServeContent(w, r, "", time.Time{}, f)
}

// Satisfiable reports whether a Range header is well formed and names at
// least one range inside content of size bytes: when it does not,
// http.ServeContent would answer 416, and the caller answers with the
// specification's error instead.
func Satisfiable(header string, size int64) bool { return satisfiable(header, size) }

// Streamer is a blob reader that serves a whole GET better itself than
// ServeContent's small reads do: the pull-through cache's fills, whose
// content may still be arriving (WriteTo writes what arrives in large
// pieces and sends what is on disk with the connection's ReadFrom,
// sendfile), and the objects of a bucket (read and written in large
// pieces).
type Streamer interface {
	io.WriterTo
	// Streaming reports whether WriteTo should serve the answer.
	Streaming() bool
}

// wholeGet reports whether r asks for the whole blob without conditions.
func wholeGet(r *http.Request) bool {
	if r.Method != http.MethodGet {
		return false
	}
	for _, k := range []string{"Range", "If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since", "If-Range"} {
		if r.Header.Get(k) != "" {
			return false
		}
	}
	return true
}

// zeros reads as zero bytes, the content of a HEAD answer.
type zeros struct{}

func (zeros) ReadAt(p []byte, _ int64) (int, error) {
	clear(p)
	return len(p), nil
}

// satisfiable reports whether a Range header is well formed and names at
// least one range inside a blob of size bytes, which is when ServeContent
// answers 206 rather than 416. It reads the header as ServeContent does
// (trimming ASCII white space only, refusing a negative suffix-length), so
// that ServeContent serves every range it passes.
func satisfiable(header string, size int64) bool {
	spec, ok := strings.CutPrefix(header, "bytes=")
	if !ok {
		return false
	}
	any := false
	for _, part := range strings.Split(spec, ",") {
		part = textproto.TrimString(part)
		if part == "" {
			continue
		}
		first, last, ok := strings.Cut(part, "-")
		if !ok {
			return false
		}
		first, last = textproto.TrimString(first), textproto.TrimString(last)
		if first == "" {
			// A negative suffix-length, "-0" included, is refused as
			// ServeContent refuses it.
			n, err := strconv.ParseInt(last, 10, 64)
			if err != nil || strings.HasPrefix(last, "-") {
				return false
			}
			any = any || (n > 0 && size > 0)
			continue
		}
		start, err := strconv.ParseInt(first, 10, 64)
		if err != nil || start < 0 {
			return false
		}
		if last != "" {
			end, err := strconv.ParseInt(last, 10, 64)
			if err != nil || end < start {
				return false
			}
		}
		any = any || start < size
	}
	return any
}

// deleteBlob unlinks a blob from the repository.
func (a *API) deleteBlob(w http.ResponseWriter, r *http.Request) {
	repo, d, err := blobTarget(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if err := a.store.DeleteBlob(r.Context(), repo, d); err != nil {
		a.writeError(w, r, err)
		return
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
}
