package api

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"paddock.dev/paddock/internal/audit"
	"paddock.dev/paddock/internal/auth"
)

// How the guard limits failed authentication without locking anyone out.
//
// A request's token is checked before anything is counted or refused: its
// header is parsed (no I/O), its id looked up in the store (one indexed
// read) and its secret's SHA-256 compared in constant time. Only a request
// that fails is counted and, over the limit, refused with 429 and
// Retry-After. A valid token is served whatever the failure counts of its
// address or its user say, so neither another tenant on the same address
// (every app shares the host's loopback with the local CLI) nor someone who
// knows a token's id (it is in the value's prefix) can lock its user out.
//
// What a flood of bad tokens costs stays bounded all the same:
//
//   - A request without a well-formed token (no header, another scheme, a
//     malformed value) fails before any lookup.
//   - A value that failed before fails again without a lookup: no value
//     that failed (unknown id, wrong secret, expired, revoked) can become
//     valid, since the server makes ids and secrets together and never
//     reuses them. The last rejectedTokens such values are remembered, by
//     hash, for a Limiter window.
//   - What costs most, a durable audit event and a log line, is written
//     for at most Limiter.Max failures per key in a burst, and then once
//     per window for the refusals.
//
// A flood of distinct well-formed values costs one indexed read each, less
// than the TLS handshake and request parsing its sender pays for.
//
// Failures count against the source address (IPv6 by /64) and, when the
// value named an existing token, against that token's user.

// maxRejectedTokens is how many failed token values are remembered.
const maxRejectedTokens = 10_000

// guard authenticates, rate-limits failures, authorizes and audits every
// request before its handler runs; no handler can skip it.
func (s *Server) guard(rt route) http.Handler {
	h := s.admitted(rt)
	if s.cfg.Metrics == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		s.cfg.Metrics.APIRequest(rt.Pattern, cmp.Or(sw.status, http.StatusOK), time.Since(start))
	})
}

// admitted serves a route to the requests its permission admits.
func (s *Server) admitted(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rt.Public {
			if err := rt.h(w, r); err != nil {
				s.writeError(w, r, err)
			}
			return
		}
		info := reqInfoOf(r)
		ev := audit.Event{Source: source(r), Action: rt.Action, Target: target(r), RequestID: info.id, ClientRequestID: info.clientID}
		if ev.Action == "" {
			ev.Action = "read"
		}
		p, err := s.authenticate(r, &ev)
		if err != nil {
			var lim *limitedError
			switch {
			case errors.As(err, &lim):
				s.tooMany(w, r, ev, lim)
			case errors.Is(err, auth.ErrUnauthenticated):
				s.deny(w, r, ev, "auth.failed", err)
			default:
				s.writeError(w, r, err)
			}
			return
		}
		ev.Actor, ev.Token = p.User, p.Token
		if err := s.cfg.Authz.Policy().Decide(p, rt.Perm, r.PathValue("app")); err != nil {
			s.deny(w, r, ev, ev.Action, err)
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), principalKey{}, p))
		admit(r, rt)
		if (r.Method == http.MethodGet || r.Method == http.MethodHead) && rt.Action == "" {
			if err := rt.h(w, r); err != nil {
				s.writeError(w, r, err)
			}
			return
		}
		if rt.Creates != "" {
			ev.Target = createdTarget(r, rt.Creates)
		}
		ev.Outcome = audit.OutcomeAllowed
		var sw *statusWriter
		var g *gatedWriter
		if rt.Read {
			// An audited read changes nothing, so it need not wait for its
			// event; its answer does (see gatedWriter).
			g = s.gate(r.Context(), w, ev)
			sw = &statusWriter{ResponseWriter: g}
			err = rt.h(sw, r)
			if aerr := g.wait(); aerr != nil {
				s.auditUnavailable(w, r, ev, aerr)
				return
			}
		} else {
			// Fail closed: a change whose audit event cannot be written is
			// not made.
			if _, aerr := s.cfg.Audit.Append(r.Context(), ev); aerr != nil {
				s.auditUnavailable(w, r, ev, aerr)
				return
			}
			sw = &statusWriter{ResponseWriter: w}
			err = rt.h(sw, r)
		}
		var streamed *streamedError
		if err != nil && !errors.As(err, &streamed) {
			s.writeError(sw, r, err)
		}
		if g != nil {
			g.pass() // the headers of an answer without a body
		}
		if sw.status >= 400 || err != nil {
			ev.Outcome = audit.OutcomeFailed
			ev.Detail = fmt.Sprintf("status %d", max(sw.status, 0))
			if err != nil {
				ev.Detail = s.toError(r, err).Code
			}
			if _, aerr := s.cfg.Audit.Append(context.WithoutCancel(r.Context()), ev); aerr != nil {
				s.log.Error("audit append of a failure", "err", aerr, "request_id", ev.RequestID)
			}
		}
	})
}

