// Command berth runs the Berth OCI registry and manages its users, robot
// tokens and token signing keys.
//
//	berth serve [--config FILE] [--addr HOST:PORT] [--data DIR] [--log-level LEVEL]
//	berth user add|passwd|remove NAME [--htpasswd FILE | --config FILE] [--password-stdin]
//	berth token create|list|revoke|rotate ... (through a running server's admin API)
//	berth keys rotate [--data DIR]
//	berth fsck [--data DIR] [--verify-content] [--repair] [--json]
//	berth tag history|rollback REPOSITORY:TAG ... (through a running server's API)
//	berth promote SRC_REPOSITORY:TAG|SRC_REPOSITORY@DIGEST DST_REPOSITORY:TAG
//	berth find [--annotation K=V]... [--label K=V]... [--repository R] [--tag T] [--json] ...
//	berth retention [--dry-run] [--json] (through a running server's admin API)
//	berth gc [--grace DURATION] [--dry-run] [--json] (through a running server's admin API)
//	berth doctor REGISTRY[/REPOSITORY[:TAG]] [--json] (from a deploy target: can it pull?)
//	berth which FILE|DIGEST [--json] (which artifacts hold this content, tagged how, now and before)
//	berth pulls REPOSITORY [--actor KIND:NAME] [--json] (who last pulled what, from where, when)
//	berth events list|retry|drop ... (webhook deliveries, through a running server's admin API)
//	berth export REPOSITORY:TAG... -o BUNDLE.tar (from a running server's API)
//	berth import BUNDLE.tar [--prefix NAMESPACE] (through a running server's admin API)
//	berth sync run RULE | berth sync status (through a running server's admin API)
//	berth version
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/berth-registry/berth/registry"
)

// Set at build time with -ldflags "-X main.version=... -X main.commit=...".
var (
	version = ""
	commit  = ""
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCommand().ExecuteContext(ctx); err != nil {
		var silent *silentError
		if !errors.As(err, &silent) {
			fmt.Fprintln(os.Stderr, "berth:", err)
		}
		stop()
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "berth",
		Short:         "Berth is an OCI container and artifact registry",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newServeCommand(),
		newVersionCommand(),
		newUserCommand(),
		newTokenCommand(),
		newKeysCommand(),
		newFsckCommand(),
		newMigrateCommand(),
		newTagCommand(),
		newPromoteCommand(),
		newFindCommand(),
		newRetentionCommand(),
		newGCCommand(),
		newDoctorCommand(),
		newWhichCommand(),
		newPullsCommand(),
		newEventsCommand(),
		newExportCommand(),
		newImportCommand(),
		newSyncCommand(),
	)
	return root
}

func newServeCommand() *cobra.Command {
	var configPath, addr, data, logLevel string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the registry",
		Long: `Run the registry. With no configuration it listens on 127.0.0.1:5000 and
keeps its data under ./data. Settings come from the defaults, then the YAML
file named by --config (or BERTH_CONFIG), then BERTH_* environment
variables (BERTH_ADDR, BERTH_DATA, BERTH_LOG_LEVEL, BERTH_LOG_FORMAT,
BERTH_LOG_ACCESS, BERTH_MAX_MANIFEST_BYTES, BERTH_MAX_PAGE_SIZE), then flags.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configPath == "" {
				configPath = os.Getenv("BERTH_CONFIG")
			}
			cfg, err := registry.LoadConfig(configPath, os.Getenv)
			if err != nil {
				return err
			}
			flags := cmd.Flags()
			if flags.Changed("addr") {
				cfg.Addr = addr
			}
			if flags.Changed("data") {
				cfg.Data = data
			}
			if flags.Changed("log-level") {
				cfg.Log.Level = logLevel
			}
			if err := cfg.Validate(); err != nil {
				return fmt.Errorf("invalid configuration: %w", err)
			}
			log, err := cfg.Log.NewLogger(os.Stderr)
			if err != nil {
				return err
			}
			v, c := buildInfo()
			cfg.Build = registry.BuildInfo{Version: v, Commit: c}
			log.Info("starting berth", "version", v, "commit", c)
			srv, err := registry.New(cmd.Context(), cfg, log)
			if err != nil {
				return err
			}
			return srv.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "YAML configuration file")
	f.StringVar(&addr, "addr", "", "listen address, host:port (default 127.0.0.1:5000)")
	f.StringVar(&data, "data", "", "data directory (default ./data)")
	f.StringVar(&logLevel, "log-level", "", "log level: debug, info, warn, error (default info)")
	return cmd
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version and commit",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			v, c := buildInfo()
			fmt.Fprintf(cmd.OutOrStdout(), "berth %s (commit %s)\n", v, c)
		},
	}
}

// buildInfo returns the version and commit stamped at build time, falling
// back to what the Go toolchain recorded.
func buildInfo() (string, string) {
	v, c := version, commit
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && c == "" {
				c = s.Value
			}
		}
	}
	if v == "" {
		v = "dev"
	}
	if c == "" {
		c = "unknown"
	}
	return v, c
}
