package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berth-registry/berth/registry"
	"github.com/berth-registry/berth/registry/auth"
)

// maxPasswordLine bounds what --password-stdin reads; bcrypt takes at most
// 72 bytes of password anyway.
const maxPasswordLine = 4096

// userFlags are the flags shared by the user subcommands.
type userFlags struct {
	htpasswd      string
	configPath    string
	passwordStdin bool
}

// newUserCommand returns "berth user" and its add, passwd and remove
// subcommands.
func newUserCommand() *cobra.Command {
	var uf userFlags
	cmd := &cobra.Command{
		Use:   "user",
		Short: "Add, remove and change the password of users",
		Long: `Edit the htpasswd file of users: add a user, change a user's password or
remove a user. Passwords are hashed with bcrypt; other lines of the file are
kept as they are, and the file is replaced atomically (mode 0600).

The file is the one named by --htpasswd, else the auth.htpasswd setting of
the YAML file named by --config (or BERTH_CONFIG). A relative path is taken
from the working directory, as berth serve does.

Passwords are read from standard input with --password-stdin, one line:

  printf '%s\n' "$PASSWORD" | berth user add alice --config berth.yaml --password-stdin

A running server watches the file and picks up changes by itself: there is
no need to restart or signal it.`,
		Args: cobra.NoArgs,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&uf.htpasswd, "htpasswd", "", "htpasswd file to edit")
	pf.StringVar(&uf.configPath, "config", "", "YAML configuration file whose auth.htpasswd to edit")

	add := &cobra.Command{
		Use:   "add NAME --password-stdin",
		Short: "Add a user (creating the file if needed)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, password, err := uf.resolve(cmd, true)
			if err != nil {
				return err
			}
			if err := auth.AddUser(path, args[0], password); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "added user %s to %s\n", args[0], path)
			return nil
		},
	}
	passwd := &cobra.Command{
		Use:   "passwd NAME --password-stdin",
		Short: "Change a user's password",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, password, err := uf.resolve(cmd, true)
			if err != nil {
				return err
			}
			if err := auth.SetPassword(path, args[0], password); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "changed the password of user %s in %s\n", args[0], path)
			return nil
		},
	}
	remove := &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a user",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, _, err := uf.resolve(cmd, false)
			if err != nil {
				return err
			}
			if err := auth.RemoveUser(path, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed user %s from %s\n", args[0], path)
			return nil
		},
	}
	for _, c := range []*cobra.Command{add, passwd} {
		c.Flags().BoolVar(&uf.passwordStdin, "password-stdin", false, "read the password from standard input (one line)")
	}
	cmd.AddCommand(add, passwd, remove)
	return cmd
}

// resolve returns the htpasswd path and, if withPassword, the password
// read from standard input.
func (uf *userFlags) resolve(cmd *cobra.Command, withPassword bool) (path, password string, err error) {
	path, err = uf.path()
	if err != nil {
		return "", "", err
	}
	if !withPassword {
		return path, "", nil
	}
	if !uf.passwordStdin {
		return "", "", errors.New("no password: pass --password-stdin and write the password to standard input")
	}
	password, err = readPasswordLine(cmd.InOrStdin())
	if err != nil {
		return "", "", err
	}
	return path, password, nil
}

// path returns the htpasswd file named by --htpasswd, else by the
// configuration.
func (uf *userFlags) path() (string, error) {
	if uf.htpasswd != "" {
		return uf.htpasswd, nil
	}
	configPath := uf.configPath
	if configPath == "" {
		configPath = os.Getenv("BERTH_CONFIG")
	}
	if configPath == "" {
		return "", errors.New("no htpasswd file: use --htpasswd or --config")
	}
	cfg, err := registry.LoadConfig(configPath, os.Getenv)
	if err != nil {
		return "", err
	}
	if cfg.Auth.Htpasswd == "" {
		return "", fmt.Errorf("no htpasswd file: %s does not set auth.htpasswd; use --htpasswd or set it", configPath)
	}
	return cfg.Auth.Htpasswd, nil
}

// readPasswordLine reads one line from r and strips its line ending.
func readPasswordLine(r io.Reader) (string, error) {
	line, err := bufio.NewReader(io.LimitReader(r, maxPasswordLine)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read password from standard input: %w", err)
	}
	if err != nil && len(line) == maxPasswordLine {
		return "", fmt.Errorf("read password from standard input: no end of line within %d bytes", maxPasswordLine)
	}
	line = strings.TrimSuffix(line, "\n")
	line = strings.TrimSuffix(line, "\r")
	if line == "" {
		return "", errors.New("empty password on standard input")
	}
	return line, nil
}
