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
	"net/http"
	"strings"

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

// Config configures a Server.
type Config struct {
	Deploy  *deploy.Service // required
	Auth    Authenticator   // required
	Version string
	// Shutdown stops the server, and every app too when apps is true. It
	// is called after the response is sent.
	Shutdown func(apps bool)
	Logger   *slog.Logger // default: discard
}

// Server is the API's HTTP handler.
type Server struct {
	cfg Config
	d   *deploy.Service
	log *slog.Logger
	mux *http.ServeMux
}

// New returns the API handler.
func New(cfg Config) (*Server, error) {
	if cfg.Deploy == nil || cfg.Auth == nil {
		return nil, errors.New("api: Deploy and Auth are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, d: cfg.Deploy, log: cfg.Logger, mux: http.NewServeMux()}
	s.routes()
	return s, nil
}

type handler func(w http.ResponseWriter, r *http.Request) error

func (s *Server) routes() {
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	for _, rt := range []struct {
		pattern string
		h       handler
	}{
		{"GET /v1/status", s.status},
		{"POST /v1/shutdown", s.shutdown},
		{"GET /v1/apps", s.listApps},
		{"POST /v1/apps", s.createApp},
		{"GET /v1/apps/{app}", s.getApp},
		{"DELETE /v1/apps/{app}", s.destroyApp},
		{"POST /v1/apps/{app}/deploys", s.deploy},
		{"GET /v1/apps/{app}/releases", s.listReleases},
		{"GET /v1/apps/{app}/releases/{version}", s.getRelease},
		{"POST /v1/apps/{app}/rollback", s.rollback},
		{"GET /v1/apps/{app}/config", s.getConfig},
		{"PATCH /v1/apps/{app}/config", s.setConfig},
		{"GET /v1/apps/{app}/formation", s.getFormation},
		{"PATCH /v1/apps/{app}/formation", s.scale},
		{"GET /v1/apps/{app}/instances", s.instances},
		{"GET /v1/apps/{app}/logs", s.logs},
		{"GET /v1/apps/{app}/domains", s.listDomains},
		{"POST /v1/apps/{app}/domains", s.addDomain},
		{"DELETE /v1/apps/{app}/domains/{host}", s.removeDomain},
	} {
		s.mux.Handle(rt.pattern, s.authenticated(rt.h))
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, &Error{Status: http.StatusNotFound, Code: "no_route",
			Message: fmt.Sprintf("no API route %s %s: see the API reference in the README", r.Method, r.URL.Path)})
	})
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

func (s *Server) authenticated(h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			s.writeError(w, r, &Error{Status: http.StatusUnauthorized, Code: "unauthenticated",
				Message: "missing token: send Authorization: Bearer TOKEN (the CLI reads it from its config or PADDOCK_TOKEN)"})
			return
		}
		p, err := s.cfg.Auth.Authenticate(r.Context(), strings.TrimSpace(token))
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), principalKey{}, p))
		if err := h(w, r); err != nil {
			s.writeError(w, r, err)
		}
	})
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
	switch {
	case errors.As(err, &e):
		return e
	case errors.As(err, &mb):
		return &Error{Status: http.StatusRequestEntityTooLarge, Code: "too_large",
			Message: fmt.Sprintf("request body over the limit of %d bytes: make it smaller (a deploy skips what .paddockignore names)", mb.Limit)}
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
