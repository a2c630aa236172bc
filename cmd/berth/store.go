package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/berth-registry/berth/registry"
	"github.com/berth-registry/berth/storage/storecopy"
)

// newStoreCommand returns "berth store", the commands that act on a whole
// store.
func newStoreCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "store",
		Short: "Act on a whole store (copy it into another)",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newStoreCopyCommand())
	return cmd
}

// newStoreCopyCommand returns "berth store copy".
func newStoreCopyCommand() *cobra.Command {
	var from, configPath string
	var asJSON bool
	var jobs int
	cmd := &cobra.Command{
		Use:   "copy --from DIR --config FILE",
		Short: "Copy a stopped single-machine store into the store a configuration names",
		Long: `Copy the store in the data directory --from (its bbolt index and blob files),
which no berth may be serving, into the store the configuration --config
names: its storage.index (PostgreSQL, or the bbolt index under its data
directory) and storage.blobs (an S3 bucket, or files under its data
directory). See docs/store-copy.md.

Every blob is hashed as it is read from the source and refused if it does
not match its digest. Repositories, links, manifests (with their referrers
and search entries), tags with their whole history (deleted tags and
repositories too), robots, pull records, and the pull-through cache's and
replication's records are copied with their times and actors. Open upload
sessions and the webhook outbox are not copied; the report counts them.

The copy first compares everything and, if the destination holds
different data under the same names (a tag naming another manifest, a
history that is not the source's), refuses with the list and writes
nothing. It is idempotent and resumable: run again, it copies only what
is missing, and says so when nothing is.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runStoreCopy(cmd.Context(), from, configPath, jobs, asJSON, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "data directory of the store to copy (required)")
	f.StringVar(&configPath, "config", "", "YAML configuration naming the destination store (required)")
	f.IntVar(&jobs, "jobs", 4, "blobs copied at once")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	_ = cmd.MarkFlagRequired("from")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}

// runStoreCopy opens both stores, copies and prints the report.
func runStoreCopy(ctx context.Context, from, configPath string, jobs int, asJSON bool, out io.Writer) error {
	cfg, err := registry.LoadConfig(configPath, os.Getenv)
	if err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid configuration %s: %w", configPath, err)
	}
	if err := distinctStores(from, cfg); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	src, err := registry.OpenStore(ctx, from, registry.StoreOptions{Logger: log, Offline: true})
	if errors.Is(err, registry.ErrInUse) {
		return fmt.Errorf("the store in %s is in use by another process: %w; is berth serve running on it? stop it first", from, err)
	}
	if err != nil {
		return fmt.Errorf("open the source: %w", err)
	}
	defer src.Close()
	dst, err := registry.OpenStore(ctx, cfg.Data, registry.StoreOptions{Logger: log, Storage: cfg.Storage})
	if errors.Is(err, registry.ErrInUse) {
		return fmt.Errorf("the destination's index in %s is in use by another process: %w; stop the server using it first", cfg.Data, err)
	}
	if err != nil {
		return fmt.Errorf("open the destination: %w", err)
	}
	defer dst.Close()
	var rules []string
	for _, r := range cfg.Sync.Rules {
		rules = append(rules, r.Name)
	}
	report, err := storecopy.Copy(ctx, storecopy.Store{Index: src.Index, Blobs: src.Blobs},
		storecopy.Store{Index: dst.Index, Blobs: dst.Blobs}, storecopy.Options{Rules: rules, Jobs: jobs, Logger: log})
	var conflict *storecopy.ConflictError
	if report == nil && asJSON && errors.As(err, &conflict) {
		report = &storecopy.Report{}
	}
	if report != nil {
		where := describeStore(cfg)
		if perr := printStoreCopy(out, from, where, report, err, asJSON); perr != nil && err == nil {
			err = fmt.Errorf("print report: %w", perr)
		}
	}
	if err != nil {
		return fmt.Errorf("copy %s: %w", from, err)
	}
	return nil
}

// distinctStores refuses a destination that is the source, or shares its
// index or blob files.
func distinctStores(from string, cfg registry.Config) error {
	src, err := filepath.Abs(from)
	if err != nil {
		return fmt.Errorf("--from %s: %w", from, err)
	}
	dst, err := filepath.Abs(cfg.Data)
	if err != nil {
		return fmt.Errorf("data directory %s: %w", cfg.Data, err)
	}
	if src != dst {
		return nil
	}
	if cfg.Storage.Index.Postgres == nil {
		return fmt.Errorf("the destination's index would be the source's own (%s/index.db): set storage.index.postgres, or another data directory, in the configuration", from)
	}
	if cfg.Storage.Blobs.S3 == nil {
		return fmt.Errorf("the destination's blobs would be the source's own files under %s: set storage.blobs.s3, or another data directory, in the configuration", from)
	}
	return nil
}

// describeStore names the destination for the report, without secrets.
func describeStore(cfg registry.Config) string {
	index := "bbolt index " + filepath.Join(cfg.Data, "index.db")
	if cfg.Storage.Index.Postgres != nil {
		index = "PostgreSQL index"
	}
	blobs := "blob files under " + cfg.Data
	if s := cfg.Storage.Blobs.S3; s != nil {
		blobs = fmt.Sprintf("S3 bucket %s", s.Bucket)
		if s.Prefix != "" {
			blobs += " (prefix " + s.Prefix + ")"
		}
	}
	return index + " and " + blobs
}

// storeCopyJSON is the JSON form of the report.
type storeCopyJSON struct {
	From  string `json:"from"`
	To    string `json:"to"`
	Error string `json:"error,omitempty"`
	// NothingNew is true when the destination held everything already.
	NothingNew bool `json:"nothingNew"`
	// Conflicts lists why a copy was refused, as Error says.
	Conflicts []string `json:"conflicts,omitempty"`
	*storecopy.Report
}

// printStoreCopy prints what the copy did, as text or JSON.
func printStoreCopy(w io.Writer, from, to string, r *storecopy.Report, copyErr error, asJSON bool) error {
	if asJSON {
		v := storeCopyJSON{From: from, To: to, NothingNew: copyErr == nil && r.Copied() == 0, Report: r}
		if copyErr != nil {
			v.Error = copyErr.Error()
		}
		var conflict *storecopy.ConflictError
		if errors.As(copyErr, &conflict) {
			v.Conflicts = conflict.Conflicts
			if conflict.More > 0 {
				v.Conflicts = append(v.Conflicts, fmt.Sprintf("and %d more", conflict.More))
			}
		}
		return printJSON(w, v)
	}
	pw := &printer{w: w}
	switch {
	case copyErr != nil:
		pw.printf("copy of %s into the %s stopped; what it copied until then:\n", from, to)
	case r.Copied() == 0:
		pw.printf("nothing new: the %s held everything in %s already\n", to, from)
	default:
		pw.printf("copied %s into the %s\n", from, to)
	}
	pw.printf("  %-13s %d copied (%s, %s transferred), %d present (%s)\n", "blobs",
		r.Blobs.Copied, humanBytes(r.Blobs.Bytes), humanBytes(r.Blobs.Transferred), r.Blobs.Present, humanBytes(r.Blobs.PresentBytes))
	pw.printf("  %-13s %d, and %d deleted ones with tag history or pull records\n", "repositories", r.Repositories, r.Deleted)
	for _, row := range []struct {
		name string
		c    storecopy.Count
	}{
		{"links", r.Links}, {"manifests", r.Manifests}, {"tags", r.Tags}, {"tag moves", r.Moves},
		{"robots", r.Robots}, {"pull records", r.Pulls}, {"cached", r.Cached}, {"tag checks", r.TagChecks},
		{"synced tags", r.SyncedTags}, {"sync runs", r.SyncRuns},
	} {
		pw.printf("  %-13s %d copied, %d present\n", row.name, row.c.Copied, row.c.Present)
	}
	pw.printf("  not copied: %d open upload sessions (their clients start again), %d webhook deliveries and %d dead letters (events of the source's changes), %d cache records of manifests gone\n",
		r.Skipped.Uploads, r.Skipped.Deliveries, r.Skipped.DeadLetters, r.Skipped.StaleCache)
	if !r.DeletedHistory {
		pw.printf("  the source index could not name its deleted repositories: their history was not copied\n")
	}
	return pw.err
}
