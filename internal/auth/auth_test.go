package auth

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"paddock.dev/paddock/internal/store"
	"paddock.dev/paddock/internal/store/sqlite"
)

func TestPolicy(t *testing.T) {
	p := Compile(store.Access{
		Users: []store.User{
			{Name: "root", Role: "admin"},
			{Name: "dev", Role: "developer"},
			{Name: "view", Role: "viewer"},
			{Name: "gone", Role: "admin", Disabled: true},
			{Name: "odd", Role: "superuser"},
		},
		Teams:  []store.Team{{Name: "t", Members: []string{"dev", "view"}}},
		Grants: []store.Grant{{App: "shop", Team: "t", Role: "developer"}, {App: "blog", Team: "t", Role: "viewer"}},
		Owners: map[string]string{"mine": "dev"},
	})
	tests := []struct {
		name string
		pr   Principal
		perm Perm
		app  string
		want string // "" allowed, else a piece of the denial
	}{
		{"admin anywhere", Principal{User: "root", Role: Admin}, AppWrite, "any", ""},
		{"admin users", Principal{User: "root", Role: Admin}, UsersAdmin, "", ""},
		{"disabled admin", Principal{User: "gone", Role: Admin}, StatusRead, "", "disabled"},
		{"unknown role grants nothing", Principal{User: "odd", Role: Admin}, StatusRead, "", "unknown"},
		{"unknown user", Principal{User: "ghost", Role: Admin}, StatusRead, "", "unknown"},
		{"developer on granted app", Principal{User: "dev", Role: Developer}, AppWrite, "shop", ""},
		{"developer on viewer grant", Principal{User: "dev", Role: Developer}, AppWrite, "blog", "needs the developer role"},
		{"developer reads viewer grant", Principal{User: "dev", Role: Developer}, AppRead, "blog", ""},
		{"developer on own app", Principal{User: "dev", Role: Developer}, AppAdmin, "mine", ""},
		{"developer without grant", Principal{User: "dev", Role: Developer}, AppRead, "other", "no access to app other"},
		{"developer may not manage users", Principal{User: "dev", Role: Developer}, UsersAdmin, "", "needs the admin role"},
		{"viewer capped below grant", Principal{User: "view", Role: Viewer}, AppWrite, "shop", "needs the developer role"},
		{"viewer reads", Principal{User: "view", Role: Viewer}, AppRead, "shop", ""},
		{"viewer cannot create apps", Principal{User: "view", Role: Viewer}, AppsCreate, "", "needs the developer role"},
		{"token cap below user", Principal{User: "root", Role: Viewer, Token: "ro"}, AppWrite, "shop", "needs the developer role"},
		{"token cap cannot raise", Principal{User: "view", Role: Admin}, UsersAdmin, "", "needs the admin role"},
		{"scoped token on its app", Principal{User: "dev", Role: Developer, Apps: []string{"shop"}}, AppWrite, "shop", ""},
		{"scoped token on another app", Principal{User: "root", Role: Admin, Apps: []string{"shop"}}, AppRead, "blog", "limited to the apps shop"},
		{"scoped token on a global permission", Principal{User: "root", Role: Admin, Apps: []string{"shop"}}, UsersAdmin, "", "limited"},
		{"developer reveals on granted app", Principal{User: "dev", Role: Developer}, SecretsReveal, "shop", ""},
		{"developer reveals on own app", Principal{User: "dev", Role: Developer}, SecretsReveal, "mine", ""},
		{"developer with a viewer grant may not reveal", Principal{User: "dev", Role: Developer}, SecretsReveal, "blog", "needs the developer role"},
		{"viewer may not reveal", Principal{User: "view", Role: Viewer}, SecretsReveal, "shop", "needs the developer role"},
		{"admin token capped at viewer may not reveal", Principal{User: "root", Role: Viewer, Token: "ro"}, SecretsReveal, "shop", "needs the developer role"},
		{"admin reveals anywhere", Principal{User: "root", Role: Admin}, SecretsReveal, "any", ""},
		{"admin manages keys", Principal{User: "root", Role: Admin}, KeysAdmin, "", ""},
		{"developer may not manage keys", Principal{User: "dev", Role: Developer}, KeysAdmin, "", "needs the admin role"},
		{"app-scoped admin token may not manage keys", Principal{User: "root", Role: Admin, Apps: []string{"shop"}}, KeysAdmin, "", "limited"},
		{"unknown permission", Principal{User: "root", Role: Admin}, Perm("x.y"), "", "unknown permission"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := p.Decide(tc.pr, tc.perm, tc.app)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("got %v, want allowed", err)
			case tc.want != "" && (err == nil || !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want a denial mentioning %q", err, tc.want)
			}
		})
	}
	var empty *Policy
	if err := empty.Decide(Principal{User: "root", Role: Admin}, StatusRead, ""); !errors.Is(err, ErrDenied) {
		t.Errorf("nil policy: got %v, want denied", err)
	}
	if err := Compile(store.Access{}).Decide(Principal{User: "root", Role: Admin}, StatusRead, ""); !errors.Is(err, ErrDenied) {
		t.Errorf("empty policy: got %v, want denied", err)
	}
}

