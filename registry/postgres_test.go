package registry

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"

	metapg "github.com/berth-registry/berth/storage/meta/postgres"
)

// TestIndexConfig reads storage.index.postgres exactly as documented, takes
// the DSN from BERTH_POSTGRES_DSN over it (or alone), and refuses a DSN
// that cannot be parsed with one clear line.
func TestIndexConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "berth.yaml")
	yaml := `storage:
  index:
    postgres: {dsn: "postgres://berth@127.0.0.1:5432/berth?sslmode=disable"}
`
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if p := cfg.Storage.Index.Postgres; p == nil || p.DSN != "postgres://berth@127.0.0.1:5432/berth?sslmode=disable" {
		t.Fatalf("storage.index.postgres = %+v", p)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	other := "postgres://other@127.0.0.1:5433/berth?sslmode=disable"
	cfg, err = LoadConfig(path, env(map[string]string{"BERTH_POSTGRES_DSN": other}))
	if err != nil || cfg.Storage.Index.Postgres.DSN != other {
		t.Fatalf("BERTH_POSTGRES_DSN over the file: %+v, %v", cfg.Storage.Index.Postgres, err)
	}
	cfg, err = LoadConfig("", env(map[string]string{"BERTH_POSTGRES_DSN": other}))
	if err != nil || cfg.Storage.Index.Postgres == nil || cfg.Storage.Index.Postgres.DSN != other {
		t.Fatalf("BERTH_POSTGRES_DSN alone: %+v, %v", cfg.Storage.Index, err)
	}
	cfg, err = LoadConfig("", env(nil))
	if err != nil || cfg.Storage.Index.Postgres != nil {
		t.Fatalf("default index: %+v, %v", cfg.Storage.Index, err)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"storage:\n  index:\n    postgres: {}\n", "storage.index.postgres.dsn: a DSN is required"},
		{"storage:\n  index:\n    postgres: {dsn: 'postgres://berth@127.0.0.1:port/berth'}\n", "storage.index.postgres.dsn: postgres DSN"},
		{"storage:\n  index:\n    postgres: {dsn: 'host=127.0.0.1 sslmode=sometimes'}\n", "storage.index.postgres.dsn: postgres DSN"},
		{"storage:\n  index:\n    postgres: {url: x}\n", "url"},
	} {
		if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := LoadConfig(path, env(nil))
		if err == nil {
			err = cfg.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) ||
			(strings.HasPrefix(tc.want, "storage.") && strings.Contains(err.Error(), "\n")) {
			t.Errorf("%q: %v, want one line naming %q", tc.yaml, err, tc.want)
		}
	}
}

// TestOpenStorePostgres: with storage.index.postgres and storage.blobs.s3
// the store keeps nothing under the data directory, and a second store on
// the same database and bucket (another replica) sees what the first
// pushed.
func TestOpenStorePostgres(t *testing.T) {
	ctx := t.Context()
	sc := StorageConfig{Blobs: BlobsConfig{S3: s3Config(t)}, Index: IndexConfig{Postgres: &PostgresConfig{DSN: pg.Database(t)}}}
	dir := filepath.Join(t.TempDir(), "data")
	a, err := OpenStore(ctx, dir, StoreOptions{Storage: sc})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, ok := a.Index.(*metapg.Store); !ok {
		t.Fatalf("index %T, want *postgres.Store", a.Index)
	}
	b, err := OpenStore(ctx, dir, StoreOptions{Storage: sc})
	if err != nil {
		t.Fatalf("a second replica: %v", err)
	}
	defer b.Close()
	data := []byte("a layer pushed through one replica")
	d := digest.FromBytes(data)
	if _, err := a.PutBlob(ctx, "r", d, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	rc, _, err := b.OpenBlob(ctx, "r", d)
	if err != nil {
		t.Fatalf("the other replica: %v", err)
	}
	got, err := io.ReadAll(rc)
	_ = rc.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the other replica reads %q, %v", got, err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the data directory was made: %v", err)
	}
}

// TestNewStopsOnUnreachableDatabase: a database nobody listens for stops
// the start with one line, and nothing is served.
func TestNewStopsOnUnreachableDatabase(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	cfg := DefaultConfig()
	cfg.Data = t.TempDir()
	cfg.Storage.Index.Postgres = &PostgresConfig{DSN: "postgres://berth@" + addr + "/berth?sslmode=disable&connect_timeout=2"}
	_, err = New(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "index") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("start on an unreachable database: %v", err)
	}
}

