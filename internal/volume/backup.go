package volume

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"

	"paddock.dev/paddock/internal/store"
)

// What CSI has no call for, Paddock does above it with the calls it has:
// a snapshot's content is read from a scratch volume made from it, and a
// volume is filled from a stream or copied at a pace through a scratch
// publication of its own. Scratch publications live in PublishDir beside
// the instances' and, like theirs, only root reaches them.

// csiVolume asks the plugin for a volume of app, from source if not nil,
// without recording it.
func (s *Service) csiVolume(ctx context.Context, a store.App, name string, size int64, source *csi.VolumeContentSource) (*csi.Volume, error) {
	params, err := s.owner(a)
	if err != nil {
		return nil, err
	}
	if s.cfg.Parameters != nil {
		if params == nil {
			params = map[string]string{}
		}
		maps.Copy(params, s.cfg.Parameters(a))
	}
	resp, err := s.cfg.Controller.CreateVolume(ctx, &csi.CreateVolumeRequest{
		Name:                newID("pdk-" + name + "-"),
		CapacityRange:       &csi.CapacityRange{RequiredBytes: size},
		VolumeCapabilities:  []*csi.VolumeCapability{capability},
		Parameters:          params,
		VolumeContentSource: source,
	})
	if err != nil {
		return nil, pluginError("create volume "+name, err)
	}
	return resp.Volume, nil
}

// scratch publishes the plugin's volume id in a scratch folder and
// returns the folder and what takes it back.
func (s *Service) scratch(ctx context.Context, id string) (string, func(), error) {
	dir := filepath.Join(s.cfg.PublishDir, newID("scratch-"))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", nil, err
	}
	// "_scratch" is no volume's name: no volume's holders count it.
	target := filepath.Join(dir, "_scratch")
	// A record as an instance's publication has, so that a crash's
	// leftovers are taken back at the next start (Unpublished).
	b, err := json.Marshal(published{VolumeID: id})
	if err == nil {
		err = os.WriteFile(target+".json", b, 0o600)
	}
	if err != nil {
		os.Remove(target + ".json")
		os.Remove(dir)
		return "", nil, err
	}
	if _, err := s.cfg.Node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{
		VolumeId: id, TargetPath: target, VolumeCapability: capability,
	}); err != nil {
		os.Remove(target + ".json") // nothing is mounted there
		os.Remove(dir)
		return "", nil, pluginError("publish a scratch volume", err)
	}
	return target, func() {
		ctx := context.WithoutCancel(ctx)
		if _, err := s.cfg.Node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target}); err != nil {
			s.log.Warn("unpublish a scratch volume", "dir", dir, "err", err)
			return
		}
		os.Remove(target + ".json")
		os.Remove(dir)
	}, nil
}

// withSnapshot runs fn on the content of a snapshot of a volume of app,
// in a scratch volume made from it.
func (s *Service) withSnapshot(ctx context.Context, a store.App, sn store.Snapshot, size int64, fn func(dir string) error) error {
	vol, err := s.pendingVolume(ctx, a, sn.Volume+"-scratch", size, snapshotSource(sn), "a scratch copy of snapshot "+sn.ID)
	if err != nil {
		return err
	}
	defer s.deleteVolume(ctx, vol.VolumeId)
	dir, done, err := s.scratch(ctx, vol.VolumeId)
	if err != nil {
		return err
	}
	defer done()
	return fn(dir)
}

// volumeOf returns a volume, its app and one of its snapshots.
func (s *Service) volumeOf(ctx context.Context, volume, ref string) (store.Volume, store.App, store.Snapshot, error) {
	v, err := s.st.GetVolume(ctx, volume)
	if err != nil {
		return v, store.App{}, store.Snapshot{}, err
	}
	a, err := s.st.GetApp(ctx, v.App)
	if err != nil {
		return v, a, store.Snapshot{}, err
	}
	sn, err := s.snapshot(ctx, volume, ref)
	return v, a, sn, err
}

