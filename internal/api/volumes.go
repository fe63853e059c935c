package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"paddock.dev/paddock/internal/manifest"
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
	AttachPerInstance(ctx context.Context, name, app, process, path string) (store.Volume, error)
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
	Verify(ctx context.Context, volume, ref string) (store.Snapshot, error)
	Export(ctx context.Context, volume, ref string, w io.Writer) error
	Import(ctx context.Context, app, name string, size int64, r io.Reader, rate int64, progress func(int64)) (store.Volume, error)
	RestoreCopy(ctx context.Context, volume, ref string, rate int64, progress func(done, total int64), inUse func(store.Volume) bool) (store.Volume, error)
	Schedule(ctx context.Context, volume string, every time.Duration, keep int, verifyRestore bool) (store.BackupSchedule, error)
	Unschedule(ctx context.Context, volume string) error
	Schedules(ctx context.Context, app string) ([]store.BackupSchedule, error)
	BackupNow(ctx context.Context, volume string) (store.Snapshot, error)
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
	out := wire.Volume{Name: v.Name, App: v.App, Size: v.Size, Process: v.Process, Path: v.Path, Env: volume.EnvName(v.Name), CreatedAt: v.CreatedAt,
		PerInstance: v.PerInstance, Template: v.Template}
	if v.Template != "" {
		out.Env = volume.EnvName(v.Template)
	}
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
	return wire.Snapshot{ID: sn.ID, Volume: sn.Volume, Name: sn.Name, Size: sn.Size, CreatedAt: sn.CreatedAt,
		Checksum: sn.Checksum, VerifiedAt: sn.VerifiedAt, Backup: sn.Backup}
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
	out := []wire.Volume{}
	for _, v := range visible(s, r, vols, func(v store.Volume) string { return v.App }) {
		out = append(out, s.volumeOut(r, v))
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
	attach := s.cfg.Volumes.Attach
	if req.PerInstance {
		attach = s.cfg.Volumes.AttachPerInstance
	}
	if v, err = attach(r.Context(), v.Name, v.App, req.Process, req.Path); err != nil {
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
	if req.Rate == "" {
		if v, err = s.cfg.Volumes.Restore(r.Context(), v.Name, req.Snapshot, s.cfg.Volumes.InUse); err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, s.volumeOut(r, v))
	}
	rate, err := parseRate(req.Rate)
	if err != nil {
		return err
	}
	return s.copying(w, r, func(progress func(done, total int64)) (store.Volume, error) {
		return s.cfg.Volumes.RestoreCopy(r.Context(), v.Name, req.Snapshot, rate, progress, s.cfg.Volumes.InUse)
	})
}

// parseRate parses a copy's rate: bytes a second, "50MiB" or "50MiB/s".
func parseRate(s string) (int64, error) {
	n, err := manifest.ParseSize(strings.TrimSuffix(s, "/s"))
	if err != nil || n < 64<<10 {
		return 0, invalid("rate %q: give bytes a second of at least 64KiB, e.g. 50MiB/s", s)
	}
	return n, nil
}

// copying runs a copy and answers with a stream of its progress, at most
// one event a second, then the volume or the error. An error before any
// progress is a plain answer.
func (s *Server) copying(w http.ResponseWriter, r *http.Request, run func(progress func(done, total int64)) (store.Volume, error)) error {
	// Progress goes out while an import's body still comes in.
	if rc := reqInfoOf(r).rc; rc != nil {
		rc.EnableFullDuplex()
		// A body left unread would race the server's read of the next
		// request (golang/go#68560): close it when done.
		defer r.Body.Close()
	}
	st := &stream{w: w}
	var last time.Time
	v, err := run(func(done, total int64) {
		if now := time.Now(); now.Sub(last) >= time.Second {
			last = now
			st.send(wire.VolumeEvent{Type: wire.VolumeProgress, Done: done, Total: total})
		}
	})
	st.mu.Lock()
	started := st.started
	st.mu.Unlock()
	if err != nil && !started {
		return err
	}
	if err != nil {
		st.send(wire.VolumeEvent{Type: wire.VolumeError, Error: s.wireError(r, err)})
		return &streamedError{s.toError(r, err)}
	}
	out := s.volumeOut(r, v)
	st.send(wire.VolumeEvent{Type: wire.VolumeDone, Volume: &out})
	return nil
}

