// Package api serves the platform's HTTP API under /v1: JSON in and out,
// errors as {"error": {"code", "message", "request_id"}} with stable codes.
// Every route needs a bearer token. The CLI and internal/client are its only
// intended callers, but anything that speaks HTTP may call it.
package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"paddock.dev/paddock/internal/audit"
	"paddock.dev/paddock/internal/auth"
	"paddock.dev/paddock/internal/deploy"
	"paddock.dev/paddock/internal/store"
)

// Limits on request bodies.
const (
	maxJSON   = 1 << 20
	maxUpload = 512 << 20
)

// Authenticator checks a bearer token.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (auth.Principal, error)
}

// Auditor records audit events; Append has made the event durable when it
// returns nil.
type Auditor interface {
	Append(ctx context.Context, e audit.Event) (audit.Event, error)
	List(ctx context.Context, f audit.Filter) ([]audit.Event, error)
	Export(ctx context.Context, w io.Writer) error
	Verify(ctx context.Context) audit.Report
}

// Config configures a Server.
type Config struct {
	Deploy  *deploy.Service  // required
	Store   store.Store      // required: users, tokens, teams
	Auth    Authenticator    // required
	Authz   *auth.Authorizer // required
	Audit   Auditor          // required
	Limiter *auth.Limiter    // failed authentications; default 100 an hour per address and per account
	CA      []byte           // PEM of the CA that signed the server's certificate, served at /v1/ca
	Version string
	// Shutdown stops the server, and every app too when apps is true. It
	// is called after the response is sent.
	Shutdown func(apps bool)
	Now      func() time.Time // default time.Now
	Logger   *slog.Logger     // default: discard
}

// Server is the API's HTTP handler.
type Server struct {
	cfg    Config
	d      *deploy.Service
	st     store.Store
	log    *slog.Logger
	now    func() time.Time
	mux    *http.ServeMux
	routes []route
}

// New returns the API handler.
func New(cfg Config) (*Server, error) {
	if cfg.Deploy == nil || cfg.Store == nil || cfg.Auth == nil || cfg.Authz == nil || cfg.Audit == nil {
		return nil, errors.New("api: Deploy, Store, Auth, Authz and Audit are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Limiter == nil {
		cfg.Limiter = &auth.Limiter{Max: 100, Window: time.Hour, Now: cfg.Now}
	}
	s := &Server{cfg: cfg, d: cfg.Deploy, st: cfg.Store, log: cfg.Logger, now: cfg.Now, mux: http.NewServeMux()}
	s.routes = s.table()
	for _, rt := range s.routes {
		s.mux.Handle(rt.Pattern, s.guard(rt))
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, &Error{Status: http.StatusNotFound, Code: "no_route",
			Message: fmt.Sprintf("no API route %s %s: see the API reference in the README", r.Method, r.URL.Path)})
	})
	return s, nil
}

type handler func(w http.ResponseWriter, r *http.Request) error

// Route is one API route and what it needs.
type Route struct {
	Pattern string    // method and path, as http.ServeMux takes them
	Perm    auth.Perm // what the caller needs; "" only for public routes
	Public  bool      // served without a token
	Action  string    // the audit event's action for a mutating request
}

type route struct {
	Route
	h handler
}

// Routes lists every route of the API with the permission it needs.
func Routes() []Route {
	table := (&Server{}).table()
	out := make([]Route, len(table))
	for i, r := range table {
		out[i] = r.Route
	}
	return out
}

