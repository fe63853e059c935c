package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"unicode/utf8"

	"paddock.dev/paddock/internal/auth"
	"paddock.dev/paddock/internal/deploy"
	"paddock.dev/paddock/internal/store"
	"paddock.dev/paddock/internal/volume"
	"paddock.dev/paddock/internal/wire"
)

// Error is an error with its HTTP status and stable code.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Message }

func invalid(format string, args ...any) error {
	return &Error{Status: http.StatusUnprocessableEntity, Code: "invalid", Message: fmt.Sprintf(format, args...)}
}

func badJSON(format string, args ...any) error {
	return &Error{Status: http.StatusBadRequest, Code: "bad_json", Message: fmt.Sprintf(format, args...)}
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
			Message: fmt.Sprintf("request body over the limit of %d bytes: make it smaller (a deploy skips what .paddockignore names; an import's stream may be a little larger than the volume's --size, no more)", mb.Limit)}
	case errors.Is(err, auth.ErrDenied):
		return &Error{Status: http.StatusForbidden, Code: "forbidden", Message: err.Error()}
	case errors.Is(err, auth.ErrUnauthenticated):
		return &Error{Status: http.StatusUnauthorized, Code: "unauthenticated", Message: err.Error() + ": check PADDOCK_TOKEN or the CLI config"}
	case errors.Is(err, store.ErrNotFound):
		return &Error{Status: http.StatusNotFound, Code: "not_found", Message: err.Error()}
	case errors.Is(err, store.ErrExists):
		return &Error{Status: http.StatusConflict, Code: "exists", Message: err.Error()}
	case errors.Is(err, store.ErrConflict):
		return &Error{Status: http.StatusConflict, Code: "conflict", Message: err.Error()}
	case errors.Is(err, deploy.ErrInvalid):
		return &Error{Status: http.StatusUnprocessableEntity, Code: "invalid", Message: strings.TrimPrefix(err.Error(), deploy.ErrInvalid.Error()+": ")}
	case errors.Is(err, volume.ErrInvalid):
		return &Error{Status: http.StatusUnprocessableEntity, Code: "invalid", Message: strings.TrimPrefix(err.Error(), volume.ErrInvalid.Error()+": ")}
	case errors.Is(err, volume.ErrCorrupt):
		return &Error{Status: http.StatusUnprocessableEntity, Code: "corrupt", Message: err.Error()}
	case errors.Is(err, volume.ErrInUse):
		return &Error{Status: http.StatusConflict, Code: "in_use", Message: strings.TrimPrefix(err.Error(), volume.ErrInUse.Error()+": ")}
	case errors.Is(err, volume.ErrQuota):
		return &Error{Status: http.StatusUnprocessableEntity, Code: "quota", Message: strings.TrimPrefix(err.Error(), volume.ErrQuota.Error()+": ")}
	case errors.Is(err, deploy.ErrSecretDamaged):
		return &Error{Status: http.StatusInternalServerError, Code: "secret_damaged", Message: err.Error()}
	case errors.Is(err, deploy.ErrNoKeyring):
		return &Error{Status: http.StatusServiceUnavailable, Code: "secrets_unavailable",
			Message: err.Error() + " (the server log says why; `paddock up` makes a keyring at first start: see Secrets in the README)"}
	case errors.Is(err, ErrBadBackup):
		return &Error{Status: http.StatusUnprocessableEntity, Code: "invalid", Message: err.Error()}
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

// wireError is what the client is told of err.
func (s *Server) wireError(r *http.Request, err error) *wire.Error {
	e := s.toError(r, err)
	return &wire.Error{Code: e.Code, Message: e.Message, RequestID: requestID(r)}
}

func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status := s.toError(r, err).Status
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(wire.ErrorBody{Error: s.wireError(r, err)})
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

