package conformance_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berth-registry/berth/conformance/internal/berthtest"
)

// postgresS3ConfigFile writes a configuration that keeps the index in a
// fresh database of pg and the blobs in a fresh bucket of gw, with its
// keys, and returns its path.
func postgresS3ConfigFile(t *testing.T) string {
	t.Helper()
	dsn := pg.Database(t)
	b := gw.Bucket(t)
	path := filepath.Join(t.TempDir(), "berth.yaml")
	writeTestFile(t, path, fmt.Sprintf(`http:
  secret: a secret the replicas would share
storage:
  blobs:
    s3: {endpoint: %q, region: %s, bucket: %s, prefix: "", accessKey: %s, secretKey: %s, forcePathStyle: true, redirect: false}
  index:
    postgres: {dsn: %q}
`, b.Endpoint, b.Region, b.Name, b.AccessKey, b.SecretKey, dsn))
	return path
}

// TestPostgresFsckAndMigrate: berth migrate prepares the database of a
// configuration and reports it; berth serves on it and on a bucket,
// keeping nothing under its data directory; berth fsck, given the same
// configuration, checks that store (clean), finds a record broken by
// hand, and does not repair it.
func TestPostgresFsckAndMigrate(t *testing.T) {
	bin := berthtest.Build(t)
	cfg := postgresS3ConfigFile(t)
	out, err := exec.Command(bin, "migrate", "--config", cfg).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "applied now") {
		t.Fatalf("berth migrate: %v\n%s", err, out)
	}
	data := filepath.Join(t.TempDir(), "data")
	srv := berthtest.Start(t, berthtest.WithCommandLine("serve", "--addr", "127.0.0.1:0", "--data", data, "--config", cfg))
	const repo = "fsck/pg"
	md := fsckPush(t, srv.URL, repo, []byte(`{"architecture":"amd64","os":"linux"}`), []byte("a layer in a bucket, indexed in a database"))
	srv.Stop()
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Fatalf("berth on PostgreSQL and S3 made its data directory: %v", err)
	}
	out, err = exec.Command(bin, "migrate", "--config", cfg).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "already applied") || strings.Contains(string(out), "applied now\n") {
		t.Fatalf("berth migrate again: %v\n%s", err, out)
	}

	r := fsckJSON(t, bin, 0, "--config", cfg, "--verify-content")
	if r.Inconsistencies != 0 || len(r.Problems) != 0 || len(r.Orphans) != 0 || r.Blobs != 3 || r.Manifests != 1 {
		t.Fatalf("clean store on PostgreSQL and S3: %+v", r)
	}
	conn, err := pgx.Connect(t.Context(), configDSN(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	if _, err := conn.Exec(t.Context(), `INSERT INTO pulls (repo, digest, actor_kind, actor_name, rec)
		VALUES ($1, $2, 'user', 'broken', '{"time": 7}')`, repo, md); err != nil {
		t.Fatal(err)
	}
	r = fsckJSON(t, bin, 1, "--config", cfg, "--repair")
	if r.Inconsistencies != 1 || len(r.Problems) != 1 || r.Problems[0].Kind != "bad-record" || r.Problems[0].Digest != md {
		t.Fatalf("a broken record: %+v", r)
	}
}

// configDSN reads the DSN of the index back from a configuration file.
func configDSN(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(b), "dsn: ")
	if !ok {
		t.Fatalf("no dsn in %s", path)
	}
	dsn, err := strconv.Unquote(strings.TrimSuffix(strings.TrimSpace(after), "}"))
	if err != nil {
		t.Fatal(err)
	}
	return dsn
}

// TestPostgresBadDSNStopsStart: berth configured with a DSN that cannot be
// parsed, or a database nobody answers for, exits at once with one line
// saying so, and never listens.
func TestPostgresBadDSNStopsStart(t *testing.T) {
	bin := berthtest.Build(t)
	for _, tc := range []struct{ name, dsn, want string }{
		{"unparsable", "postgres://berth@127.0.0.1:port/berth", "storage.index.postgres.dsn: postgres DSN: cannot parse"},
		{"not answering", "postgres://berth@127.0.0.1:1/berth?sslmode=disable", "open the index in PostgreSQL: connect to the index database: index unavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			config := filepath.Join(dir, "berth.yaml")
			writeTestFile(t, config, fmt.Sprintf("storage:\n  index:\n    postgres: {dsn: %q}\n", tc.dsn))
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "serve", "--addr", "127.0.0.1:0", "--data", filepath.Join(dir, "data"), "--config", config)
			var stderr bytes.Buffer
			cmd.Stderr, cmd.Stdout = &stderr, &stderr
			if err := cmd.Run(); err == nil {
				t.Fatal("berth started on a bad DSN")
			}
			out := stderr.String()
			if strings.Contains(out, "listening") {
				t.Fatalf("berth listened before failing:\n%s", out)
			}
			var found []string
			for line := range strings.SplitSeq(out, "\n") {
				if strings.Contains(line, tc.want) {
					found = append(found, line)
				}
			}
			if len(found) != 1 {
				t.Fatalf("want one line with %q, got:\n%s", tc.want, out)
			}
		})
	}
}
