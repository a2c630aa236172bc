package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/berth-registry/berth/registry"
	"github.com/berth-registry/berth/storage/fsck"
)

// Exit statuses of berth fsck.
const (
	fsckClean        = 0 // no inconsistency (orphans may be reported)
	fsckInconsistent = 1 // inconsistencies remain (after repair, with --repair)
	fsckFailed       = 2 // the check could not run: no store, store in use, I/O error
)

// newFsckCommand returns "berth fsck", which checks a stopped server's
// store: the index against the blob files, and optionally their content.
func newFsckCommand() *cobra.Command {
	var data, configPath string
	var opts fsck.Options
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "fsck",
		Short: "Check (and repair) the blob store and its index; the server must be stopped",
		Long: `Check the store of a stopped server: every blob the index records must have
its file, of the recorded size (and with --verify-content, content that
hashes to its digest); every link, manifest, tag, referrer and upload
record must name something that exists. Files no record names (orphans,
left harmlessly by a crash) are reported separately.

With --repair, corrupt and wrong-size blob files are moved to
<data>/quarantine, records of missing blobs and dangling records are
deleted, and orphan files are removed. Each fix is its own transaction, so
an interrupted repair can be run again. Manifests that reference a removed
blob are reported as incomplete, never deleted.

The data directory is --data, else the one berth serve would use: the
"data" setting of the YAML file named by --config (or BERTH_CONFIG),
overridden by BERTH_DATA, else ./data. With a configuration whose blobs
are in an S3 bucket (storage.blobs.s3), the blobs checked are the
bucket's, and the quarantine is in the bucket.

Exit status: 0 when there is no inconsistency (orphans alone are fine),
1 when inconsistencies remain (after repair, with --repair), 2 when the
check cannot run, for instance because the server is using the store.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			code, err := runFsck(cmd.Context(), data, configPath, opts, asJSON, cmd.OutOrStdout())
			switch code {
			case fsckClean:
				return nil
			case fsckInconsistent:
				return err // main reports it and exits 1
			default:
				// main exits 1 on any error; this status is 2.
				fmt.Fprintln(cmd.ErrOrStderr(), "berth:", err)
				os.Exit(code)
				return err
			}
		},
	}
	f := cmd.Flags()
	f.StringVar(&data, "data", "", "data directory of the server (default from --config, else $BERTH_DATA, else ./data)")
	f.StringVar(&configPath, "config", "", "YAML configuration file whose data directory to use (default $BERTH_CONFIG)")
	f.BoolVar(&opts.VerifyContent, "verify-content", false, "re-hash every blob to detect corrupt content (reads the whole store)")
	f.BoolVar(&opts.Repair, "repair", false, "quarantine corrupt blobs, delete dangling records and remove orphan files")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

// resolveDataDir returns the data directory a command acts on: dataFlag if
// set, else the "data" setting berth serve would use (the configuration
// file named by configPath or BERTH_CONFIG, overridden by BERTH_DATA, else
// ./data). The directory must exist.
func resolveDataDir(dataFlag, configPath string) (string, error) {
	dir, _, err := resolveStore(dataFlag, configPath)
	return dir, err
}

// resolveStore is resolveDataDir with the storage settings of the
// configuration file named by configPath or BERTH_CONFIG, if there is one:
// where berth serve keeps the blobs.
func resolveStore(dataFlag, configPath string) (string, registry.StorageConfig, error) {
	if configPath == "" {
		configPath = os.Getenv("BERTH_CONFIG")
	}
	var storage registry.StorageConfig
	dir := dataFlag
	if dir == "" || configPath != "" {
		cfg, err := registry.LoadConfig(configPath, os.Getenv)
		if err != nil {
			return "", storage, err
		}
		if err := cfg.Validate(); err != nil {
			return "", storage, fmt.Errorf("invalid configuration: %w", err)
		}
		if dir == "" {
			dir = cfg.Data
		}
		storage = cfg.Storage
	}
	if storage.Index.Postgres != nil && storage.Blobs.S3 != nil {
		// Nothing of the store is in the data directory.
		return dir, storage, nil
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return "", storage, fmt.Errorf("data directory %s does not exist: use --data or --config to name the server's", dir)
	}
	return dir, storage, nil
}

// runFsck checks the store and prints the report to out. It returns the
// exit status, with an error saying why when it is not 0.
func runFsck(ctx context.Context, data, configPath string, opts fsck.Options, asJSON bool, out io.Writer) (int, error) {
	dir, storage, err := resolveStore(data, configPath)
	if err != nil {
		return fsckFailed, err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	store, err := registry.OpenStore(ctx, dir, registry.StoreOptions{Logger: log, Offline: true, Storage: storage})
	if errors.Is(err, registry.ErrInUse) {
		return fsckFailed, fmt.Errorf("%s: %w; is berth serve running? stop the server first", dir, err)
	}
	if err != nil {
		return fsckFailed, err
	}
	opts.Logger = log
	report, checkErr := fsck.Check(ctx, store.Service, store.Index, opts)
	if err := store.Close(); err != nil && checkErr == nil {
		checkErr = err
	}
	// A failed repair still prints what it did.
	if report != nil {
		if err := printFsck(out, dir, report, asJSON); err != nil && checkErr == nil {
			checkErr = fmt.Errorf("print report: %w", err)
		}
	}
	if checkErr != nil {
		return fsckFailed, checkErr
	}
	if n := report.Inconsistent(); n > 0 {
		what := "found"
		if opts.Repair {
			what = "remain after repair"
		}
		return fsckInconsistent, fmt.Errorf("fsck: %d inconsistencies %s in %s", n, what, dir)
	}
	return fsckClean, nil
}

// printFsck prints the report: as JSON, or as a summary line followed by
// one line per problem, per orphan and per repair.
func printFsck(w io.Writer, dir string, r *fsck.Report, asJSON bool) error {
	if asJSON {
		return printJSON(w, r)
	}
	harmless := 0
	for _, p := range r.Problems {
		if p.Harmless {
			harmless++
		}
	}
	verified := ""
	if r.VerifyContent {
		verified = fmt.Sprintf(" (%d bytes re-hashed)", r.BytesVerified)
	}
	found := len(r.Problems) - harmless
	pw := &printer{w: w}
	pw.printf("%s: %d blobs%s, %d repositories, %d links, %d manifests, %d tags, %d referrers, %d uploads, %d robots: %d inconsistencies, %d warnings, %d orphans\n",
		dir, r.Blobs, verified, r.Repos, r.Links, r.Manifests, r.Tags, r.Referrers, r.Uploads, r.Robots, found, harmless, len(r.Orphans))
	for _, p := range r.Problems {
		pw.printf("%s\n", p)
	}
	for _, p := range r.Orphans {
		pw.printf("%s\n", p)
	}
	if r.Repair {
		for _, fix := range r.Repaired {
			p := fix.Problem
			p.Detail, p.Harmless = "", false
			pw.printf("repaired: %s: %s\n", p, fix.Action)
		}
		pw.printf("after repair: %d repairs, %d inconsistencies remain\n", len(r.Repaired), r.Inconsistent())
		for _, p := range r.Remaining {
			pw.printf("remaining: %s\n", p)
		}
	}
	return pw.err
}

// printer writes formatted lines, keeping the first error.
type printer struct {
	w   io.Writer
	err error
}

func (p *printer) printf(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format, args...)
	}
}