// table is the one place where routes declare their permission.
func (s *Server) table() []route {
	r := func(pattern string, perm auth.Perm, action string, h handler) route {
		return route{Route{Pattern: pattern, Perm: perm, Action: action}, h}
	}
	return []route{
		{Route{Pattern: "GET /healthz", Public: true}, func(w http.ResponseWriter, r *http.Request) error {
			_, err := io.WriteString(w, "ok\n")
			return err
		}},
		{Route{Pattern: "GET /v1/ca", Public: true}, s.ca},
		r("GET /v1/status", auth.StatusRead, "", s.status),
		r("GET /v1/whoami", auth.StatusRead, "", s.whoami),
		r("POST /v1/login", auth.StatusRead, "auth.login", s.login),
		r("POST /v1/shutdown", auth.SystemAdmin, "system.shutdown", s.shutdown),

		r("GET /v1/apps", auth.AppsList, "", s.listApps),
		r("POST /v1/apps", auth.AppsCreate, "apps.create", s.createApp),
		r("GET /v1/apps/{app}", auth.AppRead, "", s.getApp),
		r("DELETE /v1/apps/{app}", auth.AppAdmin, "apps.destroy", s.destroyApp),
		r("POST /v1/apps/{app}/deploys", auth.AppWrite, "apps.deploy", s.deploy),
		r("GET /v1/apps/{app}/releases", auth.AppRead, "", s.listReleases),
		r("GET /v1/apps/{app}/releases/{version}", auth.AppRead, "", s.getRelease),
		r("POST /v1/apps/{app}/rollback", auth.AppWrite, "apps.rollback", s.rollback),
		r("GET /v1/apps/{app}/config", auth.AppRead, "", s.getConfig),
		r("PATCH /v1/apps/{app}/config", auth.AppWrite, "apps.config", s.setConfig),
		r("GET /v1/apps/{app}/formation", auth.AppRead, "", s.getFormation),
		r("PATCH /v1/apps/{app}/formation", auth.AppWrite, "apps.scale", s.scale),
		r("GET /v1/apps/{app}/instances", auth.AppRead, "", s.instances),
		r("GET /v1/apps/{app}/logs", auth.AppRead, "", s.logs),
		r("GET /v1/apps/{app}/domains", auth.AppRead, "", s.listDomains),
		r("POST /v1/apps/{app}/domains", auth.AppWrite, "apps.domains.add", s.addDomain),
		r("DELETE /v1/apps/{app}/domains/{host}", auth.AppWrite, "apps.domains.remove", s.removeDomain),
		r("PUT /v1/apps/{app}/grants/{team}", auth.UsersAdmin, "apps.grant", s.grant),

		r("GET /v1/users", auth.UsersAdmin, "", s.listUsers),
		r("POST /v1/users", auth.UsersAdmin, "users.create", s.createUser),
		r("POST /v1/users/{user}/disable", auth.UsersAdmin, "users.disable", s.disableUser),
		r("GET /v1/tokens", auth.TokensOwn, "", s.listTokens),
		r("POST /v1/tokens", auth.TokensOwn, "tokens.create", s.createToken),
		r("DELETE /v1/tokens/{token}", auth.TokensOwn, "tokens.revoke", s.revokeToken),
		r("GET /v1/teams", auth.UsersAdmin, "", s.listTeams),
		r("POST /v1/teams", auth.UsersAdmin, "teams.create", s.createTeam),
		r("PUT /v1/teams/{team}/members/{user}", auth.UsersAdmin, "teams.add-member", s.addMember),
		r("DELETE /v1/teams/{team}/members/{user}", auth.UsersAdmin, "teams.remove-member", s.removeMember),

		r("GET /v1/audit", auth.AuditRead, "", s.auditList),
		r("GET /v1/audit/export", auth.AuditRead, "", s.auditExport),
		r("POST /v1/audit/verify", auth.AuditRead, "", s.auditVerify),
	}
}

// ServeHTTP gives every request an ID and serves it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get("X-Request-Id")
	if id == "" || len(id) > 64 {
		b := make([]byte, 8)
		rand.Read(b)
		id = hex.EncodeToString(b)
	}
	w.Header().Set("X-Request-Id", id)
	r = r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id))
	s.mux.ServeHTTP(w, r)
}

type requestIDKey struct{}
type principalKey struct{}

func requestID(r *http.Request) string {
	id, _ := r.Context().Value(requestIDKey{}).(string)
	return id
}

func principal(r *http.Request) auth.Principal {
	p, _ := r.Context().Value(principalKey{}).(auth.Principal)
	return p
}

