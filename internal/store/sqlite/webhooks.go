package sqlite

import (
	"context"
	"database/sql"
	"errors"
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

// PutCredential creates or replaces a credential.
func (s *DB) PutCredential(ctx context.Context, c store.Credential) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO credentials(name, username, password, updated_by, updated_at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT(name) DO UPDATE SET username = excluded.username, password = excluded.password, updated_by = excluded.updated_by, updated_at = excluded.updated_at`,
		c.Name, c.Username, c.Password, c.UpdatedBy, ms(c.UpdatedAt))
	return err
}

// GetCredential returns a credential.
func (s *DB) GetCredential(ctx context.Context, name string) (store.Credential, error) {
	c := store.Credential{Name: name}
	var updated int64
	err := s.db.QueryRowContext(ctx, `SELECT username, password, updated_by, updated_at FROM credentials WHERE name = ?`, name).
		Scan(&c.Username, &c.Password, &c.UpdatedBy, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return c, notFound("credential", name)
	}
	c.UpdatedAt = fromMS(updated)
	return c, err
}

// DeleteCredential removes a credential.
func (s *DB) DeleteCredential(ctx context.Context, name string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM credentials WHERE name = ?`, name)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return notFound("credential", name)
	}
	return nil
}
