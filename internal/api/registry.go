package api

import (
	"context"
	"net/http"

	"paddock.dev/paddock/internal/wire"
)

// Registry is the image registry the platform pushes to on Kubernetes and
// the logins it keeps for it, sealed like secrets.
type Registry interface {
	Info(ctx context.Context) (wire.Registry, error)
	// SetCredential keeps the login of kind "push" or "pull", and makes the
	// platform use it from now on.
	SetCredential(ctx context.Context, kind, username, password, by string) error
	DeleteCredential(ctx context.Context, kind string) error
}

// errNoRegistry answers the registry routes of a server that pushes no
// images: not a failure of the server, a request it has nothing for.
var errNoRegistry = &Error{Status: http.StatusConflict, Code: "no_registry",
	Message: "this server pushes no images: a registry is used with `paddock up --runtime kubernetes --registry REGISTRY/PATH`"}

func (s *Server) getRegistry(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Registry == nil {
		return errNoRegistry
	}
	info, err := s.cfg.Registry.Info(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, info)
}

func (s *Server) setRegistryCredential(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Registry == nil {
		return errNoRegistry
	}
	kind, err := credentialKind(r)
	if err != nil {
		return err
	}
	var req wire.RegistryCredentialRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	switch {
	case req.Username == "":
		return invalid("give the registry user name")
	case req.Password == "":
		return invalid("give the registry password (on standard input: `paddock registry login --username U`)")
	case len(req.Password) > 4096:
		return invalid("the password is over 4096 bytes")
	}
	if err := s.cfg.Registry.SetCredential(r.Context(), kind, req.Username, req.Password, principal(r).User); err != nil {
		return err
	}
	return s.getRegistry(w, r)
}

func (s *Server) deleteRegistryCredential(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Registry == nil {
		return errNoRegistry
	}
	kind, err := credentialKind(r)
	if err != nil {
		return err
	}
	if err := s.cfg.Registry.DeleteCredential(r.Context(), kind); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func credentialKind(r *http.Request) (string, error) {
	switch k := r.PathValue("kind"); k {
	case "push", "pull":
		return k, nil
	default:
		return "", invalid("registry credential %q: give push (what Paddock pushes with) or pull (what nodes pull with)", k)
	}
}
