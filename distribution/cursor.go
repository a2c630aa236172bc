package distribution

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
)

// cursors seals the position a paginated listing stops at into an opaque
// cursor, and opens it again. A search may stop at a manifest the caller
// may not see (one of a repository it cannot pull, or one the store's scan
// limit stopped at), and a cursor naming that position in clear would
// reveal the repository and the digest. Sealed (AES-GCM) with a key derived
// from the server's secret, a cursor tells the caller nothing and cannot be
// forged, and every replica sharing the secret opens it. Without a secret
// the key is one of this process: its cursors stay valid until it restarts
// and mean nothing to another replica.
type cursors struct {
	aead cipher.AEAD
}

// newCursors returns cursors sealed with a key derived from secret, or
// with a fresh random key when secret is empty.
func newCursors(secret []byte) *cursors {
	key := make([]byte, 32)
	if len(secret) > 0 {
		sum := sha256.Sum256(append([]byte("berth search cursor key\x00"), secret...))
		key = sum[:]
	} else {
		_, _ = rand.Read(key) // never fails: crypto/rand aborts the program instead
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(fmt.Sprintf("cursor cipher: %v", err)) // a 32-byte key is always valid
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(fmt.Sprintf("cursor cipher: %v", err))
	}
	return &cursors{aead: aead}
}

// seal returns the opaque cursor of pos.
func (c *cursors) seal(pos string) string {
	nonce := make([]byte, c.aead.NonceSize())
	_, _ = rand.Read(nonce)
	return base64.RawURLEncoding.EncodeToString(c.aead.Seal(nonce, nonce, []byte(pos), nil))
}

// open returns the position of a cursor seal made, and false for anything
// else.
func (c *cursors) open(cursor string) (string, bool) {
	buf, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil || len(buf) < c.aead.NonceSize() {
		return "", false
	}
	n := c.aead.NonceSize()
	pos, err := c.aead.Open(nil, buf[:n], buf[n:], nil)
	if err != nil {
		return "", false
	}
	return string(pos), true
}
