package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"paddock.dev/paddock/internal/store"
)

const volumeCols = `name, app, size, csi_id, process, path, created_at, per_instance, template`

func scanVolume(r scanner) (store.Volume, error) {
	var v store.Volume
	var created int64
	err := r.Scan(&v.Name, &v.App, &v.Size, &v.CSIID, &v.Process, &v.Path, &created, &v.PerInstance, &v.Template)
	v.CreatedAt = fromMS(created)
	return v, err
}

// CreateVolume records a volume.
func (s *DB) CreateVolume(ctx context.Context, v store.Volume) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO volumes(`+volumeCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		v.Name, v.App, v.Size, v.CSIID, v.Process, v.Path, ms(v.CreatedAt), v.PerInstance, v.Template)
	switch {
	case isUnique(err):
		return fmt.Errorf("volume %q: %w", v.Name, store.ErrExists)
	case isForeignKey(err):
		return notFound("app", v.App)
	}
	return err
}

func getVolume(ctx context.Context, q querier, name string) (store.Volume, error) {
	v, err := scanVolume(q.QueryRowContext(ctx, `SELECT `+volumeCols+` FROM volumes WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return v, notFound("volume", name)
	}
	return v, err
}

// GetVolume returns the named volume.
func (s *DB) GetVolume(ctx context.Context, name string) (store.Volume, error) {
	return getVolume(ctx, s.db, name)
}

// ListVolumes returns app's volumes, or every volume when app is "".
func (s *DB) ListVolumes(ctx context.Context, app string) ([]store.Volume, error) {
	return queryAll(ctx, s.db, `SELECT `+volumeCols+` FROM volumes WHERE ? = '' OR app = ? ORDER BY name`, scanVolume, app, app)
}

// UpdateVolume replaces a volume's record with what fn makes of it. Its
// name and app do not change.
func (s *DB) UpdateVolume(ctx context.Context, name string, fn func(store.Volume) (store.Volume, error)) (store.Volume, error) {
	var v store.Volume
	err := s.tx(ctx, func(tx *txn) error {
		cur, err := getVolume(ctx, tx, name)
		if err != nil {
			return err
		}
		if v, err = fn(cur); err != nil {
			return err
		}
		v.Name, v.App = cur.Name, cur.App
		_, err = tx.ExecContext(ctx, `UPDATE volumes SET size = ?, csi_id = ?, process = ?, path = ?, per_instance = ?, template = ? WHERE name = ?`,
			v.Size, v.CSIID, v.Process, v.Path, v.PerInstance, v.Template, name)
		return err
	})
	return v, err
}

// DeleteVolume removes a volume's record; store.ErrConflict while it has
// snapshots.
func (s *DB) DeleteVolume(ctx context.Context, name string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM volumes WHERE name = ?`, name)
	if isForeignKey(err) {
		return fmt.Errorf("volume %s has snapshots: %w", name, store.ErrConflict)
	}
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return notFound("volume", name)
	}
	return nil
}

const snapshotCols = `id, volume, name, csi_id, size, created_at, checksum, verified_at, backup`

func scanSnapshot(r scanner) (store.Snapshot, error) {
	var sn store.Snapshot
	var created, verified int64
	err := r.Scan(&sn.ID, &sn.Volume, &sn.Name, &sn.CSIID, &sn.Size, &created, &sn.Checksum, &verified, &sn.Backup)
	sn.CreatedAt = fromMS(created)
	if verified != 0 {
		sn.VerifiedAt = fromMS(verified)
	}
	return sn, err
}

// msOrZero is ms, with 0 for the zero time.
func msOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return ms(t)
}

// AddSnapshot records a snapshot of a volume.
func (s *DB) AddSnapshot(ctx context.Context, sn store.Snapshot) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO snapshots(`+snapshotCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		sn.ID, sn.Volume, sn.Name, sn.CSIID, sn.Size, ms(sn.CreatedAt), sn.Checksum, msOrZero(sn.VerifiedAt), sn.Backup)
	switch {
	case isUnique(err):
		return fmt.Errorf("snapshot %q: %w", sn.ID, store.ErrExists)
	case isForeignKey(err):
		return notFound("volume", sn.Volume)
	}
	return err
}

