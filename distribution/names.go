package distribution

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"

	"github.com/gorilla/mux"
	"github.com/opencontainers/go-digest"
)

// The grammar of the specification for repository names and tags.
var (
	nameRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)
	tagRE  = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
)

// maxNameLength bounds a repository name, so that host and name together
// stay within what clients accept.
const maxNameLength = 255

// validName reports whether name is a valid repository name.
func validName(name string) bool {
	return len(name) <= maxNameLength && nameRE.MatchString(name)
}

// validTag reports whether tag is a valid tag.
func validTag(tag string) bool { return tagRE.MatchString(tag) }

// ValidName reports whether name is a repository name the specification
// allows (and at most 255 bytes long), as the API checks it.
func ValidName(name string) bool { return validName(name) }

// ValidTag reports whether tag is a tag the specification allows:
// [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}.
func ValidTag(tag string) bool { return validTag(tag) }

// TagGrammar is the grammar of tags, for messages.
const TagGrammar = "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}"

// pathVar returns a route variable, unescaped with UnescapeSegment.
func pathVar(r *http.Request, key string) string { return UnescapeSegment(mux.Vars(r)[key]) }

// UnescapeSegment unescapes a part of the escaped request path the way the
// API reads its route variables. Routes match the escaped path, so an
// escaped slash stays inside its variable; such a value, or one that does
// not unescape, is returned as sent, and its "%" fails every grammar.
// Unescaping it would let "a%2Fb" name the repository "a/b". The
// authentication middleware reads repository names with it too, so that
// both agree on the repository a request is about.
func UnescapeSegment(v string) string {
	u, err := url.PathUnescape(v)
	if err != nil || strings.Count(u, "/") != strings.Count(v, "/") {
		return v
	}
	return u
}

// repoName returns the request's repository name or a NAME_INVALID error.
func repoName(r *http.Request) (string, error) {
	name := pathVar(r, "name")
	if !validName(name) {
		return "", newError(CodeNameInvalid, map[string]string{"name": name}, "invalid repository name %q", name)
	}
	return name, nil
}

// parseDigest checks a digest the client sent.
func parseDigest(s string) (digest.Digest, error) {
	d, err := digest.Parse(s)
	if err != nil {
		return "", newError(CodeDigestInvalid, map[string]string{"digest": s}, "invalid digest %q: %v", s, err)
	}
	return d, nil
}

// reference is a manifest reference: a tag or a digest.
type reference struct {
	tag    string
	digest digest.Digest
}

func (r reference) String() string {
	if r.digest != "" {
		return string(r.digest)
	}
	return r.tag
}

// parseReference reads the manifest reference of the request.
func parseReference(r *http.Request) (reference, error) {
	return parseRef(pathVar(r, "reference"))
}

// parseRef checks a manifest reference. Anything with a colon must be a
// digest; anything else must be a tag.
func parseRef(s string) (reference, error) {
	if strings.Contains(s, ":") {
		d, err := parseDigest(s)
		return reference{digest: d}, err
	}
	if !validTag(s) {
		return reference{}, newError(CodeManifestUnknown, map[string]string{"reference": s}, "invalid tag %q", s)
	}
	return reference{tag: s}, nil
}
