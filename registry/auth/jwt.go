package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Token uses: an access token carries granted scopes; a refresh token
// only proves who the caller is, to obtain access tokens later.
const (
	useAccess  = "access"
	useRefresh = "refresh"
)

// Claims are the JWT claims of a Berth token: the registered claims (iss,
// sub, aud, exp, nbf, iat, jti), the scopes granted (access), the kind of
// subject, what the token is for, and the fingerprint of the credential it
// was obtained with (cred): a token whose fingerprint is no longer that of
// its subject's credential (a changed password, a rotated robot secret) is
// refused.
type Claims struct {
	jwt.RegisteredClaims
	Access []Scope `json:"access,omitempty"`
	Kind   string  `json:"kind"`
	Use    string  `json:"use"`
	Cred   string  `json:"cred,omitempty"`
}

// credential is the fingerprint of a credential, as tokens carry it: a
// truncated SHA-256 of the subject and of what stands for its secret (a
// user's bcrypt hash, whose salt is new with every password change; the
// time a robot's secret was last replaced). It tells the holder nothing
// it could use: the bcrypt salt is not in it.
func credential(kind, name, secret string) string {
	h := sha256.New()
	for _, s := range []string{"berth-credential", kind, name, secret} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// signer issues and verifies tokens for one issuer and audience.
type signer struct {
	issuer, audience string
	keys             *KeyRing
}

// sign issues a token for id, whose credential has fingerprint cred (empty
// for anonymous), valid from now until exp.
func (s signer) sign(id Identity, cred, use string, access []Scope, now, exp time.Time) (string, error) {
	key, err := s.keys.Keys().active()
	if err != nil {
		return "", err
	}
	var jti [12]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", fmt.Errorf("token id: %w", err)
	}
	claims := Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    s.issuer,
			Subject:   id.Name,
			Audience:  jwt.ClaimStrings{s.audience},
			ExpiresAt: jwt.NewNumericDate(exp),
			NotBefore: jwt.NewNumericDate(now.Add(-time.Second)),
			IssuedAt:  jwt.NewNumericDate(now),
			ID:        hex.EncodeToString(jti[:]),
		},
		Access: access,
		Kind:   id.Kind.String(),
		Use:    use,
		Cred:   cred,
	}
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	t.Header["kid"] = key.KID
	signed, err := t.SignedString(key.priv)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return signed, nil
}

// errBadToken is wrapped by every verification failure.
var errBadToken = errors.New("invalid token")

// verify checks a token's signature (EdDSA only: "none", HMAC and RSA are
// refused whatever the header says), its key id, issuer, audience, expiry,
// not-before and use, and returns its claims.
func (s signer) verify(raw, use string, now time.Time) (*Claims, error) {
	claims := &Claims{}
	keys := s.keys.Keys()
	_, err := jwt.ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		return keys.verifier(kid, now)
	},
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
		jwt.WithIssuer(s.issuer),
		jwt.WithAudience(s.audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithTimeFunc(func() time.Time { return now }),
	)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errBadToken, err)
	}
	if claims.Use != use {
		return nil, fmt.Errorf("%w: a %s token used as %s token", errBadToken, claims.Use, use)
	}
	if claims.NotBefore == nil {
		return nil, fmt.Errorf("%w: no nbf claim", errBadToken)
	}
	return claims, nil
}

// identity is who the claims speak for.
func (c *Claims) identity() Identity {
	switch c.Kind {
	case "user":
		return Identity{Kind: User, Name: c.Subject}
	case "robot":
		return Identity{Kind: Robot, Name: c.Subject}
	}
	return Identity{Kind: Anonymous}
}
