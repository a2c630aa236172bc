package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	"github.com/berth-registry/berth/storage"
)

// historyPage is one page of a tag's history as the server sends it.
type historyPage struct {
	Name    string            `json:"name"`
	Tag     string            `json:"tag"`
	History []storage.TagMove `json:"history"`
}

// promoteAnswer is the server's answer to a promotion.
type promoteAnswer struct {
	Digest digest.Digest    `json:"digest"`
	Move   *storage.TagMove `json:"move,omitempty"`
}

// tagPath is the API path of one of a tag's lifecycle resources.
func tagPath(repo, tag, what string) string {
	return "/v2/" + repo + "/_berth/tags/" + tag + "/" + what
}

// explain turns the registry's refusals into messages that name the tag.
func explain(repo, tag string, err error) error {
	var ae *APIError
	if !errors.As(err, &ae) {
		return err
	}
	switch ae.Code {
	case "TAG_IMMUTABLE":
		return fmt.Errorf("%s in %s is immutable: %w", tag, repo, err)
	case "NAME_UNKNOWN":
		return fmt.Errorf("repository %s does not exist: %w", repo, err)
	case "MANIFEST_UNKNOWN":
		return fmt.Errorf("%s:%s: %w", repo, tag, err)
	}
	return err
}

// newTagCommand returns "berth tag" with its history and rollback
// subcommands.
func newTagCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tag",
		Short: "Show a tag's history and roll it back",
		Long: `Inspect and move tags through a running server's API: every move of a tag
(push, delete, promotion, rollback) is recorded with who made it and from
where. The server is --registry (or BERTH_REGISTRY, default ` + defaultRegistry + `);
credentials, optional, are --username (or BERTH_USERNAME) and a password
read with --password-stdin, else from BERTH_PASSWORD.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newTagHistoryCommand(), newTagRollbackCommand())
	return cmd
}

func newTagHistoryCommand() *cobra.Command {
	var (
		rf     registryFlags
		asJSON bool
		limit  int
	)
	cmd := &cobra.Command{
		Use:   "history REPOSITORY:TAG",
		Short: "Show the moves of a tag, newest first",
		Long: `Show the moves of a tag, newest first: sequence number, time, action,
the digest before and after, who moved it and from which address. With
--json, print the server's answer (all pages) as one JSON object.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			repo, tag, err := splitRef(args[0], false)
			if err != nil {
				return err
			}
			if limit < 0 {
				return fmt.Errorf("-n %d: want 0 (all) or more", limit)
			}
			c, err := rf.client(cmd)
			if err != nil {
				return err
			}
			moves, err := fetchHistory(cmd.Context(), c, repo, tag, limit)
			if err != nil {
				return explain(repo, tag, err)
			}
			w := cmd.OutOrStdout()
			if asJSON {
				return printJSON(w, historyPage{Name: repo, Tag: tag, History: moves})
			}
			return printHistory(w, moves)
		},
	}
	rf.add(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().IntVarP(&limit, "number", "n", 0, "show at most this many moves, newest first (0: all)")
	return cmd
}

// historyPageSize is how many moves one request asks for.
const historyPageSize = 100

// fetchHistory reads up to limit moves (0: all) of a tag, following the
// server's next links page by page.
func fetchHistory(ctx context.Context, c *apiClient, repo, tag string, limit int) ([]storage.TagMove, error) {
	moves := []storage.TagMove{}
	q := url.Values{}
	for {
		n := historyPageSize
		if limit > 0 {
			n = min(n, limit-len(moves))
		}
		q.Set("n", strconv.Itoa(n))
		var page historyPage
		h, err := c.do(ctx, http.MethodGet, tagPath(repo, tag, "history"), q, nil, http.StatusOK, &page)
		if err != nil {
			return nil, err
		}
		moves = append(moves, page.History...)
		next, err := nextQuery(h)
		if err != nil {
			return nil, err
		}
		if next == nil || len(page.History) == 0 || (limit > 0 && len(moves) >= limit) {
			return moves, nil
		}
		q.Set("last", next.Get("last"))
	}
}

// shortDigest abbreviates a digest for a table; "-" stands for none.
func shortDigest(d digest.Digest) string {
	if d == "" {
		return "-"
	}
	if d.Validate() != nil || len(d.Encoded()) < 12 {
		return string(d)
	}
	return string(d.Algorithm()) + ":" + d.Encoded()[:12]
}