// readJSON decodes a bounded JSON body into v: one JSON value of the shape
// v has, in valid UTF-8, with no field v does not have and nothing after it.
// Its errors say what was wrong in the terms of JSON, never of Go.
func readJSON(w http.ResponseWriter, r *http.Request, v any) error {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxJSON))
	if err != nil {
		return err
	}
	if !utf8.Valid(b) {
		return badJSON("the request body is not valid UTF-8: send JSON text in UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return describeJSONError(err, v)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badJSON("the request body goes on after its JSON value (at byte %d): send one JSON value and nothing after it", dec.InputOffset())
	}
	return nil
}

// describeJSONError turns a decoding error into a bad_json error in plain
// words: where, what was expected, what came.
func describeJSONError(err error, v any) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var b64 base64.CorruptInputError
	switch {
	case errors.As(err, &b64):
		// Only the offset: the field may hold a secret's value.
		return badJSON("a base64 field holds invalid base64 at byte %d of its value: encode the bytes in standard base64 with padding (RFC 4648 section 4, as `base64 -w0` does)", int64(b64))
	case errors.Is(err, io.EOF):
		return badJSON("the request body is empty: send %s", jsonKind(reflect.TypeOf(v)))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badJSON("the request body ends in the middle of its JSON: send complete JSON")
	case errors.As(err, &syn):
		return badJSON("the request body is not valid JSON at byte %d: %s", syn.Offset, syn.Error())
	case errors.As(err, &typ):
		// Field names the struct field, not a map key or list index within
		// it: the value may be one of its elements.
		where := "the request body"
		if typ.Field != "" {
			where = fmt.Sprintf("field %q", typ.Field)
		}
		if t := fieldType(reflect.TypeOf(v), typ.Field); t != nil && t != typ.Type {
			return badJSON("a value in %s is %s: each must be %s", where, valueKind(typ.Value), jsonKind(typ.Type))
		}
		if typ.Field == "" {
			return badJSON("the request body is %s: send %s", valueKind(typ.Value), jsonKind(typ.Type))
		}
		return badJSON("%s is %s: it takes %s", where, valueKind(typ.Value), jsonKind(typ.Type))
	}
	// encoding/json has no error type for an unknown field, only this text.
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return badJSON("unknown field %s: this route takes %s", name, fieldList(reflect.TypeOf(v)))
	}
	return badJSON("the request body is not the JSON this route takes: see the API reference in the README")
}

// fieldType is the type of the field a dotted JSON path names in t, or t
// itself for "".
func fieldType(t reflect.Type, path string) reflect.Type {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if path == "" || t == nil {
		return t
	}
	name, rest, _ := strings.Cut(path, ".")
	if t.Kind() != reflect.Struct {
		return nil
	}
	for i := 0; i < t.NumField(); i++ {
		if tag, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); tag == name {
			return fieldType(t.Field(i).Type, rest)
		}
	}
	return nil
}

// jsonKind names what JSON a Go type decodes from.
func jsonKind(t reflect.Type) string {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil {
		return "JSON"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "a whole number"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number, 0 or more"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return "a string of bytes in base64"
		}
		return "a list of " + strings.TrimPrefix(strings.TrimPrefix(jsonKind(t.Elem()), "a "), "an ") + "s"
	case reflect.Map:
		return "an object whose values are " + strings.TrimPrefix(jsonKind(t.Elem()), "a ") + "s"
	case reflect.Struct:
		return "an object with " + fieldList(t)
	}
	return "other JSON"
}

// valueKind names the JSON value encoding/json reports as Value.
func valueKind(v string) string {
	switch {
	case v == "string":
		return "a string"
	case v == "bool":
		return "true or false"
	case v == "number":
		return "a number"
	case strings.HasPrefix(v, "number "):
		return "the number " + strings.TrimPrefix(v, "number ")
	case v == "array":
		return "a list"
	case v == "object":
		return "an object"
	}
	return "another kind of value"
}

// fieldList names the JSON fields a struct takes.
func fieldList(t reflect.Type) string {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct {
		return "no fields by name"
	}
	var names []string
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			names = append(names, `"`+name+`"`)
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		return "no fields"
	}
	return "the fields " + strings.Join(names, ", ")
}
