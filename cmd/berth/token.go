package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-registry/berth/admin"
	"github.com/berth-registry/berth/registry/auth"
)

const (
	// defaultRegistry is the server the token commands talk to when
	// neither --registry nor BERTH_REGISTRY says otherwise.
	defaultRegistry = "http://127.0.0.1:5000"
	// maxRobotLifetime is the longest lifetime the server accepts.
	maxRobotLifetime = 8760 * time.Hour
	// adminTimeout bounds one request to the admin API.
	adminTimeout = 30 * time.Second
	// maxAdminResponse bounds what is read of an admin API answer.
	maxAdminResponse = 4 << 20
)

// newTokenCommand returns "berth token" and its create, list, revoke and
// rotate subcommands, which manage robot tokens through a running
// server's admin API.
func newTokenCommand() *cobra.Command {
	var rf registryFlags
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list, revoke and rotate robot tokens",
		Long: `Manage robot tokens: machine credentials for CI pipelines, with fixed
repository scopes and an expiry. A robot logs in with any user name and its
secret as the password, e.g.

  echo "$SECRET" | docker login registry.example.com -u ci --password-stdin

These commands talk to a running server's admin API as an administrator:
the server is --registry (or BERTH_REGISTRY, default ` + defaultRegistry + `),
the user --username (or BERTH_USERNAME), and the password is read from
standard input with --password-stdin, else from BERTH_PASSWORD. For a
server whose certificate is not signed by a system authority, point
SSL_CERT_FILE at its CA certificate.`,
		// Runnable, so that an unknown subcommand is an error, not help.
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	rf.add(cmd)

	var name, expires string
	var scopes []string
	create := &cobra.Command{
		Use:   "create --name NAME --scope SCOPE [--scope SCOPE...] [--expires DURATION]",
		Short: "Create a robot token and print its secret",
		Long: `Create a robot token and print its secret on standard output, alone on
one line, so that a script can capture it; the expiry goes to standard
error. The secret is shown only this once.

A scope is repository:<name or pattern>:<actions>, where a pattern may use
* (within one path segment), ** (across segments) and ?, and actions are
pull, push, delete or *. Repeat --scope for several.

  SECRET=$(berth token create --name ci --scope 'repository:apps/*:pull,push' --expires 720h)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			life, err := checkCreateFlags(name, scopes, expires)
			if err != nil {
				return err
			}
			c, err := rf.adminClient(cmd)
			if err != nil {
				return err
			}
			var out admin.RobotSecret
			body := admin.CreateRobotRequest{Name: name, Scopes: scopes, Expires: life.String()}
			if err := c.do(cmd.Context(), http.MethodPost, []string{"robots"}, body, http.StatusCreated, &out, name); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), out.Secret)
			fmt.Fprintf(cmd.ErrOrStderr(), "created robot token %s; it expires at %s. The secret is shown only once.\n",
				out.Name, out.Expires.UTC().Format(time.RFC3339))
			return nil
		},
	}
	cf := create.Flags()
	cf.StringVar(&name, "name", "", "robot name: 1 to 63 of a-z, 0-9, '.', '_', '-' (required)")
	cf.StringArrayVar(&scopes, "scope", nil, "repository scope, such as 'repository:apps/*:pull,push' (required, repeatable)")
	cf.StringVar(&expires, "expires", "720h", "lifetime, a duration up to 8760h")

	list := &cobra.Command{
		Use:   "list",
		Short: "List robot tokens",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := rf.adminClient(cmd)
			if err != nil {
				return err
			}
			var robots []admin.RobotListing
			if err := c.do(cmd.Context(), http.MethodGet, []string{"robots"}, nil, http.StatusOK, &robots, ""); err != nil {
				return err
			}
			return printRobots(cmd.OutOrStdout(), robots)
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke a robot token; it stops working at once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := auth.ValidRobotName(args[0]); err != nil {
				return fmt.Errorf("invalid robot name: %w", err)
			}
			c, err := rf.adminClient(cmd)
			if err != nil {
				return err
			}
			if err := c.do(cmd.Context(), http.MethodDelete, []string{"robots", args[0]}, nil, http.StatusNoContent, nil, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked robot token %s\n", args[0])
			return nil
		},
	}
	rotate := &cobra.Command{
		Use:   "rotate NAME",
		Short: "Give a robot token a new secret and print it",
		Long: `Give a robot token a new secret, printed on standard output alone on one
line; the expiry, which does not change, goes to standard error. The old
secret stops working at once.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := auth.ValidRobotName(args[0]); err != nil {
				return fmt.Errorf("invalid robot name: %w", err)
			}
			c, err := rf.adminClient(cmd)
			if err != nil {
				return err
			}
			var out admin.RobotSecret
			if err := c.do(cmd.Context(), http.MethodPost, []string{"robots", args[0], "rotate"}, nil, http.StatusOK, &out, args[0]); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), out.Secret)
			fmt.Fprintf(cmd.ErrOrStderr(), "rotated robot token %s; it still expires at %s. The secret is shown only once.\n",
				out.Name, out.Expires.UTC().Format(time.RFC3339))
			return nil
		},
	}
	cmd.AddCommand(create, list, revoke, rotate)
	return cmd
}

