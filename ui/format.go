package ui

import (
	"fmt"
	"html/template"
	"net/url"
	"strings"
	"time"
)

// Annotations and labels the pages read.
const (
	annotationRevision = "org.opencontainers.image.revision"
	annotationVersion  = "org.opencontainers.image.version"
	annotationSource   = "org.opencontainers.image.source"
)

// funcs are the templates' helpers.
func (u *UI) funcs() template.FuncMap {
	return template.FuncMap{
		"ago":         u.ago,
		"short":       shortDigest,
		"shortCommit": shortCommit,
		"size":        humanSize,
		"repoURL":     repoURL,
		"artifactURL": artifactURL,
		"historyURL":  historyURL,
		"boardURL":    boardURL,
		"confirmURL":  confirmURL,
		"add":         func(a, b int) int { return a + b },
		"typeLabel":   typeLabel,
	}
}

// ago renders a time as a <time> element: relative for reading, the exact
// time (UTC) on hover and for assistive technology in its title and
// datetime.
func (u *UI) ago(v any) template.HTML {
	var t time.Time
	switch x := v.(type) {
	case time.Time:
		t = x
	case *time.Time:
		if x != nil {
			t = *x
		}
	}
	if t.IsZero() {
		return template.HTML(`<span class="muted">unknown</span>`)
	}
	exact := t.UTC().Format("2006-01-02 15:04:05 UTC")
	return template.HTML(fmt.Sprintf(`<time datetime="%s" title="%s">%s</time>`,
		template.HTMLEscapeString(t.UTC().Format(time.RFC3339)), template.HTMLEscapeString(exact),
		template.HTMLEscapeString(relative(u.now().Sub(t)))))
}

// relative says how long ago a duration is, as people do.
func relative(d time.Duration) string {
	future := d < 0
	if future {
		d = -d
	}
	var s string
	switch {
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		s = plural(int(d/time.Minute), "minute")
	case d < 24*time.Hour:
		s = plural(int(d/time.Hour), "hour")
	case d < 30*24*time.Hour:
		s = plural(int(d/(24*time.Hour)), "day")
	case d < 365*24*time.Hour:
		s = plural(int(d/(30*24*time.Hour)), "month")
	default:
		s = plural(int(d/(365*24*time.Hour)), "year")
	}
	if future {
		return "in " + s
	}
	return s + " ago"
}

func plural(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return fmt.Sprintf("%d %ss", n, unit)
}

// shortDigest is a digest cut to its algorithm and 12 hex digits, as
// people quote them.
func shortDigest(d string) string {
	alg, hex, ok := strings.Cut(d, ":")
	if !ok || len(hex) <= 12 {
		return d
	}
	return alg + ":" + hex[:12]
}

// shortCommit is a commit id cut to 12 characters.
func shortCommit(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}

// humanSize is a byte count in binary units.
func humanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// The UI's URLs. Repository names may hold slashes but never a "-" path
// segment, so "/-/" ends the name.
func repoURL(repo string) string { return "/ui/r/" + repo }

func artifactURL(repo, ref string) string { return "/ui/r/" + repo + "/-/artifact/" + ref }

func historyURL(repo, tag string) string { return "/ui/r/" + repo + "/-/history/" + tag }

func boardURL(repo string) string {
	if repo == "" {
		return "/ui/board"
	}
	return "/ui/board?" + url.Values{"repository": {repo}}.Encode()
}

// typeLabel names what a search result is: an image, an index, or the
// artifact type of anything else.
func typeLabel(artifactType, mediaType string) string {
	switch {
	case isIndex(mediaType):
		return "index"
	case isImageConfig(artifactType):
		return "image"
	case artifactType != "":
		return artifactType
	}
	return mediaType
}

// confirmURL is the page confirming a promotion or a rollback on the
// board; back is where the visitor returns after it.
func confirmURL(action, repo, from, to, back string) string {
	q := url.Values{"action": {action}, "repository": {repo}, "to": {to}, "back": {back}}
	if from != "" {
		q.Set("from", from)
	}
	return "/ui/board/confirm?" + q.Encode()
}

// commitOf is the commit that built an artifact, from its annotations or
// its image config's labels.
func commitOf(annotations, labels map[string]string) string {
	for _, m := range []map[string]string{annotations, labels} {
		if v := m[annotationRevision]; v != "" {
			return v
		}
	}
	return labels["org.label-schema.vcs-ref"]
}

// versionOf is an artifact's version, from its annotations or labels.
func versionOf(annotations, labels map[string]string) string {
	for _, m := range []map[string]string{annotations, labels} {
		if v := m[annotationVersion]; v != "" {
			return v
		}
	}
	return ""
}
