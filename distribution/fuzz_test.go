package distribution

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/mux"
)

// specNameRE is the repository name grammar exactly as the OCI Distribution
// Specification writes it, anchored.
var specNameRE = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$`)

// requestWithVars is a request whose route variables are vars, as the router
// would set them.
func requestWithVars(vars map[string]string) *http.Request {
	return mux.SetURLVars(httptest.NewRequest(http.MethodGet, "/", nil), vars)
}

// wantCode fails the test unless err is an *Error with one of codes.
func wantCode(t *testing.T, err error, codes ...Code) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *Error", err, err)
	}
	for _, c := range codes {
		if e.Code == c {
			return
		}
	}
	t.Fatalf("error %v has code %s", err, e.Code.Name)
}

// FuzzName checks validName against the specification's grammar, and that
// repoName never turns an escaped slash into a path separator.
func FuzzName(f *testing.F) {
	for _, s := range []string{
		"library/ubuntu", "a", "a/b/c", "foo.bar_baz__qux---quux/x0", "a__b", "a___b", "a..b", "a//b",
		"/a", "a/", "A", "a-", "-a", "a%2Fb", "a%2fb/c", "caf%C3%A9", "a%zz", strings.Repeat("a", 255),
		strings.Repeat("a", 256), strings.Repeat("ab/", 85) + "c", "\x00", "a\nb", "ａ",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		ok := validName(name)
		if want := len(name) <= maxNameLength && specNameRE.MatchString(name); ok != want {
			t.Fatalf("validName(%q) = %v, the specification's grammar says %v", name, ok, want)
		}
		if ok {
			switch {
			case len(name) > 255:
				t.Fatalf("accepted a name of %d bytes", len(name))
			case strings.Contains(name, ".."), strings.Contains(name, "//"):
				t.Fatalf("accepted %q", name)
			case strings.HasPrefix(name, "/"), strings.HasSuffix(name, "/"):
				t.Fatalf("accepted %q with a leading or trailing slash", name)
			case !onlyAllowed(name):
				t.Fatalf("accepted %q with characters outside [a-z0-9._/-]", name)
			}
		}

		// The route variable holds the name as it appears in the path.
		got, err := repoName(requestWithVars(map[string]string{"name": name}))
		if err != nil {
			wantCode(t, err, CodeNameInvalid)
			return
		}
		if !validName(got) {
			t.Fatalf("repoName(%q) = %q, an invalid name", name, got)
		}
		if u, uerr := url.PathUnescape(name); got != name && (uerr != nil || got != u) {
			t.Fatalf("repoName(%q) = %q, neither the variable nor its unescaping", name, got)
		}
		if strings.Count(got, "/") != strings.Count(name, "/") {
			t.Fatalf("repoName(%q) = %q: an escaped slash became a separator", name, got)
		}
	})
}

// onlyAllowed reports whether s holds only lower-case letters, digits and
// the separators of the name grammar.
func onlyAllowed(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || strings.IndexByte("._-/", c) >= 0) {
			return false
		}
	}
	return true
}

// tagGrammar is the tag grammar written out by hand: one to 128 characters,
// the first a letter, digit or underscore, the rest also dots and hyphens.
func tagGrammar(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		word := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_'
		if !word && (i == 0 || c != '.' && c != '-') {
			return false
		}
	}
	return true
}

var tagSeeds = []string{
	"latest", "v1.2.3", "_x", "A-b_C.d", ".x", "-x", "", strings.Repeat("t", 128), strings.Repeat("t", 129),
	"a:b", "a/b", "ä", "a\x00", "sha256:" + strings.Repeat("0", 64),
}

// FuzzTag checks validTag against the tag grammar.
func FuzzTag(f *testing.F) {
	for _, s := range tagSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tag string) {
		if got, want := validTag(tag), tagGrammar(tag); got != want {
			t.Fatalf("validTag(%q) = %v, the grammar says %v", tag, got, want)
		}
	})
}

// FuzzReference checks parseReference: a reference is a valid digest or a
// valid tag, never both, and anything else is refused with the right code.
func FuzzReference(f *testing.F) {
	for _, s := range tagSeeds {
		f.Add(s)
	}
	for _, s := range []string{
		"sha256:" + strings.Repeat("a", 64), "sha256:" + strings.Repeat("A", 64), "sha256:" + strings.Repeat("a", 63),
		"sha512:" + strings.Repeat("0", 128), "sha384:" + strings.Repeat("0", 96), "md5:d41d8cd98f00b204e9800998ecf8427e",
		"sha256%3A" + strings.Repeat("a", 64), "v1%2E0", "v1%2F0", "%zz", ":", "a:", "sha256+b64:abc",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ref string) {
		got, err := parseReference(requestWithVars(map[string]string{"reference": ref}))
		if err != nil {
			wantCode(t, err, CodeDigestInvalid, CodeManifestUnknown)
			if got != (reference{}) {
				t.Fatalf("parseReference(%q) = %+v with error %v", ref, got, err)
			}
			return
		}
		switch {
		case got.digest != "" && got.tag != "":
			t.Fatalf("parseReference(%q) = %+v, both a digest and a tag", ref, got)
		case got.digest != "":
			if verr := got.digest.Validate(); verr != nil {
				t.Fatalf("parseReference(%q) accepted digest %q: %v", ref, got.digest, verr)
			}
		case got.tag != "":
			if !tagGrammar(got.tag) || strings.Contains(got.tag, ":") {
				t.Fatalf("parseReference(%q) accepted tag %q", ref, got.tag)
			}
		default:
			t.Fatalf("parseReference(%q) accepted an empty reference", ref)
		}
		if s, want := got.String(), pathVar(requestWithVars(map[string]string{"reference": ref}), "reference"); s != want {
			t.Fatalf("parseReference(%q).String() = %q, want %q", ref, s, want)
		}
	})
}

// FuzzContentRange checks chunkBounds: what it accepts is a chunk with a
// start and a length that fit in an int64 offset, consistent with the range
// and with Content-Length.
func FuzzContentRange(f *testing.F) {
	for _, c := range []struct {
		cr string
		cl int64
	}{
		{"", -1}, {"", 0}, {"", 1000}, {"0-999", 1000}, {"0-999", -1}, {"0-999", 999}, {"bytes 1000-1999/3000", 1000},
		{"bytes 0-0/*", 1}, {"1999-1000", -1}, {"abc", 5}, {"-1-5", 7}, {"1000-", -1}, {"bytes=0-9", 10},
		{"0-9223372036854775807", -1}, {"1-9223372036854775807", -1}, {"0-9223372036854775806", -1},
		{"+0-+9", 10}, {" 0-9 ", 10}, {"0-9/", 10}, {"0-99999999999999999999", -1},
	} {
		f.Add(c.cr, c.cl)
	}
	f.Fuzz(func(t *testing.T, cr string, cl int64) {
		if cl < 0 {
			cl = -1 // what net/http sets when the length is unknown
		}
		r := httptest.NewRequest(http.MethodPatch, "/", nil)
		r.ContentLength = cl
		if cr != "" {
			r.Header.Set("Content-Range", cr)
		}
		start, length, err := chunkBounds(r)
		if err != nil {
			wantCode(t, err, CodeBlobUploadInvalid, CodeSizeInvalid)
			return
		}
		if r.Header.Get("Content-Range") == "" {
			if start != -1 || length != cl {
				t.Fatalf("no Content-Range, Content-Length %d: start %d, length %d", cl, start, length)
			}
			return
		}
		if start < 0 || length < 1 {
			t.Fatalf("Content-Range %q: start %d, length %d", cr, start, length)
		}
		if start > math.MaxInt64-length {
			t.Fatalf("Content-Range %q: chunk %d+%d ends past the largest offset", cr, start, length)
		}
		if cl >= 0 && length != cl {
			t.Fatalf("Content-Range %q, Content-Length %d: length %d", cr, cl, length)
		}
		// The range read again, by hand: "[bytes ]<start>-<end>[/<size>]".
		spec := strings.TrimPrefix(strings.TrimSpace(cr), "bytes ")
		spec, _, _ = strings.Cut(spec, "/")
		first, last, _ := strings.Cut(spec, "-")
		s, err1 := strconv.ParseInt(first, 10, 64)
		e, err2 := strconv.ParseInt(last, 10, 64)
		if err1 != nil || err2 != nil || s != start || e != start+length-1 {
			t.Fatalf("Content-Range %q: start %d, length %d; read by hand %d-%d (%v, %v)", cr, start, length, s, e, err1, err2)
		}
	})
}

// FuzzRange checks satisfiable against http.ServeContent, which serves
// blobs: where satisfiable passes a Range header, ServeContent must serve
// it (206, or 200 when it ignores ranges that add up to more than the
// blob), and where satisfiable refuses it, ServeContent must answer 416 too,
// except in the cases where Berth is deliberately stricter (stricter).
func FuzzRange(f *testing.F) {
	for _, c := range []struct {
		rng  string
		size int64
	}{
		{"bytes=0-9", 100}, {"bytes=-5", 100}, {"bytes=90-", 100}, {"bytes=95-5000", 100}, {"bytes=-500", 100},
		{"bytes=99-99", 100}, {"bytes=5000-", 100}, {"bytes=100-", 100}, {"bytes=100-200", 100}, {"bytes=-0", 100},
		{"bytes=abc", 100}, {"bytes=5-2", 100}, {"items=0-9", 100}, {"bytes=-", 100}, {"bytes=0-x", 100},
		{"0-9", 100}, {"bytes=--5", 100}, {"bytes=0-0,2-3", 10}, {"bytes=0-,0-", 10}, {"bytes= 1 - 2 ,", 10},
		{"bytes=0-", 0}, {"bytes=-1", 0}, {"bytes=,,,", 10}, {"bytes=200-100,0-1", 100}, {"bytes=1-2\t", 10},
		{"bytes=0-1\u00a0", 10}, {"bytes=\v0-1", 10}, {"bytes=+1-+2", 10}, {"bytes=-+3", 10}, {"Bytes=0-1", 10},
	} {
		f.Add(c.rng, c.size)
	}
	f.Fuzz(func(t *testing.T, header string, size int64) {
		if header == "" {
			return // getBlob asks satisfiable only about a Range it was sent
		}
		size %= 4097
		if size < 0 {
			size = -size
		}
		ok := satisfiable(header, size)

		data := make([]byte, size)
		for i := range data {
			data[i] = byte(i*7 + i>>8)
		}
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.Header.Set("Range", header)
		rec := httptest.NewRecorder()
		rec.Header().Set("Content-Type", "application/octet-stream") // as getBlob sets it
		http.ServeContent(rec, req, "", time.Time{}, bytes.NewReader(data))
		code, body := rec.Code, rec.Body.Bytes()

		switch {
		case !ok && code == http.StatusRequestedRangeNotSatisfiable:
		case !ok:
			if !stricter(header, size) {
				t.Fatalf("satisfiable(%q, %d) = false, ServeContent answers %d", header, size, code)
			}
		case code == http.StatusOK:
			if !bytes.Equal(body, data) {
				t.Fatalf("Range %q, size %d: 200 without the whole blob", header, size)
			}
		case code == http.StatusPartialContent:
			checkPartial(t, header, data, rec)
		default:
			t.Fatalf("satisfiable(%q, %d) = true, ServeContent answers %d: %s", header, size, code, body)
		}
	})
}

// stricter reports whether a Range header satisfiable refuses is one
// http.ServeContent serves, on purpose. Berth answers 416 where RFC 9110
// §14.1.1 finds no byte to send, or where §14.2 lets it reject an invalid
// ranges-specifier; net/http is more lenient:
//   - for an empty blob it ignores a range that does not overlap (200) and
//     serves a suffix range as an empty 206 ("bytes 0--1/0");
//   - it serves a suffix-length of 0 ("bytes=-0") as an empty 206;
//   - it skips, without reading its end, a range-spec whose first byte is
//     past the end, so "bytes=200-100,0-1" or "bytes=200-x,0-1" are served;
//   - it ignores a ranges-specifier without any range-spec ("bytes=,") and
//     serves the whole blob (200).
func stricter(header string, size int64) bool {
	if size == 0 || zeroSuffix(header) {
		return true
	}
	specs := rangeSpecs(header)
	for _, r := range specs {
		start, err := strconv.ParseInt(r.first, 10, 64)
		if r.first == "" || err != nil || start < size || r.last == "" {
			continue
		}
		if end, err := strconv.ParseInt(r.last, 10, 64); err != nil || end < start {
			return true
		}
	}
	return len(specs) == 0
}

// rangeSpec is one range-spec of a Range header, trimmed as net/http does;
// first is empty for a suffix range.
type rangeSpec struct{ first, last string }

// rangeSpecs splits a "bytes=" Range header into its range-specs, leaving
// out empty list elements and elements without a "-".
func rangeSpecs(header string) []rangeSpec {
	spec, ok := strings.CutPrefix(header, "bytes=")
	if !ok {
		return nil
	}
	var specs []rangeSpec
	for _, part := range strings.Split(spec, ",") {
		if first, last, ok := strings.Cut(textproto.TrimString(part), "-"); ok {
			specs = append(specs, rangeSpec{textproto.TrimString(first), textproto.TrimString(last)})
		}
	}
	return specs
}

// zeroSuffix reports whether a Range header holds a suffix range of length
// 0, which net/http serves as an empty range with an invalid Content-Range
// such as "bytes 10-9/10" (golang/go#81262).
func zeroSuffix(header string) bool {
	for _, r := range rangeSpecs(header) {
		if n, err := strconv.ParseInt(r.last, 10, 64); r.first == "" && err == nil && n == 0 {
			return true
		}
	}
	return false
}

// checkPartial checks that a 206 holds the bytes of data its
// Content-Range headers name.
func checkPartial(t *testing.T, header string, data []byte, rec *httptest.ResponseRecorder) {
	t.Helper()
	check := func(cr string, part []byte) {
		var first, last, total int64
		_, err := fmt.Sscanf(cr, "bytes %d-%d/%d", &first, &last, &total)
		if err == nil && len(part) == 0 && first == total && last == total-1 && zeroSuffix(header) {
			return // the empty part net/http makes of a suffix range of 0
		}
		if err != nil ||
			total != int64(len(data)) || first < 0 || last < first || last >= total || !bytes.Equal(part, data[first:last+1]) {
			t.Fatalf("Range %q, size %d: part %q of %d bytes (%v)", header, len(data), cr, len(part), err)
		}
	}
	mt, params, err := mime.ParseMediaType(rec.Header().Get("Content-Type"))
	if err != nil || mt != "multipart/byteranges" {
		check(rec.Header().Get("Content-Range"), rec.Body.Bytes())
		return
	}
	mr := multipart.NewReader(bytes.NewReader(rec.Body.Bytes()), params["boundary"])
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatalf("Range %q: multipart answer: %v", header, err)
		}
		var buf bytes.Buffer
		if _, err := buf.ReadFrom(p); err != nil {
			t.Fatalf("Range %q: reading a part: %v", header, err)
		}
		check(p.Header.Get("Content-Range"), buf.Bytes())
	}
}
