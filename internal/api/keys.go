package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"paddock.dev/paddock/internal/wire"
)

// Keys manages the keyring that seals secrets: its status, the rotation of
// its key-encryption key (KEK), and the KEK's backup. The daemon adapts
// internal/secrets to it and passes it in Config.Keys.
type Keys interface {
	// Status describes the KEK and the data keys, never key material.
	Status(ctx context.Context) (KeyStatus, error)
	// Rotate makes a new KEK and re-wraps every data key with it, online:
	// afterwards the old KEK opens nothing.
	Rotate(ctx context.Context) error
	// Export returns a backup of the KEK, what restores the secrets if
	// the KEK is lost: sealed under a key derived from passphrase, or
	// with the key in the clear when passphrase is empty.
	Export(ctx context.Context, passphrase []byte) ([]byte, error)
	// Import restores a backup Export made, after checking that its key
	// opens the store's data keys. A backup that is not one, is damaged,
	// needs another passphrase or holds another platform's key is an
	// error wrapping ErrBadBackup that says which, and changes nothing.
	Import(ctx context.Context, backup, passphrase []byte) error
}

// ErrBadBackup is a key backup Keys.Import refuses: the API answers 422
// invalid with the error's message.
var ErrBadBackup = errors.New("not a usable key backup")

// KeyStatus describes the keyring.
type KeyStatus struct {
	KEK       string // the id of the KEK that wraps the data keys
	KEKSource string // where the KEK comes from ("key file", "environment variable PADDOCK_KEK"); may be ""
	MaxSeals  int64  // seals under one value key after which a new one is made; 0 if unknown
	DataKeys  []DataKeyStatus
}

// DataKeyStatus describes one data key.
type DataKeyStatus struct {
	ID        int64
	Kind      string // "value" (seals values) or "digest"
	KEK       string // the id of the KEK that wraps it
	Seals     int64  // values sealed with it so far
	Active    bool   // new values are sealed (or digested) with it
	CreatedAt time.Time
}

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

// exportKeys answers the KEK's backup, alone: made whole before the answer
// starts, so that a failure is an error answer, never a cut backup.
func (s *Server) exportKeys(w http.ResponseWriter, r *http.Request) error {
	k, err := s.keys()
	if err != nil {
		return err
	}
	var req wire.KeyExportRequest
	err = readJSON(w, r, &req)
	pass := []byte(req.Passphrase)
	defer clear(pass)
	if err != nil {
		return err
	}
	backup, err := k.Export(r.Context(), pass)
	defer clear(backup)
	if err != nil {
		return fmt.Errorf("export the KEK: %w", err)
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.Itoa(len(backup)))
	h.Set("Content-Disposition", `attachment; filename="paddock-key.backup"`)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, err = w.Write(backup)
	return err
}

func (s *Server) importKeys(w http.ResponseWriter, r *http.Request) error {
	k, err := s.keys()
	if err != nil {
		return err
	}
	var req wire.KeyImportRequest
	err = readJSON(w, r, &req)
	backup, pass := []byte(req.Backup), []byte(req.Passphrase)
	defer clear(backup)
	defer clear(pass)
	if err != nil {
		return err
	}
	if len(backup) == 0 {
		return invalid("the backup is empty: send the text `paddock keys export` wrote in \"backup\"")
	}
	if err := k.Import(r.Context(), backup, pass); err != nil {
		return fmt.Errorf("import the KEK: %w", err)
	}
	return s.keyStatus(w, r)
}