// actorString names an actor as kind:name, or just the kind.
func actorString(a storage.Actor) string {
	if a.Name == "" {
		return a.Kind
	}
	return a.Kind + ":" + a.Name
}

// printHistory writes moves as a table.
func printHistory(w io.Writer, moves []storage.TagMove) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME\tACTION\tCHANGE\tACTOR\tADDRESS")
	for _, m := range moves {
		addr := m.Actor.Address
		if addr == "" {
			addr = "-"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s → %s\t%s\t%s\n", m.Seq, m.Time.UTC().Format(time.RFC3339), m.Action,
			shortDigest(m.Previous), shortDigest(m.Digest), actorString(m.Actor), addr)
	}
	return tw.Flush()
}

func newTagRollbackCommand() *cobra.Command {
	var (
		rf registryFlags
		to string
	)
	cmd := &cobra.Command{
		Use:   "rollback REPOSITORY:TAG [--to DIGEST]",
		Short: "Point a tag back at an earlier manifest",
		Long: `Point a tag back at the digest it named before its last move, or at the
manifest --to names (it must be in the repository). The rollback is a move
of its own in the tag's history, so a second rollback undoes the first.
An immutable tag is not moved.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			repo, tag, err := splitRef(args[0], false)
			if err != nil {
				return err
			}
			var body any
			if to != "" {
				d, err := digest.Parse(to)
				if err != nil {
					return fmt.Errorf("--to %q: %w", to, err)
				}
				body = map[string]string{"to": string(d)}
			}
			c, err := rf.client(cmd)
			if err != nil {
				return err
			}
			var m storage.TagMove
			if _, err := c.do(cmd.Context(), http.MethodPost, tagPath(repo, tag, "rollback"), nil, body, http.StatusOK, &m); err != nil {
				return explain(repo, tag, err)
			}
			// When the tag named the digest already, the server answers
			// with the move that set it there.
			fmt.Fprintf(cmd.OutOrStdout(), "%s:%s: %s → %s (move %d, %s)\n", repo, tag, m.Previous, m.Digest, m.Seq, m.Action)
			return nil
		},
	}
	rf.add(cmd)
	cmd.Flags().StringVar(&to, "to", "", "digest to roll back to (default: the digest before the last move)")
	return cmd
}

func newPromoteCommand() *cobra.Command {
	var rf registryFlags
	cmd := &cobra.Command{
		Use:   "promote SRC_REPOSITORY:TAG|SRC_REPOSITORY@DIGEST DST_REPOSITORY:TAG",
		Short: "Point a tag at a manifest of another repository, without copying it",
		Long: `Promote a manifest that was built and tested once: the destination tag is
pointed at the manifest the source names, and the destination repository
gets links to its blobs, child manifests, signatures and SBOMs. No content
is uploaded or copied. The caller needs pull on the source and push on the
destination. The digest is printed on standard output.

  berth promote apps/web:staging-validated apps/web-prod:production`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			src, ref, err := splitRef(args[0], true)
			if err != nil {
				return err
			}
			dst, tag, err := splitRef(args[1], false)
			if err != nil {
				return err
			}
			c, err := rf.client(cmd)
			if err != nil {
				return err
			}
			var out promoteAnswer
			body := map[string]string{"repository": src, "reference": ref}
			status, _, err := c.call(cmd.Context(), http.MethodPost, tagPath(dst, tag, "promote"), nil, body, &out,
				http.StatusCreated, http.StatusOK)
			if err == nil && status == http.StatusOK {
				// 200: the tag named the digest already.
				fmt.Fprintln(cmd.OutOrStdout(), out.Digest)
				fmt.Fprintf(cmd.ErrOrStderr(), "%s:%s already names %s\n", dst, tag, out.Digest)
				return nil
			}
			if err != nil {
				if ae := (*APIError)(nil); errors.As(err, &ae) {
					switch ae.Code {
					case "NAME_UNKNOWN":
						return fmt.Errorf("source repository %s does not exist: %w", src, err)
					case "MANIFEST_UNKNOWN":
						return fmt.Errorf("%s has no manifest %s: %w", src, ref, err)
					}
				}
				return explain(dst, tag, err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), out.Digest)
			fmt.Fprintf(cmd.ErrOrStderr(), "promoted %s to %s:%s (%s → %s)\n", args[0], dst, tag,
				shortDigest(out.Move.Previous), shortDigest(out.Digest))
			return nil
		},
	}
	rf.add(cmd)
	return cmd
}
