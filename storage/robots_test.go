package storage

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
)

func createRobot(t *testing.T, s *Store, name string, scopes []string, expires time.Time) string {
	t.Helper()
	secret, err := s.CreateRobot(context.Background(), name, scopes, expires)
	if err != nil {
		t.Fatalf("create robot %s: %v", name, err)
	}
	return secret
}

func TestRobotCreateVerifyList(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	defer s.Close()
	now := time.Now()
	exp := now.Add(720 * time.Hour)
	scopes := []string{"repository:apps/*:pull,push", "repository:base:pull"}
	secret := createRobot(t, s, "ci", scopes, exp)

	enc, ok := strings.CutPrefix(secret, "berth_")
	if !ok || len(enc) != 43 {
		t.Fatalf("secret %q: want berth_ and 43 characters", secret)
	}
	if raw, err := base64.RawURLEncoding.DecodeString(enc); err != nil || len(raw) != 32 {
		t.Fatalf("secret %q: not 32 bytes of base64url: %v", secret, err)
	}
	other := createRobot(t, s, "a.b_c-9", []string{"repository:x:pull"}, exp)
	if other == secret {
		t.Fatal("two robots got the same secret")
	}

	name, got, gotExp, err := s.VerifyRobot(ctx, secret, now)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if name != "ci" || !slices.Equal(got, scopes) || !gotExp.Equal(exp) {
		t.Fatalf("verify = %s %v %v, want ci %v %v", name, got, gotExp, scopes, exp)
	}
	got, gotExp, err = s.ActiveRobot(ctx, "ci", now)
	if err != nil || !slices.Equal(got, scopes) || !gotExp.Equal(exp) {
		t.Fatalf("active = %v %v %v", got, gotExp, err)
	}

	list, err := s.ListRobots(ctx)
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

	// The robot survives a restart.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, s.root)
	defer s.Close()
	if name, _, _, err := s.VerifyRobot(ctx, secret, now); err != nil || name != "ci" {
		t.Fatalf("verify after reopen = %s, %v", name, err)
	}
}

func TestRobotUnknownSecret(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	defer s.Close()
	secret := createRobot(t, s, "ci", []string{"repository:a:pull"}, time.Now().Add(time.Hour))
	for _, bad := range []string{
		"",
		"berth_",
		strings.TrimPrefix(secret, "berth_"),
		secret[:len(secret)-1],
		secret + "x",
		strings.ToUpper(secret),
	} {
		if _, _, _, err := s.VerifyRobot(ctx, bad, time.Now()); !errors.Is(err, ErrRobotUnknown) {
			t.Errorf("verify %q: %v, want ErrRobotUnknown", bad, err)
		}
	}
	if _, _, err := s.ActiveRobot(ctx, "nobody", time.Now()); !errors.Is(err, ErrRobotUnknown) {
		t.Errorf("active nobody: %v, want ErrRobotUnknown", err)
	}
}

func TestRobotRotate(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	defer s.Close()
	now := time.Now()
	exp := now.Add(time.Hour)
	old := createRobot(t, s, "ci", []string{"repository:a:pull"}, exp)
	fresh, err := s.RotateRobot(ctx, "ci", now)
	if err != nil {
		t.Fatalf("rotate: %v", err)
	}
	if fresh == old || !strings.HasPrefix(fresh, "berth_") {
		t.Fatalf("rotated secret %q", fresh)
	}
	if _, _, _, err := s.VerifyRobot(ctx, old, now); !errors.Is(err, ErrRobotUnknown) {
		t.Fatalf("old secret after rotation: %v, want ErrRobotUnknown", err)
	}
	name, scopes, gotExp, err := s.VerifyRobot(ctx, fresh, now)
	if err != nil || name != "ci" || !slices.Equal(scopes, []string{"repository:a:pull"}) || !gotExp.Equal(exp) {
		t.Fatalf("verify new secret = %s %v %v %v", name, scopes, gotExp, err)
	}
	list, err := s.ListRobots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Rotated == nil || !list[0].Rotated.Equal(now) {
		t.Fatalf("list after rotation = %+v", list)
	}
	if _, err := s.RotateRobot(ctx, "nobody", now); !errors.Is(err, ErrRobotUnknown) {
		t.Fatalf("rotate unknown: %v, want ErrRobotUnknown", err)
	}
}