// sum records the checksum of a new snapshot's content; a snapshot whose
// content could not be read keeps none, and says so when verified.
func (s *Service) sum(ctx context.Context, a store.App, v store.Volume, sn store.Snapshot) store.Snapshot {
	if s.reachable() != nil {
		return sn // no checksum where Paddock cannot read the content
	}
	var sum string
	err := s.withSnapshot(ctx, a, sn, v.Size, func(dir string) (err error) {
		_, sum, err = manifestOf(ctx, dir, readBudget(v))
		return err
	})
	if err == nil {
		sn, err = s.st.UpdateSnapshot(ctx, sn.ID, func(sn store.Snapshot) (store.Snapshot, error) {
			sn.Checksum, sn.VerifiedAt = sum, s.cfg.Now().UTC()
			return sn, nil
		})
	}
	if err != nil {
		s.log.Warn("no checksum manifest for a snapshot", "volume", v.Name, "snapshot", sn.ID, "err", err)
	}
	return sn
}

// reachable says why Paddock cannot read volumes' content, if it cannot.
func (s *Service) reachable() error {
	if s.cfg.NoContent != "" {
		return fmt.Errorf("%w: %s", ErrInvalid, s.cfg.NoContent)
	}
	return nil
}

// readBudget is the most a checksum of v's content reads: four times its
// size.
func readBudget(v store.Volume) int64 { return 4 * v.Size }

// Verify reads a snapshot's content again and checks it against the
// checksum manifest taken when it was made: ErrCorrupt if it differs.
func (s *Service) Verify(ctx context.Context, volume, ref string) (store.Snapshot, error) {
	if err := s.reachable(); err != nil {
		return store.Snapshot{}, err
	}
	v, a, sn, err := s.volumeOf(ctx, volume, ref)
	if err != nil {
		return sn, err
	}
	if sn.Checksum == "" {
		return sn, fmt.Errorf("%w: snapshot %s of %s has no checksum manifest yet: it is made after the snapshot, reading about a GiB a second; try again shortly (if it never comes, the server log says why)", ErrInvalid, sn.ID, volume)
	}
	var sum string
	err = s.withSnapshot(ctx, a, sn, v.Size, func(dir string) (err error) {
		_, sum, err = manifestOf(ctx, dir, readBudget(v))
		return err
	})
	if err != nil {
		return sn, err
	}
	if sum != sn.Checksum {
		return sn, fmt.Errorf("%w: snapshot %s of %s held %s when made and holds %s now", ErrCorrupt, sn.ID, volume, sn.Checksum, sum)
	}
	return s.st.UpdateSnapshot(ctx, sn.ID, func(sn store.Snapshot) (store.Snapshot, error) {
		sn.VerifiedAt = s.cfg.Now().UTC()
		return sn, nil
	})
}

// Export writes a snapshot's content to w as a stream Import takes: a tar
// stream of its files and, last, their checksum manifest.
func (s *Service) Export(ctx context.Context, volume, ref string, w io.Writer) error {
	if err := s.reachable(); err != nil {
		return err
	}
	v, a, sn, err := s.volumeOf(ctx, volume, ref)
	if err != nil {
		return err
	}
	return s.withSnapshot(ctx, a, sn, v.Size, func(dir string) error {
		return writeStream(ctx, dir, w, contents{Volume: volume, Snapshot: sn.ID, Size: v.Size, Created: sn.CreatedAt})
	})
}

// Import makes a new volume of app from a stream Export wrote, at most
// rate bytes a second (0: as fast as it goes), calling progress with the
// bytes written so far. The volume is recorded only once its content
// matches the stream's manifest; a bad stream leaves nothing behind.
func (s *Service) Import(ctx context.Context, app, name string, size int64, r io.Reader, rate int64, progress func(int64)) (store.Volume, error) {
	if err := s.reachable(); err != nil {
		return store.Volume{}, err
	}
	a, err := s.checkNew(ctx, app, name, size)
	if err != nil {
		return store.Volume{}, err
	}
	vol, err := s.fill(ctx, a, name, size, rate, progress, func(ctx context.Context, dir string, uid int, pace *pacer) error {
		_, err := readStream(ctx, r, dir, uid, uid, size, pace, progress)
		return err
	})
	if err != nil {
		return store.Volume{}, err
	}
	v := store.Volume{Name: name, App: app, Size: max(vol.CapacityBytes, size), CSIID: vol.VolumeId, CreatedAt: s.cfg.Now().UTC()}
	err = s.record(ctx, v)
	s.settle(vol.VolumeId) // named by the record, or deleted
	if err != nil {
		return store.Volume{}, err
	}
	return v, nil
}