func getSnapshot(ctx context.Context, q querier, id string) (store.Snapshot, error) {
	sn, err := scanSnapshot(q.QueryRowContext(ctx, `SELECT `+snapshotCols+` FROM snapshots WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return sn, notFound("snapshot", id)
	}
	return sn, err
}

// UpdateSnapshot replaces a snapshot's checksum and verification time
// with what fn makes of them; nothing else of a snapshot changes.
func (s *DB) UpdateSnapshot(ctx context.Context, id string, fn func(store.Snapshot) (store.Snapshot, error)) (store.Snapshot, error) {
	var sn store.Snapshot
	err := s.tx(ctx, func(tx *txn) error {
		cur, err := getSnapshot(ctx, tx, id)
		if err != nil {
			return err
		}
		if sn, err = fn(cur); err != nil {
			return err
		}
		checksum, verified := sn.Checksum, sn.VerifiedAt
		sn = cur
		sn.Checksum, sn.VerifiedAt = checksum, verified
		_, err = tx.ExecContext(ctx, `UPDATE snapshots SET checksum = ?, verified_at = ? WHERE id = ?`, checksum, msOrZero(verified), id)
		return err
	})
	return sn, err
}

const backupCols = `volume, app, every_ms, keep, verify_restore, last_run, last_success, last_error`

func scanBackup(r scanner) (store.BackupSchedule, error) {
	var b store.BackupSchedule
	var every, run, success int64
	err := r.Scan(&b.Volume, &b.App, &every, &b.Keep, &b.VerifyRestore, &run, &success, &b.LastError)
	b.Every = time.Duration(every) * time.Millisecond
	if run != 0 {
		b.LastRun = fromMS(run)
	}
	if success != 0 {
		b.LastSuccess = fromMS(success)
	}
	return b, err
}

// PutBackupSchedule creates or replaces a volume's backup schedule.
func (s *DB) PutBackupSchedule(ctx context.Context, b store.BackupSchedule) error {
	_, err := s.db.ExecContext(ctx, `INSERT OR REPLACE INTO backup_schedules(`+backupCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		b.Volume, b.App, b.Every.Milliseconds(), b.Keep, b.VerifyRestore, msOrZero(b.LastRun), msOrZero(b.LastSuccess), b.LastError)
	if isForeignKey(err) {
		return notFound("volume", b.Volume)
	}
	return err
}

// ListBackupSchedules returns app's backup schedules, or every one when
// app is "".
func (s *DB) ListBackupSchedules(ctx context.Context, app string) ([]store.BackupSchedule, error) {
	return queryAll(ctx, s.db, `SELECT `+backupCols+` FROM backup_schedules WHERE ? = '' OR app = ? ORDER BY volume`, scanBackup, app, app)
}

// DeleteBackupSchedule removes a volume's backup schedule.
func (s *DB) DeleteBackupSchedule(ctx context.Context, volume string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM backup_schedules WHERE volume = ?`, volume)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return notFound("backup schedule of volume", volume)
	}
	return nil
}

// GetSnapshot returns a snapshot by ID.
func (s *DB) GetSnapshot(ctx context.Context, id string) (store.Snapshot, error) {
	return getSnapshot(ctx, s.db, id)
}

// ListSnapshots returns a volume's snapshots, oldest first.
func (s *DB) ListSnapshots(ctx context.Context, volume string) ([]store.Snapshot, error) {
	return queryAll(ctx, s.db, `SELECT `+snapshotCols+` FROM snapshots WHERE volume = ? ORDER BY created_at, id`, scanSnapshot, volume)
}

// DeleteSnapshot removes a snapshot's record.
func (s *DB) DeleteSnapshot(ctx context.Context, id string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM snapshots WHERE id = ?`, id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return notFound("snapshot", id)
	}
	return nil
}
