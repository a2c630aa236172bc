package auth

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// testHash returns a bcrypt hash of password at the given cost with the
// given prefix ("$2a$", "$2b$" or "$2y$").
func testHash(t *testing.T, password string, cost int, prefix string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	if err != nil {
		t.Fatal(err)
	}
	return prefix + string(h[4:])
}

func parse(t *testing.T, text string) (*Users, error) {
	t.Helper()
	return ParseUsers(strings.NewReader(text))
}

func TestParseUsers(t *testing.T) {
	text := "# users of the test registry\n" +
		"\n" +
		"carol:" + testHash(t, "c", bcrypt.MinCost, "$2y$") + "\r\n" +
		"  # indented comment\n" +
		"alice:" + testHash(t, "a", bcrypt.MinCost, "$2a$") + "\n" +
		"   \t \n" +
		"bob:" + testHash(t, "b", bcrypt.MinCost, "$2b$") // no final newline
	u, err := parse(t, text)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := u.Names(), []string{"alice", "bob", "carol"}; !slices.Equal(got, want) {
		t.Errorf("Names() = %q, want %q", got, want)
	}
	for _, n := range []string{"alice", "bob", "carol"} {
		if !u.Has(n) {
			t.Errorf("Has(%q) = false", n)
		}
		if !u.Verify(n, n[:1]) {
			t.Errorf("Verify(%q, right password) = false", n)
		}
	}
	if u.Has("dave") || u.Has("") {
		t.Error("Has reports a user not in the file")
	}

	empty, err := parse(t, "# nobody yet\n\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(empty.Names()) != 0 || empty.Verify("alice", "a") {
		t.Error("an empty file has users")
	}
}

func TestParseUsersRefusesWeakHashes(t *testing.T) {
	for _, tc := range []struct{ kind, hash string }{
		{"SHA-1", "{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M="},
		{"Apache MD5", "$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/"},
		{"MD5-crypt", "$1$saltsalt$qjXMvbEw8oaL.CzflDugX/"},
		{"SHA-256-crypt", "$5$saltsalt$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZF4IO2D2C"},
		{"SHA-512-crypt", "$6$saltsalt$qFmFH.bQmmtXzyBY0s9v7Oicd2z4XSIecDzlB5KiA2/jctKu9YterLp8wwnSq.qc.eoxqOmSuNp2xS0ktL3nh/"},
		{"unsupported ($argon2id$)", "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaA"},
		{"DES crypt", "rl0uE4rHYcYhk"},
		{"plain-text", "hunter2hunter2"},
		{"empty hash", ""},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			text := "# team\nalice:" + testHash(t, "a", bcrypt.MinCost, "$2y$") + "\nbob:" + tc.hash + "\n"
			_, err := parse(t, text)
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			for _, want := range []string{"line 3", `user "bob"`, tc.kind, "only bcrypt"} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not mention %q", msg, want)
				}
			}
			if !errors.Is(err, ErrNotBcrypt) {
				t.Errorf("error %q is not ErrNotBcrypt", msg)
			}
			if tc.hash != "" && strings.Contains(msg, tc.hash) {
				t.Errorf("error %q shows the hash", msg)
			}
		})
	}
}