func TestTokens(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "p.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st.CreateUser(ctx, store.User{Name: "ann", Role: "developer", CreatedAt: now})
	add := func(name, role string, exp *time.Time) string {
		v, id, hash := NewToken()
		if err := st.AddToken(ctx, store.Token{ID: id, Name: name, User: "ann", Hash: hash, Role: role, CreatedAt: now, ExpiresAt: exp}); err != nil {
			t.Fatal(err)
		}
		return v
	}
	soon := now.Add(time.Hour)
	good, capped, expiring := add("good", "", nil), add("capped", "viewer", nil), add("exp", "", &soon)
	tk := &Tokens{Store: st, Now: func() time.Time { return now.Add(2 * time.Hour) }}

	if !strings.HasPrefix(good, Prefix) || len(good) < len(Prefix)+16+1+52 {
		t.Errorf("token %q: want the prefix and 16+52 characters", good)
	}
	if p, err := tk.Authenticate(ctx, good); err != nil || p.User != "ann" || p.Role != Developer {
		t.Errorf("good token: got %+v, %v", p, err)
	}
	if p, err := tk.Authenticate(ctx, capped); err != nil || p.Role != Viewer {
		t.Errorf("capped token: got %+v, %v; want viewer", p, err)
	}
	id, _, _ := ParseToken(good)
	wrong := Prefix + id + "_" + strings.Repeat("a", 52)
	for name, v := range map[string]string{
		"expired":      expiring,
		"wrong secret": wrong,
		"malformed":    "pdk_nope",
		"no prefix":    "ghp_" + strings.Repeat("a", 69),
		"unknown id":   Prefix + strings.Repeat("b", 16) + "_" + strings.Repeat("a", 52),
	} {
		p, err := tk.Authenticate(ctx, v)
		if !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("%s: got %v, want ErrUnauthenticated", name, err)
		}
		if name == "wrong secret" && p.User != "ann" {
			t.Errorf("wrong secret: the account should be known for rate limiting, got %+v", p)
		}
	}
	if err := st.RevokeToken(ctx, "good", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := tk.Authenticate(ctx, good); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("revoked token: got %v, want ErrUnauthenticated", err)
	}
}

func TestLimiter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := &Limiter{Max: 3, Window: time.Hour, Now: func() time.Time { return now }}
	for i := 0; i < 3; i++ {
		if key, wait := l.Fail("a"); key != "" {
			t.Fatalf("failure %d refused (%s, %s) within the burst of 3", i+1, key, wait)
		}
		now = now.Add(time.Minute)
	}
	// The burst is used: the next failure is refused until one failure's
	// share of the window (20m) has passed since the burst's start.
	key, wait := l.Fail("b", "a")
	if key != "a" || wait != 17*time.Minute {
		t.Errorf("after the burst: got %q %s, want a refused for 17m", key, wait)
	}
	if key, _ := l.Fail("b"); key != "" {
		t.Errorf("another key is refused: %q", key)
	}
	// Refusals count, but never push a key more than a window ahead.
	for i := 0; i < 1000; i++ {
		l.Fail("a")
	}
	if _, wait := l.Fail("a"); wait > 20*time.Minute {
		t.Errorf("after a flood: refused for %s, want at most one failure's share of the window (20m)", wait)
	}
	now = now.Add(time.Hour)
	for i := 0; i < 3; i++ {
		if key, _ := l.Fail("a"); key != "" {
			t.Errorf("after a rested window: failure %d refused", i+1)
		}
	}
}

func TestLimiterAuditsOneRefusalAWindow(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := &Limiter{Max: 1, Window: time.Hour, Now: func() time.Time { return now }}
	var got []bool
	for _, step := range []time.Duration{0, time.Minute, 58 * time.Minute, time.Minute} {
		now = now.Add(step)
		got = append(got, l.FirstRefusal("a"))
	}
	if want := []bool{true, false, false, true}; !slices.Equal(got, want) {
		t.Errorf("FirstRefusal over 0, 1, 59, 60 minutes: got %v, want %v", got, want)
	}
}

func TestLimiterMemoryIsBounded(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := &Limiter{Max: 100, Window: time.Hour, Now: func() time.Time { return now }}
	for i := 0; i < 3*maxLimiterKeys; i++ {
		l.Fail(fmt.Sprintf("addr:%d", i))
	}
	if n := len(l.keys); n > maxLimiterKeys {
		t.Errorf("keys kept: %d, want at most %d", n, maxLimiterKeys)
	}
}
