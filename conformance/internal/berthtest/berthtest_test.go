package berthtest

import (
	"strings"
	"testing"
)

func TestParseListening(t *testing.T) {
	tests := []struct {
		line   string
		want   string
		wantOK bool
	}{
		{`time=2026-11-23T20:30:00Z level=INFO msg=listening addr=127.0.0.1:40123`, "127.0.0.1:40123", true},
		{`time=2026-11-23T20:30:00Z level=INFO msg=listening addr=127.0.0.1:40123` + "\r", "127.0.0.1:40123", true},
		{`time=2026-11-23T20:30:00Z level=INFO msg="listening" addr="127.0.0.1:5000" data=/tmp/x`, "127.0.0.1:5000", true},
		{`level=INFO addr=[::1]:8080 msg=listening`, "[::1]:8080", true},
		{`time=x level=INFO msg="listening soon" addr=127.0.0.1:1`, "", false},
		{`time=x level=INFO msg=starting addr=127.0.0.1:1`, "", false},
		{`time=x level=INFO msg=listening`, "", false},
		{`time=x level=INFO msg="unterminated addr=127.0.0.1:1`, "", false},
		{`listening on 127.0.0.1:5000`, "", false},
		{``, "", false},
	}
	for _, tt := range tests {
		got, ok := ParseListening(tt.line)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("ParseListening(%q) = %q, %v; want %q, %v", tt.line, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestLogSinkDetectsSplitLine(t *testing.T) {
	l := newLogSink()
	for _, chunk := range []string{"time=a level=INFO msg=sta", "rting\ntime=b level=INFO msg=list", "ening addr=127.0.0.1:4", "2\nmore\n"} {
		if _, err := l.Write([]byte(chunk)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case addr := <-l.listening:
		if addr != "127.0.0.1:42" {
			t.Errorf("addr = %q, want 127.0.0.1:42", addr)
		}
	default:
		t.Fatal("listening line not detected")
	}
	if !strings.HasSuffix(l.String(), "more\n") {
		t.Errorf("log not fully captured: %q", l.String())
	}
}

func TestCheckAddr(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:5000": true,
		"[::1]:5000":     true,
		"127.0.0.1:0":    false,
		"0.0.0.0:5000":   false,
		"10.1.2.3:5000":  false,
		"localhost:5000": false,
		"127.0.0.1":      false,
	} {
		if err := checkAddr(addr); (err == nil) != ok {
			t.Errorf("checkAddr(%q) = %v, want ok=%v", addr, err, ok)
		}
	}
}

func TestTailLines(t *testing.T) {
	text := "a\nb\nc\nd\n"
	for n, want := range map[int]string{1: "d", 2: "c\nd", 4: "a\nb\nc\nd", 10: "a\nb\nc\nd"} {
		if got := tailLines(text, n); got != want {
			t.Errorf("tailLines(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestModulePathOfRepo(t *testing.T) {
	root := RepoRoot(t)
	mod, err := modulePath(root + "/go.mod")
	if err != nil || mod != ModulePath {
		t.Fatalf("modulePath = %q, %v", mod, err)
	}
}
