package api

import (
	"bytes"
	"context"
	"net/http"
	"strconv"

	"paddock.dev/paddock/internal/deploy"
	"paddock.dev/paddock/internal/store"
	"paddock.dev/paddock/internal/wire"
)

// The secrets routes. No answer but reveal's holds a value, and nothing
// here logs one: a value lives in the request, goes to deploy, and its
// bytes are cleared when the handler returns.

func (s *Server) listSecrets(w http.ResponseWriter, r *http.Request) error {
	list, err := s.d.Secrets(r.Context(), r.PathValue("app"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, listOut(list, secretOut))
}

func (s *Server) secretVersions(w http.ResponseWriter, r *http.Request) error {
	versions, err := s.d.SecretHistory(r.Context(), r.PathValue("app"), r.PathValue("name"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, listOut(versions, secretVersionOut))
}

// setSecret stores a new version of a secret: 201 with the release that
// rolls it out, or 202 without one when no_restart asks to wait for the
// next release.
func (s *Server) setSecret(w http.ResponseWriter, r *http.Request) error {
	var req wire.SecretRequest
	err := readJSON(w, r, &req)
	defer clear(req.Value)
	if err != nil {
		return err
	}
	app, name := r.PathValue("app"), r.PathValue("name")
	if !req.AsFile && len(req.Value) <= deploy.MaxSecret && bytes.IndexByte(req.Value, 0) >= 0 {
		return invalid("secret %s: the value holds a NUL byte, which no environment variable can hold: give it to instances as a file (\"as_file\": true, or --as-file)", name)
	}
	rel, err := s.d.SetSecret(r.Context(), app, name, req.Value, deploy.SecretOptions{AsFile: req.AsFile, NoRestart: req.NoRestart}, principal(r).User)
	if err != nil {
		return err
	}
	return s.secretChanged(w, r, rel, http.StatusCreated)
}

// unsetSecret removes a secret in a new version: 200 with the release that
// rolls it out, or 202 with ?no_restart=true.
func (s *Server) unsetSecret(w http.ResponseWriter, r *http.Request) error {
	noRestart := false
	if v := r.URL.Query().Get("no_restart"); v != "" {
		var err error
		if noRestart, err = strconv.ParseBool(v); err != nil {
			return invalid("no_restart=%q: give true or false", v)
		}
	}
	rel, err := s.d.UnsetSecret(r.Context(), r.PathValue("app"), r.PathValue("name"), noRestart, principal(r).User)
	if err != nil {
		return err
	}
	return s.secretChanged(w, r, rel, http.StatusOK)
}

// secretChanged answers a change of a secret with the version it made and
// its release, if any.
func (s *Server) secretChanged(w http.ResponseWriter, r *http.Request, rel *store.Release, status int) error {
	app, name := r.PathValue("app"), r.PathValue("name")
	// The change is made: what follows must not depend on the client.
	ctx := context.WithoutCancel(r.Context())
	out := wire.SecretChange{App: app, Name: name}
	// A release pins the version a set made; otherwise the latest version
	// is this change's, unless another change of the same secret came
	// right after it.
	if v, ok := pinned(rel, name); ok {
		out.Version = v
	} else if versions, err := s.d.SecretHistory(ctx, app, name); err == nil && len(versions) > 0 {
		last := versions[len(versions)-1]
		out.Version, out.Deleted = last.Version, last.Deleted
	}
	if rel != nil {
		o := releaseOut(*rel)
		out.Release = &o
	} else {
		status = http.StatusAccepted
	}
	return writeJSON(w, status, out)
}

func pinned(rel *store.Release, name string) (int, bool) {
	if rel == nil {
		return 0, false
	}
	v, ok := rel.Secrets[name]
	return v, ok
}

// revealSecret answers the value of a secret's current version, alone:
// the guard has audited the request before it gets here.
func (s *Server) revealSecret(w http.ResponseWriter, r *http.Request) error {
	value, err := s.d.RevealSecret(r.Context(), r.PathValue("app"), r.PathValue("name"))
	defer clear(value)
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.Itoa(len(value)))
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, err = w.Write(value)
	return err
}
