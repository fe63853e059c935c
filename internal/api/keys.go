package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Keys manages the keyring that seals secrets: its status, the rotation of
// its key-encryption key (KEK), and its backup. internal/secrets
// implements it; the daemon passes it in Config.Keys.
type Keys interface {
	// Status describes the KEK and the data keys, never key material.
	Status(ctx context.Context) (KeyStatus, error)
	// Rotate makes a new KEK and re-wraps every data key with it, online:
	// afterwards the old KEK opens nothing.
	Rotate(ctx context.Context) error
	// Export writes a backup of the keyring (what restores the secrets if
	// the KEK is lost) to w.
	Export(ctx context.Context, w io.Writer) error
	// Import restores a backup Export wrote. A file that is not a backup
	// of this keyring, or is damaged, is an error wrapping ErrBadBackup
	// that says what is wrong with it, and changes nothing.
	Import(ctx context.Context, r io.Reader) error
}

// ErrBadBackup is a key backup Keys.Import refuses: the API answers 422
// invalid with the error's message.
var ErrBadBackup = errors.New("not a usable key backup")

// KeyStatus describes the keyring.
type KeyStatus struct {
	KEK       string // the id of the KEK that wraps the data keys
	KEKSource string // where the KEK comes from ("key file", "environment variable PADDOCK_KEK"); may be ""
	DataKeys  []DataKeyStatus
}

// DataKeyStatus describes one data key.
type DataKeyStatus struct {
	ID        int64
	Kind      string // "seal" or "digest"
	KEK       string // the id of the KEK that wraps it
	Seals     int64  // values sealed with it so far
	Active    bool   // new values are sealed (or digested) with it
	CreatedAt time.Time
}

// maxKeyBackup is the largest key backup Import accepts.
const maxKeyBackup = 1 << 20

// errNoKeys answers the keys routes of a server without a keyring.
var errNoKeys = &Error{Status: http.StatusServiceUnavailable, Code: "secrets_unavailable",
	Message: "this server has no keyring, so it keeps no secrets and has no keys to manage: `paddock up` makes one at first start (see Secrets in the README); the server log says why this one has none"}

func (s *Server) keys() (Keys, error) {
	if s.cfg.Keys == nil {
		return nil, errNoKeys
	}
	return s.cfg.Keys, nil
}

func (s *Server) keyStatus(w http.ResponseWriter, r *http.Request) error {
	k, err := s.keys()
	if err != nil {
		return err
	}
	st, err := k.Status(r.Context())
	if err != nil {
		return fmt.Errorf("key status: %w", err)
	}
	return writeJSON(w, http.StatusOK, keyStatusOut(st))
}

func (s *Server) rotateKeys(w http.ResponseWriter, r *http.Request) error {
	k, err := s.keys()
	if err != nil {
		return err
	}
	if err := k.Rotate(r.Context()); err != nil {
		return fmt.Errorf("rotate the KEK: %w", err)
	}
	return s.keyStatus(w, r)
}

// exportKeys answers the key backup's bytes. It is made whole before the
// answer starts, so that a failure is an error answer, never a truncated
// backup with status 200.
func (s *Server) exportKeys(w http.ResponseWriter, r *http.Request) error {
	k, err := s.keys()
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := k.Export(r.Context(), &buf); err != nil {
		return fmt.Errorf("export the keys: %w", err)
	}
	defer clear(buf.Bytes())
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Disposition", `attachment; filename="paddock-key.backup"`)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, err = w.Write(buf.Bytes())
	return err
}

func (s *Server) importKeys(w http.ResponseWriter, r *http.Request) error {
	k, err := s.keys()
	if err != nil {
		return err
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxKeyBackup))
	if err != nil {
		return err
	}
	defer clear(b)
	if len(b) == 0 {
		return invalid("the request body is empty: send the bytes `paddock keys export` wrote")
	}
	if err := k.Import(r.Context(), bytes.NewReader(b)); err != nil {
		return fmt.Errorf("import the keys: %w", err)
	}
	return s.keyStatus(w, r)
}
