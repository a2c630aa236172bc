package files

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/berth-registry/berth/distribution"
)

// Prefix starts every path this package serves.
const Prefix = "/artifacts/"

// Target is what an /artifacts/ path names.
type Target struct {
	// Repo is the repository, Version the tag of the version in it.
	Repo    string
	Version string
	// File is the file's name; empty for the version itself (a listing,
	// or a multipart upload).
	File string
}

// maxFilename bounds a file name, as file systems do.
const maxFilename = 255

// ParsePath reads the repository, version and file an /artifacts/ path
// names, from the escaped path (r.URL.EscapedPath()), as a request of
// method sees it:
//
//	POST     /artifacts/<repository>/<version>[/]
//	GET HEAD /artifacts/<repository>/<version>/         the version's files
//	other    /artifacts/<repository>/<version>/<file>
//
// The repository may have several segments; the version and file are one
// each. Each segment is unescaped alone: an escaped slash never joins two.
// The authentication middleware and the handler both read paths with it,
// so that they agree on the repository a request is about. The error is
// an *distribution.Error to answer with.
func ParsePath(method, escaped string) (Target, error) {
	rest, ok := strings.CutPrefix(escaped, Prefix)
	if !ok {
		return Target{}, pathError("%q is not under %s", escaped, Prefix)
	}
	listing := strings.HasSuffix(rest, "/")
	if method == http.MethodPost {
		rest = strings.TrimSuffix(rest, "/")
	} else if listing {
		if method != http.MethodGet && method != http.MethodHead {
			return Target{}, pathError("%s of a version's listing: name a file after the version, %s<repository>/<version>/<file>", method, Prefix)
		}
		rest = strings.TrimSuffix(rest, "/")
	}
	raw := strings.Split(rest, "/")
	segs := make([]string, len(raw))
	for i, s := range raw {
		u, err := url.PathUnescape(s)
		if err != nil || strings.Contains(u, "/") {
			return Target{}, pathError("path segment %q does not unescape to one segment", s)
		}
		segs[i] = u
	}
	var t Target
	switch {
	case method == http.MethodPost || listing:
		if len(segs) < 2 {
			return Target{}, pathError("want %s<repository>/<version>", Prefix)
		}
		t = Target{Repo: strings.Join(segs[:len(segs)-1], "/"), Version: segs[len(segs)-1]}
	default:
		if len(segs) < 3 {
			return Target{}, pathError("want %s<repository>/<version>/<file> (to list a version's files, end the path with a slash: %s<repository>/<version>/)", Prefix, Prefix)
		}
		t = Target{Repo: strings.Join(segs[:len(segs)-2], "/"), Version: segs[len(segs)-2], File: segs[len(segs)-1]}
	}
	if !distribution.ValidName(t.Repo) {
		return Target{}, &distribution.Error{Code: distribution.CodeNameInvalid, Detail: map[string]string{"repository": t.Repo},
			Message: "invalid repository name " + strconv.Quote(t.Repo) + ": lower case letters, digits and separators (. _ __ -), segments joined by /"}
	}
	if !distribution.ValidTag(t.Version) {
		return Target{}, versionError(t.Version)
	}
	if t.File != "" {
		if err := CheckFilename(t.File); err != nil {
			return Target{}, err
		}
	}
	return t, nil
}

// versionError refuses a version that is no tag.
func versionError(v string) *distribution.Error {
	return &distribution.Error{Code: distribution.CodeManifestInvalid, Detail: map[string]string{"version": v},
		Message: "version " + strconv.Quote(v) + " is not a valid tag: it must match " + distribution.TagGrammar, Status: http.StatusBadRequest}
}

// CheckFilename checks a file's name: one path element of at most 255
// bytes of printable UTF-8, neither "." nor "..", without a slash or a
// backslash. It returns the *distribution.Error to answer otherwise.
func CheckFilename(name string) error {
	bad := func(why string) error {
		return &distribution.Error{Code: distribution.CodeBlobUploadInvalid, Detail: map[string]string{"filename": name},
			Message: "invalid file name " + strconv.Quote(name) + ": " + why, Status: http.StatusBadRequest}
	}
	switch {
	case name == "":
		return bad("empty")
	case name == "." || name == "..":
		return bad("a file name may not be . or ..")
	case strings.ContainsAny(name, `/\`):
		return bad("a file name may not contain / or \\; send the file alone, by its base name")
	case len(name) > maxFilename:
		return bad("longer than 255 bytes")
	case !utf8.ValidString(name):
		return bad("not UTF-8")
	case strings.ContainsFunc(name, func(r rune) bool { return !unicode.IsPrint(r) && r != ' ' }):
		return bad("control characters are not allowed")
	}
	return nil
}

// pathError is the error of a path that names no version or file.
func pathError(format string, args ...any) *distribution.Error {
	return &distribution.Error{Code: distribution.CodeNameInvalid, Message: fmt.Sprintf(format, args...), Status: http.StatusBadRequest}
}
