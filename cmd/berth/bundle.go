package main

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berth-registry/berth/admin"
	"github.com/berth-registry/berth/bundle"
	"github.com/berth-registry/berth/remote"
)

func newExportCommand() *cobra.Command {
	var (
		rf     registryFlags
		output string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "export REPOSITORY:TAG|REPOSITORY@DIGEST... -o BUNDLE.tar",
		Short: "Write images of a running registry to an offline bundle",
		Long: `Write the images named to an OCI image layout archive, for a registry that
cannot reach this one: every platform of an index, and what refers to each
manifest (signatures, SBOMs, attestations, by the referrers API and by
cosign's tags). Every byte is checked against its digest as it is copied.
berth import reads the bundle; so do skopeo (oci-archive:BUNDLE.tar:REPOSITORY:TAG)
and oras (--oci-layout). See docs/sync.md.

The registry is --registry (or BERTH_REGISTRY, default ` + defaultRegistry + `);
credentials, optional, are --username (or BERTH_USERNAME) and a password
read with --password-stdin, else from BERTH_PASSWORD.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, refs []string) error {
			if output == "" {
				return errors.New("-o BUNDLE.tar is required")
			}
			c, err := rf.client(cmd)
			if err != nil {
				return err
			}
			reg, err := remote.New(remote.Config{URL: c.base.String(), Username: c.username, Password: c.password}, remote.Options{})
			if err != nil {
				return err
			}
			tmp, err := os.CreateTemp(filepath.Dir(output), ".berth-export-*")
			if err != nil {
				return err
			}
			defer os.Remove(tmp.Name())
			rep, err := bundle.Export(cmd.Context(), reg, refs, tmp)
			if err == nil {
				err = tmp.Sync()
			}
			if cerr := tmp.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			if err := os.Rename(tmp.Name(), output); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), rep)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %d tags, %d manifests, %d blobs, %s\n", output, len(rep.Tags), rep.Manifests, rep.Blobs, humanBytes(rep.Bytes))
			for _, t := range rep.Tags {
				fmt.Fprintf(cmd.OutOrStdout(), "  %s\n", t)
			}
			return nil
		},
	}
	rf.add(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "", "the bundle to write")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

func newImportCommand() *cobra.Command {
	var (
		rf     registryFlags
		prefix string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "import BUNDLE.tar [--prefix NAMESPACE]",
		Short: "Import an offline bundle into a running registry",
		Long: `Send an OCI image layout archive (one berth export wrote, or skopeo, or
oras) to a running registry, which verifies every digest, stores every
image under its repository (with --prefix before it) and sets its tags,
recorded in their history as import moves. Importing the same bundle again
changes nothing. See docs/sync.md.

The registry is --registry (or BERTH_REGISTRY, default ` + defaultRegistry + `);
with authentication on, the user (--username or BERTH_USERNAME) must be an
administrator, and the password is read with --password-stdin or from
BERTH_PASSWORD.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := rf.client(cmd)
			if err != nil {
				return err
			}
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			fi, err := f.Stat()
			if err != nil {
				return err
			}
			u := *c.base
			u.Path = strings.TrimSuffix(u.Path, "/") + admin.ImportPath
			if prefix != "" {
				u.RawQuery = url.Values{"prefix": {prefix}}.Encode()
			}
			req, err := http.NewRequestWithContext(cmd.Context(), http.MethodPost, u.String(), f)
			if err != nil {
				return err
			}
			req.ContentLength = fi.Size()
			req.Header.Set("Content-Type", "application/x-tar")
			if c.username != "" {
				req.SetBasicAuth(c.username, c.password)
			}
			c.http.Timeout = 0 // a bundle takes as long as its size
			resp, err := c.http.Do(req)
			if err != nil {
				return fmt.Errorf("reach registry %s: %w", c.base.Redacted(), err)
			}
			defer resp.Body.Close()
			raw, err := readAll(resp.Body)
			if err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK {
				return apiErrorFrom(resp.StatusCode, raw)
			}
			var rep bundle.ImportReport
			if err := jsonUnmarshal(raw, &rep); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), rep)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "imported %d manifests, %d blobs (%s); tags:\n", rep.Manifests, rep.Blobs, humanBytes(rep.Bytes))
			for _, t := range rep.Tags {
				fmt.Fprintf(cmd.OutOrStdout(), "  %s:%s  %s\n", t.Repository, t.Tag, t.Digest)
			}
			return nil
		},
	}
	rf.add(cmd)
	cmd.Flags().StringVar(&prefix, "prefix", "", "namespace to put before every repository name")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}
