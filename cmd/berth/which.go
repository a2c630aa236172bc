package main

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	"github.com/berth-registry/berth/distribution"
	"github.com/berth-registry/berth/storage"
)

// whichAnswer is what berth which prints with --json.
type whichAnswer struct {
	File    string           `json:"file,omitempty"`
	Digest  digest.Digest    `json:"digest"`
	Results []storage.Holder `json:"results"`
}

// newWhichCommand returns "berth which", the reverse lookup of content.
func newWhichCommand() *cobra.Command {
	var (
		rf     registryFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "which FILE|DIGEST",
		Short: "Tell which artifacts hold a file, under which tags now and before",
		Long: `Hash FILE (a file found on a server: a jar, a binary, a wheel) with sha256,
or take DIGEST as given, and ask the registry which artifacts hold that
content: as a file or layer, a config, a manifest, or through an index; in
which repositories; under which tags now; and which tags named it before,
and when, from the tags' history. Only the repositories the user
(--username, or anonymous) may pull are searched.

  berth which /opt/myapp/myapp.jar
  berth which sha256:3f2a... --json

The server is --registry (or BERTH_REGISTRY, default ` + defaultRegistry + `).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ans := whichAnswer{Results: []storage.Holder{}}
			if d, err := digest.Parse(args[0]); err == nil {
				if _, statErr := os.Stat(args[0]); statErr != nil {
					ans.Digest = d
				}
			}
			if ans.Digest == "" {
				d, err := hashFile(args[0])
				if err != nil {
					return err
				}
				ans.File, ans.Digest = args[0], d
			}
			c, err := rf.client(cmd)
			if err != nil {
				return err
			}
			query := url.Values{"content": {string(ans.Digest)}, "n": {"100"}}
			seen := map[string]bool{}
			for {
				var page struct {
					Results []storage.Holder `json:"results"`
				}
				hdr, err := c.do(cmd.Context(), http.MethodGet, distribution.SearchPath, query, nil, http.StatusOK, &page)
				if err != nil {
					return fmt.Errorf("search: %w", err)
				}
				ans.Results = append(ans.Results, page.Results...)
				next, err := nextQuery(hdr)
				if err != nil {
					return err
				}
				if next == nil {
					break
				}
				if seen[next.Get("last")] {
					return errors.New("search: the registry repeated a page")
				}
				seen[next.Get("last")] = true
				query = next
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), ans)
			}
			return printHolders(cmd, ans)
		},
	}
	rf.add(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"digest", "results":[...]} as JSON`)
	return cmd
}

// hashFile returns the sha256 digest of a file, read as a stream.
func hashFile(path string) (digest.Digest, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.IsDir() {
		return "", fmt.Errorf("%s is a directory: give a file, or a digest", path)
	}
	d, err := digest.SHA256.FromReader(f)
	if err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	return d, nil
}

// printHolders writes the holders as a table, with the tags' past below
// each.
func printHolders(cmd *cobra.Command, ans whichAnswer) error {
	out := cmd.OutOrStdout()
	subject := string(ans.Digest)
	if ans.File != "" {
		subject = ans.File + " (" + subject + ")"
	}
	if len(ans.Results) == 0 {
		fmt.Fprintf(cmd.ErrOrStderr(), "no artifact you may pull holds %s\n", subject)
		return nil
	}
	fmt.Fprintf(out, "%s is held by:\n", subject)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REPOSITORY\tTAGS NOW\tAS\tMANIFEST\tPUSHED")
	for _, h := range ans.Results {
		as := h.As
		switch {
		case h.File != "":
			as += " " + h.File
		case h.Via != "":
			as += " via " + short(h.Via)
		}
		tags := strings.Join(h.Tags, ",")
		if tags == "" {
			tags = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", h.Repository, tags, as, short(h.Digest), h.Pushed.UTC().Format(time.RFC3339))
		for _, p := range h.History {
			until := "now"
			if p.Until != nil {
				until = p.Until.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "\t  %s\t%s → %s\t%s by %s\t\n", p.Tag, p.From.UTC().Format(time.RFC3339), until, p.Action, actorName(p.By))
		}
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return nil
}

// short abbreviates a digest for a table.
func short(d digest.Digest) string {
	if len(d.Encoded()) < 12 {
		return string(d)
	}
	return string(d.Algorithm()) + ":" + d.Encoded()[:12]
}

// actorName names an actor as history does: "robot:ci", "anonymous".
func actorName(a storage.Actor) string {
	if a.Name == "" {
		return a.Kind
	}
	return a.Kind + ":" + a.Name
}