// checkCreateFlags validates the flags of "token create" before anything
// is sent, and returns the lifetime.
func checkCreateFlags(name string, scopes []string, expires string) (time.Duration, error) {
	if name == "" {
		return 0, errors.New("--name is required")
	}
	if err := auth.ValidRobotName(name); err != nil {
		return 0, fmt.Errorf("--name: %w", err)
	}
	if len(scopes) == 0 {
		return 0, errors.New("at least one --scope is required, such as --scope 'repository:apps/*:pull,push'")
	}
	for _, s := range scopes {
		sc, err := auth.ParseScope(s)
		if err != nil {
			return 0, fmt.Errorf("--scope: %w", err)
		}
		if sc.Type != "repository" {
			return 0, fmt.Errorf("--scope %q: robots take repository scopes only", s)
		}
		if sc.Name == "" || len(sc.Actions) == 0 {
			return 0, fmt.Errorf("--scope %q: want repository:<name or pattern>:<actions>", s)
		}
	}
	life, err := time.ParseDuration(expires)
	if err != nil {
		return 0, fmt.Errorf("--expires: %w", err)
	}
	if life <= 0 || life > maxRobotLifetime {
		return 0, fmt.Errorf("--expires %s: want a positive duration up to %s", expires, maxRobotLifetime)
	}
	return life, nil
}

func printRobots(w io.Writer, robots []admin.RobotListing) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSCOPES\tCREATED\tEXPIRES\tSTATUS")
	for _, r := range robots {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Name, strings.Join(r.Scopes, " "),
			r.Created.UTC().Format(time.RFC3339), r.Expires.UTC().Format(time.RFC3339), r.Status)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write listing: %w", err)
	}
	return nil
}

// adminClient calls a server's admin API as an administrator, with Basic
// credentials, wording its refusals for the robot commands.
type adminClient struct {
	*apiClient
}

// adminClient is client for a command that needs an administrator: the
// user name is required.
func (rf *registryFlags) adminClient(cmd *cobra.Command) (*adminClient, error) {
	c, err := rf.client(cmd)
	if err != nil {
		return nil, err
	}
	if c.username == "" {
		return nil, errors.New("no user name: use --username or set BERTH_USERNAME (an administrator)")
	}
	return &adminClient{c}, nil
}

// do sends a request to the admin API path under auth.AdminPrefix, with
// body as JSON if not nil, and decodes the answer into out if not nil. An
// answer other than want becomes an error worded for the user; robot names
// the robot the request is about, if any.
func (c *adminClient) do(ctx context.Context, method string, path []string, body any, want int, out any, robot string) error {
	p := auth.AdminPrefix + strings.Join(path, "/")
	_, h, err := c.call(ctx, method, p, nil, body, out, want)
	if ae := (*APIError)(nil); errors.As(err, &ae) {
		return c.statusError(ae, h, p, robot)
	}
	return err
}

// statusError words an unexpected answer.
func (c *adminClient) statusError(e *APIError, h http.Header, path, robot string) error {
	reg := c.base.Redacted()
	switch e.Status {
	case http.StatusUnauthorized:
		return fmt.Errorf("%s refused the credentials of %s (401): check --username and the password: %s", reg, c.username, e.Message)
	case http.StatusForbidden:
		return fmt.Errorf("%s: %s is not an administrator (403): %s", reg, c.username, e.Message)
	case http.StatusNotFound:
		if e.Code == "ROBOT_UNKNOWN" {
			return fmt.Errorf("%s has no robot token named %s (404)", reg, robot)
		}
		return fmt.Errorf("%s has no admin API at %s (404): is it a Berth server with authentication enabled? %s", reg, path, e.Message)
	case http.StatusConflict:
		switch e.Code {
		case "ROBOT_EXISTS":
			return fmt.Errorf("a robot token named %s exists already, or did (names of revoked robots are not reused) (409)", robot)
		case "ROBOT_INACTIVE":
			return fmt.Errorf("robot token %s is revoked or expired and cannot be rotated (409): %s", robot, e.Message)
		}
		return fmt.Errorf("%s refused (409): %s", reg, e.Message)
	case http.StatusTooManyRequests:
		return fmt.Errorf("%s: too many failed logins; retry in %s seconds (429)", reg, h.Get("Retry-After"))
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		return fmt.Errorf("%s refused the request (%d): %s", reg, e.Status, e.Message)
	}
	return fmt.Errorf("%s answered %d %s: %s", reg, e.Status, http.StatusText(e.Status), e.Message)
}
