package storage

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// robotSecretPrefix starts every robot secret. It must equal
// auth.RobotSecretPrefix, which tells a robot secret from a password; the
// registry's tests check that it does.
const robotSecretPrefix = "berth_"

// robotSecretBytes is the entropy of a robot secret: 256 bits, which makes
// a fast hash (SHA-256) as safe to store as a slow password hash.
const robotSecretBytes = 32

var robotNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// robotRecord is the value of robots/<name>. The secret itself is never
// stored: Hash is the hex SHA-256 of it, also the key of robotSecrets/.
type robotRecord struct {
	Scopes  []string   `json:"scopes"`
	Created time.Time  `json:"created"`
	Expires time.Time  `json:"expires"`
	Revoked *time.Time `json:"revoked,omitempty"`
	Rotated *time.Time `json:"rotated,omitempty"`
	Hash    string     `json:"hash"`
}

// Robot describes a robot token: a machine credential with fixed scopes
// and an expiry. It never carries the secret or its hash.
type Robot struct {
	// Name identifies the robot; it is the user name in logs and tokens.
	Name string
	// Scopes are the token-format scopes ("repository:apps/*:pull,push")
	// that bound what the robot may do.
	Scopes []string
	// Created is when the robot was created.
	Created time.Time
	// Expires is when the robot's secret stops working.
	Expires time.Time
	// Revoked is when the robot was revoked, or nil.
	Revoked *time.Time
	// Rotated is when the robot's secret was last replaced, or nil.
	Rotated *time.Time
}

// Robot states, as Robot.Status reports them.
const (
	RobotActive  = "active"
	RobotRevoked = "revoked"
	RobotExpired = "expired"
)

// Status is RobotRevoked, RobotExpired or RobotActive, as of now.
func (r Robot) Status(now time.Time) string {
	switch {
	case r.Revoked != nil:
		return RobotRevoked
	case !now.Before(r.Expires):
		return RobotExpired
	}
	return RobotActive
}

func (rec robotRecord) robot(name string) Robot {
	return Robot{
		Name:    name,
		Scopes:  slices.Clone(rec.Scopes),
		Created: rec.Created,
		Expires: rec.Expires,
		Revoked: cloneTime(rec.Revoked),
		Rotated: cloneTime(rec.Rotated),
	}
}

// usable fails with a wrapped ErrRobotUnknown if the robot is revoked or
// expired at now.
func (rec robotRecord) usable(now time.Time) error {
	if rec.Revoked != nil {
		return fmt.Errorf("%w: revoked at %s", ErrRobotUnknown, rec.Revoked.UTC().Format(time.RFC3339))
	}
	if !now.Before(rec.Expires) {
		return fmt.Errorf("%w: expired at %s", ErrRobotUnknown, rec.Expires.UTC().Format(time.RFC3339))
	}
	return nil
}

func cloneTime(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	c := *t
	return &c
}

// ValidRobotName checks a robot name against the grammar
// ^[a-z0-9][a-z0-9._-]{0,62}$, failing with a wrapped ErrRobotInvalid.
func ValidRobotName(name string) error {
	if !robotNameRE.MatchString(name) {
		return fmt.Errorf("%w: name %q: want 1 to 63 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit", ErrRobotInvalid, name)
	}
	return nil
}

// newRobotSecret returns a fresh secret and the hex SHA-256 under which it
// is stored.
func newRobotSecret() (secret, hash string, err error) {
	var b [robotSecretBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", fmt.Errorf("generate robot secret: %w", err)
	}
	secret = robotSecretPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	return secret, hashRobotSecret(secret), nil
}

func hashRobotSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// getRobot reads robots/<name>, failing with a wrapped ErrRobotUnknown if
// there is no such robot.
func getRobot(tx *bolt.Tx, name string) (robotRecord, error) {
	var rec robotRecord
	found, err := getJSON(tx.Bucket(bucketRobots), []byte(name), &rec)
	if err != nil {
		return rec, err
	}
	if !found {
		return rec, fmt.Errorf("%w: no such robot", ErrRobotUnknown)
	}
	return rec, nil
}

