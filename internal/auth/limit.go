package auth

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"paddock.dev/paddock/internal/store"
)

// Limiter counts failed authentications per key (a source address, an
// account) over a sliding window and refuses a key that reached its limit.
type Limiter struct {
	Max    int              // failures allowed per key in Window
	Window time.Duration    // e.g. an hour
	Now    func() time.Time // default time.Now

	mu      sync.Mutex
	hits    map[string][]time.Time
	refused map[string]time.Time
}

const maxLimiterKeys = 100_000

func (l *Limiter) now() time.Time {
	if l.Now != nil {
		return l.Now()
	}
	return time.Now()
}

// Check returns how long to wait if any key is over its limit.
func (l *Limiter) Check(keys ...string) (retryAfter time.Duration, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	for _, k := range keys {
		h := l.prune(k, now)
		if len(h) >= l.Max {
			retryAfter = max(retryAfter, h[0].Add(l.Window).Sub(now))
		}
	}
	return retryAfter, retryAfter == 0
}

// FirstRefusal reports whether key's refusal is the first since it reached
// its limit, so that a flood of refused attempts is recorded once.
func (l *Limiter) FirstRefusal(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.refused == nil {
		l.refused = map[string]time.Time{}
	}
	now := l.now()
	if t, ok := l.refused[key]; ok && now.Sub(t) < l.Window {
		return false
	}
	if len(l.refused) > maxLimiterKeys {
		clear(l.refused)
	}
	l.refused[key] = now
	return true
}

// Fail records a failure against every key.
func (l *Limiter) Fail(keys ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.hits == nil {
		l.hits = map[string][]time.Time{}
	}
	now := l.now()
	if len(l.hits) > maxLimiterKeys {
		for k := range l.hits {
			l.prune(k, now)
		}
	}
	for _, k := range keys {
		h := l.prune(k, now)
		if len(h) >= l.Max {
			h = h[1:] // bounded memory: the oldest falls out
		}
		l.hits[k] = append(h, now)
	}
}

func (l *Limiter) prune(k string, now time.Time) []time.Time {
	h := l.hits[k]
	i := 0
	for i < len(h) && now.Sub(h[i]) >= l.Window {
		i++
	}
	if i == len(h) {
		delete(l.hits, k)
		return nil
	}
	h = h[i:]
	l.hits[k] = h
	return h
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
