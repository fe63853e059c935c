package auth

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"paddock.dev/paddock/internal/store"
)

// Limiter slows down failed authentications per key (a source address, an
// account): each key may fail Max times in a burst, and after that once
// every Window/Max, the rate of Max failures a Window. It only ever sees
// failures, so it can refuse what fails and never what succeeds: a caller
// checks a credential first and asks the Limiter only about the ones that
// failed.
//
// It keeps one entry per key with a fixed size (the generic cell rate
// algorithm: one time per key, not one per failure), and at most
// maxLimiterKeys keys.
type Limiter struct {
	Max    int              // failures allowed per key in a burst, and per Window
	Window time.Duration    // e.g. an hour
	Now    func() time.Time // default time.Now

	mu   sync.Mutex
	keys map[string]*limitEntry
}

type limitEntry struct {
	// tat is the theoretical arrival time: the key is over its limit while
	// tat is more than Window-Window/Max ahead of now.
	tat     time.Time
	refused time.Time // the first refusal of the current refusal window
}

// maxLimiterKeys bounds the Limiter's memory (about 100 bytes a key).
const maxLimiterKeys = 100_000

func (l *Limiter) now() time.Time {
	if l.Now != nil {
		return l.Now()
	}
	return time.Now()
}

// Fail records a failure against every key. If a key had already used its
// burst, Fail returns the key furthest over its limit and how long until it
// may fail again; otherwise it returns "" and 0. Refused failures count too
// (so that a client that keeps failing stays refused), but never push a key
// more than one Window ahead.
func (l *Limiter) Fail(keys ...string) (over string, retryAfter time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	interval := l.Window / time.Duration(max(l.Max, 1))
	tolerance := l.Window - interval
	for _, k := range keys {
		e := l.entry(k, now)
		if e.tat.Before(now) {
			e.tat = now
		}
		if ahead := e.tat.Sub(now); ahead > tolerance && ahead-tolerance > retryAfter {
			over, retryAfter = k, ahead-tolerance
		}
		e.tat = e.tat.Add(interval)
		if limit := now.Add(l.Window); e.tat.After(limit) {
			e.tat = limit
		}
	}
	return over, retryAfter
}

// FirstRefusal reports whether this is the first refusal of key in a
// Window, so that a flood of refused attempts is recorded once a Window.
func (l *Limiter) FirstRefusal(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	e := l.entry(key, now)
	if !e.refused.IsZero() && now.Sub(e.refused) < l.Window {
		return false
	}
	e.refused = now
	return true
}

// entry returns key's entry, making room for it if needed: first by
// forgetting keys that are fully rested (nothing left to remember), then,
// if every key is busy, half of them at random. An attacker who makes
// enough keys to force the latter (100,000 addresses; IPv6 clients are
// counted by /64) earns some of them a fresh burst, nothing more.
func (l *Limiter) entry(key string, now time.Time) *limitEntry {
	if e, ok := l.keys[key]; ok {
		return e
	}
	if l.keys == nil {
		l.keys = map[string]*limitEntry{}
	}
	if len(l.keys) >= maxLimiterKeys {
		for k, e := range l.keys {
			if !e.tat.After(now) && now.Sub(e.refused) >= l.Window {
				delete(l.keys, k)
			}
		}
		if len(l.keys) >= maxLimiterKeys {
			for k := range l.keys {
				if len(l.keys) < maxLimiterKeys/2 {
					break
				}
				delete(l.keys, k)
			}
		}
	}
	e := &limitEntry{}
	l.keys[key] = e
	return e
}

// Authorizer holds the current compiled policy and recompiles it from the
// store after every change that affects it.
type Authorizer struct {
	Store  store.Store
	mu     sync.Mutex // serialises reloads, so an older snapshot never lands last
	policy atomic.Pointer[Policy]
}

// Reload compiles the policy from the store's current state.
func (a *Authorizer) Reload(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	acc, err := a.Store.Access(ctx)
	if err != nil {
		return err
	}
	a.policy.Store(Compile(acc))
	return nil
}

// Policy returns the current policy; nil (deny everything) before the
// first Reload.
func (a *Authorizer) Policy() *Policy { return a.policy.Load() }
