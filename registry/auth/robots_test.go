package auth

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-registry/berth/storage/meta/bolt"
)

// The authenticator checks robot secrets and tokens with Robots.
var _ RobotVerifier = (*Robots)(nil)

// robotIndex is a bolt index in a test's directory, closed when the test
// ends, with the robot credentials kept in it.
type robotIndex struct {
	t      *testing.T
	path   string
	index  *bolt.Store
	robots *Robots
}

func openRobots(t *testing.T, dir string) *robotIndex {
	t.Helper()
	r := &robotIndex{t: t, path: filepath.Join(dir, "index.db")}
	r.open()
	t.Cleanup(func() { _ = r.index.Close() })
	return r
}

func (r *robotIndex) open() {
	r.t.Helper()
	idx, err := bolt.Open(r.path, bolt.Options{})
	if err != nil {
		r.t.Fatal(err)
	}
	r.index, r.robots = idx, NewRobots(IndexRobots(idx), nil)
}

// reopen closes the index and opens it again, as a restart would.
func (r *robotIndex) reopen() {
	r.t.Helper()
	if err := r.index.Close(); err != nil {
		r.t.Fatal(err)
	}
	r.open()
}

func (r *robotIndex) create(name string, scopes []string, expires time.Time) string {
	r.t.Helper()
	secret, err := r.robots.Create(context.Background(), name, scopes, expires)
	if err != nil {
		r.t.Fatalf("create robot %s: %v", name, err)
	}
	return secret
}

func TestRobotCreateVerifyList(t *testing.T) {
	ctx := context.Background()
	ri := openRobots(t, t.TempDir())
	now := time.Now()
	exp := now.Add(720 * time.Hour)
	scopes := []string{"repository:apps/*:pull,push", "repository:base:pull"}
	secret := ri.create("ci", scopes, exp)

	enc, ok := strings.CutPrefix(secret, RobotSecretPrefix)
	if !ok || len(enc) != 43 {
		t.Fatalf("secret %q: want %s and 43 characters", secret, RobotSecretPrefix)
	}
	if raw, err := base64.RawURLEncoding.DecodeString(enc); err != nil || len(raw) != 32 {
		t.Fatalf("secret %q: not 32 bytes of base64url: %v", secret, err)
	}
	other := ri.create("a.b_c-9", []string{"repository:x:pull"}, exp)
	if other == secret {
		t.Fatal("two robots got the same secret")
	}

	s := ri.robots
	info, err := s.VerifyRobot(ctx, secret, now)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if info.Name != "ci" || !slices.Equal(info.Scopes, scopes) || !info.Expires.Equal(exp) || info.Revoked != nil || info.Rotated != nil {
		t.Fatalf("verify = %+v, want ci %v %v", info, scopes, exp)
	}
	if !info.SecretSet().Equal(info.Created) {
		t.Fatalf("secret set %v, want the creation %v", info.SecretSet(), info.Created)
	}
	active, err := s.ActiveRobot(ctx, "ci", now)
	if err != nil || active.Name != "ci" || !slices.Equal(active.Scopes, scopes) || !active.Expires.Equal(exp) {
		t.Fatalf("active = %+v %v", active, err)
	}
	// What VerifyRobot returns is a copy: changing it changes nothing stored.
	info.Scopes[0] = "repository:**:*"
	if again, err := s.VerifyRobot(ctx, secret, now); err != nil || again.Scopes[0] != scopes[0] {
		t.Fatalf("verify after changing an answer: %+v %v", again, err)
	}

	list, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "a.b_c-9" || list[1].Name != "ci" {
		t.Fatalf("list = %+v, want a.b_c-9 then ci", list)
	}
	r := list[1]
	if !slices.Equal(r.Scopes, scopes) || !r.Expires.Equal(exp) || r.Revoked != nil || r.Rotated != nil ||
		r.Created.Before(now.Add(-time.Second)) || r.Created.After(time.Now()) {
		t.Fatalf("robot = %+v", r)
	}
	if st := r.Status(now); st != RobotActive {
		t.Fatalf("status = %s, want active", st)
	}
	// The listing is a copy: changing it changes nothing stored.
	list[1].Scopes[0] = "repository:**:*"
	if again, err := s.List(ctx); err != nil || again[1].Scopes[0] != scopes[0] {
		t.Fatalf("list after changing a listing: %+v %v", again, err)
	}

	// The robot survives a restart.
	ri.reopen()
	if info, err := ri.robots.VerifyRobot(ctx, secret, now); err != nil || info.Name != "ci" || !slices.Equal(info.Scopes, scopes) {
		t.Fatalf("verify after reopen = %+v, %v", info, err)
	}
}