var errNoToken = fmt.Errorf("%w: missing token: send Authorization: Bearer TOKEN (the CLI reads it from its config or PADDOCK_TOKEN)", auth.ErrUnauthenticated)

// authenticate returns the request's principal, or why not: an error
// wrapping auth.ErrUnauthenticated for a failure under the limit, a
// *limitedError over it, any other error for a fault of the server's. It
// fills in ev's actor and token when the token named an existing one.
func (s *Server) authenticate(r *http.Request, ev *audit.Event) (auth.Principal, error) {
	keys := []string{"addr:" + limitKey(ev.Source)}
	scheme, value, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") { // the scheme is case-insensitive (RFC 9110 §11.1)
		return auth.Principal{}, s.failed(keys, errNoToken)
	}
	value = strings.TrimSpace(value)
	if _, _, err := auth.ParseToken(value); err != nil {
		return auth.Principal{}, s.failed(keys, err)
	}
	if rej, ok := s.rejected.get(value); ok {
		ev.Actor, ev.Token = rej.user, rej.token
		if rej.user != "" {
			keys = append(keys, "user:"+rej.user)
		}
		return auth.Principal{}, s.failed(keys, rej.err)
	}
	p, err := s.cfg.Auth.Authenticate(r.Context(), value)
	if err == nil {
		return p, nil
	}
	if !errors.Is(err, auth.ErrUnauthenticated) {
		return auth.Principal{}, err
	}
	s.rejected.add(value, rejection{user: p.User, token: p.Token, err: err})
	ev.Actor, ev.Token = p.User, p.Token
	if p.User != "" {
		keys = append(keys, "user:"+p.User)
	}
	return auth.Principal{}, s.failed(keys, err)
}

// failed counts a failed authentication against keys and returns err, or
// a *limitedError if a key is over its limit.
func (s *Server) failed(keys []string, err error) error {
	if key, wait := s.cfg.Limiter.Fail(keys...); key != "" {
		return &limitedError{key: key, wait: wait, cause: err}
	}
	return err
}

// limitedError is a failed authentication over the limit of key.
type limitedError struct {
	key   string
	wait  time.Duration
	cause error
}

func (e *limitedError) Error() string { return e.cause.Error() }
func (e *limitedError) Unwrap() error { return e.cause }

// tooMany refuses a failed authentication over the limit. Only the first
// refusal of a key in a window is audited: the limit bounds how many events
// failures can write, so a flood cannot fill the audit log's disk.
func (s *Server) tooMany(w http.ResponseWriter, r *http.Request, ev audit.Event, lim *limitedError) {
	secs := max(int(math.Ceil(lim.wait.Seconds())), 1)
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	err := &Error{Status: http.StatusTooManyRequests, Code: "rate_limited",
		Message: fmt.Sprintf("%s; too many failed authentications from this address or for this account: failing attempts are refused for %ds (a valid token is always accepted)", lim.cause, secs)}
	if s.cfg.Limiter.FirstRefusal(lim.key) {
		ev.Detail = "rate_limited " + lim.key
		s.deny(w, r, ev, "auth.rate-limited", err)
		return
	}
	s.writeError(w, r, err)
}

// auditUnavailable refuses a request whose audit event cannot be written.
func (s *Server) auditUnavailable(w http.ResponseWriter, r *http.Request, ev audit.Event, err error) {
	s.log.Error("audit append failed; refusing the request", "err", err, "action", ev.Action, "request_id", ev.RequestID)
	s.writeError(w, r, &Error{Status: http.StatusServiceUnavailable, Code: "audit_unavailable",
		Message: "the audit log cannot be written, so no change is accepted and no audited read (a secret's value, a volume's export) is answered; other reads still work (see the server log)"})
}

// gatedWriter holds an audited read's answer until the read's event is
// durable, which it writes meanwhile: the handler's work (a store read, a
// decryption) and the fsync overlap, and a failed write lets nothing of
// the answer out, not even its headers.
type gatedWriter struct {
	w      http.ResponseWriter
	header http.Header // the handler's until the event is durable
	done   chan struct{}
	err    error // the append's; read after done
	open   bool  // the event is durable and header went to w
}

var errAuditGate = errors.New("the audit event of this read could not be written")

func (s *Server) gate(ctx context.Context, w http.ResponseWriter, ev audit.Event) *gatedWriter {
	g := &gatedWriter{w: w, header: http.Header{}, done: make(chan struct{})}
	go func() {
		_, g.err = s.cfg.Audit.Append(ctx, ev)
		close(g.done)
	}()
	return g
}

func (g *gatedWriter) wait() error {
	<-g.done
	return g.err
}

