package registry

import "testing"

func TestListeningAddr(t *testing.T) {
	cases := []struct {
		line string
		addr string
		ok   bool
	}{
		{`time=2026-01-02T03:04:05Z level=INFO msg=listening addr=127.0.0.1:40123 scheme=http data="/tmp/a b" auth=false`, "127.0.0.1:40123", true},
		{`level=INFO msg=listening addr="[::1]:5000"`, "[::1]:5000", true},
		{`level=INFO msg="starting berth" version=dev`, "", false},
		{`level=INFO msg=listening`, "", false},
		{`level=INFO msg=listening addr="unterminated`, "", false},
		{``, "", false},
	}
	for _, c := range cases {
		addr, ok := ListeningAddr(c.line)
		if addr != c.addr || ok != c.ok {
			t.Errorf("ListeningAddr(%q) = %q, %v; want %q, %v", c.line, addr, ok, c.addr, c.ok)
		}
	}
}
