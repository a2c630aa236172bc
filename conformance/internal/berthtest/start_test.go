package berthtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeTB records failures and cleanups so Start's error paths can be
// tested. Fatalf panics with fatalSentinel, which run recovers.
type fakeTB struct {
	testing.TB // the real test, for Helper, TempDir and Setenv

	mu       sync.Mutex
	errs     []string
	logs     []string
	cleanups []func()
	failed   bool
}

type fatalSentinel struct{}

func (f *fakeTB) Errorf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs = append(f.errs, fmt.Sprintf(format, args...))
	f.failed = true
}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.Errorf(format, args...)
	panic(fatalSentinel{})
}

func (f *fakeTB) Logf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logs = append(f.logs, fmt.Sprintf(format, args...))
}

func (f *fakeTB) Failed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}

func (f *fakeTB) Cleanup(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cleanups = append(f.cleanups, fn)
}

// run calls body, stops at a Fatalf, then runs the cleanups in LIFO order.
func (f *fakeTB) run(body func()) {
	func() {
		defer func() {
			if r := recover(); r != nil {
				if _, ok := r.(fatalSentinel); !ok {
					panic(r)
				}
			}
		}()
		body()
	}()
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}

func (f *fakeTB) errors() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.errs, "\n")
}

// fakeServer writes a shell script standing in for berth and points
// BERTH_BIN at it.
func fakeServer(t *testing.T, script string) {
	t.Helper()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	path := filepath.Join(t.TempDir(), "fake-berth")
	if err := os.WriteFile(path, []byte("#!"+sh+"\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvBin, path)
}

const listenLine = `echo "time=x level=INFO msg=listening addr=127.0.0.1:4242 args=\"$*\" data=$BERTH_DATA" >&2`

func TestStartStopClean(t *testing.T) {
	fakeServer(t, `trap 'echo bye >&2; exit 0' TERM
`+listenLine+`
while :; do sleep 0.05; done
`)
	t.Setenv("BERTH_DATA", "/must/not/leak")
	f := &fakeTB{TB: t}
	var s *Server
	f.run(func() {
		s = Start(f, WithArgs("--log-level", "debug"), WithEnv("FOO=bar"))
		s.Stop()
		s.Stop() // idempotent
	})
	if f.errors() != "" {
		t.Fatalf("unexpected failures:\n%s", f.errors())
	}
	if s.Addr != "127.0.0.1:4242" || s.URL != "http://127.0.0.1:4242" {
		t.Errorf("Addr, URL = %q, %q", s.Addr, s.URL)
	}
	logs := s.Logs()
	wantArgs := "serve --addr 127.0.0.1:0 --data " + s.DataDir + " --log-level debug"
	for _, want := range []string{`args="` + wantArgs + `"`, "bye"} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, "/must/not/leak") {
		t.Errorf("BERTH_DATA from the test environment reached the server:\n%s", logs)
	}
}

func TestStopReportsBadExit(t *testing.T) {
	fakeServer(t, `trap 'exit 3' TERM
`+listenLine+`
while :; do sleep 0.05; done
`)
	f := &fakeTB{TB: t}
	f.run(func() { Start(f) })
	if got := f.errors(); !strings.Contains(got, "did not exit cleanly after SIGTERM: exit status 3") {
		t.Errorf("errors = %q", got)
	}
	if len(f.logs) == 0 || !strings.Contains(f.logs[0], "msg=listening") {
		t.Errorf("server log not shown on failure: %q", f.logs)
	}
}

func TestStartReportsEarlyExit(t *testing.T) {
	fakeServer(t, `echo "config is broken" >&2; exit 2`)
	f := &fakeTB{TB: t}
	f.run(func() {
		Start(f)
		t.Error("Start returned")
	})
	got := f.errors()
	if !strings.Contains(got, "exited before listening: exit status 2") || !strings.Contains(got, "config is broken") {
		t.Errorf("errors = %q", got)
	}
	if strings.Count(got, "berthtest:") != 1 {
		t.Errorf("want exactly one failure, got:\n%s", got)
	}
}

func TestStartTimesOut(t *testing.T) {
	fakeServer(t, `echo "still starting" >&2
while :; do sleep 0.05; done
`)
	f := &fakeTB{TB: t}
	begin := time.Now()
	f.run(func() { Start(f, WithStartTimeout(300*time.Millisecond)) })
	got := f.errors()
	if !strings.Contains(got, "did not log msg=listening within 300ms") || !strings.Contains(got, "still starting") {
		t.Errorf("errors = %q", got)
	}
	if d := time.Since(begin); d > 10*time.Second {
		t.Errorf("timed-out start took %s", d)
	}
}

func TestKillThenStop(t *testing.T) {
	fakeServer(t, `trap '' TERM
`+listenLine+`
while :; do sleep 0.05; done
`)
	f := &fakeTB{TB: t}
	f.run(func() {
		s := Start(f)
		s.Kill()
		s.Stop() // no-op after Kill; the cleanup's Stop is too
	})
	if got := f.errors(); got != "" {
		t.Errorf("unexpected failures:\n%s", got)
	}
}

func TestStopReportsCrash(t *testing.T) {
	fakeServer(t, listenLine+`
sleep 0.1
exit 1
`)
	f := &fakeTB{TB: t}
	f.run(func() {
		s := Start(f)
		select {
		case <-s.exited:
		case <-time.After(10 * time.Second):
			t.Error("fake server did not exit")
		}
	})
	if got := f.errors(); !strings.Contains(got, "exited before it was stopped: exit status 1") {
		t.Errorf("errors = %q", got)
	}
}
