// Package auth answers who a request is (tokens) and what it may do (the
// policy). A token is "pdk_" + a public ID + "_" + 256 random bits; the store
// keeps the ID and a SHA-256 hash of the secret, compared in constant time.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"paddock.dev/paddock/internal/store"
)

// Prefix starts every token, so that secret scanners can find leaked ones.
const Prefix = "pdk_"

// Errors of authentication; the API answers 401 for them.
var (
	ErrUnauthenticated = errors.New("unauthenticated")
	ErrExpired         = fmt.Errorf("%w: token expired", ErrUnauthenticated)
)

// Principal is who a request acts as.
type Principal struct {
	User    string   `json:"user"`
	Token   string   `json:"token"`          // the token's name
	TokenID string   `json:"-"`              // the token's public ID
	Role    Role     `json:"role"`           // the token's cap, or the user's role
	Apps    []string `json:"apps,omitempty"` // the token's app scope; empty for all
	// ExpiresAt is when the token stops working; nil if it never does.
	// A token it makes expires no later.
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

func random(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return strings.ToLower(b32.EncodeToString(b))
}

// NewToken returns a fresh token's value, its ID and the hash to store.
func NewToken() (value, id, hash string) {
	id = random(10)      // 80 bits: unique, not secret
	secret := random(32) // 256 bits
	return Prefix + id + "_" + secret, id, hashSecret(secret)
}

func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// ParseToken splits a token value into its ID and secret.
func ParseToken(value string) (id, secret string, err error) {
	rest, ok := strings.CutPrefix(value, Prefix)
	if ok {
		id, secret, ok = strings.Cut(rest, "_")
	}
	if !ok || len(id) != 16 || len(secret) != 52 {
		return "", "", fmt.Errorf("%w: malformed token (a Paddock token looks like %sxxxxxxxxxxxxxxxx_…)", ErrUnauthenticated, Prefix)
	}
	return id, secret, nil
}

// Tokens checks token values against the store.
type Tokens struct {
	Store store.Store
	Now   func() time.Time // default time.Now

	touched sync.Map // token ID -> time.Time its last use was written
}

// touchEvery bounds how often a token's last use is written: a write per
// request would cost a durable store write on every read.
const touchEvery = time.Minute

func (t *Tokens) now() time.Time {
	if t.Now != nil {
		return t.Now()
	}
	return time.Now()
}

// Authenticate returns the principal of a token value. The token's user is
// returned with the error when the token's ID was known, so that failed
// attempts can be counted against the account.
func (t *Tokens) Authenticate(ctx context.Context, value string) (Principal, error) {
	id, secret, err := ParseToken(value)
	if err != nil {
		return Principal{}, err
	}
	tok, err := t.Store.GetToken(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		// Spend the same time as a comparison would.
		subtle.ConstantTimeCompare([]byte(hashSecret(secret)), make([]byte, 64))
		return Principal{}, fmt.Errorf("%w: unknown or revoked token", ErrUnauthenticated)
	}
	if err != nil {
		return Principal{}, err
	}
	p := Principal{User: tok.User, Token: tok.Name, TokenID: tok.ID, Apps: tok.Apps, ExpiresAt: tok.ExpiresAt}
	if subtle.ConstantTimeCompare([]byte(hashSecret(secret)), []byte(tok.Hash)) != 1 {
		return p, fmt.Errorf("%w: wrong token secret", ErrUnauthenticated)
	}
	if tok.ExpiresAt != nil && !t.now().Before(*tok.ExpiresAt) {
		return p, fmt.Errorf("%w: token %s expired at %s: create a new one with `paddock tokens create`", ErrExpired, tok.Name, tok.ExpiresAt.Format(time.RFC3339))
	}
	u, err := t.Store.GetUser(ctx, tok.User)
	if err != nil {
		return p, fmt.Errorf("token %s: user %s: %w", tok.Name, tok.User, err)
	}
	role, _ := ParseRole(u.Role)
	if tok.Role != "" {
		if capped, err := ParseRole(tok.Role); err == nil && capped < role {
			role = capped
		}
	}
	p.Role = role
	now := t.now()
	if last, ok := t.touched.Load(tok.ID); !ok || now.Sub(last.(time.Time)) >= touchEvery {
		if err := t.Store.TouchToken(ctx, tok.ID, now); err != nil {
			return p, err
		}
		t.touched.Store(tok.ID, now)
	}
	return p, nil
}
