package main

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-registry/berth/registry/auth"
)

// newKeysCommand returns "berth keys" and its rotate subcommand, which
// manage the keys that sign the token service's tokens.
func newKeysCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Manage the token signing keys",
		// Runnable, so that an unknown subcommand is an error, not help.
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var data, configPath string
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Add a new signing key and retire the current one",
		Long: `Add a new token signing key under <data>/keys and retire the one signing
until now, then print the new key's id. A running server notices the change
by itself within seconds; tokens signed with the retired key stay valid
until they expire.

The data directory is --data, else the one berth serve would use: the
"data" setting of the YAML file named by --config (or BERTH_CONFIG),
overridden by BERTH_DATA, else ./data. Run this as the user the server
runs as: the key files are readable by their owner only.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// A mistyped directory must not silently get keys no server
			// uses: resolveDataDir wants it to exist.
			dir, err := resolveDataDir(data, configPath)
			if err != nil {
				return err
			}
			keysDir := filepath.Join(dir, "keys")
			kid, err := auth.RotateKeys(keysDir, time.Now())
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), kid)
			fmt.Fprintf(cmd.ErrOrStderr(), "new signing key %s in %s; a running server switches to it by itself, and tokens signed with the previous key stay valid for up to %s\n",
				kid, keysDir, auth.MaxTokenLifetime)
			return nil
		},
	}
	f := rotate.Flags()
	f.StringVar(&data, "data", "", "data directory of the server (default from --config, else $BERTH_DATA, else ./data)")
	f.StringVar(&configPath, "config", "", "YAML configuration file whose data directory to use (default $BERTH_CONFIG)")
	cmd.AddCommand(rotate)
	return cmd
}
