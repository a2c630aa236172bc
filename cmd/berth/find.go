package main

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-registry/berth/distribution"
	"github.com/berth-registry/berth/storage"
)

const (
	// findPageSize is how many results berth find asks for per page.
	findPageSize = 500
	// revisionAnnotation names the commit an artifact was built from.
	revisionAnnotation = "org.opencontainers.image.revision"
)

// nextLinkRE reads the target of a Link header's rel="next".
var nextLinkRE = regexp.MustCompile(`<([^>]+)>;\s*rel="next"`)

// findFlags are the filters of berth find.
type findFlags struct {
	annotations, labels     []string
	repository, tag         string
	artifactType, mediaType string
	after, before           string
	json                    bool
}

// newFindCommand returns "berth find", which searches a running registry's
// manifests by annotation, config label, repository, tag, type and time.
func newFindCommand() *cobra.Command {
	var rf registryFlags
	var ff findFlags
	cmd := &cobra.Command{
		Use:   "find [--annotation KEY=VALUE]... [--label KEY=VALUE]... [--repository NAME] [--tag TAG] [flags]",
		Short: "Find manifests by annotation, label, repository, tag, type or creation time",
		Long: `Search a running registry's manifests and indexes. Every filter given must
match; --annotation and --label may be repeated. --repository is a name, or
a name followed by /** for every repository under it. --created-after and
--created-before take an RFC 3339 time or a duration back from now (72h).

Only the repositories the user (--username, or anonymous) may pull are
searched. Results come in order of repository, then digest; every page is
followed. The table shows the repository, tags, digest, created time and
the org.opencontainers.image.revision annotation; --json prints
{"results":[...]} with every field.

  berth find --annotation org.opencontainers.image.revision=3f2a9c1
  berth find --repository apps/web --tag production
  berth find --repository 'apps/**' --label org.opencontainers.image.version=1.4.0 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			query, err := ff.query(time.Now())
			if err != nil {
				return err
			}
			c, err := rf.client(cmd)
			if err != nil {
				return err
			}
			results := []storage.SearchResult{}
			seen := map[string]bool{}
			for {
				var page struct {
					Results []storage.SearchResult `json:"results"`
				}
				hdr, err := c.do(cmd.Context(), http.MethodGet, distribution.SearchPath, query, nil, http.StatusOK, &page)
				if err != nil {
					return fmt.Errorf("search: %w", err)
				}
				results = append(results, page.Results...)
				next, err := nextQuery(hdr)
				if err != nil {
					return err
				}
				if next == nil {
					break
				}
				last := next.Get("last")
				if seen[last] {
					return fmt.Errorf("search: the registry repeated the page after %s", last)
				}
				seen[last] = true
				query = next
			}
			return printResults(cmd, results, ff.json)
		},
	}
	rf.add(cmd)
	f := cmd.Flags()
	f.StringArrayVar(&ff.annotations, "annotation", nil, "manifest annotation KEY=VALUE (repeatable)")
	f.StringArrayVar(&ff.labels, "label", nil, "image config label KEY=VALUE (repeatable)")
	f.StringVar(&ff.repository, "repository", "", "repository name, or NAME/** for every repository under NAME")
	f.StringVar(&ff.tag, "tag", "", "only the manifest this tag names")
	f.StringVar(&ff.artifactType, "artifact-type", "", "artifact type (for images, the config media type)")
	f.StringVar(&ff.mediaType, "media-type", "", "manifest media type")
	f.StringVar(&ff.after, "created-after", "", "created at or after: RFC 3339 time, or a duration ago (24h)")
	f.StringVar(&ff.before, "created-before", "", "created before: RFC 3339 time, or a duration ago")
	f.BoolVar(&ff.json, "json", false, `print {"results":[...]} as JSON`)
	return cmd
}

// query checks the filters and turns them into the search's parameters;
// durations count back from now.
func (ff *findFlags) query(now time.Time) (url.Values, error) {
	q := url.Values{}
	for _, p := range []struct {
		flag, param string
		values      []string
	}{{"--annotation", "annotation", ff.annotations}, {"--label", "label", ff.labels}} {
		for _, v := range p.values {
			if k, _, ok := strings.Cut(v, "="); !ok || k == "" {
				return nil, fmt.Errorf("%s %q: want KEY=VALUE", p.flag, v)
			}
			q.Add(p.param, v)
		}
	}
	for param, v := range map[string]string{"repository": ff.repository, "tag": ff.tag,
		"artifactType": ff.artifactType, "mediaType": ff.mediaType} {
		if v != "" {
			q.Set(param, v)
		}
	}
	for _, t := range []struct{ flag, param, value string }{
		{"--created-after", "created.after", ff.after}, {"--created-before", "created.before", ff.before},
	} {
		if t.value == "" {
			continue
		}
		at, err := parseWhen(t.value, now)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", t.flag, err)
		}
		q.Set(t.param, at.UTC().Format(time.RFC3339Nano))
	}
	q.Set("n", fmt.Sprint(findPageSize))
	return q, nil
}

// parseWhen reads an RFC 3339 time, or a duration back from now.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time (2024-05-01T12:00:00Z) nor a duration (72h)", s)
}

// nextQuery returns the query of the next page named by a Link header
// (of the search, the tag history), nil when there is none.
func nextQuery(hdr http.Header) (url.Values, error) {
	link := hdr.Get("Link")
	if link == "" {
		return nil, nil
	}
	m := nextLinkRE.FindStringSubmatch(link)
	if m == nil {
		return nil, nil
	}
	u, err := url.Parse(m[1])
	if err != nil {
		return nil, fmt.Errorf("bad Link header %q: %w", link, err)
	}
	q := u.Query()
	if q.Get("last") == "" {
		return nil, fmt.Errorf("the Link header %q has no cursor", link)
	}
	return q, nil
}

// printResults writes results as a table, or as JSON.
func printResults(cmd *cobra.Command, results []storage.SearchResult, asJSON bool) error {
	out := cmd.OutOrStdout()
	if asJSON {
		if err := printJSON(out, struct {
			Results []storage.SearchResult `json:"results"`
		}{results}); err != nil {
			return fmt.Errorf("write results: %w", err)
		}
		return nil
	}
	if len(results) == 0 {
		fmt.Fprintln(cmd.ErrOrStderr(), "no matching manifests")
		return nil
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REPOSITORY\tTAGS\tDIGEST\tCREATED\tREVISION")
	for _, r := range results {
		tags, rev := strings.Join(r.Tags, ","), r.Annotations[revisionAnnotation]
		if tags == "" {
			tags = "-"
		}
		if rev == "" {
			rev = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Repository, tags, r.Digest, r.Created.UTC().Format(time.RFC3339), rev)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return nil
}
