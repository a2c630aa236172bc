package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-registry/berth/distribution"
	"github.com/berth-registry/berth/storage/pulls"
)

// pullsAnswer is the server's pull record of a repository.
type pullsAnswer struct {
	Name  string        `json:"name"`
	Pulls []pulls.Entry `json:"pulls"`
}

// newPullsCommand returns "berth pulls", the pull record of a repository.
func newPullsCommand() *cobra.Command {
	var (
		rf     registryFlags
		asJSON bool
		actor  string
		ref    string
	)
	cmd := &cobra.Command{
		Use:   "pulls REPOSITORY",
		Short: "Show who last pulled each manifest of a repository, from where and when",
		Long: `Show the pull record of a repository: per manifest and identity
(robot:prod-deployer, user:alice, anonymous), the last pull, its address
and time, newest first, with the tags naming the manifest now. Berth writes
a record at most once a minute per identity and manifest. Reading it needs
push on the repository.

  berth pulls apps/web --actor robot:prod-deployer
  berth pulls apps/web --json

The server is --registry (or BERTH_REGISTRY, default ` + defaultRegistry + `).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			repo := args[0]
			if !distribution.ValidName(repo) {
				return fmt.Errorf("%q is not a repository name", repo)
			}
			q := url.Values{}
			if actor != "" {
				q.Set("actor", actor)
			}
			if ref != "" {
				q.Set("digest", ref)
			}
			c, err := rf.client(cmd)
			if err != nil {
				return err
			}
			var ans pullsAnswer
			if _, err := c.do(cmd.Context(), http.MethodGet, "/v2/"+repo+distribution.PullsSuffix, q, nil, http.StatusOK, &ans); err != nil {
				var ae *APIError
				if errors.As(err, &ae) && ae.Code == "NAME_UNKNOWN" {
					return fmt.Errorf("repository %s does not exist: %w", repo, err)
				}
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), ans)
			}
			return printPulls(cmd.OutOrStdout(), cmd.ErrOrStderr(), ans)
		},
	}
	rf.add(cmd)
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print the server's answer as JSON")
	f.StringVar(&actor, "actor", "", "only this identity's pulls: robot:NAME, user:NAME or anonymous")
	f.StringVar(&ref, "digest", "", "only the pulls of this manifest digest")
	return cmd
}

// printPulls writes the pull record as a table.
func printPulls(out, errOut io.Writer, ans pullsAnswer) error {
	if len(ans.Pulls) == 0 {
		fmt.Fprintf(errOut, "no pulls recorded in %s\n", ans.Name)
		return nil
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tWHO\tFROM\tDIGEST\tTAGS NOW")
	for _, p := range ans.Pulls {
		tags := strings.Join(p.Tags, ",")
		if tags == "" {
			tags = "-"
		}
		addr := p.Actor.Address
		if addr == "" {
			addr = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.Time.UTC().Format(time.RFC3339), actorName(p.Actor), addr, p.Digest, tags)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write pulls: %w", err)
	}
	return nil
}
