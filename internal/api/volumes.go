package api

import (
	"context"
	"fmt"
	"net/http"
	"strconv"

	"paddock.dev/paddock/internal/store"
	"paddock.dev/paddock/internal/volume"
	"paddock.dev/paddock/internal/wire"
)

// Volumes is what the volume routes need.
type Volumes interface {
	Create(ctx context.Context, app, name string, size int64) (store.Volume, error)
	Get(ctx context.Context, name string) (store.Volume, error)
	List(ctx context.Context, app string) ([]store.Volume, error)
	Attach(ctx context.Context, name, app, process, path string) (store.Volume, error)
	Detach(ctx context.Context, name string) (store.Volume, error)
	Resize(ctx context.Context, name string, size int64) (store.Volume, error)
	Snapshot(ctx context.Context, name, label string) (store.Snapshot, error)
	Snapshots(ctx context.Context, name string) ([]store.Snapshot, error)
	DeleteSnapshot(ctx context.Context, volume, ref string) error
	Clone(ctx context.Context, volume, ref, name string) (store.Volume, error)
	Restore(ctx context.Context, volume, ref string, inUse func(store.Volume) bool) (store.Volume, error)
	Delete(ctx context.Context, name string, force bool, inUse func(store.Volume) bool) error
	Used(ctx context.Context, v store.Volume) (int64, bool)
	InUse(v store.Volume) bool
	Enforced() (bool, string)
}

// errNoVolumes answers the volume routes of a server without a volume
// layer.
var errNoVolumes = &Error{Status: http.StatusServiceUnavailable, Code: "volumes_unavailable",
	Message: "volumes are not available on this server: it has no storage plugin (the server log says why)"}

func notFoundf(format string, args ...any) error {
	return &Error{Status: http.StatusNotFound, Code: "not_found", Message: fmt.Sprintf(format, args...)}
}

// appVolume returns the volume of the route, which must be the route's
// app's: a principal allowed on one app reaches no other app's volume.
func (s *Server) appVolume(r *http.Request) (store.Volume, error) {
	if s.cfg.Volumes == nil {
		return store.Volume{}, errNoVolumes
	}
	v, err := s.cfg.Volumes.Get(r.Context(), r.PathValue("volume"))
	if err != nil || v.App != r.PathValue("app") {
		return store.Volume{}, notFoundf("app %s has no volume %s", r.PathValue("app"), r.PathValue("volume"))
	}
	return v, nil
}

func (s *Server) volumeOut(r *http.Request, v store.Volume) wire.Volume {
	out := wire.Volume{Name: v.Name, App: v.App, Size: v.Size, Process: v.Process, Path: v.Path, Env: volume.EnvName(v.Name), CreatedAt: v.CreatedAt}
	if used, ok := s.cfg.Volumes.Used(r.Context(), v); ok {
		out.Used = &used
	}
	if snaps, err := s.cfg.Volumes.Snapshots(r.Context(), v.Name); err == nil {
		out.Snapshots = len(snaps)
	}
	out.Enforced, out.NotEnforced = s.cfg.Volumes.Enforced()
	return out
}

func snapshotOut(sn store.Snapshot) wire.Snapshot {
	return wire.Snapshot{ID: sn.ID, Volume: sn.Volume, Name: sn.Name, Size: sn.Size, CreatedAt: sn.CreatedAt}
}