func TestRobotUnknownSecret(t *testing.T) {
	ctx := context.Background()
	ri := openRobots(t, t.TempDir())
	secret := ri.create("ci", []string{"repository:a:pull"}, time.Now().Add(time.Hour))
	for _, bad := range []string{
		"",
		RobotSecretPrefix,
		strings.TrimPrefix(secret, RobotSecretPrefix),
		secret[:len(secret)-1],
		secret + "x",
		strings.ToUpper(secret),
	} {
		if _, err := ri.robots.VerifyRobot(ctx, bad, time.Now()); !errors.Is(err, ErrRobotUnknown) {
			t.Errorf("verify %q: %v, want ErrRobotUnknown", bad, err)
		}
	}
	if _, err := ri.robots.ActiveRobot(ctx, "nobody", time.Now()); !errors.Is(err, ErrRobotUnknown) {
		t.Errorf("active nobody: %v, want ErrRobotUnknown", err)
	}
}

func TestRobotRotate(t *testing.T) {
	ctx := context.Background()
	s := openRobots(t, t.TempDir())
	now := time.Now()
	exp := now.Add(time.Hour)
	old := s.create("ci", []string{"repository:a:pull"}, exp)
	fresh, freshExp, err := s.robots.Rotate(ctx, "ci", now)
	if err != nil {
		t.Fatalf("rotate: %v", err)
	}
	if fresh == old || !strings.HasPrefix(fresh, RobotSecretPrefix) || !freshExp.Equal(exp) {
		t.Fatalf("rotated secret %q, expiry %v (want %v kept)", fresh, freshExp, exp)
	}
	if _, err := s.robots.VerifyRobot(ctx, old, now); !errors.Is(err, ErrRobotUnknown) {
		t.Fatalf("old secret after rotation: %v, want ErrRobotUnknown", err)
	}
	info, err := s.robots.VerifyRobot(ctx, fresh, now)
	if err != nil || info.Name != "ci" || !slices.Equal(info.Scopes, []string{"repository:a:pull"}) || !info.Expires.Equal(exp) ||
		info.Rotated == nil || !info.SecretSet().Equal(now) {
		t.Fatalf("verify new secret = %+v %v", info, err)
	}
	list, err := s.robots.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Rotated == nil || !list[0].Rotated.Equal(now) {
		t.Fatalf("list after rotation = %+v", list)
	}
	if _, _, err := s.robots.Rotate(ctx, "nobody", now); !errors.Is(err, ErrRobotUnknown) {
		t.Fatalf("rotate unknown: %v, want ErrRobotUnknown", err)
	}
}

func TestRobotRevoke(t *testing.T) {
	ctx := context.Background()
	s := openRobots(t, t.TempDir())
	now := time.Now()
	secret := s.create("ci", []string{"repository:a:pull"}, now.Add(time.Hour))
	revokedAt := now.Add(time.Minute)
	if err := s.robots.Revoke(ctx, "ci", revokedAt); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	_, err := s.robots.VerifyRobot(ctx, secret, revokedAt)
	if !errors.Is(err, ErrRobotUnknown) || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("verify revoked: %v, want ErrRobotUnknown saying revoked", err)
	}
	if _, err := s.robots.ActiveRobot(ctx, "ci", revokedAt); !errors.Is(err, ErrRobotUnknown) || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("active revoked: %v, want ErrRobotUnknown saying revoked", err)
	}
	// Idempotent: the first revocation time stays.
	if err := s.robots.Revoke(ctx, "ci", revokedAt.Add(time.Minute)); err != nil {
		t.Fatalf("revoke again: %v", err)
	}
	list, err := s.robots.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if list[0].Revoked == nil || !list[0].Revoked.Equal(revokedAt) || list[0].Status(now) != RobotRevoked {
		t.Fatalf("revoked robot = %+v", list[0])
	}
	if _, _, err := s.robots.Rotate(ctx, "ci", revokedAt); !errors.Is(err, ErrRobotInactive) {
		t.Fatalf("rotate revoked: %v, want ErrRobotInactive", err)
	}
	if _, err := s.robots.Create(ctx, "ci", []string{"repository:a:pull"}, now.Add(time.Hour)); !errors.Is(err, ErrRobotExists) {
		t.Fatalf("recreate revoked: %v, want ErrRobotExists", err)
	}
	if err := s.robots.Revoke(ctx, "nobody", now); !errors.Is(err, ErrRobotUnknown) {
		t.Fatalf("revoke unknown: %v, want ErrRobotUnknown", err)
	}
}

