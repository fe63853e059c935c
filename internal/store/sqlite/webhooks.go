package sqlite

import (
	"context"
	"fmt"

	"paddock.dev/paddock/internal/store"
)

// AddWebhook records where alerts go.
func (s *DB) AddWebhook(ctx context.Context, w store.Webhook) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO webhooks(id, url, secret, created_at) VALUES (?, ?, ?, ?)`, w.ID, w.URL, w.Secret, ms(w.CreatedAt))
	if isUnique(err) {
		return fmt.Errorf("webhook %q: %w", w.ID, store.ErrExists)
	}
	return err
}

// ListWebhooks returns every webhook, oldest first.
func (s *DB) ListWebhooks(ctx context.Context) ([]store.Webhook, error) {
	return queryAll(ctx, s.db, `SELECT id, url, secret, created_at FROM webhooks ORDER BY created_at, id`, func(r scanner) (store.Webhook, error) {
		var w store.Webhook
		var created int64
		err := r.Scan(&w.ID, &w.URL, &w.Secret, &created)
		w.CreatedAt = fromMS(created)
		return w, err
	})
}

// DeleteWebhook removes a webhook.
func (s *DB) DeleteWebhook(ctx context.Context, id string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM webhooks WHERE id = ?`, id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return notFound("webhook", id)
	}
	return nil
}