func TestRobotRevoke(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	defer s.Close()
	now := time.Now()
	secret := createRobot(t, s, "ci", []string{"repository:a:pull"}, now.Add(time.Hour))
	revokedAt := now.Add(time.Minute)
	if err := s.RevokeRobot(ctx, "ci", revokedAt); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	_, _, _, err := s.VerifyRobot(ctx, secret, revokedAt)
	if !errors.Is(err, ErrRobotUnknown) || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("verify revoked: %v, want ErrRobotUnknown saying revoked", err)
	}
	if _, _, err := s.ActiveRobot(ctx, "ci", revokedAt); !errors.Is(err, ErrRobotUnknown) || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("active revoked: %v, want ErrRobotUnknown saying revoked", err)
	}
	// Idempotent: the first revocation time stays.
	if err := s.RevokeRobot(ctx, "ci", revokedAt.Add(time.Minute)); err != nil {
		t.Fatalf("revoke again: %v", err)
	}
	list, err := s.ListRobots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if list[0].Revoked == nil || !list[0].Revoked.Equal(revokedAt) || list[0].Status(now) != RobotRevoked {
		t.Fatalf("revoked robot = %+v", list[0])
	}
	if _, err := s.RotateRobot(ctx, "ci", revokedAt); !errors.Is(err, ErrRobotInactive) {
		t.Fatalf("rotate revoked: %v, want ErrRobotInactive", err)
	}
	if _, err := s.CreateRobot(ctx, "ci", []string{"repository:a:pull"}, now.Add(time.Hour)); !errors.Is(err, ErrRobotExists) {
		t.Fatalf("recreate revoked: %v, want ErrRobotExists", err)
	}
	if err := s.RevokeRobot(ctx, "nobody", now); !errors.Is(err, ErrRobotUnknown) {
		t.Fatalf("revoke unknown: %v, want ErrRobotUnknown", err)
	}
}

func TestRobotExpire(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	defer s.Close()
	exp := time.Now().Add(time.Hour)
	secret := createRobot(t, s, "ci", []string{"repository:a:pull"}, exp)
	if _, _, _, err := s.VerifyRobot(ctx, secret, exp.Add(-time.Second)); err != nil {
		t.Fatalf("verify before expiry: %v", err)
	}
	for _, at := range []time.Time{exp, exp.Add(time.Hour)} {
		if _, _, _, err := s.VerifyRobot(ctx, secret, at); !errors.Is(err, ErrRobotUnknown) || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("verify at %v: %v, want ErrRobotUnknown saying expired", at, err)
		}
		if _, _, err := s.ActiveRobot(ctx, "ci", at); !errors.Is(err, ErrRobotUnknown) || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("active at %v: %v, want ErrRobotUnknown saying expired", at, err)
		}
	}
	if _, err := s.RotateRobot(ctx, "ci", exp); !errors.Is(err, ErrRobotInactive) {
		t.Fatalf("rotate expired: %v, want ErrRobotInactive", err)
	}
	list, err := s.ListRobots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st := list[0].Status(exp); st != RobotExpired {
		t.Fatalf("status = %s, want expired", st)
	}
}

func TestRobotDuplicate(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	defer s.Close()
	exp := time.Now().Add(time.Hour)
	first := createRobot(t, s, "ci", []string{"repository:a:pull"}, exp)
	if _, err := s.CreateRobot(ctx, "ci", []string{"repository:b:push"}, exp); !errors.Is(err, ErrRobotExists) {
		t.Fatalf("duplicate: %v, want ErrRobotExists", err)
	}
	if _, scopes, _, err := s.VerifyRobot(ctx, first, time.Now()); err != nil || !slices.Equal(scopes, []string{"repository:a:pull"}) {
		t.Fatalf("first robot after refused duplicate: %v %v", scopes, err)
	}

	// Racing creations of one name: exactly one wins.
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for range 8 {
		wg.Go(func() {
			_, err := s.CreateRobot(ctx, "race", []string{"repository:a:pull"}, exp)
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
	s := openStore(t, t.TempDir())
	defer s.Close()
	exp := time.Now().Add(time.Hour)
	ok := []string{"repository:a:pull"}
	for _, name := range []string{"", "CI", "-ci", ".ci", "_ci", "c i", "ci/x", "ci:x", "é", strings.Repeat("a", 64)} {
		if _, err := s.CreateRobot(ctx, name, ok, exp); !errors.Is(err, ErrRobotInvalid) {
			t.Errorf("name %q: %v, want ErrRobotInvalid", name, err)
		}
	}
	if _, err := s.CreateRobot(ctx, strings.Repeat("a", 63), ok, exp); err != nil {
		t.Errorf("63-character name: %v", err)
	}
	for _, scopes := range [][]string{nil, {}, {""}, {"repository:a b:pull"}} {
		if _, err := s.CreateRobot(ctx, "ci", scopes, exp); !errors.Is(err, ErrRobotInvalid) {
			t.Errorf("scopes %q: %v, want ErrRobotInvalid", scopes, err)
		}
	}
	if _, err := s.CreateRobot(ctx, "ci", ok, time.Now().Add(-time.Second)); !errors.Is(err, ErrRobotInvalid) {
		t.Errorf("past expiry: %v, want ErrRobotInvalid", err)
	}
	if list, err := s.ListRobots(ctx); err != nil || len(list) != 1 {
		t.Fatalf("list after refusals = %+v, %v; want only the 63-character robot", list, err)
	}
}

// TestRobotSecretNotStored scans the index file for the secrets, old and
// new, and finds only their hashes.
func TestRobotSecretNotStored(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openStore(t, dir)
	secret := createRobot(t, s, "ci", []string{"repository:a:pull"}, time.Now().Add(time.Hour))
	rotated, err := s.RotateRobot(ctx, "ci", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, sec := range []string{secret, rotated} {
		body := strings.TrimPrefix(sec, "berth_")
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
