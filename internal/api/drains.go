package api

import (
	"context"
	"errors"
	"net/http"

	"paddock.dev/paddock/internal/drains"
	"paddock.dev/paddock/internal/wire"
)

// Drains is what the drain routes need.
type Drains interface {
	List(ctx context.Context, app string) ([]wire.Drain, error)
	Add(ctx context.Context, app, url string, ca []byte) (wire.Drain, error)
	Remove(ctx context.Context, app, id string) error
}

var errNoDrains = &Error{Status: http.StatusServiceUnavailable, Code: "drains_unavailable", Message: "this server forwards no logs"}

func (s *Server) listDrains(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Drains == nil {
		return errNoDrains
	}
	if _, err := s.st.GetApp(r.Context(), r.PathValue("app")); err != nil {
		return err
	}
	list, err := s.cfg.Drains.List(r.Context(), r.PathValue("app"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, list)
}

func (s *Server) addDrain(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Drains == nil {
		return errNoDrains
	}
	var req wire.DrainRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	d, err := s.cfg.Drains.Add(r.Context(), r.PathValue("app"), req.URL, []byte(req.CA))
	if errors.Is(err, drains.ErrBadURL) {
		return invalid("%s", err.Error())
	}
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, d)
}

func (s *Server) removeDrain(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Drains == nil {
		return errNoDrains
	}
	if err := s.cfg.Drains.Remove(r.Context(), r.PathValue("app"), r.PathValue("drain")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