// fill makes an empty plugin volume and runs write on it, published in a
// scratch folder; the volume is deleted again if write fails.
func (s *Service) fill(ctx context.Context, a store.App, name string, size, rate int64, progress func(int64), write func(ctx context.Context, dir string, uid int, pace *pacer) error) (*csi.Volume, error) {
	uid := 0
	if s.cfg.UserOf != nil {
		u, err := s.cfg.UserOf(a)
		if err != nil {
			return nil, err
		}
		uid = int(u)
	}
	vol, err := s.pendingVolume(ctx, a, name, size, nil, "a copy being filled for volume "+name)
	if err != nil {
		return nil, err
	}
	err = func() error {
		dir, done, err := s.scratch(ctx, vol.VolumeId)
		if err != nil {
			return err
		}
		defer done()
		if err := write(ctx, dir, uid, newPacer(rate)); err != nil {
			return err
		}
		// On disk before any record points at it: the swap that follows
		// deletes the only other copy.
		return syncfs(dir)
	}()
	if err != nil {
		s.deleteVolume(ctx, vol.VolumeId)
		return nil, err
	}
	return vol, nil
}

// RestoreCopy restores a volume to a snapshot by copying its files into a
// new volume at most rate bytes a second, calling progress with the bytes
// copied, so that the copy leaves the disk to the running apps; then it
// swaps as Restore does. The copy is checked against the snapshot's
// checksum manifest before the swap.
func (s *Service) RestoreCopy(ctx context.Context, volume, ref string, rate int64, progress func(done, total int64), inUse func(store.Volume) bool) (store.Volume, error) {
	if err := s.reachable(); err != nil {
		return store.Volume{}, err
	}
	defer s.lockVolume(volume)()
	v, a, sn, err := s.volumeOf(ctx, volume, ref)
	if err != nil {
		return v, err
	}
	done, err := s.beginRestore(v, inUse)
	if err != nil {
		return v, err
	}
	defer done()
	vol, err := s.copySnapshot(ctx, a, v, sn, rate, progress)
	if err != nil {
		return v, err
	}
	return s.swap(ctx, volume, vol.VolumeId)
}

