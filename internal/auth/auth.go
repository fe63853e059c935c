// Package auth issues and checks API tokens. A token is shown once, when it
// is made; the store keeps only its SHA-256 hash.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"paddock.dev/paddock/internal/store"
)

// Prefix starts every token, so that secret scanners can find leaked ones.
const Prefix = "pdk_"

// ErrUnauthenticated is a missing, malformed or unknown token.
var ErrUnauthenticated = errors.New("unauthenticated")

// Principal is who a request acts as.
type Principal struct {
	Name string // the token's name
	Role string
}

// NewToken returns a fresh token value: the prefix and 256 random bits.
func NewToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return Prefix + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
}

// Hash returns what the store keeps of a token.
func Hash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// Tokens checks tokens against the store.
type Tokens struct{ Store store.Store }

// Create stores a new token and returns its value.
func (t *Tokens) Create(ctx context.Context, name, role string, now time.Time) (string, error) {
	v := NewToken()
	if err := t.Store.AddToken(ctx, store.Token{Name: name, Hash: Hash(v), Role: role, CreatedAt: now.UTC()}); err != nil {
		return "", fmt.Errorf("create token %s: %w", name, err)
	}
	return v, nil
}

// Authenticate returns the principal of a token value.
func (t *Tokens) Authenticate(ctx context.Context, token string) (Principal, error) {
	if !strings.HasPrefix(token, Prefix) || len(token) > 128 {
		return Principal{}, fmt.Errorf("%w: malformed token (Paddock tokens start with %q)", ErrUnauthenticated, Prefix)
	}
	tok, err := t.Store.TokenByHash(ctx, Hash(token))
	if errors.Is(err, store.ErrNotFound) {
		return Principal{}, fmt.Errorf("%w: unknown token", ErrUnauthenticated)
	}
	if err != nil {
		return Principal{}, err
	}
	return Principal{Name: tok.Name, Role: tok.Role}, nil
}
