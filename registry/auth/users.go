package auth

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"golang.org/x/crypto/bcrypt"
)

// HashCost is the bcrypt cost of the hashes Berth writes.
const HashCost = bcrypt.DefaultCost

// dummyHash is the bcrypt hash, at HashCost, of a random password nobody
// knows. Verify compares against it for unknown users so that the time it
// takes does not tell whether a user exists.
const dummyHash = "$2a$10$8w4ip0bsPHc0UK1dT86Hc.QsjCJZa8U9vMZ0lsGDx1UrzKKCuTpoG"

// Errors of the users file, for errors.Is.
var (
	// ErrNotBcrypt is returned for a hash that is not bcrypt ({SHA},
	// $apr1$, crypt, plain text...).
	ErrNotBcrypt = errors.New("only bcrypt hashes ($2a$, $2b$, $2y$) are accepted")
	// ErrUserExists is returned by AddUser for a user already in the file.
	ErrUserExists = errors.New("user already exists")
	// ErrNoSuchUser is returned by SetPassword and RemoveUser for a user
	// not in the file.
	ErrNoSuchUser = errors.New("no such user")
	// ErrEmptyPassword is returned for an empty password.
	ErrEmptyPassword = errors.New("empty password")
)

// Users is an immutable set of users and their bcrypt hashes, read from an
// htpasswd file. It is safe for concurrent use.
type Users struct {
	hashes map[string][]byte
	// dummy is a hash of the cost most users have, compared against for
	// unknown users.
	dummy []byte
	// verified remembers, per user, a salted SHA-256 of the password that
	// last passed bcrypt, so that clients sending Basic credentials on
	// every request pay for bcrypt once, not each time. It lives and dies
	// with this set of users: a reload starts afresh.
	verified sync.Map // name -> [32]byte
	salt     [32]byte
}

// ParseUsers reads an htpasswd file: one "name:hash" line per user; blank
// lines and lines starting with # are ignored. Only bcrypt hashes are
// accepted: any other kind is an error naming its line and user, and so is
// a duplicate or malformed name.
func ParseUsers(r io.Reader) (*Users, error) {
	u := &Users{hashes: map[string][]byte{}}
	if _, err := rand.Read(u.salt[:]); err != nil {
		return nil, fmt.Errorf("users: salt: %w", err)
	}
	lineOf := map[string]int{}
	costs := map[int]int{}
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		name, hash, ok, err := parseLine(sc.Text())
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if !ok {
			continue
		}
		if first, dup := lineOf[name]; dup {
			return nil, fmt.Errorf("line %d: user %q already defined on line %d", n, name, first)
		}
		cost, err := checkHash(hash)
		if err != nil {
			return nil, fmt.Errorf("line %d: user %q: %w", n, name, err)
		}
		lineOf[name] = n
		u.hashes[name] = []byte(hash)
		costs[cost]++
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("line %d: %w", n+1, err)
	}
	u.dummy = dummyFor(costs)
	return u, nil
}

// parseLine splits one line of an htpasswd file. ok is false for a blank
// line or a comment.
func parseLine(line string) (name, hash string, ok bool, err error) {
	line = strings.TrimSpace(line)
	if line == "" || strings.HasPrefix(line, "#") {
		return "", "", false, nil
	}
	name, hash, found := strings.Cut(line, ":")
	if !found {
		return "", "", false, errors.New("want NAME:HASH")
	}
	if err := validName(name); err != nil {
		return "", "", false, err
	}
	return name, hash, true, nil
}

