package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/berth-registry/berth/storage/meta"
)

// Errors of robot credentials.
var (
	// ErrRobotExists means a robot of that name exists, or existed: names
	// of revoked robots are never reused.
	ErrRobotExists = errors.New("robot token already exists")
	// ErrRobotUnknown means there is no robot of that name or secret, or
	// that it is revoked or expired; the message says which.
	ErrRobotUnknown = errors.New("robot token unknown")
	// ErrRobotInvalid means a robot's name, scopes or expiry are not
	// acceptable.
	ErrRobotInvalid = errors.New("robot token invalid")
	// ErrRobotInactive means the operation needs a robot that is neither
	// revoked nor expired.
	ErrRobotInactive = errors.New("robot token revoked or expired")
)

// RobotStore keeps robot records, in transactions: the storage index is
// one (see IndexRobots).
type RobotStore interface {
	View(ctx context.Context, fn func(meta.RobotIndex) error) error
	Update(ctx context.Context, fn func(meta.RobotIndex) error) error
}

// IndexRobots keeps robot records in the storage index.
func IndexRobots(index meta.Store) RobotStore { return indexRobots{index} }

type indexRobots struct{ index meta.Store }

func (r indexRobots) View(ctx context.Context, fn func(meta.RobotIndex) error) error {
	return r.index.View(ctx, func(tx meta.Tx) error { return fn(tx) })
}

func (r indexRobots) Update(ctx context.Context, fn func(meta.RobotIndex) error) error {
	return r.index.Update(ctx, func(tx meta.Tx) error { return fn(tx) })
}

// Robots manages robot credentials: machine credentials with fixed scopes
// and an expiry, whose secrets are kept only as their SHA-256 (a secret
// holds 256 random bits, so a fast hash is as safe as a slow one). It
// implements RobotVerifier.
type Robots struct {
	store RobotStore
	log   *slog.Logger
}

// NewRobots returns the robot credentials kept in store; log may be nil.
func NewRobots(store RobotStore, log *slog.Logger) *Robots {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Robots{store: store, log: log}
}

// robotSecretBytes is the entropy of a robot secret: 256 bits, which makes
// a fast hash (SHA-256) as safe to store as a slow password hash.
const robotSecretBytes = 32

var robotNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// RobotInfo describes a robot token: a machine credential with fixed scopes
// and an expiry. It never carries the secret or its hash.
type RobotInfo struct {
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

// Robot states, as RobotInfo.Status reports them.
const (
	RobotActive  = "active"
	RobotRevoked = "revoked"
	RobotExpired = "expired"
)

// Status is RobotRevoked, RobotExpired or RobotActive, as of now.
func (r RobotInfo) Status(now time.Time) string {
	switch {
	case r.Revoked != nil:
		return RobotRevoked
	case !now.Before(r.Expires):
		return RobotExpired
	}
	return RobotActive
}

func robotOf(rec meta.Robot) RobotInfo {
	return RobotInfo{
		Name:    rec.Name,
		Scopes:  slices.Clone(rec.Scopes),
		Created: rec.Created,
		Expires: rec.Expires,
		Revoked: cloneTime(rec.Revoked),
		Rotated: cloneTime(rec.Rotated),
	}
}

// usable fails with a wrapped ErrRobotUnknown if the robot is revoked or
// expired at now.
func usable(rec meta.Robot, now time.Time) error {
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
	secret = RobotSecretPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	return secret, hashRobotSecret(secret), nil
}

func hashRobotSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// getRobot reads the robot name, failing with a wrapped ErrRobotUnknown if
// there is no such robot.
func getRobot(tx meta.RobotIndex, name string) (meta.Robot, error) {
	rec, found, err := tx.Robot(name)
	if err != nil {
		return rec, err
	}
	if !found {
		return rec, fmt.Errorf("%w: no such robot", ErrRobotUnknown)
	}
	return rec, nil
}

// Create creates the robot name with the given scopes, valid until
// expires, and returns its secret: "berth_" and 43 characters of base64url.
// The secret is shown only this once; the store keeps its SHA-256. The
// name must be new: it fails with ErrRobotExists if a robot of that name
// exists, even revoked, so that a name in the logs means one credential.
// Scopes are stored as given; the caller validates them.
func (s *Robots) Create(ctx context.Context, name string, scopes []string, expires time.Time) (string, error) {
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
	rec := meta.Robot{Name: name, Scopes: slices.Clone(scopes), Created: now, Expires: expires.UTC(), Hash: hash}
	err = s.store.Update(ctx, func(tx meta.RobotIndex) error {
		if _, ok, err := tx.Robot(name); err != nil {
			return err
		} else if ok {
			return ErrRobotExists
		}
		if _, ok, err := tx.RobotBySecret(hash); err != nil {
			return err
		} else if ok {
			return errors.New("robot secret collision") // 2^-256: a broken random source
		}
		return tx.PutRobot(rec)
	})
	if err != nil {
		return "", fmt.Errorf("create robot %s: %w", name, err)
	}
	s.log.DebugContext(ctx, "robot created", "robot", name, "scopes", scopes, "expires", rec.Expires)
	return secret, nil
}

// List returns every robot, revoked and expired ones included, in
// name order.
func (s *Robots) List(ctx context.Context) ([]RobotInfo, error) {
	var out []RobotInfo
	err := s.store.View(ctx, func(tx meta.RobotIndex) error {
		out = out[:0]
		return tx.Robots(func(rec meta.Robot) error {
			out = append(out, robotOf(rec))
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list robots: %w", err)
	}
	return out, nil
}

// Revoke revokes the robot name as of now: its secret stops working,
// and so do the tokens issued to it, which are checked against the store
// on every request. The record stays, so the name cannot be reused.
// Revoking a revoked robot does nothing; an unknown one fails with
// ErrRobotUnknown.
func (s *Robots) Revoke(ctx context.Context, name string, now time.Time) error {
	revoked := false
	err := s.store.Update(ctx, func(tx meta.RobotIndex) error {
		revoked = false
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
		return tx.PutRobot(rec)
	})
	if err != nil {
		return fmt.Errorf("revoke robot %s: %w", name, err)
	}
	if revoked {
		s.log.DebugContext(ctx, "robot revoked", "robot", name)
	}
	return nil
}

// Rotate gives the robot name a new secret, which it returns with the
// robot's expiry; the old secret stops working at once. Scopes and expiry
// do not change. It fails with ErrRobotUnknown for an unknown robot and
// ErrRobotInactive for a revoked or expired one.
func (s *Robots) Rotate(ctx context.Context, name string, now time.Time) (string, time.Time, error) {
	secret, hash, err := newRobotSecret()
	if err != nil {
		return "", time.Time{}, err
	}
	var expires time.Time
	err = s.store.Update(ctx, func(tx meta.RobotIndex) error {
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
		if _, ok, err := tx.RobotBySecret(hash); err != nil {
			return err
		} else if ok {
			return errors.New("robot secret collision")
		}
		t := now.UTC()
		rec.Hash, rec.Rotated = hash, &t
		expires = rec.Expires
		return tx.PutRobot(rec)
	})
	if err != nil {
		return "", time.Time{}, fmt.Errorf("rotate robot %s: %w", name, err)
	}
	s.log.DebugContext(ctx, "robot secret rotated", "robot", name)
	return secret, expires, nil
}

// VerifyRobot checks a robot secret and returns the robot it belongs to.
// It fails with a wrapped ErrRobotUnknown if no robot has that secret
// (never had, or had it before a rotation), or if the robot is revoked or
// expired at now.
func (s *Robots) VerifyRobot(ctx context.Context, secret string, now time.Time) (RobotInfo, error) {
	var info RobotInfo
	if !strings.HasPrefix(secret, RobotSecretPrefix) {
		return info, fmt.Errorf("%w: not a robot secret", ErrRobotUnknown)
	}
	hash := hashRobotSecret(secret)
	err := s.store.View(ctx, func(tx meta.RobotIndex) error {
		name, ok, err := tx.RobotBySecret(hash)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: no robot has this secret", ErrRobotUnknown)
		}
		rec, err := getRobot(tx, name)
		if err != nil {
			return err
		}
		if subtle.ConstantTimeCompare([]byte(rec.Hash), []byte(hash)) != 1 {
			return fmt.Errorf("robot %s: %w: the secret was replaced", name, ErrRobotUnknown)
		}
		if err := usable(rec, now); err != nil {
			return fmt.Errorf("robot %s: %w", name, err)
		}
		info = robotOf(rec)
		return nil
	})
	if err != nil {
		return RobotInfo{}, fmt.Errorf("verify robot secret: %w", err)
	}
	return info, nil
}

// ActiveRobot returns the robot name if it is neither revoked nor expired
// at now, and fails with a wrapped ErrRobotUnknown otherwise. Tokens
// issued to a robot are checked with it on every request, so that
// revocation and rotation take effect at once.
func (s *Robots) ActiveRobot(ctx context.Context, name string, now time.Time) (RobotInfo, error) {
	var info RobotInfo
	err := s.store.View(ctx, func(tx meta.RobotIndex) error {
		rec, err := getRobot(tx, name)
		if err != nil {
			return err
		}
		if err := usable(rec, now); err != nil {
			return err
		}
		info = robotOf(rec)
		return nil
	})
	if err != nil {
		return RobotInfo{}, fmt.Errorf("check robot %s: %w", name, err)
	}
	return info, nil
}

// SecretSet is when the robot's current secret was set: its rotation, or
// its creation. It stands for the secret in the tokens issued with it.
func (r RobotInfo) SecretSet() time.Time {
	if r.Rotated != nil {
		return *r.Rotated
	}
	return r.Created
}
