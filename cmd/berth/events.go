package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-registry/berth/admin"
	"github.com/berth-registry/berth/notify"
)

// eventsLong is what every "berth events" command says of the server.
const eventsLong = `
The server is --registry (or BERTH_REGISTRY, default ` + defaultRegistry + `);
with authentication on, the user (--username or BERTH_USERNAME) must be an
administrator, and the password is read with --password-stdin or from
BERTH_PASSWORD.`

// newEventsCommand returns "berth events" with list, retry and drop.
func newEventsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Inspect and replay webhook deliveries",
		Long: `Inspect and replay the deliveries of events to webhook endpoints, through a
running server's admin API: those waiting in the outbox (pending) and those
that failed every attempt (dead letters).` + eventsLong,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newEventsListCommand(), newEventsRetryCommand(), newEventsDropCommand())
	return cmd
}

func newEventsListCommand() *cobra.Command {
	var (
		rf            registryFlags
		dead, pending bool
		endpoint      string
		asJSON        bool
		limit         int
	)
	const eventsPageLimit = 500
	cmd := &cobra.Command{
		Use:   "list [--dead | --pending] [--endpoint NAME] [-n N] [--json]",
		Short: "List pending deliveries and dead letters",
		Long: `List the deliveries waiting in the outbox and the dead letters, oldest first:
number, state, endpoint, action, what the event is about, attempts, and
the last error. retry and drop take the number.` + eventsLong,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dead && pending {
				return errors.New("--dead and --pending: give one, or neither for both")
			}
			if limit < 0 {
				return fmt.Errorf("-n %d: want 0 (all) or more", limit)
			}
			c, err := rf.client(cmd)
			if err != nil {
				return err
			}
			q := url.Values{}
			switch {
			case dead:
				q.Set("state", notify.StateDead)
			case pending:
				q.Set("state", notify.StatePending)
			}
			if endpoint != "" {
				q.Set("endpoint", endpoint)
			}
			records := []notify.Record{}
			for {
				n := eventsPageLimit
				if limit > 0 {
					n = min(n, limit-len(records))
				}
				q.Set("n", strconv.Itoa(n))
				var page notify.Listing
				if _, err := c.do(cmd.Context(), http.MethodGet, admin.EventsPath, q, nil, http.StatusOK, &page); err != nil {
					return err
				}
				records = append(records, page.Records...)
				if page.Next == 0 || len(page.Records) == 0 || (limit > 0 && len(records) >= limit) {
					break
				}
				q.Set("after", strconv.FormatUint(page.Next, 10))
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, notify.Listing{Records: records})
			}
			return printRecords(out, records)
		},
	}
	rf.add(cmd)
	f := cmd.Flags()
	f.BoolVar(&dead, "dead", false, "dead letters only")
	f.BoolVar(&pending, "pending", false, "pending deliveries only")
	f.StringVar(&endpoint, "endpoint", "", "the deliveries of this endpoint only")
	f.IntVarP(&limit, "number", "n", 0, "show at most this many (0: all)")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// printRecords writes records as a table.
func printRecords(w io.Writer, records []notify.Record) error {
	if len(records) == 0 {
		_, err := fmt.Fprintln(w, "no pending deliveries and no dead letters")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tSTATE\tENDPOINT\tACTION\tSUBJECT\tCREATED\tATTEMPTS\tLAST ERROR")
	for _, r := range records {
		state := r.State
		if r.Leased {
			state += " (sending)"
		}
		subject := r.Event.Repo
		switch {
		case r.Event.Tag != "":
			subject += ":" + r.Event.Tag
		case r.Event.Digest != "":
			if subject != "" {
				subject += "@"
			}
			subject += shortDigest(r.Event.Digest)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", r.Seq, state, r.Endpoint, r.Event.Action, subject,
			r.Created.Local().Format(time.DateTime), r.Attempts, r.LastError)
	}
	return tw.Flush()
}

// parseSeqs reads the delivery numbers of args.
func parseSeqs(args []string) ([]uint64, error) {
	var out []uint64
	for _, a := range args {
		n, err := strconv.ParseUint(a, 10, 64)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("%q: want a delivery number, as berth events list shows", a)
		}
		out = append(out, n)
	}
	return out, nil
}