// importVolume makes a new volume from an exported stream, the body.
func (s *Server) importVolume(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Volumes == nil {
		return errNoVolumes
	}
	q := r.URL.Query()
	size, err := volume.ParseSize(q.Get("size"))
	if err != nil {
		return err
	}
	var rate int64
	if q.Get("rate") != "" {
		if rate, err = parseRate(q.Get("rate")); err != nil {
			return err
		}
	}
	if _, err := s.st.GetApp(r.Context(), r.PathValue("app")); err != nil {
		return err
	}
	// The stream holds the files and their headers: a little more than
	// the volume's size.
	body := http.MaxBytesReader(w, r.Body, size+size/8+64<<20)
	return s.copying(w, r, func(progress func(done, total int64)) (store.Volume, error) {
		return s.cfg.Volumes.Import(r.Context(), r.PathValue("app"), r.PathValue("volume"), size, body, rate, func(n int64) { progress(n, 0) })
	})
}

// exportSnapshot streams a snapshot's content and checksum manifest.
func (s *Server) exportSnapshot(w http.ResponseWriter, r *http.Request) error {
	v, err := s.appVolume(r)
	if err != nil {
		return err
	}
	if _, err := s.cfg.Volumes.Snapshots(r.Context(), v.Name); err != nil {
		return err
	}
	cw := &countingWriter{w: w, header: func() {
		w.Header().Set("Content-Type", "application/x-tar")
		w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", v.Name+".tar"))
	}}
	if err := s.cfg.Volumes.Export(r.Context(), v.Name, r.PathValue("snapshot"), cw); err != nil {
		if cw.n == 0 {
			return err
		}
		// Cut short mid-stream: the client sees a stream without its
		// manifest, which import refuses.
		s.log.Warn("export of a snapshot cut short", "volume", v.Name, "err", err)
		panic(http.ErrAbortHandler)
	}
	return nil
}

// countingWriter sets the headers before the first byte and counts bytes.
type countingWriter struct {
	w      io.Writer
	header func()
	n      int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	if c.n == 0 && c.header != nil {
		c.header()
		c.header = nil
	}
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}

func (s *Server) verifySnapshot(w http.ResponseWriter, r *http.Request) error {
	v, err := s.appVolume(r)
	if err != nil {
		return err
	}
	sn, err := s.cfg.Volumes.Verify(r.Context(), v.Name, r.PathValue("snapshot"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, snapshotOut(sn))
}

func (s *Server) backupOut(r *http.Request, b store.BackupSchedule) wire.BackupSchedule {
	out := wire.BackupSchedule{Volume: b.Volume, App: b.App, Every: b.Every.String(), Keep: b.Keep, VerifyRestore: b.VerifyRestore,
		LastRun: b.LastRun, LastSuccess: b.LastSuccess, LastError: b.LastError, NextRun: b.LastRun.Add(b.Every)}
	if b.LastRun.IsZero() {
		out.NextRun = s.now()
	}
	if snaps, err := s.cfg.Volumes.Snapshots(r.Context(), b.Volume); err == nil {
		for _, sn := range snaps {
			if sn.Backup {
				out.Backups++
			}
		}
	}
	return out
}

// listBackups lists the backup schedules of every app the caller may read.
func (s *Server) listBackups(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Volumes == nil {
		return errNoVolumes
	}
	list, err := s.cfg.Volumes.Schedules(r.Context(), r.URL.Query().Get("app"))
	if err != nil {
		return err
	}
	out := []wire.BackupSchedule{}
	for _, b := range visible(s, r, list, func(b store.BackupSchedule) string { return b.App }) {
		out = append(out, s.backupOut(r, b))
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) scheduleBackups(w http.ResponseWriter, r *http.Request) error {
	v, err := s.appVolume(r)
	if err != nil {
		return err
	}
	var req wire.ScheduleRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	every, err := time.ParseDuration(req.Every)
	if err != nil {
		return invalid("every %q: give a duration such as 6h or 30m", req.Every)
	}
	b, err := s.cfg.Volumes.Schedule(r.Context(), v.Name, every, req.Keep, req.VerifyRestore)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, s.backupOut(r, b))
}

func (s *Server) unscheduleBackups(w http.ResponseWriter, r *http.Request) error {
	v, err := s.appVolume(r)
	if err != nil {
		return err
	}
	if err := s.cfg.Volumes.Unschedule(r.Context(), v.Name); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// backupNow takes a verified backup at once, under the volume's schedule's
// retention if it has one.
func (s *Server) backupNow(w http.ResponseWriter, r *http.Request) error {
	v, err := s.appVolume(r)
	if err != nil {
		return err
	}
	sn, err := s.cfg.Volumes.BackupNow(r.Context(), v.Name)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, snapshotOut(sn))
}
