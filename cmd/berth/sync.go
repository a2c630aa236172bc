package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-registry/berth/admin"
	"github.com/berth-registry/berth/replication"
)

// syncTimeout bounds a sync run requested through the admin API: a run
// copies as much as its rule selects.
const syncTimeout = 24 * time.Hour

// newSyncCommand returns "berth sync", which runs a running server's
// replication rules and shows their state through its admin API.
func newSyncCommand() *cobra.Command {
	var rf registryFlags
	cmd := &cobra.Command{
		Use:   "sync run RULE | sync status",
		Short: "Run a replication rule now, or show the rules' state",
		Long: `Replication rules (sync.rules in the server's configuration) copy images
from a remote registry into Berth (pull rules, on a schedule) and deliver
what is pushed to Berth to a remote (push rules, as it arrives); see
docs/sync.md.

The server is --registry (or BERTH_REGISTRY, default ` + defaultRegistry + `);
with authentication on, the user (--username or BERTH_USERNAME) must be an
administrator, and the password is read with --password-stdin or from
BERTH_PASSWORD.`,
	}
	rf.add(cmd)
	var asJSON bool
	run := &cobra.Command{
		Use:   "run RULE",
		Short: "Run a replication rule now and print what it copied",
		Long: `Run the rule now (after a run of it in progress, if any) and print the tags
it set or delivered and what failed. A second run copies nothing that the
first copied. The run goes on in the server if this command is stopped.
The exit status is 1 when something failed.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := rf.client(cmd)
			if err != nil {
				return err
			}
			c.http.Timeout = syncTimeout
			var rep replication.Report
			path := strings.TrimSuffix(admin.SyncPath, "/") + "/" + url.PathEscape(args[0]) + "/run"
			if _, err := c.do(cmd.Context(), http.MethodPost, path, nil, nil, http.StatusOK, &rep); err != nil {
				return err
			}
			if asJSON {
				if err := printJSON(cmd.OutOrStdout(), rep); err != nil {
					return err
				}
			} else {
				printSyncReport(cmd.OutOrStdout(), rep)
			}
			if len(rep.Failures) > 0 {
				return fmt.Errorf("sync %s: %d failures", rep.Rule, len(rep.Failures))
			}
			return nil
		},
	}
	run.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	status := &cobra.Command{
		Use:   "status",
		Short: "Show the replication rules, their last runs and what is pending",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := rf.client(cmd)
			if err != nil {
				return err
			}
			var st admin.SyncStatus
			if _, err := c.do(cmd.Context(), http.MethodGet, admin.SyncPath, nil, nil, http.StatusOK, &st); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), st)
			}
			printSyncStatus(cmd.OutOrStdout(), st)
			return nil
		},
	}
	status.Flags().BoolVar(&asJSON, "json", false, "print the state as JSON")
	cmd.AddCommand(run, status)
	return cmd
}

// printSyncReport prints a run's report for people.
func printSyncReport(w io.Writer, rep replication.Report) {
	verb := "set"
	if rep.Direction == replication.Push {
		verb = "delivered"
	}
	for _, t := range rep.Tags {
		fmt.Fprintf(w, "%s %s:%s (%s)\n", verb, t.Repository, t.Tag, t.Digest)
	}
	for _, f := range rep.Failures {
		at := f.Repository
		if f.Tag != "" {
			at += ":" + f.Tag
		}
		fmt.Fprintf(w, "failed %s: %s\n", at, f.Error)
	}
	fmt.Fprintf(w, "sync %s (%s): %d tags %s, %d manifests and %d blobs copied (%s), %d failures, in %s\n",
		rep.Rule, rep.Direction, len(rep.Tags), verb, rep.Manifests, rep.Blobs, humanBytes(rep.Bytes), len(rep.Failures),
		rep.Finished.Sub(rep.Started).Round(time.Millisecond))
	if rep.Unsigned > 0 {
		fmt.Fprintf(w, "  %d tags left out: not signed\n", rep.Unsigned)
	}
}

// printSyncStatus prints the rules' state for people.
func printSyncStatus(w io.Writer, st admin.SyncStatus) {
	if len(st.Rules) == 0 {
		fmt.Fprintln(w, "no sync rules")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RULE\tDIRECTION\tREMOTE\tSTATE\tLAST RUN\tRESULT")
	for _, r := range st.Rules {
		state := "idle"
		switch {
		case r.Running:
			state = "running"
		case r.Interrupted:
			state = "interrupted"
		case r.Direction == replication.Push && r.Pending > 0:
			state = fmt.Sprintf("%d pending", r.Pending)
		case r.NextRun != nil:
			state = "next " + r.NextRun.Local().Format(time.DateTime)
		}
		last, result := "never", ""
		if lr := r.LastRun; lr != nil {
			last = lr.Started.Local().Format(time.DateTime)
			result = fmt.Sprintf("%d tags, %d blobs, %s", lr.Tags, lr.Blobs, humanBytes(lr.Bytes))
			if lr.Error != "" {
				result += "; " + lr.Error
			}
		}
		if r.Direction == replication.Push {
			result = fmt.Sprintf("%d tags delivered in all; ", r.Delivered) + result
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, r.Direction, r.Remote, state, last, result)
	}
	_ = tw.Flush()
}