// pass waits for the event and opens the gate.
func (g *gatedWriter) pass() error {
	if g.open {
		return nil
	}
	if g.wait() != nil {
		return errAuditGate
	}
	g.open = true
	maps.Copy(g.w.Header(), g.header)
	return nil
}

func (g *gatedWriter) Header() http.Header {
	if g.open {
		return g.w.Header()
	}
	return g.header
}

func (g *gatedWriter) WriteHeader(code int) {
	if g.pass() == nil {
		g.w.WriteHeader(code)
	}
}

func (g *gatedWriter) Write(b []byte) (int, error) {
	if err := g.pass(); err != nil {
		return 0, err
	}
	return g.w.Write(b)
}

func (g *gatedWriter) Flush() {
	if f, ok := g.w.(http.Flusher); ok && g.pass() == nil {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection.
func (g *gatedWriter) Unwrap() http.ResponseWriter { return g.w }

// deny records a security decision and answers it.
func (s *Server) deny(w http.ResponseWriter, r *http.Request, ev audit.Event, action string, err error) {
	ev.Action, ev.Outcome = action, audit.OutcomeDenied
	if ev.Detail == "" {
		ev.Detail = s.toError(r, err).Code
	}
	if _, aerr := s.cfg.Audit.Append(r.Context(), ev); aerr != nil {
		s.log.Error("audit append of a denial", "err", aerr, "request_id", ev.RequestID)
	}
	s.log.Warn("request denied", "source", ev.Source, "actor", ev.Actor, "action", action, "target", ev.Target, "err", err, "request_id", ev.RequestID)
	s.writeError(w, r, err)
}

// source is the client's address without its port.
func source(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// limitKey is what failures from addr count against: the address, or its
// /64 for IPv6, which one client usually holds whole.
func limitKey(addr string) string {
	ip := net.ParseIP(addr)
	if ip == nil || ip.To4() != nil {
		return addr
	}
	return (&net.IPNet{IP: ip.Mask(net.CIDRMask(64, 128)), Mask: net.CIDRMask(64, 128)}).String()
}

// target names what a request acts on, for the audit log: a secret as
// app/APP/secrets/NAME, never with its value.
func target(r *http.Request) string {
	if app, name := r.PathValue("app"), r.PathValue("name"); app != "" && name != "" && strings.Contains(r.Pattern, "/secrets/{name}") {
		return "app/" + app + "/secrets/" + url.PathEscape(name)
	}
	if app, v := r.PathValue("app"), r.PathValue("volume"); app != "" && v != "" {
		return "app/" + app + "/volumes/" + v
	}
	if r.URL.Path == "/v1/keys" || strings.HasPrefix(r.URL.Path, "/v1/keys/") {
		return "keys"
	}
	for _, k := range []string{"app", "user", "team", "token"} {
		if v := r.PathValue(k); v != "" {
			return k + "/" + v
		}
	}
	return ""
}

func principal(r *http.Request) auth.Principal {
	p, _ := r.Context().Value(principalKey{}).(auth.Principal)
	return p
}

// rejectedTokens remembers token values that failed authentication, by
// their SHA-256 (never the values), for a while and up to a number.
type rejectedTokens struct {
	max int
	ttl time.Duration
	now func() time.Time

	mu sync.Mutex
	m  map[[sha256.Size]byte]rejection
}

type rejection struct {
	user, token string // whose token the value named, if any
	err         error
	at          time.Time
}

func newRejectedTokens(max int, ttl time.Duration, now func() time.Time) *rejectedTokens {
	return &rejectedTokens{max: max, ttl: ttl, now: now, m: map[[sha256.Size]byte]rejection{}}
}

func (t *rejectedTokens) get(value string) (rejection, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	rej, ok := t.m[sha256.Sum256([]byte(value))]
	if !ok || t.now().Sub(rej.at) >= t.ttl {
		return rejection{}, false
	}
	return rej, true
}

func (t *rejectedTokens) add(value string, rej rejection) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if len(t.m) >= t.max {
		for k, r := range t.m {
			if now.Sub(r.at) >= t.ttl {
				delete(t.m, k)
			}
		}
		if len(t.m) >= t.max {
			clear(t.m) // forgetting costs a lookup per value, nothing more
		}
	}
	rej.at = now
	t.m[sha256.Sum256([]byte(value))] = rej
}

// statusWriter remembers the status a handler sent.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// visible keeps the items of the apps the request's caller may read; app
// names an item's app.
func visible[T any](s *Server, r *http.Request, items []T, app func(T) string) []T {
	pol, p := s.cfg.Authz.Policy(), principal(r)
	out := make([]T, 0, len(items))
	for _, it := range items {
		if pol.Visible(p, app(it)) {
			out = append(out, it)
		}
	}
	return out
}
