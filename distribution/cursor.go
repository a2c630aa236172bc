package distribution

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"fmt"
)

// cursors seals the position a paginated listing stops at into an opaque
// cursor, and opens it again. A search may stop at a manifest the caller
// may not see (one of a repository it cannot pull, or one the store's scan
// limit stopped at), and a cursor naming that position in clear would
// reveal the repository and the digest. Sealed with a key of this process
// (AES-GCM), a cursor tells the caller nothing and cannot be forged; it
// stays valid until the server restarts.
type cursors struct {
	aead cipher.AEAD
}

// newCursors returns cursors sealed with a fresh random key.
func newCursors() *cursors {
	key := make([]byte, 32)
	_, _ = rand.Read(key) // never fails: crypto/rand aborts the program instead
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
