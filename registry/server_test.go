package registry

import (
	"net"
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