// CreateRobot creates the robot name with the given scopes, valid until
// expires, and returns its secret: "berth_" and 43 characters of base64url.
// The secret is shown only this once; the store keeps its SHA-256. The
// name must be new: it fails with ErrRobotExists if a robot of that name
// exists, even revoked, so that a name in the logs means one credential.
// Scopes are stored as given; the caller validates them.
func (s *Store) CreateRobot(ctx context.Context, name string, scopes []string, expires time.Time) (string, error) {
	if err := ValidRobotName(name); err != nil {
		return "", err
	}
	if len(scopes) == 0 {
		return "", fmt.Errorf("%w: robot %s has no scopes", ErrRobotInvalid, name)
	}
	for _, sc := range scopes {
		if sc == "" || strings.ContainsAny(sc, " \t\r\n") {
			return "", fmt.Errorf("%w: robot %s: scope %q", ErrRobotInvalid, name, sc)
		}
	}
	now := time.Now().UTC()
	if !expires.After(now) {
		return "", fmt.Errorf("%w: robot %s would expire at %s, in the past", ErrRobotInvalid, name, expires.UTC().Format(time.RFC3339))
	}
	secret, hash, err := newRobotSecret()
	if err != nil {
		return "", err
	}
	rec := robotRecord{Scopes: slices.Clone(scopes), Created: now, Expires: expires.UTC(), Hash: hash}
	err = s.db.Update(func(tx *bolt.Tx) error {
		robots, secrets := tx.Bucket(bucketRobots), tx.Bucket(bucketRobotSecrets)
		if robots.Get([]byte(name)) != nil {
			return ErrRobotExists
		}
		if secrets.Get([]byte(hash)) != nil {
			return errors.New("robot secret collision") // 2^-256: a broken random source
		}
		if err := putJSON(robots, []byte(name), rec); err != nil {
			return err
		}
		return secrets.Put([]byte(hash), []byte(name))
	})
	if err != nil {
		return "", fmt.Errorf("create robot %s: %w", name, err)
	}
	s.log.DebugContext(ctx, "robot created", "robot", name, "scopes", scopes, "expires", rec.Expires)
	return secret, nil
}