// source is the client's address without its port.
func source(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// target names what a request acts on, for the audit log.
func target(r *http.Request) string {
	for _, k := range []string{"app", "user", "team", "token"} {
		if v := r.PathValue(k); v != "" {
			return k + "/" + v
		}
	}
	return ""
}

// guard authenticates, rate-limits failures, authorizes and audits every
// request before its handler runs; no handler can skip it.
func (s *Server) guard(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rt.Public {
			if err := rt.h(w, r); err != nil {
				s.writeError(w, r, err)
			}
			return
		}
		ev := audit.Event{Source: source(r), Action: rt.Action, Target: target(r), RequestID: requestID(r)}
		if ev.Action == "" {
			ev.Action = "read"
		}
		if wait, ok := s.cfg.Limiter.Check("addr:" + ev.Source); !ok {
			s.tooMany(w, r, ev, "addr:"+ev.Source, wait)
			return
		}
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			s.cfg.Limiter.Fail("addr:" + ev.Source)
			s.deny(w, r, ev, "auth.failed", &Error{Status: http.StatusUnauthorized, Code: "unauthenticated",
				Message: "missing token: send Authorization: Bearer TOKEN (the CLI reads it from its config or PADDOCK_TOKEN)"})
			return
		}
		p, err := s.cfg.Auth.Authenticate(r.Context(), strings.TrimSpace(token))
		if p.User != "" {
			ev.Actor, ev.Token = p.User, p.Token
			if wait, ok := s.cfg.Limiter.Check("user:" + p.User); !ok {
				s.tooMany(w, r, ev, "user:"+p.User, wait)
				return
			}
		}
		if err != nil {
			if errors.Is(err, auth.ErrUnauthenticated) {
				keys := []string{"addr:" + ev.Source}
				if p.User != "" {
					keys = append(keys, "user:"+p.User)
				}
				s.cfg.Limiter.Fail(keys...)
				s.deny(w, r, ev, "auth.failed", err)
				return
			}
			s.writeError(w, r, err)
			return
		}
		if err := s.cfg.Authz.Policy().Decide(p, rt.Perm, r.PathValue("app")); err != nil {
			s.deny(w, r, ev, ev.Action, err)
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), principalKey{}, p))
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			if err := rt.h(w, r); err != nil {
				s.writeError(w, r, err)
			}
			return
		}
		// Fail closed: a change whose audit event cannot be written is not made.
		ev.Outcome = audit.OutcomeAllowed
		if _, err := s.cfg.Audit.Append(r.Context(), ev); err != nil {
			s.log.Error("audit append failed; refusing the change", "err", err, "request_id", ev.RequestID)
			s.writeError(w, r, &Error{Status: http.StatusServiceUnavailable, Code: "audit_unavailable",
				Message: "the audit log cannot be written, so no change is accepted; reads still work (see the server log)"})
			return
		}
		sw := &statusWriter{ResponseWriter: w}
		err = rt.h(sw, r)
		var streamed *streamedError
		if err != nil && !errors.As(err, &streamed) {
			s.writeError(sw, r, err)
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

// deny records a security decision and answers it.
func (s *Server) deny(w http.ResponseWriter, r *http.Request, ev audit.Event, action string, err error) {
	ev.Action, ev.Outcome = action, audit.OutcomeDenied
	ev.Detail = s.toError(r, err).Code
	if _, aerr := s.cfg.Audit.Append(r.Context(), ev); aerr != nil {
		s.log.Error("audit append of a denial", "err", aerr, "request_id", ev.RequestID)
	}
	s.log.Warn("request denied", "source", ev.Source, "actor", ev.Actor, "action", action, "target", ev.Target, "err", err, "request_id", ev.RequestID)
	s.writeError(w, r, err)
}

// tooMany refuses a request over the failed-authentication limit. Only the
// first refusal of a key in a window is audited: the limit bounds how many
// events failures can write, so a flood cannot fill the audit log's disk.
func (s *Server) tooMany(w http.ResponseWriter, r *http.Request, ev audit.Event, key string, wait time.Duration) {
	secs := int(wait.Seconds()) + 1
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	err := &Error{Status: http.StatusTooManyRequests, Code: "rate_limited",
		Message: fmt.Sprintf("too many failed authentications from here or for this account: try again in %ds", secs)}
	if s.cfg.Limiter.FirstRefusal(key) {
		s.deny(w, r, ev, "auth.rate-limited", err)
		return
	}
	s.writeError(w, r, err)
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

// Error is an error with its HTTP status and stable code.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

func invalid(format string, args ...any) error {
	return &Error{Status: http.StatusUnprocessableEntity, Code: "invalid", Message: fmt.Sprintf(format, args...)}
}

// toError maps an error to what the client is told. Anything unexpected is
// logged in full and reported only by request ID.
func (s *Server) toError(r *http.Request, err error) *Error {
	var e *Error
	var mb *http.MaxBytesError
	var se *streamedError
	switch {
	case errors.As(err, &se):
		return se.e
	case errors.As(err, &e):
		return e
	case errors.As(err, &mb):
		return &Error{Status: http.StatusRequestEntityTooLarge, Code: "too_large",
			Message: fmt.Sprintf("request body over the limit of %d bytes: make it smaller (a deploy skips what .paddockignore names)", mb.Limit)}
	case errors.Is(err, auth.ErrDenied):
		return &Error{Status: http.StatusForbidden, Code: "forbidden", Message: err.Error()}
	case errors.Is(err, auth.ErrUnauthenticated):
		return &Error{Status: http.StatusUnauthorized, Code: "unauthenticated", Message: err.Error() + ": check PADDOCK_TOKEN or the CLI config"}
	case errors.Is(err, store.ErrNotFound):
		return &Error{Status: http.StatusNotFound, Code: "not_found", Message: err.Error()}
	case errors.Is(err, store.ErrExists):
		return &Error{Status: http.StatusConflict, Code: "exists", Message: err.Error()}
	case errors.Is(err, deploy.ErrInvalid):
		return &Error{Status: http.StatusUnprocessableEntity, Code: "invalid", Message: strings.TrimPrefix(err.Error(), deploy.ErrInvalid.Error()+": ")}
	case errors.Is(err, deploy.ErrBuild):
		return &Error{Status: http.StatusUnprocessableEntity, Code: "build_failed", Message: err.Error()}
	case errors.Is(err, deploy.ErrFailed):
		return &Error{Status: http.StatusConflict, Code: "rollout_failed", Message: err.Error()}
	case errors.Is(err, context.Canceled):
		return &Error{Status: 499, Code: "canceled", Message: "request canceled"}
	}
	s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "request_id", requestID(r), "err", err)
	return &Error{Status: http.StatusInternalServerError, Code: "internal",
		Message: "internal error: the server log has the details under request id " + requestID(r)}
}

func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	e := s.toError(r, err)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.Status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{
		"code": e.Code, "message": e.Message, "request_id": requestID(r),
	}})
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

// readJSON decodes a bounded JSON body, refusing unknown fields.
func readJSON(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxJSON))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			return err
		}
		return &Error{Status: http.StatusBadRequest, Code: "bad_json", Message: "request body is not the JSON this route takes: " + err.Error()}
	}
	return nil
}