// listAllVolumes lists the volumes of every app the caller may read.
func (s *Server) listAllVolumes(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Volumes == nil {
		return errNoVolumes
	}
	vols, err := s.cfg.Volumes.List(r.Context(), "")
	if err != nil {
		return err
	}
	pol, p := s.cfg.Authz.Policy(), principal(r)
	out := []wire.Volume{}
	for _, v := range vols {
		if pol.Visible(p, v.App) {
			out = append(out, s.volumeOut(r, v))
		}
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) listVolumes(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Volumes == nil {
		return errNoVolumes
	}
	if _, err := s.st.GetApp(r.Context(), r.PathValue("app")); err != nil {
		return err
	}
	vols, err := s.cfg.Volumes.List(r.Context(), r.PathValue("app"))
	if err != nil {
		return err
	}
	out := make([]wire.Volume, 0, len(vols))
	for _, v := range vols {
		out = append(out, s.volumeOut(r, v))
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) createVolume(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Volumes == nil {
		return errNoVolumes
	}
	var req wire.VolumeRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	size, err := volume.ParseSize(req.Size)
	if err != nil {
		return err
	}
	v, err := s.cfg.Volumes.Create(r.Context(), r.PathValue("app"), req.Name, size)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, s.volumeOut(r, v))
}

func (s *Server) getVolume(w http.ResponseWriter, r *http.Request) error {
	v, err := s.appVolume(r)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, s.volumeOut(r, v))
}

func (s *Server) resizeVolume(w http.ResponseWriter, r *http.Request) error {
	v, err := s.appVolume(r)
	if err != nil {
		return err
	}
	var req wire.VolumeRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	size, err := volume.ParseSize(req.Size)
	if err != nil {
		return err
	}
	if v, err = s.cfg.Volumes.Resize(r.Context(), v.Name, size); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, s.volumeOut(r, v))
}

func (s *Server) attachVolume(w http.ResponseWriter, r *http.Request) error {
	v, err := s.appVolume(r)
	if err != nil {
		return err
	}
	var req wire.AttachRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	if v, err = s.cfg.Volumes.Attach(r.Context(), v.Name, v.App, req.Process, req.Path); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, s.volumeOut(r, v))
}

func (s *Server) detachVolume(w http.ResponseWriter, r *http.Request) error {
	v, err := s.appVolume(r)
	if err != nil {
		return err
	}
	if v, err = s.cfg.Volumes.Detach(r.Context(), v.Name); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, s.volumeOut(r, v))
}

func (s *Server) deleteVolume(w http.ResponseWriter, r *http.Request) error {
	v, err := s.appVolume(r)
	if err != nil {
		return err
	}
	force := false
	if f := r.URL.Query().Get("force"); f != "" {
		if force, err = strconv.ParseBool(f); err != nil {
			return invalid("force=%q: give true or false", f)
		}
	}
	if err := s.cfg.Volumes.Delete(r.Context(), v.Name, force, s.cfg.Volumes.InUse); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) listSnapshots(w http.ResponseWriter, r *http.Request) error {
	v, err := s.appVolume(r)
	if err != nil {
		return err
	}
	snaps, err := s.cfg.Volumes.Snapshots(r.Context(), v.Name)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, listOut(snaps, snapshotOut))
}

func (s *Server) createSnapshot(w http.ResponseWriter, r *http.Request) error {
	v, err := s.appVolume(r)
	if err != nil {
		return err
	}
	var req wire.SnapshotRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	sn, err := s.cfg.Volumes.Snapshot(r.Context(), v.Name, req.Name)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, snapshotOut(sn))
}

func (s *Server) deleteSnapshot(w http.ResponseWriter, r *http.Request) error {
	v, err := s.appVolume(r)
	if err != nil {
		return err
	}
	if err := s.cfg.Volumes.DeleteSnapshot(r.Context(), v.Name, r.PathValue("snapshot")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// restoreVolume restores a volume to a snapshot in place, or into a new
// volume with "to".
func (s *Server) restoreVolume(w http.ResponseWriter, r *http.Request) error {
	v, err := s.appVolume(r)
	if err != nil {
		return err
	}
	var req wire.RestoreRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	if req.To != "" {
		if v, err = s.cfg.Volumes.Clone(r.Context(), v.Name, req.Snapshot, req.To); err != nil {
			return err
		}
		return writeJSON(w, http.StatusCreated, s.volumeOut(r, v))
	}
	if v, err = s.cfg.Volumes.Restore(r.Context(), v.Name, req.Snapshot, s.cfg.Volumes.InUse); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, s.volumeOut(r, v))
}
