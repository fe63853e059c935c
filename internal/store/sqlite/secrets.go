package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"paddock.dev/paddock/internal/store"
)

// AddSecretVersion stores one sealed version of a secret.
func (s *DB) AddSecretVersion(ctx context.Context, v store.SecretVersion) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO secrets(app, name, version, sealed, digest, as_file, deleted, created_by, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		v.App, v.Name, v.Version, v.Sealed, v.Digest, v.AsFile, v.Deleted, v.CreatedBy, ms(v.CreatedAt))
	if isUnique(err) {
		return fmt.Errorf("secret %s v%d of %s: %w", v.Name, v.Version, v.App, store.ErrExists)
	}
	if isForeignKey(err) {
		return notFound("app", v.App)
	}
	return err
}

// ListSecretVersions returns the versions of app's secret name, or of all
// its secrets when name is "".
func (s *DB) ListSecretVersions(ctx context.Context, app, name string) ([]store.SecretVersion, error) {
	if _, err := s.GetApp(ctx, app); err != nil {
		return nil, err
	}
	return queryAll(ctx, s.db, `SELECT `+secretCols+` FROM secrets WHERE app = ? AND (? = '' OR name = ?) ORDER BY name, version`, scanSecret, app, name, name)
}

const secretCols = `app, name, version, sealed, digest, as_file, deleted, created_by, created_at`

// LatestSecretVersions returns the newest version of each of app's secrets.
func (s *DB) LatestSecretVersions(ctx context.Context, app string) ([]store.SecretVersion, error) {
	if _, err := s.GetApp(ctx, app); err != nil {
		return nil, err
	}
	return queryAll(ctx, s.db, `SELECT `+secretCols+` FROM secrets s WHERE app = ?
		AND version = (SELECT MAX(version) FROM secrets WHERE app = s.app AND name = s.name) ORDER BY name`, scanSecret, app)
}

// PinnedSecretVersions returns the given versions of app's secrets.
func (s *DB) PinnedSecretVersions(ctx context.Context, app string, pins map[string]int) ([]store.SecretVersion, error) {
	if len(pins) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(pins)
	if err != nil {
		return nil, err
	}
	return queryAll(ctx, s.db, `SELECT `+secretCols+` FROM secrets WHERE app = ?
		AND (name, version) IN (SELECT key, value FROM json_each(?)) ORDER BY name`, scanSecret, app, string(b))
}

func scanSecret(r scanner) (store.SecretVersion, error) {
	var v store.SecretVersion
	var created int64
	err := r.Scan(&v.App, &v.Name, &v.Version, &v.Sealed, &v.Digest, &v.AsFile, &v.Deleted, &v.CreatedBy, &created)
	v.CreatedAt = fromMS(created)
	return v, err
}

// DataKeys returns every data key, oldest first.
func (s *DB) DataKeys(ctx context.Context) ([]store.DataKey, error) {
	return queryAll(ctx, s.db, `SELECT id, kind, wrapped, kek_id, seals, created_at FROM data_keys ORDER BY id`, scanDataKey)
}

func scanDataKey(r scanner) (store.DataKey, error) {
	var k store.DataKey
	var created int64
	err := r.Scan(&k.ID, &k.Kind, &k.Wrapped, &k.KEKID, &k.Seals, &created)
	k.Created = fromMS(created)
	return k, err
}

// AddDataKey stores a wrapped data key and returns it with its ID.
func (s *DB) AddDataKey(ctx context.Context, k store.DataKey) (store.DataKey, error) {
	err := s.db.QueryRowContext(ctx, `INSERT INTO data_keys(kind, wrapped, kek_id, seals, created_at) VALUES (?, ?, ?, ?, ?) RETURNING id`,
		k.Kind, k.Wrapped, k.KEKID, k.Seals, ms(k.Created)).Scan(&k.ID)
	return k, err
}

// CountSeals adds n to a data key's count of seals and returns the new
// count.
func (s *DB) CountSeals(ctx context.Context, id int64, n int64) (int64, error) {
	var total int64
	err := s.db.QueryRowContext(ctx, `UPDATE data_keys SET seals = seals + ? WHERE id = ? RETURNING seals`, n, id).Scan(&total)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, notFound("data key", fmt.Sprint(id))
	}
	return total, err
}

// RewrapDataKeys replaces every data key with what fn makes of it, in one
// transaction.
func (s *DB) RewrapDataKeys(ctx context.Context, fn func(store.DataKey) (store.DataKey, error)) error {
	return s.tx(ctx, func(tx *txn) error {
		keys, err := queryAll(ctx, tx, `SELECT id, kind, wrapped, kek_id, seals, created_at FROM data_keys ORDER BY id`, scanDataKey)
		if err != nil {
			return err
		}
		for _, k := range keys {
			n, err := fn(k)
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `UPDATE data_keys SET wrapped = ?, kek_id = ? WHERE id = ?`, n.Wrapped, n.KEKID, k.ID); err != nil {
				return err
			}
		}
		return nil
	})
}