func TestParseUsersRefusesBadLines(t *testing.T) {
	good := testHash(t, "pw", bcrypt.MinCost, "$2y$")
	for _, tc := range []struct{ name, text, want string }{
		{"duplicate", "alice:" + good + "\n# x\nalice:" + good + "\n", `line 3: user "alice" already defined on line 1`},
		{"no colon", "alice:" + good + "\nbob\n", "line 2: want NAME:HASH"},
		{"empty name", ":" + good + "\n", "line 1: empty user name"},
		{"space in name", "bob smith:" + good + "\n", "line 1: user name \"bob smith\" contains whitespace"},
		{"short bcrypt", "bob:$2y$10$abc\n", `line 1: user "bob": malformed bcrypt hash`},
		{"bad cost", "bob:$2y$99" + good[6:] + "\n", `line 1: user "bob": malformed bcrypt hash`},
		{"bad characters", "bob:" + good[:50] + "!!!!!!!!!!\n", `line 1: user "bob": malformed bcrypt hash`},
		{"trailing junk", "bob:" + good + ":x\n", `line 1: user "bob": malformed bcrypt hash`},
		{"2x bcrypt", "bob:$2x$" + good[4:] + "\n", `line 1: user "bob"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(t, tc.text)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestVerify(t *testing.T) {
	u, err := parse(t, "alice:"+testHash(t, "s3cret", bcrypt.MinCost, "$2y$")+"\n")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, password string
		want           bool
	}{
		{"alice", "s3cret", true},
		{"alice", "s3cret ", false},
		{"alice", "S3cret", false},
		{"alice", "", false},
		{"bob", "s3cret", false},
		{"", "", false},
	} {
		if got := u.Verify(tc.name, tc.password); got != tc.want {
			t.Errorf("Verify(%q, %q) = %v, want %v", tc.name, tc.password, got, tc.want)
		}
	}
}

// TestUnknownUserCost checks that an unknown user is compared against a
// hash of the cost most users have, so it takes as long as a known one.
func TestUnknownUserCost(t *testing.T) {
	if c, err := bcrypt.Cost([]byte(dummyHash)); err != nil || c != HashCost {
		t.Fatalf("dummyHash: cost %d, %v; want %d", c, err, HashCost)
	}
	if string(dummyFor(nil)) != dummyHash || string(dummyFor(map[int]int{HashCost: 2, 4: 1})) != dummyHash {
		t.Error("files of no users or mostly HashCost ones do not use dummyHash")
	}
	for _, tc := range []struct {
		costs []int
		want  int
	}{
		{[]int{4, 4, 5}, 4},
		{[]int{4, 5}, 5},
	} {
		var b strings.Builder
		for i, c := range tc.costs {
			b.WriteString(string(rune('a'+i)) + ":" + testHash(t, "pw", c, "$2y$") + "\n")
		}
		u, err := parse(t, b.String())
		if err != nil {
			t.Fatal(err)
		}
		if got, err := bcrypt.Cost(u.dummy); err != nil || got != tc.want {
			t.Errorf("costs %v: dummy cost %d, %v; want %d", tc.costs, got, err, tc.want)
		}
		if u.Verify("nobody", "pw") {
			t.Errorf("costs %v: unknown user verified", tc.costs)
		}
	}
}

func readUsers(t *testing.T, path string) *Users {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u, err := ParseUsers(f)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// assertOnlyFile checks that dir holds just the users file: no temporary
// file was left behind.
func assertOnlyFile(t *testing.T, dir string, names ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if !slices.Equal(got, names) {
		t.Errorf("directory holds %q, want %q", got, names)
	}
}

func TestAddSetRemove(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "htpasswd")

	if err := AddUser(path, "alice", "pw-a"); err != nil {
		t.Fatalf("AddUser creating the file: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	if err := addUser(path, "bob", "pw-b", bcrypt.MinCost); err != nil {
		t.Fatal(err)
	}
	u := readUsers(t, path)
	if !slices.Equal(u.Names(), []string{"alice", "bob"}) || !u.Verify("alice", "pw-a") || !u.Verify("bob", "pw-b") {
		t.Fatalf("after adding: users %q, verify failed", u.Names())
	}

	if err := addUser(path, "alice", "other", bcrypt.MinCost); !errors.Is(err, ErrUserExists) {
		t.Errorf("AddUser existing: %v, want ErrUserExists", err)
	}
	if err := SetPassword(path, "alice", "new-a"); err != nil {
		t.Fatal(err)
	}
	u = readUsers(t, path)
	if u.Verify("alice", "pw-a") || !u.Verify("alice", "new-a") || !u.Verify("bob", "pw-b") {
		t.Error("SetPassword did not change just alice's password")
	}
	// AddUser and SetPassword hash at HashCost.
	raw, _ := os.ReadFile(path)
	if hash, ok := strings.CutPrefix(strings.Split(string(raw), "\n")[0], "alice:"); !ok {
		t.Errorf("first line %q is not alice's", raw)
	} else if c, err := bcrypt.Cost([]byte(hash)); err != nil || c != HashCost {
		t.Errorf("alice's hash: cost %d, %v; want %d", c, err, HashCost)
	}
	if err := setPassword(path, "carol", "x", bcrypt.MinCost); !errors.Is(err, ErrNoSuchUser) {
		t.Errorf("SetPassword missing user: %v, want ErrNoSuchUser", err)
	}
	if err := RemoveUser(path, "alice"); err != nil {
		t.Fatal(err)
	}
	if u = readUsers(t, path); !slices.Equal(u.Names(), []string{"bob"}) {
		t.Errorf("after removing alice: %q", u.Names())
	}
	if err := RemoveUser(path, "alice"); !errors.Is(err, ErrNoSuchUser) {
		t.Errorf("RemoveUser missing user: %v, want ErrNoSuchUser", err)
	}
	if err := RemoveUser(path, "bob"); err != nil {
		t.Fatal(err)
	}
	if raw, _ := os.ReadFile(path); len(raw) != 0 {
		t.Errorf("file of no users holds %q", raw)
	}
	assertOnlyFile(t, dir, "htpasswd")
}

func TestEditErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "htpasswd")
	missing := filepath.Join(dir, "missing")

	if err := setPassword(missing, "alice", "pw", bcrypt.MinCost); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("SetPassword on a missing file: %v", err)
	}
	if err := RemoveUser(missing, "alice"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("RemoveUser on a missing file: %v", err)
	}
	if err := addUser(filepath.Join(dir, "no-dir", "htpasswd"), "alice", "pw", bcrypt.MinCost); err == nil {
		t.Error("AddUser in a missing directory succeeded")
	}
	if err := addUser(path, "alice", "", bcrypt.MinCost); !errors.Is(err, ErrEmptyPassword) {
		t.Errorf("AddUser with an empty password: %v", err)
	}
	if err := addUser(path, "alice", strings.Repeat("x", 73), bcrypt.MinCost); !errors.Is(err, bcrypt.ErrPasswordTooLong) {
		t.Errorf("AddUser with a 73-byte password: %v", err)
	}
	for _, name := range []string{"", "a:b", "a b", "a\tb", "#a", "a\x00"} {
		if err := addUser(path, name, "pw", bcrypt.MinCost); err == nil {
			t.Errorf("AddUser(%q) accepted the name", name)
		}
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed adds created the file: %v", err)
	}
	if err := addUser(path, "alice", "pw", bcrypt.MinCost); err != nil {
		t.Fatal(err)
	}
	if err := setPassword(path, "alice", "", bcrypt.MinCost); !errors.Is(err, ErrEmptyPassword) {
		t.Errorf("SetPassword with an empty password: %v", err)
	}
	if !readUsers(t, path).Verify("alice", "pw") {
		t.Error("a failed SetPassword changed the password")
	}

	// A user on two lines is ambiguous: edits refuse it.
	line, _ := os.ReadFile(path)
	if err := os.WriteFile(path, append(line, line...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := setPassword(path, "alice", "x", bcrypt.MinCost); err == nil || !strings.Contains(err.Error(), "lines 1 and 2") {
		t.Errorf("SetPassword of a duplicated user: %v", err)
	}
	assertOnlyFile(t, dir, "htpasswd")
}

// TestEditKeepsOtherLines checks that edits leave comments, blank lines and
// other users as they were, and that SetPassword replaces a weak hash.
func TestEditKeepsOtherLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "htpasswd")
	carol := "carol:" + testHash(t, "c", bcrypt.MinCost, "$2y$")
	before := "# Team A\n\n" + carol + "\r\nbob:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=\n   # end\n"
	if err := os.WriteFile(path, []byte(before), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := addUser(path, "alice", "a", bcrypt.MinCost); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(raw), before) {
		t.Fatalf("AddUser changed existing lines:\n%s", raw)
	}
	if err := setPassword(path, "bob", "b", bcrypt.MinCost); err != nil {
		t.Fatalf("SetPassword over a {SHA} hash: %v", err)
	}
	if err := RemoveUser(path, "alice"); err != nil {
		t.Fatal(err)
	}
	raw, _ = os.ReadFile(path)
	lines := strings.Split(string(raw), "\n")
	want := []string{"# Team A", "", carol + "\r", "", "   # end", ""}
	if len(lines) != len(want) || !strings.HasPrefix(lines[3], "bob:$2a$") {
		t.Fatalf("file after edits:\n%s", raw)
	}
	lines[3] = ""
	if !slices.Equal(lines, want) {
		t.Errorf("file after edits: %q, want %q with bob's line", lines, want)
	}
	u := readUsers(t, path)
	if !u.Verify("bob", "b") || !u.Verify("carol", "c") {
		t.Error("edited file does not verify bob and carol")
	}
}

func TestEditThroughSymlink(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real")
	link := filepath.Join(dir, "link")
	if err := addUser(real, "alice", "a", bcrypt.MinCost); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("real", link); err != nil {
		t.Skip("no symbolic links:", err)
	}
	if err := addUser(link, "bob", "b", bcrypt.MinCost); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the link was replaced: %v", err)
	}
	if u := readUsers(t, real); !slices.Equal(u.Names(), []string{"alice", "bob"}) {
		t.Errorf("target holds %q", u.Names())
	}
}

func TestOpenUserFile(t *testing.T) {
	dir := t.TempDir()
	if _, err := OpenUserFile(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("alice:$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := OpenUserFile(bad)
	if !errors.Is(err, ErrNotBcrypt) || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("weak hash: %v", err)
	}
	if _, err := OpenUserFile(dir); err == nil {
		t.Error("a directory opened as a users file")
	}

	good := filepath.Join(dir, "good")
	if err := os.WriteFile(good, []byte("alice:"+testHash(t, "a", bcrypt.MinCost, "$2y$")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := OpenUserFile(good)
	if err != nil {
		t.Fatal(err)
	}
	if f.Path() != good || !f.Users().Verify("alice", "a") {
		t.Error("opened file does not verify alice")
	}
}

func TestReloadKeepsOldUsers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(path, []byte("alice:"+testHash(t, "a", bcrypt.MinCost, "$2y$")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := OpenUserFile(path)
	if err != nil {
		t.Fatal(err)
	}
	old := f.Users()

	if err := os.WriteFile(path, []byte("alice:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := f.Reload(); !errors.Is(err, ErrNotBcrypt) {
		t.Errorf("Reload of a weak hash: %v", err)
	}
	if f.Users() != old {
		t.Error("a failed Reload replaced the users")
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := f.Reload(); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Reload of a missing file: %v", err)
	}
	if f.Users() != old || !f.Users().Verify("alice", "a") {
		t.Error("a failed Reload replaced the users")
	}

	if err := os.WriteFile(path, []byte("bob:"+testHash(t, "b", bcrypt.MinCost, "$2y$")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := f.Reload(); err != nil {
		t.Fatal(err)
	}
	if u := f.Users(); u.Has("alice") || !u.Verify("bob", "b") {
		t.Errorf("after a good Reload: %q", u.Names())
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// eventually polls cond for up to 5s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(path, []byte("alice:"+testHash(t, "a", bcrypt.MinCost, "$2y$")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := OpenUserFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.Watch(ctx, 10*time.Millisecond, log)
	}()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Watch did not return after its context was cancelled")
		}
	}()

	// An edit through the CLI's functions is picked up.
	if err := addUser(path, "bob", "b", bcrypt.MinCost); err != nil {
		t.Fatal(err)
	}
	eventually(t, "bob to be added", func() bool { return f.Users().Has("bob") })
	eventually(t, "the reload to be logged", func() bool {
		return strings.Contains(logs.String(), "level=INFO msg=\"users file reloaded\"")
	})

	// A broken file is logged once and the users stay. It is renamed in
	// place, as editors and the CLI do.
	if err := replaceFile(path, []byte("alice:hunter2\n")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the failure to be logged", func() bool { return strings.Contains(logs.String(), "level=WARN") })
	time.Sleep(100 * time.Millisecond) // ten more checks
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 {
		t.Errorf("failure logged %d times, want once:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "only bcrypt") {
		t.Errorf("warning does not say why:\n%s", logs.String())
	}
	if u := f.Users(); !u.Verify("alice", "a") || !u.Verify("bob", "b") {
		t.Error("a broken file replaced the users")
	}

	// Fixing the file by writing it in place is picked up.
	if err := os.WriteFile(path, []byte("carol:"+testHash(t, "c", bcrypt.MinCost, "$2y$")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, "carol to replace alice and bob", func() bool {
		u := f.Users()
		return u.Has("carol") && !u.Has("alice") && !u.Has("bob")
	})
}

// A verified password is remembered, so a second check skips bcrypt; a
// wrong password never matches the remembered one, and a new set of users
// (a reload) remembers nothing.
func TestVerifyRemembersSuccess(t *testing.T) {
	h, err := bcrypt.GenerateFromPassword([]byte("right"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	u, err := ParseUsers(strings.NewReader("alice:" + string(h) + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, hit := u.verified.Load("alice"); hit {
		t.Fatal("remembered before any check")
	}
	if !u.Verify("alice", "right") {
		t.Fatal("right password refused")
	}
	if _, hit := u.verified.Load("alice"); !hit {
		t.Fatal("success not remembered")
	}
	if u.Verify("alice", "wrong") || u.Verify("alice", "") {
		t.Fatal("wrong password accepted after a remembered success")
	}
	if !u.Verify("alice", "right") {
		t.Fatal("right password refused the second time")
	}
	u2, err := ParseUsers(strings.NewReader("alice:" + string(h) + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, hit := u2.verified.Load("alice"); hit {
		t.Fatal("a new set of users shares what the old one remembered")
	}
}
