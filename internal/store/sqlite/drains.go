package sqlite

import (
	"context"
	"fmt"
	"time"

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

// AddAlertRule adds a rule on an app's metrics.
func (s *DB) AddAlertRule(ctx context.Context, r store.AlertRule) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO alert_rules(id, app, metric, above, threshold, hold_ns, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		r.ID, r.App, r.Metric, r.Above, r.Threshold, int64(r.For), r.CreatedBy, ms(r.CreatedAt))
	switch {
	case isUnique(err):
		return fmt.Errorf("alert rule %q: %w", r.ID, store.ErrExists)
	case isForeignKey(err):
		return notFound("app", r.App)
	}
	return err
}

// ListAlertRules returns app's alert rules, or every rule when app is "".
func (s *DB) ListAlertRules(ctx context.Context, app string) ([]store.AlertRule, error) {
	return queryAll(ctx, s.db, `SELECT id, app, metric, above, threshold, hold_ns, created_by, created_at FROM alert_rules WHERE ? = '' OR app = ? ORDER BY created_at, id`, func(row scanner) (store.AlertRule, error) {
		var r store.AlertRule
		var hold, created int64
		err := row.Scan(&r.ID, &r.App, &r.Metric, &r.Above, &r.Threshold, &hold, &r.CreatedBy, &created)
		r.For, r.CreatedAt = time.Duration(hold), fromMS(created)
		return r, err
	}, app, app)
}

// DeleteAlertRule removes one of app's alert rules.
func (s *DB) DeleteAlertRule(ctx context.Context, app, id string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM alert_rules WHERE app = ? AND id = ?`, app, id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return notFound("alert rule of app "+app, id)
	}
	return nil
}