// validName checks a user name: not empty, no colon, whitespace or control
// character, and no leading # (the line would read as a comment).
func validName(name string) error {
	switch {
	case name == "":
		return errors.New("empty user name")
	case strings.Contains(name, ":"):
		return fmt.Errorf("user name %q contains a colon", name)
	case strings.IndexFunc(name, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		return fmt.Errorf("user name %q contains whitespace or a control character", name)
	case strings.HasPrefix(name, "#"):
		return fmt.Errorf("user name %q starts with #", name)
	}
	return nil
}

// bcryptAlphabet is the base64 alphabet of bcrypt salts and hashes.
const bcryptAlphabet = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// checkHash returns the cost of a well-formed bcrypt hash, and an error
// naming the kind of hash for anything else.
func checkHash(hash string) (int, error) {
	if !strings.HasPrefix(hash, "$2a$") && !strings.HasPrefix(hash, "$2b$") && !strings.HasPrefix(hash, "$2y$") {
		return 0, fmt.Errorf("%s: %w", hashKind(hash), ErrNotBcrypt)
	}
	// $2y$NN$ then 22 characters of salt and 31 of hash.
	if len(hash) != 60 || hash[6] != '$' || strings.Trim(hash[7:], bcryptAlphabet) != "" {
		return 0, errors.New("malformed bcrypt hash")
	}
	cost, err := bcrypt.Cost([]byte(hash))
	if err != nil {
		return 0, fmt.Errorf("malformed bcrypt hash: %w", err)
	}
	return cost, nil
}

// hashKind names the kind of a hash that is not bcrypt, without showing it.
func hashKind(hash string) string {
	switch {
	case hash == "":
		return "empty hash"
	case strings.HasPrefix(hash, "{SHA}"):
		return "SHA-1 ({SHA}) hash"
	case strings.HasPrefix(hash, "$apr1$"):
		return "Apache MD5 ($apr1$) hash"
	case strings.HasPrefix(hash, "$1$"):
		return "MD5-crypt ($1$) hash"
	case strings.HasPrefix(hash, "$5$"):
		return "SHA-256-crypt ($5$) hash"
	case strings.HasPrefix(hash, "$6$"):
		return "SHA-512-crypt ($6$) hash"
	case strings.HasPrefix(hash, "$"):
		id, _, _ := strings.Cut(hash[1:], "$")
		return fmt.Sprintf("unsupported ($%s$) hash", id)
	case len(hash) == 13 && strings.Trim(hash, bcryptAlphabet) == "":
		return "DES crypt hash"
	}
	return "plain-text password or unknown hash"
}

// dummyFor returns the hash Verify compares unknown users against: one of
// the cost most users have (the higher on a tie), so an unknown user takes
// as long as a typical known one.
func dummyFor(costs map[int]int) []byte {
	best, most := HashCost, 0
	for cost, n := range costs {
		if n > most || (n == most && cost > best) {
			best, most = cost, n
		}
	}
	if best != HashCost {
		if h, err := bcrypt.GenerateFromPassword([]byte(rand.Text()), best); err == nil {
			return h
		}
	}
	return []byte(dummyHash)
}

// Verify reports whether password is the password of user name. For an
// unknown user it still runs a bcrypt comparison, so the time it takes
// does not reveal whether the user exists.
func (u *Users) Verify(name, password string) bool {
	hash, ok := u.hashes[name]
	if !ok {
		hash = u.dummy
	}
	sum := u.passwordSum(password)
	if ok {
		if seen, hit := u.verified.Load(name); hit {
			want := seen.([32]byte)
			if subtle.ConstantTimeCompare(want[:], sum[:]) == 1 {
				return true
			}
		}
	}
	err := bcrypt.CompareHashAndPassword(hash, []byte(password))
	if ok && err == nil {
		u.verified.Store(name, sum)
		return true
	}
	return false
}

func (u *Users) passwordSum(password string) [32]byte {
	h := sha256.New()
	h.Write(u.salt[:])
	h.Write([]byte(password))
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// Fingerprint returns the fingerprint of user name's current password
// hash, which tokens issued to the user carry: a new password (even the
// same one again, hashed with a new salt) changes it. ok is false for an
// unknown user.
func (u *Users) Fingerprint(name string) (fp string, ok bool) {
	hash, ok := u.hashes[name]
	if !ok {
		return "", false
	}
	return credential("user", name, string(hash)), true
}

// Has reports whether user name exists.
func (u *Users) Has(name string) bool {
	_, ok := u.hashes[name]
	return ok
}

// Names returns the user names, sorted.
func (u *Users) Names() []string {
	names := make([]string, 0, len(u.hashes))
	for n := range u.hashes {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// UserFile is an htpasswd file and the users last read from it. Users is
// safe to call from any goroutine while Reload or Watch replace them.
type UserFile struct {
	path  string
	users atomic.Pointer[Users]
	// mu serializes reloads; stamp is the file as last loaded, failed the
	// file as it was when Fresh last failed to load it.
	mu     sync.Mutex
	stamp  os.FileInfo
	failed os.FileInfo
}

// OpenUserFile reads the htpasswd file at path. A missing or invalid file
// is an error: Berth does not start with it.
func OpenUserFile(path string) (*UserFile, error) {
	f := &UserFile{path: path}
	if err := f.Reload(); err != nil {
		return nil, err
	}
	return f, nil
}

// Path returns the path of the file.
func (f *UserFile) Path() string { return f.path }

// Users returns the users as last read.
func (f *UserFile) Users() *Users { return f.users.Load() }

// Fresh returns the users, first rereading the file if it changed since it
// was last read (or last failed to load), so that a credential change
// (berth user passwd, remove) takes effect from the next request on
// rather than at Watch's next check. A file that fails to load leaves the
// previous users in force; Watch reports it.
func (f *UserFile) Fresh() *Users {
	fi, err := os.Stat(f.path)
	if err != nil {
		return f.Users()
	}
	f.mu.Lock()
	changed := !sameStamp(f.stamp, fi) && !sameStamp(f.failed, fi)
	f.mu.Unlock()
	if changed {
		if err := f.Reload(); err != nil {
			f.mu.Lock()
			f.failed = fi
			f.mu.Unlock()
		}
	}
	return f.Users()
}

// Reload rereads the file. If it cannot be read or parsed, the users read
// before stay in use and the error is returned.
func (f *UserFile) Reload() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	users, fi, err := loadUsers(f.path)
	if err != nil {
		return err
	}
	f.users.Store(users)
	f.stamp = fi
	return nil
}

// loadUsers reads and parses the file at path, returning it as stat'ed
// through the descriptor read from.
func loadUsers(path string) (*Users, os.FileInfo, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("users file: %w", err)
	}
	defer file.Close()
	fi, err := file.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("users file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("users file %s: not a regular file", path)
	}
	users, err := ParseUsers(file)
	if err != nil {
		return nil, nil, fmt.Errorf("users file %s: %w", path, err)
	}
	return users, fi, nil
}

// Watch checks the file every interval (a second if every is not
// positive) until ctx is done, and reloads it when its inode, size or
// modification time changed and then stayed the same for one interval (so
// a file being written in place is not read half written). Reloads are
// logged at info, failures at warn (once per failure, not at every check);
// after a failure the users read before stay in use. log may be nil.
func (f *UserFile) Watch(ctx context.Context, every time.Duration, log *slog.Logger) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if every <= 0 {
		every = time.Second
	}
	f.mu.Lock()
	seen := f.stamp
	f.mu.Unlock()
	var pending os.FileInfo // the file as changed at the last check
	var failed os.FileInfo  // the file as it was at the last failure
	var lastErr string
	warn := func(fi os.FileInfo, err error) {
		if err.Error() != lastErr || (fi != nil && !sameStamp(failed, fi)) {
			log.Warn("users file not reloaded; keeping the previous users", "path", f.path, "err", err)
		}
		failed, lastErr = fi, err.Error()
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		fi, err := os.Stat(f.path)
		if err != nil {
			warn(nil, fmt.Errorf("users file: %w", err))
			continue
		}
		if sameStamp(seen, fi) {
			pending = nil
			continue
		}
		if !sameStamp(pending, fi) {
			// Changed since the last check: wait for it to settle, so
			// that a file being written in place is not read half
			// written.
			pending = fi
			continue
		}
		pending = nil
		if err := f.Reload(); err != nil {
			warn(fi, err)
			continue
		}
		f.mu.Lock()
		seen = f.stamp
		f.mu.Unlock()
		failed, lastErr = nil, ""
		log.Info("users file reloaded", "path", f.path, "users", len(f.Users().hashes))
	}
}

// sameStamp reports whether a and b are the same file with the same size
// and modification time.
func sameStamp(a, b os.FileInfo) bool {
	return a != nil && b != nil && os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// AddUser adds user name with password to the htpasswd file at path,
// creating the file if it does not exist. It fails with ErrUserExists if
// the user is already there.
func AddUser(path, name, password string) error {
	return addUser(path, name, password, HashCost)
}

func addUser(path, name, password string, cost int) error {
	if err := validName(name); err != nil {
		return err
	}
	hash, err := hashPassword(password, cost)
	if err != nil {
		return err
	}
	return editUser(path, name, true, func(lines []string, i int) ([]string, error) {
		if i >= 0 {
			return nil, fmt.Errorf("%w: %s", ErrUserExists, name)
		}
		return append(lines, name+":"+hash), nil
	})
}

// SetPassword replaces the password of user name in the htpasswd file at
// path. It fails with ErrNoSuchUser if the user is not there. It also
// replaces a hash Berth refuses, such as {SHA}, with a bcrypt one.
func SetPassword(path, name, password string) error {
	return setPassword(path, name, password, HashCost)
}

func setPassword(path, name, password string, cost int) error {
	hash, err := hashPassword(password, cost)
	if err != nil {
		return err
	}
	return editUser(path, name, false, func(lines []string, i int) ([]string, error) {
		if i < 0 {
			return nil, fmt.Errorf("%w: %s", ErrNoSuchUser, name)
		}
		lines[i] = name + ":" + hash
		return lines, nil
	})
}

// RemoveUser removes user name from the htpasswd file at path. It fails
// with ErrNoSuchUser if the user is not there.
func RemoveUser(path, name string) error {
	return editUser(path, name, false, func(lines []string, i int) ([]string, error) {
		if i < 0 {
			return nil, fmt.Errorf("%w: %s", ErrNoSuchUser, name)
		}
		return slices.Delete(lines, i, i+1), nil
	})
}

// hashPassword returns the bcrypt hash of password at cost.
func hashPassword(password string, cost int) (string, error) {
	if password == "" {
		return "", ErrEmptyPassword
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return string(h), nil
}

// findUser returns the index of the line of user name, or -1. Other lines,
// even malformed ones, are left alone; a user on two lines is an error.
func findUser(lines []string, name string) (int, error) {
	found := -1
	for i, l := range lines {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "#") {
			continue
		}
		if n, _, ok := strings.Cut(l, ":"); !ok || n != name {
			continue
		}
		if found >= 0 {
			return -1, fmt.Errorf("user %q is on lines %d and %d: fix the file by hand", name, found+1, i+1)
		}
		found = i
	}
	return found, nil
}

// editUser rewrites the htpasswd file at path with the lines edit returns,
// given the lines and the index of the line of user name (-1 if none),
// leaving every other line as it was. The new file replaces the old one
// atomically. If create is set, a missing file is edited as empty.
func editUser(path, name string, create bool, edit func(lines []string, i int) ([]string, error)) error {
	// Edit the file a symbolic link points to rather than replace the link.
	if real, err := filepath.EvalSymlinks(path); err == nil {
		path = real
	}
	data, err := os.ReadFile(path)
	if err != nil && !(create && errors.Is(err, os.ErrNotExist)) {
		return fmt.Errorf("users file: %w", err)
	}
	var lines []string
	if len(data) > 0 {
		lines = strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	}
	i, err := findUser(lines, name)
	if err != nil {
		return err
	}
	if lines, err = edit(lines, i); err != nil {
		return err
	}
	var out []byte
	if len(lines) > 0 {
		out = []byte(strings.Join(lines, "\n") + "\n")
	}
	if err := replaceFile(path, out); err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	return nil
}

// replaceFile writes data to a temporary file of mode 0600 in the
// directory of path, syncs it and renames it over path, so that readers see
// the old content or the new, never a mix.
func replaceFile(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	defer func() {
		if err != nil {
			err = fmt.Errorf("replace %s: %w", filepath.Base(path), err)
		}
	}()
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	ok = true
	// Make the rename durable; not every file system can sync a directory.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
