package registry

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/berth-registry/berth/registry/auth"
)

func TestInsecureAuthWarning(t *testing.T) {
	withAuth := Config{Auth: auth.Config{Htpasswd: "/etc/berth/htpasswd"}}
	withTLS := withAuth
	withTLS.TLS = TLSConfig{Certificate: "c.pem", Key: "k.pem"}
	cases := []struct {
		name string
		cfg  Config
		ip   string
		want bool
	}{
		{"auth, plain HTTP, all interfaces", withAuth, "0.0.0.0", true},
		{"auth, plain HTTP, LAN address", withAuth, "10.1.2.3", true},
		{"auth, plain HTTP, loopback", withAuth, "127.0.0.1", false},
		{"auth, plain HTTP, IPv6 loopback", withAuth, "::1", false},
		{"auth over TLS", withTLS, "0.0.0.0", false},
		{"no auth", Config{}, "0.0.0.0", false},
	}
	for _, c := range cases {
		addr := &net.TCPAddr{IP: net.ParseIP(c.ip), Port: 5000}
		if got := insecureAuth(c.cfg, addr); got != c.want {
			t.Errorf("%s: insecureAuth = %v, want %v", c.name, got, c.want)
		}
	}
}

// TestUIEnabled serves the web interface by default and not with
// ui.enabled false, where /ui/ is the API's and / is not redirected.
func TestUIEnabled(t *testing.T) {
	for _, enabled := range []bool{true, false} {
		cfg := DefaultConfig()
		cfg.Data = t.TempDir()
		cfg.UI.Enabled = enabled
		srv, err := New(context.Background(), cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		srv.http.Handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ui/", nil))
		if got := strings.Contains(rec.Body.String(), "<h1>Repositories</h1>"); got != enabled || (rec.Code == http.StatusOK) != enabled {
			t.Errorf("ui.enabled %v: /ui/ answers %d %.80q", enabled, rec.Code, rec.Body.String())
		}
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.Header.Set("Accept", "text/html")
		rec = httptest.NewRecorder()
		srv.http.Handler.ServeHTTP(rec, req)
		if redirected := rec.Code == http.StatusSeeOther; redirected != enabled {
			t.Errorf("ui.enabled %v: a browser asking for / gets %d", enabled, rec.Code)
		}
		if err := srv.store.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