func newEventsRetryCommand() *cobra.Command {
	var (
		rf       registryFlags
		all      bool
		endpoint string
	)
	cmd := &cobra.Command{
		Use:   "retry SEQ... | --all [--endpoint NAME]",
		Short: "Send dead letters again, or pending deliveries now",
		Long: `Put dead letters back in the outbox, at the end of their repository's queue
and with their attempts counted from zero, or make pending deliveries due
at once. --all retries every dead letter (of --endpoint, if given).` + eventsLong,
		RunE: func(cmd *cobra.Command, args []string) error {
			seqs, err := parseSeqs(args)
			if err != nil {
				return err
			}
			if all == (len(seqs) > 0) {
				return errors.New("give delivery numbers, or --all, not both")
			}
			if endpoint != "" && !all {
				return errors.New("--endpoint goes with --all")
			}
			c, err := rf.client(cmd)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if all {
				q := url.Values{}
				if endpoint != "" {
					q.Set("endpoint", endpoint)
				}
				var n admin.Count
				if _, err := c.do(cmd.Context(), http.MethodPost, admin.EventsPath+"/retry", q, nil, http.StatusOK, &n); err != nil {
					return err
				}
				fmt.Fprintf(out, "%d dead letters back in the outbox\n", n.Count)
				return nil
			}
			for _, seq := range seqs {
				var rec notify.Record
				path := admin.EventsPath + "/" + strconv.FormatUint(seq, 10) + "/retry"
				if _, err := c.do(cmd.Context(), http.MethodPost, path, nil, nil, http.StatusOK, &rec); err != nil {
					return fmt.Errorf("retry %d: %w", seq, err)
				}
				if rec.Seq != seq {
					fmt.Fprintf(out, "%d: back in the outbox as %d\n", seq, rec.Seq)
				} else {
					fmt.Fprintf(out, "%d: due now\n", seq)
				}
			}
			return nil
		},
	}
	rf.add(cmd)
	cmd.Flags().BoolVar(&all, "all", false, "retry every dead letter")
	cmd.Flags().StringVar(&endpoint, "endpoint", "", "with --all, the dead letters of this endpoint only")
	return cmd
}

func newEventsDropCommand() *cobra.Command {
	var (
		rf       registryFlags
		all      bool
		endpoint string
	)
	cmd := &cobra.Command{
		Use:   "drop SEQ... | --all [--endpoint NAME]",
		Short: "Forget deliveries: they will not be sent",
		Long: `Remove dead letters or pending deliveries, which are then never sent. --all
removes every dead letter (of --endpoint, if given), never a pending
delivery.` + eventsLong,
		RunE: func(cmd *cobra.Command, args []string) error {
			seqs, err := parseSeqs(args)
			if err != nil {
				return err
			}
			if all == (len(seqs) > 0) {
				return errors.New("give delivery numbers, or --all, not both")
			}
			if endpoint != "" && !all {
				return errors.New("--endpoint goes with --all")
			}
			c, err := rf.client(cmd)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if all {
				q := url.Values{"state": {notify.StateDead}}
				if endpoint != "" {
					q.Set("endpoint", endpoint)
				}
				var n admin.Count
				if _, err := c.do(cmd.Context(), http.MethodDelete, admin.EventsPath, q, nil, http.StatusOK, &n); err != nil {
					return err
				}
				fmt.Fprintf(out, "%d dead letters dropped\n", n.Count)
				return nil
			}
			for _, seq := range seqs {
				path := admin.EventsPath + "/" + strconv.FormatUint(seq, 10)
				if _, err := c.do(cmd.Context(), http.MethodDelete, path, nil, nil, http.StatusNoContent, nil); err != nil {
					return fmt.Errorf("drop %d: %w", seq, err)
				}
				fmt.Fprintf(out, "%d: dropped\n", seq)
			}
			return nil
		},
	}
	rf.add(cmd)
	cmd.Flags().BoolVar(&all, "all", false, "drop every dead letter")
	cmd.Flags().StringVar(&endpoint, "endpoint", "", "with --all, the dead letters of this endpoint only")
	return cmd
}