// ListRobots returns every robot, revoked and expired ones included, in
// name order.
func (s *Store) ListRobots(ctx context.Context) ([]Robot, error) {
	var out []Robot
	err := s.db.View(func(tx *bolt.Tx) error {
		return forEachJSON(tx.Bucket(bucketRobots), func(k []byte, rec robotRecord) error {
			out = append(out, rec.robot(string(k)))
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list robots: %w", err)
	}
	return out, nil
}

// RevokeRobot revokes the robot name as of now: its secret stops working,
// and so do the tokens issued to it, which are checked against the store
// on every request. The record stays, so the name cannot be reused.
// Revoking a revoked robot does nothing; an unknown one fails with
// ErrRobotUnknown.
func (s *Store) RevokeRobot(ctx context.Context, name string, now time.Time) error {
	revoked := false
	err := s.db.Update(func(tx *bolt.Tx) error {
		rec, err := getRobot(tx, name)
		if err != nil {
			return err
		}
		if rec.Revoked != nil {
			return nil
		}
		t := now.UTC()
		rec.Revoked = &t
		revoked = true
		return putJSON(tx.Bucket(bucketRobots), []byte(name), rec)
	})
	if err != nil {
		return fmt.Errorf("revoke robot %s: %w", name, err)
	}
	if revoked {
		s.log.DebugContext(ctx, "robot revoked", "robot", name)
	}
	return nil
}

// RotateRobot gives the robot name a new secret, which it returns; the old
// secret stops working at once. Scopes and expiry do not change. It fails
// with ErrRobotUnknown for an unknown robot and ErrRobotInactive for a
// revoked or expired one.
func (s *Store) RotateRobot(ctx context.Context, name string, now time.Time) (string, error) {
	secret, hash, err := newRobotSecret()
	if err != nil {
		return "", err
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		rec, err := getRobot(tx, name)
		if err != nil {
			return err
		}
		switch {
		case rec.Revoked != nil:
			return fmt.Errorf("%w: revoked at %s", ErrRobotInactive, rec.Revoked.UTC().Format(time.RFC3339))
		case !now.Before(rec.Expires):
			return fmt.Errorf("%w: expired at %s; create a new robot instead", ErrRobotInactive, rec.Expires.UTC().Format(time.RFC3339))
		}
		robots, secrets := tx.Bucket(bucketRobots), tx.Bucket(bucketRobotSecrets)
		if secrets.Get([]byte(hash)) != nil {
			return errors.New("robot secret collision")
		}
		if string(secrets.Get([]byte(rec.Hash))) == name {
			if err := secrets.Delete([]byte(rec.Hash)); err != nil {
				return fmt.Errorf("remove old secret: %w", err)
			}
		}
		t := now.UTC()
		rec.Hash, rec.Rotated = hash, &t
		if err := putJSON(robots, []byte(name), rec); err != nil {
			return err
		}
		return secrets.Put([]byte(hash), []byte(name))
	})
	if err != nil {
		return "", fmt.Errorf("rotate robot %s: %w", name, err)
	}
	s.log.DebugContext(ctx, "robot secret rotated", "robot", name)
	return secret, nil
}

// VerifyRobot checks a robot secret and returns the robot's name, scopes
// and expiry. It fails with a wrapped ErrRobotUnknown if no robot has that
// secret (never had, or had it before a rotation), or if the robot is
// revoked or expired at now.
func (s *Store) VerifyRobot(ctx context.Context, secret string, now time.Time) (name string, scopes []string, expires time.Time, err error) {
	if !strings.HasPrefix(secret, robotSecretPrefix) {
		return "", nil, time.Time{}, fmt.Errorf("%w: not a robot secret", ErrRobotUnknown)
	}
	hash := hashRobotSecret(secret)
	err = s.db.View(func(tx *bolt.Tx) error {
		n := tx.Bucket(bucketRobotSecrets).Get([]byte(hash))
		if n == nil {
			return fmt.Errorf("%w: no robot has this secret", ErrRobotUnknown)
		}
		name = string(n)
		rec, err := getRobot(tx, name)
		if err != nil {
			return err
		}
		if subtle.ConstantTimeCompare([]byte(rec.Hash), []byte(hash)) != 1 {
			return fmt.Errorf("robot %s: %w: the secret was replaced", name, ErrRobotUnknown)
		}
		if err := rec.usable(now); err != nil {
			return fmt.Errorf("robot %s: %w", name, err)
		}
		scopes, expires = slices.Clone(rec.Scopes), rec.Expires
		return nil
	})
	if err != nil {
		return "", nil, time.Time{}, fmt.Errorf("verify robot secret: %w", err)
	}
	return name, scopes, expires, nil
}

// ActiveRobot returns the scopes and expiry of the robot name if it is
// neither revoked nor expired at now, and fails with a wrapped
// ErrRobotUnknown otherwise. Tokens issued to a robot are checked with it
// on every request, so that revocation takes effect at once.
func (s *Store) ActiveRobot(ctx context.Context, name string, now time.Time) (scopes []string, expires time.Time, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		rec, err := getRobot(tx, name)
		if err != nil {
			return err
		}
		if err := rec.usable(now); err != nil {
			return err
		}
		scopes, expires = slices.Clone(rec.Scopes), rec.Expires
		return nil
	})
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("check robot %s: %w", name, err)
	}
	return scopes, expires, nil
}
