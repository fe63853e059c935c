package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"paddock.dev/paddock/internal/store"
)

const volumeCols = `name, app, size, csi_id, process, path, created_at`

func scanVolume(r scanner) (store.Volume, error) {
	var v store.Volume
	var created int64
	err := r.Scan(&v.Name, &v.App, &v.Size, &v.CSIID, &v.Process, &v.Path, &created)
	v.CreatedAt = fromMS(created)
	return v, err
}

// CreateVolume records a volume.
func (s *DB) CreateVolume(ctx context.Context, v store.Volume) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO volumes(`+volumeCols+`) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		v.Name, v.App, v.Size, v.CSIID, v.Process, v.Path, ms(v.CreatedAt))
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
	err := s.tx(ctx, func(tx *sql.Tx) error {
		cur, err := getVolume(ctx, tx, name)
		if err != nil {
			return err
		}
		if v, err = fn(cur); err != nil {
			return err
		}
		v.Name, v.App = cur.Name, cur.App
		_, err = tx.ExecContext(ctx, `UPDATE volumes SET size = ?, csi_id = ?, process = ?, path = ? WHERE name = ?`,
			v.Size, v.CSIID, v.Process, v.Path, name)
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

const snapshotCols = `id, volume, name, csi_id, size, created_at`

func scanSnapshot(r scanner) (store.Snapshot, error) {
	var sn store.Snapshot
	var created int64
	err := r.Scan(&sn.ID, &sn.Volume, &sn.Name, &sn.CSIID, &sn.Size, &created)
	sn.CreatedAt = fromMS(created)
	return sn, err
}

// AddSnapshot records a snapshot of a volume.
func (s *DB) AddSnapshot(ctx context.Context, sn store.Snapshot) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO snapshots(`+snapshotCols+`) VALUES (?, ?, ?, ?, ?, ?)`,
		sn.ID, sn.Volume, sn.Name, sn.CSIID, sn.Size, ms(sn.CreatedAt))
	switch {
	case isUnique(err):
		return fmt.Errorf("snapshot %q: %w", sn.ID, store.ErrExists)
	case isForeignKey(err):
		return notFound("volume", sn.Volume)
	}
	return err
}

// GetSnapshot returns a snapshot by ID.
func (s *DB) GetSnapshot(ctx context.Context, id string) (store.Snapshot, error) {
	sn, err := scanSnapshot(s.db.QueryRowContext(ctx, `SELECT `+snapshotCols+` FROM snapshots WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return sn, notFound("snapshot", id)
	}
	return sn, err
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
