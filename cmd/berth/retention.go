package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/berth-registry/berth/registry/auth"
	"github.com/berth-registry/berth/storage/retention"
)

// newRetentionCommand returns "berth retention", which applies a running
// server's retention policies through its admin API.
func newRetentionCommand() *cobra.Command {
	var rf registryFlags
	var dryRun, asJSON bool
	cmd := &cobra.Command{
		Use:   "retention [--dry-run] [--json]",
		Short: "Apply the server's retention policies now",
		Long: `Apply the retention policies of a running server's configuration now,
printing one line per deleted tag or manifest and a summary. With --dry-run
nothing is deleted and the lines say what would be. --json prints the
server's report as JSON instead. When authentication is on, this takes an
administrator. See docs/retention.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := rf.client(cmd)
			if err != nil {
				return err
			}
			var rep retention.Report
			q := url.Values{"dryRun": {strconv.FormatBool(dryRun)}}
			if _, err := c.do(cmd.Context(), http.MethodPost, auth.AdminPrefix+"retention", q, nil, http.StatusOK, &rep); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), rep)
			}
			printRetention(cmd.OutOrStdout(), rep)
			return nil
		},
	}
	rf.add(cmd)
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only print what would be deleted")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

// printRetention prints a retention report for people.
func printRetention(w io.Writer, rep retention.Report) {
	verb := "delete"
	if rep.DryRun {
		verb = "would delete"
	}
	for _, t := range rep.Tags {
		fmt.Fprintf(w, "%s tag %s:%s (%s)\n", verb, t.Repository, t.Tag, t.Digest)
	}
	for _, m := range rep.Manifests {
		fmt.Fprintf(w, "%s manifest %s@%s (%s)\n", verb, m.Repository, m.Digest, m.Reason)
	}
	done := "deleted"
	if rep.DryRun {
		done = "would delete"
	}
	fmt.Fprintf(w, "retention: %d repositories covered; %s %d tags and %d manifests\n",
		rep.Repositories, done, len(rep.Tags), len(rep.Manifests))
}
