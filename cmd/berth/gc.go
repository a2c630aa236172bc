package main

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-registry/berth/admin"
)

// gcTimeout bounds a garbage collection requested through the admin API:
// far longer than other admin requests, since it walks the whole index.
const gcTimeout = time.Hour

// newGCCommand returns "berth gc", which runs an online garbage collection
// in a running server through its admin API.
func newGCCommand() *cobra.Command {
	var rf registryFlags
	var grace time.Duration
	var dryRun, asJSON bool
	cmd := &cobra.Command{
		Use:   "gc [--grace DURATION] [--dry-run] [--json]",
		Short: "Collect garbage in a running registry",
		Long: `Remove, while the registry keeps serving pulls and pushes, what nothing
references any more: idle upload sessions, referrers whose subject is gone,
blob links no manifest of their repository references, blobs no repository
links, and repositories left empty. Manifests are never removed for being
untagged: that is retention's job. Nothing younger than the grace period is
removed (default: the server's gc.grace); see docs/gc.md.

The server is --registry (or BERTH_REGISTRY, default ` + defaultRegistry + `);
with authentication on, the user (--username or BERTH_USERNAME) must be an
administrator, and the password is read with --password-stdin or from
BERTH_PASSWORD.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if grace < 0 {
				return fmt.Errorf("--grace %s: must not be negative", grace)
			}
			c, err := rf.client(cmd)
			if err != nil {
				return err
			}
			c.http.Timeout = gcTimeout
			q := url.Values{}
			if cmd.Flags().Changed("grace") {
				q.Set("grace", grace.String())
			}
			if dryRun {
				q.Set("dryRun", "true")
			}
			var res admin.GCResult
			if _, err := c.do(cmd.Context(), http.MethodPost, admin.GCPath, q, nil, http.StatusOK, &res); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, res)
			}
			verb := "removed"
			if res.DryRun {
				verb = "would remove"
			}
			fmt.Fprintf(out, "garbage collection (grace %s) %s:\n", res.Grace, verb)
			if !res.DryRun {
				fmt.Fprintf(out, "  upload sessions  %d\n", res.UploadsExpired)
			}
			fmt.Fprintf(out, "  manifests        %d\n", res.ManifestsRemoved)
			fmt.Fprintf(out, "  blob links       %d\n", res.LinksRemoved)
			fmt.Fprintf(out, "  blobs            %d\n", res.BlobsRemoved)
			fmt.Fprintf(out, "  repositories     %d\n", res.RepositoriesRemoved)
			fmt.Fprintf(out, "  bytes reclaimed  %s (%d bytes)\n", humanBytes(res.BytesReclaimed), res.BytesReclaimed)
			fmt.Fprintf(out, "  took             %s\n", res.Took)
			return nil
		},
	}
	rf.add(cmd)
	f := cmd.Flags()
	f.DurationVar(&grace, "grace", 0, "collect only what is older than this (default: the server's gc.grace)")
	f.BoolVar(&dryRun, "dry-run", false, "report what would be removed, remove nothing")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

// humanBytes formats n in binary units: 1.5 GiB.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