// dbProxy stands between Berth and PostgreSQL; while down, it ends every
// connection through it and refuses new ones, as a database that stopped.
type dbProxy struct {
	l      net.Listener
	target string
	down   atomic.Bool
	mu     sync.Mutex
	conns  map[net.Conn]bool
}

func newDBProxy(t *testing.T, target string) *dbProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &dbProxy{l: l, target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { _ = l.Close(); p.cut() })
	go p.serve()
	return p
}

func (p *dbProxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		if p.down.Load() {
			_ = c.Close()
			continue
		}
		go p.pipe(c)
	}
}

func (p *dbProxy) pipe(c net.Conn) {
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = c.Close()
		return
	}
	p.mu.Lock()
	p.conns[c], p.conns[s] = true, true
	p.mu.Unlock()
	go func() { _, _ = io.Copy(s, c); _ = s.Close() }()
	_, _ = io.Copy(c, s)
	_ = c.Close()
}

// cut ends every connection through the proxy.
func (p *dbProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
}

// TestDatabaseDownForAMoment: while PostgreSQL is unreachable, pushes and
// pulls are answered 503 with the specification's error body and
// Retry-After, and nothing partial remains; once it is back, so is Berth,
// by itself.
func TestDatabaseDownForAMoment(t *testing.T) {
	dsn := pg.Database(t)
	proxy := newDBProxy(t, pg.Addr())
	cfg := DefaultConfig()
	cfg.Data = t.TempDir()
	cfg.Storage.Index.Postgres = &PostgresConfig{DSN: strings.Replace(dsn, pg.Addr(), proxy.l.Addr().String(), 1) + "&connect_timeout=2"}
	srv, err := New(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.store.Close() })
	api := httptest.NewServer(srv.http.Handler)
	defer api.Close()
	do := func(method, path string, body []byte) *http.Response {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, api.URL+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	want503 := func(resp *http.Response, what string) {
		t.Helper()
		var body struct {
			Errors []struct{ Code, Message string }
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatalf("%s: %s, not an error body: %v", what, resp.Status, err)
		}
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
			len(body.Errors) != 1 || body.Errors[0].Code != "UNAVAILABLE" {
			t.Fatalf("%s: %s, Retry-After %q, %+v; want 503 UNAVAILABLE with Retry-After", what, resp.Status, resp.Header.Get("Retry-After"), body)
		}
	}

	stored := []byte("pushed before the database stopped")
	ds := digest.FromBytes(stored)
	if resp := do(http.MethodPost, "/v2/r/blobs/uploads/?digest="+ds.String(), stored); resp.StatusCode != http.StatusCreated {
		t.Fatalf("push: %s", resp.Status)
	}
	proxy.down.Store(true)
	proxy.cut()
	data := []byte("pushed while the database is down")
	d := digest.FromBytes(data)
	want503(do(http.MethodPost, "/v2/r/blobs/uploads/?digest="+d.String(), data), "monolithic push")
	want503(do(http.MethodPost, "/v2/r/blobs/uploads/", nil), "upload start")
	want503(do(http.MethodGet, "/v2/r/blobs/"+ds.String(), nil), "pull")
	want503(do(http.MethodGet, "/v2/r/tags/list", nil), "tag list")
	if resp := do(http.MethodGet, "/readyz", nil); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz while the database is down: %s", resp.Status)
	}
	proxy.down.Store(false)

	// Nothing partial: the refused push left no blob.
	if resp := do(http.MethodGet, "/v2/r/blobs/"+d.String(), nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("the refused blob: %s", resp.Status)
	}
	// Service resumes by itself.
	if resp := do(http.MethodPost, "/v2/r/blobs/uploads/?digest="+d.String(), data); resp.StatusCode != http.StatusCreated {
		t.Fatalf("push once the database is back: %s", resp.Status)
	}
	resp := do(http.MethodGet, "/v2/r/blobs/"+ds.String(), nil)
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, stored) {
		t.Fatalf("pull once the database is back: %s, %q", resp.Status, got)
	}
	if resp := do(http.MethodGet, "/readyz", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz once the database is back: %s", resp.Status)
	}
}
