package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-registry/berth/registry"
	"github.com/berth-registry/berth/storage/meta/postgres"
)

// newMigrateCommand returns "berth migrate", which brings the schema of a
// PostgreSQL index up to this Berth's version and reports its migrations.
func newMigrateCommand() *cobra.Command {
	var configPath, dsn string
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Apply the PostgreSQL index's schema migrations and report them",
		Long: `Apply to the PostgreSQL database of the index (storage.index.postgres.dsn)
the schema migrations it lacks, and print every migration this Berth knows:
each one applied now, or when it was applied before.

berth serve migrates at start too; run berth migrate to do it ahead of a
rollout, or to see where a database stands. Migrations run under a
database lock: replicas starting together, or several berth migrate, apply
each migration once. A database migrated by a newer Berth is refused.

The DSN is --dsn, else BERTH_POSTGRES_DSN, else the one of the YAML file
named by --config (or BERTH_CONFIG).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dsn == "" {
				var err error
				if dsn, err = migrateDSN(configPath); err != nil {
					return err
				}
			}
			if err := postgres.ValidateDSN(dsn); err != nil {
				return err
			}
			ms, err := postgres.Migrate(cmd.Context(), dsn)
			if err != nil {
				return err
			}
			return printMigrations(cmd.OutOrStdout(), ms)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "YAML configuration file whose storage.index.postgres.dsn to use (default $BERTH_CONFIG)")
	f.StringVar(&dsn, "dsn", "", "PostgreSQL DSN of the index (default $BERTH_POSTGRES_DSN, else from --config)")
	return cmd
}

// migrateDSN is the DSN of the index of the configuration berth serve
// would load: configPath or BERTH_CONFIG, with the environment's
// BERTH_POSTGRES_DSN over it.
func migrateDSN(configPath string) (string, error) {
	if configPath == "" {
		configPath = os.Getenv("BERTH_CONFIG")
	}
	cfg, err := registry.LoadConfig(configPath, os.Getenv)
	if err != nil {
		return "", err
	}
	if p := cfg.Storage.Index.Postgres; p != nil && p.DSN != "" {
		return p.DSN, nil
	}
	return "", errors.New("no PostgreSQL index to migrate: set --dsn, BERTH_POSTGRES_DSN or storage.index.postgres.dsn in the configuration (--config)")
}

// printMigrations prints one line per migration.
func printMigrations(out io.Writer, ms []postgres.Migration) error {
	var applied int
	for _, m := range ms {
		state := "already applied " + m.Applied.UTC().Format(time.RFC3339)
		if m.New {
			state = "applied now"
			applied++
		}
		if _, err := fmt.Fprintf(out, "%04d %-24s %s\n", m.Version, m.Name, state); err != nil {
			return err
		}
	}
	_, err := fmt.Fprintf(out, "schema version %d: %d migration(s) applied now, %d already there\n",
		postgres.SchemaVersion(), applied, len(ms)-applied)
	return err
}