func TestRobotExpire(t *testing.T) {
	ctx := context.Background()
	s := openRobots(t, t.TempDir())
	exp := time.Now().Add(time.Hour)
	secret := s.create("ci", []string{"repository:a:pull"}, exp)
	if _, err := s.robots.VerifyRobot(ctx, secret, exp.Add(-time.Second)); err != nil {
		t.Fatalf("verify before expiry: %v", err)
	}
	for _, at := range []time.Time{exp, exp.Add(time.Hour)} {
		if _, err := s.robots.VerifyRobot(ctx, secret, at); !errors.Is(err, ErrRobotUnknown) || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("verify at %v: %v, want ErrRobotUnknown saying expired", at, err)
		}
		if _, err := s.robots.ActiveRobot(ctx, "ci", at); !errors.Is(err, ErrRobotUnknown) || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("active at %v: %v, want ErrRobotUnknown saying expired", at, err)
		}
	}
	if _, _, err := s.robots.Rotate(ctx, "ci", exp); !errors.Is(err, ErrRobotInactive) {
		t.Fatalf("rotate expired: %v, want ErrRobotInactive", err)
	}
	list, err := s.robots.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st := list[0].Status(exp); st != RobotExpired {
		t.Fatalf("status = %s, want expired", st)
	}
}

func TestRobotDuplicate(t *testing.T) {
	ctx := context.Background()
	s := openRobots(t, t.TempDir())
	exp := time.Now().Add(time.Hour)
	first := s.create("ci", []string{"repository:a:pull"}, exp)
	if _, err := s.robots.Create(ctx, "ci", []string{"repository:b:push"}, exp); !errors.Is(err, ErrRobotExists) {
		t.Fatalf("duplicate: %v, want ErrRobotExists", err)
	}
	if info, err := s.robots.VerifyRobot(ctx, first, time.Now()); err != nil || !slices.Equal(info.Scopes, []string{"repository:a:pull"}) {
		t.Fatalf("first robot after refused duplicate: %+v %v", info, err)
	}

	// Racing creations of one name: exactly one wins.
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for range 8 {
		wg.Go(func() {
			_, err := s.robots.Create(ctx, "race", []string{"repository:a:pull"}, exp)
			switch {
			case err == nil:
				mu.Lock()
				wins++
				mu.Unlock()
			case !errors.Is(err, ErrRobotExists):
				t.Errorf("racing create: %v", err)
			}
		})
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d racing creations succeeded, want 1", wins)
	}
}

func TestRobotInvalid(t *testing.T) {
	ctx := context.Background()
	s := openRobots(t, t.TempDir())
	exp := time.Now().Add(time.Hour)
	ok := []string{"repository:a:pull"}
	for _, name := range []string{"", "CI", "-ci", ".ci", "_ci", "c i", "ci/x", "ci:x", "é", strings.Repeat("a", 64)} {
		if _, err := s.robots.Create(ctx, name, ok, exp); !errors.Is(err, ErrRobotInvalid) {
			t.Errorf("name %q: %v, want ErrRobotInvalid", name, err)
		}
	}
	if _, err := s.robots.Create(ctx, strings.Repeat("a", 63), ok, exp); err != nil {
		t.Errorf("63-character name: %v", err)
	}
	for _, scopes := range [][]string{nil, {}, {""}, {"repository:a b:pull"}} {
		if _, err := s.robots.Create(ctx, "ci", scopes, exp); !errors.Is(err, ErrRobotInvalid) {
			t.Errorf("scopes %q: %v, want ErrRobotInvalid", scopes, err)
		}
	}
	if _, err := s.robots.Create(ctx, "ci", ok, time.Now().Add(-time.Second)); !errors.Is(err, ErrRobotInvalid) {
		t.Errorf("past expiry: %v, want ErrRobotInvalid", err)
	}
	if list, err := s.robots.List(ctx); err != nil || len(list) != 1 {
		t.Fatalf("list after refusals = %+v, %v; want only the 63-character robot", list, err)
	}
}

// TestRobotSecretNotStored scans the index file for the secrets, old and
// new, and finds only their hashes.
func TestRobotSecretNotStored(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openRobots(t, dir)
	secret := s.create("ci", []string{"repository:a:pull"}, time.Now().Add(time.Hour))
	rotated, _, err := s.robots.Rotate(ctx, "ci", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.index.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, sec := range []string{secret, rotated} {
		body := strings.TrimPrefix(sec, RobotSecretPrefix)
		b, _ := base64.RawURLEncoding.DecodeString(body)
		for _, needle := range [][]byte{[]byte(sec), []byte(body), b} {
			if bytes.Contains(raw, needle) {
				t.Fatalf("index file holds the secret %q in clear", needle)
			}
		}
	}
	// The scan does see what is stored: the hash of the current secret.
	if !bytes.Contains(raw, []byte(hashRobotSecret(rotated))) {
		t.Fatal("index file lacks the hash of the secret: the scan proves nothing")
	}
}
