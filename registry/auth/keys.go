package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// The key directory holds the token signing keys: one PKCS#8 PEM file per
// key, <kid>.pem (mode 0600), and keys.json listing them in order with when
// each was created and retired. The newest unretired key signs; a retired
// key still verifies tokens until the longest token lifetime has passed
// since it retired, so rotation never cuts off a token already issued.
const keysFile = "keys.json"

// MaxTokenLifetime bounds every token's lifetime: that of a refresh token,
// the longest-lived (an access token lives an hour at most). It is also
// how long a retired key is kept for verification.
const MaxTokenLifetime = 24 * time.Hour

type keyEntry struct {
	KID     string     `json:"kid"`
	Created time.Time  `json:"created"`
	Retired *time.Time `json:"retired,omitempty"`
}

type keyIndex struct {
	Keys []keyEntry `json:"keys"`
}

type signingKey struct {
	keyEntry
	priv ed25519.PrivateKey
	// pub is priv's public half, derived once: every token checked uses it.
	pub ed25519.PublicKey
}

// KeySet is an immutable set of signing keys read from a key directory.
type KeySet struct {
	keys []signingKey // oldest first
}

// active returns the key that signs.
func (k *KeySet) active() (signingKey, error) {
	for i := len(k.keys) - 1; i >= 0; i-- {
		if k.keys[i].Retired == nil {
			return k.keys[i], nil
		}
	}
	return signingKey{}, errors.New("no active signing key")
}

// verifier returns the public key with id kid, if it may verify at now.
func (k *KeySet) verifier(kid string, now time.Time) (ed25519.PublicKey, error) {
	for _, key := range k.keys {
		if key.KID != kid {
			continue
		}
		if key.Retired != nil && now.After(key.Retired.Add(MaxTokenLifetime)) {
			return nil, fmt.Errorf("signing key %s retired at %s", kid, key.Retired.Format(time.RFC3339))
		}
		return key.pub, nil
	}
	return nil, fmt.Errorf("unknown signing key %q", kid)
}

// KIDs lists the key ids, oldest first, and which one signs.
func (k *KeySet) KIDs() (all []string, active string) {
	for _, key := range k.keys {
		all = append(all, key.KID)
	}
	if a, err := k.active(); err == nil {
		active = a.KID
	}
	return all, active
}

// LoadKeys reads the key directory, creating it with a first key if it has
// none.
func LoadKeys(dir string) (*KeySet, error) {
	idx, err := readKeyIndex(dir)
	if errors.Is(err, os.ErrNotExist) {
		if _, err := RotateKeys(dir, time.Now()); err != nil {
			return nil, err
		}
		idx, err = readKeyIndex(dir)
	}
	if err != nil {
		return nil, err
	}
	ks := &KeySet{}
	for _, e := range idx.Keys {
		priv, err := readPrivateKey(filepath.Join(dir, e.KID+".pem"))
		if err != nil {
			return nil, err
		}
		ks.keys = append(ks.keys, signingKey{keyEntry: e, priv: priv, pub: priv.Public().(ed25519.PublicKey)})
	}
	if _, err := ks.active(); err != nil {
		return nil, fmt.Errorf("key directory %s: %w", dir, err)
	}
	return ks, nil
}

// RotateKeys adds a new signing key to dir, retires the one signing until
// now and forgets keys retired longer ago than MaxTokenLifetime. It returns
// the new key's id. A running server picks the change up by itself.
func RotateKeys(dir string, now time.Time) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create key directory: %w", err)
	}
	idx, err := readKeyIndex(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", fmt.Errorf("generate signing key: %w", err)
	}
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", fmt.Errorf("generate key id: %w", err)
	}
	kid := hex.EncodeToString(id[:])
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return "", fmt.Errorf("encode signing key: %w", err)
	}
	if err := replaceFile(filepath.Join(dir, kid+".pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})); err != nil {
		return "", err
	}
	var kept []keyEntry
	var dropped []string
	for _, e := range idx.Keys {
		if e.Retired == nil {
			t := now
			e.Retired = &t
		}
		if now.Sub(*e.Retired) > MaxTokenLifetime {
			dropped = append(dropped, e.KID)
			continue
		}
		kept = append(kept, e)
	}
	idx.Keys = append(kept, keyEntry{KID: kid, Created: now})
	buf, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return "", fmt.Errorf("encode key index: %w", err)
	}
	if err := replaceFile(filepath.Join(dir, keysFile), buf); err != nil {
		return "", err
	}
	for _, old := range dropped {
		_ = os.Remove(filepath.Join(dir, old+".pem"))
	}
	return kid, nil
}

func readKeyIndex(dir string) (keyIndex, error) {
	var idx keyIndex
	buf, err := os.ReadFile(filepath.Join(dir, keysFile))
	if err != nil {
		return idx, fmt.Errorf("read key index: %w", err)
	}
	if err := json.Unmarshal(buf, &idx); err != nil {
		return idx, fmt.Errorf("parse key index %s: %w", filepath.Join(dir, keysFile), err)
	}
	return idx, nil
}

func readPrivateKey(path string) (ed25519.PrivateKey, error) {
	buf, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read signing key: %w", err)
	}
	block, _ := pem.Decode(buf)
	if block == nil {
		return nil, fmt.Errorf("signing key %s: no PEM block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("signing key %s: not an Ed25519 key", path)
	}
	return priv, nil
}

// KeyRing holds the current KeySet of a key directory and reloads it when
// the directory changes (after `berth keys rotate` in another process).
type KeyRing struct {
	dir     string
	current atomic.Pointer[KeySet]
	stamp   atomic.Int64
}

// OpenKeyRing loads dir, creating the first key if needed.
func OpenKeyRing(dir string) (*KeyRing, error) {
	ks, err := LoadKeys(dir)
	if err != nil {
		return nil, err
	}
	r := &KeyRing{dir: dir}
	r.current.Store(ks)
	r.stamp.Store(r.modTime())
	return r, nil
}

// Keys returns the current key set.
func (r *KeyRing) Keys() *KeySet { return r.current.Load() }

// Reload rereads the directory if keys.json changed. On error the old keys
// stay in use.
func (r *KeyRing) Reload() error {
	mt := r.modTime()
	if mt == r.stamp.Load() {
		return nil
	}
	ks, err := LoadKeys(r.dir)
	if err != nil {
		return err
	}
	r.current.Store(ks)
	r.stamp.Store(mt)
	return nil
}

func (r *KeyRing) modTime() int64 {
	fi, err := os.Stat(filepath.Join(r.dir, keysFile))
	if err != nil {
		return 0
	}
	return fi.ModTime().UnixNano()
}