// copySnapshot copies a snapshot's content into a new plugin volume.
func (s *Service) copySnapshot(ctx context.Context, a store.App, v store.Volume, sn store.Snapshot, rate int64, progress func(done, total int64)) (*csi.Volume, error) {
	var total int64
	var got contents
	var vol *csi.Volume
	err := s.withSnapshot(ctx, a, sn, v.Size, func(src string) (err error) {
		// Sizes only: the content is read once, by the copy, at its pace.
		err = walk(ctx, src, func(e entry, _ *os.File) error {
			total += e.Size
			return nil
		})
		if err != nil {
			return err
		}
		vol, err = s.fill(ctx, a, v.Name, v.Size, rate, nil, func(ctx context.Context, dir string, uid int, pace *pacer) error {
			pr, pw := io.Pipe()
			wrote := make(chan struct{})
			go func() {
				defer close(wrote)
				pw.CloseWithError(writeStream(ctx, src, pw, contents{Volume: v.Name, Snapshot: sn.ID, Size: v.Size}))
			}()
			var err error
			got, err = readStream(ctx, pr, dir, uid, uid, v.Size, pace, func(n int64) {
				if progress != nil {
					progress(n, total)
				}
			})
			pr.CloseWithError(errors.New("copy ended"))
			<-wrote // its files closed before the source is unpublished
			return err
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	if sn.Checksum != "" && got.Checksum != sn.Checksum {
		s.deleteVolume(ctx, vol.VolumeId)
		return nil, fmt.Errorf("%w: the copy of snapshot %s holds %s, the snapshot was %s when made", ErrCorrupt, sn.ID, got.Checksum, sn.Checksum)
	}
	return vol, nil
}

// swap points a volume's record at the plugin's volume id and deletes the
// data it pointed at.
// id is pending until then; the old data is pending until deleted.
func (s *Service) swap(ctx context.Context, volume, id string) (store.Volume, error) {
	var old string
	v, err := s.st.UpdateVolume(ctx, volume, func(v store.Volume) (store.Volume, error) {
		old, v.CSIID = v.CSIID, id
		return v, nil
	})
	if err != nil {
		s.deleteVolume(ctx, id)
		return v, err
	}
	s.settle(id)
	if err := s.pend(old, "the data a restore of "+volume+" replaced"); err == nil {
		s.deleteVolume(ctx, old)
	}
	return v, nil
}

// syncfs flushes the filesystem that holds dir.
func syncfs(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("flush the copy to disk: %w", err)
	}
	return nil
}

// Backups.

// Schedule sets a volume's backup schedule: a snapshot every every,
// keeping the newest keep.
func (s *Service) Schedule(ctx context.Context, volume string, every time.Duration, keep int, verifyRestore bool) (store.BackupSchedule, error) {
	if err := s.reachable(); err != nil && verifyRestore {
		return store.BackupSchedule{}, fmt.Errorf("--verify-restore: %w", err)
	}
	v, err := s.st.GetVolume(ctx, volume)
	if err != nil {
		return store.BackupSchedule{}, err
	}
	if every < time.Minute || every > 366*24*time.Hour {
		return store.BackupSchedule{}, fmt.Errorf("%w: backups every %s: give between 1m and 8784h, e.g. 6h", ErrInvalid, every)
	}
	if keep < 1 || keep > 10000 {
		return store.BackupSchedule{}, fmt.Errorf("%w: keep %d backups: give between 1 and 10000", ErrInvalid, keep)
	}
	b := store.BackupSchedule{Volume: volume, App: v.App, Every: every, Keep: keep, VerifyRestore: verifyRestore}
	for _, cur := range s.schedules(ctx, v.App) {
		if cur.Volume == volume {
			b.LastRun, b.LastSuccess, b.LastError = cur.LastRun, cur.LastSuccess, cur.LastError
		}
	}
	return b, s.st.PutBackupSchedule(ctx, b)
}

// Unschedule stops a volume's backups; the backups taken stay.
func (s *Service) Unschedule(ctx context.Context, volume string) error {
	return s.st.DeleteBackupSchedule(ctx, volume)
}

// Schedules lists app's backup schedules, or all when app is "".
func (s *Service) Schedules(ctx context.Context, app string) ([]store.BackupSchedule, error) {
	list, err := s.st.ListBackupSchedules(ctx, app)
	if list == nil {
		list = []store.BackupSchedule{}
	}
	return list, err
}

func (s *Service) schedules(ctx context.Context, app string) []store.BackupSchedule {
	list, _ := s.st.ListBackupSchedules(ctx, app)
	return list
}

// Backup takes a backup of a volume now: a snapshot, verified against its
// checksum manifest read back from the stored copy and, with
// verifyRestore, restored by copy into a scratch volume and compared.
// Backups beyond keep (0: no limit), oldest first, are deleted. Only a
// verified backup counts: one that fails verification is deleted.
func (s *Service) Backup(ctx context.Context, volume string, keep int, verifyRestore bool) (store.Snapshot, error) {
	defer s.lockVolume(volume)()
	v, err := s.st.GetVolume(ctx, volume)
	if err != nil {
		return store.Snapshot{}, err
	}
	// The checksum is read from the stored copy, the snapshot itself.
	sn, err := s.snapshotOf(ctx, v, "", true)
	if err != nil {
		return sn, err
	}
	id := sn.ID
	fail := func(err error) (store.Snapshot, error) {
		if derr := s.deleteSnapshot(context.WithoutCancel(ctx), volume, id); derr != nil {
			s.log.Warn("delete a backup that failed", "volume", volume, "snapshot", id, "err", derr)
		}
		return sn, fmt.Errorf("backup of %s: %w", volume, err)
	}
	if sn.Checksum == "" && s.reachable() == nil {
		return fail(errors.New("its content could not be read for a checksum manifest (the server log says why)"))
	}
	if verifyRestore {
		if err := s.reachable(); err != nil {
			return fail(err)
		}
		a, err := s.st.GetApp(ctx, v.App)
		if err != nil {
			return fail(err)
		}
		vol, err := s.copySnapshot(ctx, a, v, sn, 0, nil)
		if err != nil {
			return fail(fmt.Errorf("restore into a scratch volume: %w", err))
		}
		s.deleteVolume(ctx, vol.VolumeId)
	}
	if keep > 0 {
		list, err := s.st.ListSnapshots(ctx, volume)
		if err != nil {
			return sn, err
		}
		// Only verified backups count, and only they are pruned.
		list = slices.DeleteFunc(list, func(sn store.Snapshot) bool { return !sn.Backup || sn.VerifiedAt.IsZero() })
		for len(list) > keep {
			if err := s.deleteSnapshot(ctx, volume, list[0].ID); err != nil {
				return sn, fmt.Errorf("delete an old backup: %w", err)
			}
			list = list[1:]
		}
	}
	return sn, nil
}

// RunBackups takes the scheduled backups until ctx ends, looking every
// tick; each run, failure and missed backup is told to event.
func (s *Service) RunBackups(ctx context.Context, tick time.Duration, event func(app, msg string)) {
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		s.backupsDue(ctx, event)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// backupsDue takes the backups that are due.
func (s *Service) backupsDue(ctx context.Context, event func(app, msg string)) {
	for _, b := range s.schedules(ctx, "") {
		now := s.cfg.Now().UTC()
		if !b.LastRun.IsZero() && now.Sub(b.LastRun) < b.Every {
			continue
		}
		if !b.LastRun.IsZero() && now.Sub(b.LastRun) >= 2*b.Every {
			event(b.App, fmt.Sprintf("backup of volume %s missed: the last ran %s ago, and one is due every %s", b.Volume, now.Sub(b.LastRun).Round(time.Second), b.Every))
		}
		// However an app fills its volume, one backup does not hold up
		// the others for long: 10 minutes and a second for each 20 MiB.
		timeout := 10 * time.Minute
		if v, err := s.st.GetVolume(ctx, b.Volume); err == nil {
			timeout += time.Duration(v.Size/(20<<20)) * time.Second
		}
		bctx, cancel := context.WithTimeout(ctx, timeout)
		sn, err := s.scheduled(bctx, b)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			event(b.App, fmt.Sprintf("backup of volume %s FAILED: %v", b.Volume, err))
		default:
			event(b.App, fmt.Sprintf("backup of volume %s taken and verified: snapshot %s, %s", b.Volume, sn.ID, sn.Checksum))
		}
	}
}

// scheduled takes a backup under its schedule and records the run.
func (s *Service) scheduled(ctx context.Context, b store.BackupSchedule) (store.Snapshot, error) {
	b.LastRun = s.cfg.Now().UTC()
	sn, err := s.Backup(ctx, b.Volume, b.Keep, b.VerifyRestore)
	b.LastError = ""
	if err != nil {
		b.LastError = err.Error()
	} else {
		b.LastSuccess = s.cfg.Now().UTC()
	}
	if perr := s.st.PutBackupSchedule(context.WithoutCancel(ctx), b); perr != nil && !errors.Is(perr, store.ErrNotFound) {
		s.log.Warn("record a backup run", "volume", b.Volume, "err", perr)
	}
	return sn, err
}

// BackupNow takes a backup of a volume at once: under its schedule, whose
// retention it follows and which records it, if it has one.
func (s *Service) BackupNow(ctx context.Context, volume string) (store.Snapshot, error) {
	v, err := s.st.GetVolume(ctx, volume)
	if err != nil {
		return store.Snapshot{}, err
	}
	for _, b := range s.schedules(ctx, v.App) {
		if b.Volume == volume {
			return s.scheduled(ctx, b)
		}
	}
	return s.Backup(ctx, volume, 0, false)
}
