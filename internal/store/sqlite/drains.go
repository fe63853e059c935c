package sqlite

import (
	"context"
	"fmt"

	"paddock.dev/paddock/internal/store"
)

// AddDrain records a drain of an app's logs.
func (s *DB) AddDrain(ctx context.Context, d store.Drain) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO drains(id, app, url, ca, created_at) VALUES (?, ?, ?, ?, ?)`, d.ID, d.App, d.URL, d.CA, ms(d.CreatedAt))
	switch {
	case isUnique(err):
		return fmt.Errorf("drain %q: %w", d.ID, store.ErrExists)
	case isForeignKey(err):
		return notFound("app", d.App)
	}
	return err
}

// ListDrains returns app's drains, or every drain when app is "".
func (s *DB) ListDrains(ctx context.Context, app string) ([]store.Drain, error) {
	return queryAll(ctx, s.db, `SELECT id, app, url, ca, created_at FROM drains WHERE ? = '' OR app = ? ORDER BY created_at, id`, func(r scanner) (store.Drain, error) {
		var d store.Drain
		var created int64
		err := r.Scan(&d.ID, &d.App, &d.URL, &d.CA, &created)
		d.CreatedAt = fromMS(created)
		return d, err
	}, app, app)
}

// DeleteDrain removes one of app's drains.
func (s *DB) DeleteDrain(ctx context.Context, app, id string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM drains WHERE app = ? AND id = ?`, app, id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return notFound("drain of app "+app, id)
	}
	return nil
}
