package api

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"paddock.dev/paddock/internal/audit"
	"paddock.dev/paddock/internal/auth"
)

// fakeTokens knows one token per user and counts its lookups.
type fakeTokens struct {
	valid   map[string]auth.Principal // value -> principal
	lookups int
}

func (f *fakeTokens) Authenticate(_ context.Context, value string) (auth.Principal, error) {
	f.lookups++
	if p, ok := f.valid[value]; ok {
		return p, nil
	}
	id, _, _ := auth.ParseToken(value)
	for v, p := range f.valid {
		if vid, _, _ := auth.ParseToken(v); vid == id {
			return p, fmt.Errorf("%w: wrong token secret", auth.ErrUnauthenticated)
		}
	}
	return auth.Principal{}, fmt.Errorf("%w: unknown or revoked token", auth.ErrUnauthenticated)
}

func token(id byte, secret byte) string {
	return auth.Prefix + strings.Repeat(string(id), 16) + "_" + strings.Repeat(string(secret), 52)
}

func TestAuthenticateLimitsOnlyFailures(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	admin := token('a', 'a')
	tokens := &fakeTokens{valid: map[string]auth.Principal{admin: {User: "admin", Token: "cli", Role: auth.Admin}}}
	limiter := &auth.Limiter{Max: 100, Window: time.Hour, Now: clock}
	s := &Server{cfg: Config{Auth: tokens, Limiter: limiter}, rejected: newRejectedTokens(maxRejectedTokens, time.Hour, clock)}
	try := func(authz string) (auth.Principal, error) {
		r := httptest.NewRequest("GET", "/v1/apps", nil)
		r.RemoteAddr = "127.0.0.1:5000"
		if authz != "" {
			r.Header.Set("Authorization", authz)
		}
		ev := audit.Event{Source: source(r)}
		return s.authenticate(r, &ev)
	}
	isLimited := func(err error) bool {
		var lim *limitedError
		return errors.As(err, &lim)
	}

	// Malformed tokens fail without a lookup, and are limited.
	for i := 0; i < 150; i++ {
		_, err := try([]string{"", "Basic eDp5", "Bearer pdk_short"}[i%3])
		if !errors.Is(err, auth.ErrUnauthenticated) || isLimited(err) != (i >= 100) {
			t.Fatalf("malformed %d: got %v, want unauthenticated, limited from the 101st", i, err)
		}
	}
	if tokens.lookups != 0 {
		t.Errorf("malformed tokens cost %d store lookups, want 0", tokens.lookups)
	}
	// The valid token from the same address is served.
	if p, err := try("Bearer " + admin); err != nil || p.User != "admin" {
		t.Errorf("valid token from an address over its limit: got %+v, %v", p, err)
	}
	if p, err := try("bearer  " + admin); err != nil || p.User != "admin" {
		t.Errorf("valid token with a lowercase scheme: got %+v, %v", p, err)
	}
	// The same bad value again costs no lookup; each new one costs one.
	before := tokens.lookups
	for i := 0; i < 50; i++ {
		try("Bearer " + token('b', 'x'))
	}
	if got := tokens.lookups - before; got != 1 {
		t.Errorf("one unknown value tried 50 times: %d lookups, want 1", got)
	}
	// Wrong secrets for the admin's token id: the account's key goes over
	// its limit; the admin is still served.
	for i := 0; i < 150; i++ {
		wrong := auth.Prefix + strings.Repeat("a", 16) + "_" + fmt.Sprintf("%052d", i)
		if _, err := try("Bearer " + wrong); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Fatalf("wrong secret %d: got %v", i, err)
		}
	}
	if key, _ := limiter.Fail("user:admin"); key != "user:admin" {
		t.Errorf("after 150 wrong secrets for its token: the account's key is not over its limit")
	}
	if p, err := try("Bearer " + admin); err != nil || p.User != "admin" {
		t.Errorf("valid token after wrong secrets for its id: got %+v, %v", p, err)
	}
}
