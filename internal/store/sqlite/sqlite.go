// Package sqlite is the embedded Store: one SQLite file in WAL mode with
// full fsync, through a pure-Go driver so the binary needs no cgo.
package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"modernc.org/sqlite" // registers the "sqlite" driver
	sqlite3 "modernc.org/sqlite/lib"

	"paddock.dev/paddock/internal/store"
)

var _ store.Store = (*DB)(nil)

// DB is a Store kept in one SQLite file.
type DB struct {
	db *sql.DB
}

var schema = []string{
	`CREATE TABLE apps (
		name TEXT PRIMARY KEY,
		created_at INTEGER NOT NULL,
		release INTEGER NOT NULL DEFAULT 0,
		formation TEXT NOT NULL DEFAULT '{}'
	)`,
	`CREATE TABLE builds (
		id TEXT PRIMARY KEY,
		app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
		artifact TEXT NOT NULL,
		manifest TEXT NOT NULL,
		created_at INTEGER NOT NULL
	)`,
	`CREATE TABLE releases (
		app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
		version INTEGER NOT NULL,
		build TEXT NOT NULL,
		artifact TEXT NOT NULL,
		manifest TEXT NOT NULL,
		config TEXT NOT NULL,
		description TEXT NOT NULL,
		created_by TEXT NOT NULL,
		created_at INTEGER NOT NULL,
		status TEXT NOT NULL,
		reason TEXT NOT NULL DEFAULT '',
		PRIMARY KEY (app, version)
	)`,
	`CREATE TABLE domains (
		host TEXT PRIMARY KEY,
		app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
		created_at INTEGER NOT NULL
	)`,
	`CREATE TABLE events (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
		time INTEGER NOT NULL,
		process TEXT NOT NULL,
		instance TEXT NOT NULL,
		message TEXT NOT NULL
	)`,
	`CREATE INDEX events_app_time ON events(app, time)`,
	`CREATE TABLE tokens (
		name TEXT PRIMARY KEY,
		hash TEXT NOT NULL UNIQUE,
		role TEXT NOT NULL,
		created_at INTEGER NOT NULL
	)`,
	// Identity: users, tokens with an ID, teams and grants.
	`DROP TABLE tokens`,
	`CREATE TABLE users (
		name TEXT PRIMARY KEY,
		role TEXT NOT NULL,
		disabled INTEGER NOT NULL DEFAULT 0,
		created_at INTEGER NOT NULL
	)`,
	`CREATE TABLE tokens (
		id TEXT PRIMARY KEY,
		name TEXT NOT NULL UNIQUE,
		user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
		hash TEXT NOT NULL,
		role TEXT NOT NULL,
		apps TEXT NOT NULL,
		created_at INTEGER NOT NULL,
		expires_at INTEGER,
		last_used INTEGER
	)`,
	`CREATE TABLE teams (
		name TEXT PRIMARY KEY,
		created_at INTEGER NOT NULL
	)`,
	`CREATE TABLE team_members (
		team TEXT NOT NULL REFERENCES teams(name) ON DELETE CASCADE,
		user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
		PRIMARY KEY (team, user)
	)`,
	`CREATE TABLE grants (
		app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
		team TEXT NOT NULL REFERENCES teams(name) ON DELETE CASCADE,
		role TEXT NOT NULL,
		PRIMARY KEY (app, team)
	)`,
	`ALTER TABLE apps ADD COLUMN owner TEXT NOT NULL DEFAULT ''`,
	// App IDs come from a counter, never from the rowid, which SQLite
	// hands out again once the newest app is deleted: an ID names the
	// app's user on the machine and must never pass to another app.
	`CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)`,
	`ALTER TABLE apps ADD COLUMN id INTEGER NOT NULL DEFAULT 0`,
	`UPDATE apps SET id = rowid`,
	`INSERT INTO counters(name, value) VALUES ('app_id', (SELECT COALESCE(MAX(id), 0) FROM apps))`,
	`CREATE UNIQUE INDEX apps_id ON apps(id)`,
	`ALTER TABLE tokens ADD COLUMN parent TEXT NOT NULL DEFAULT ''`,
	`CREATE TABLE secrets (
		app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
		name TEXT NOT NULL,
		version INTEGER NOT NULL,
		sealed BLOB,
		digest TEXT NOT NULL,
		as_file INTEGER NOT NULL,
		deleted INTEGER NOT NULL,
		created_by TEXT NOT NULL,
		created_at INTEGER NOT NULL,
		PRIMARY KEY (app, name, version)
	)`,
	`ALTER TABLE releases ADD COLUMN secrets TEXT NOT NULL DEFAULT '{}'`,
	`CREATE TABLE data_keys (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		kind TEXT NOT NULL,
		wrapped BLOB NOT NULL,
		kek_id TEXT NOT NULL,
		seals INTEGER NOT NULL,
		created_at INTEGER NOT NULL
	)`,
}

// Open opens or creates the store at path and brings its schema up to date.
func Open(ctx context.Context, path string) (*DB, error) {
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)" +
		"&_pragma=foreign_keys(1)&_pragma=busy_timeout(10000)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	// One connection: SQLite has one writer, and a single connection makes
	// every transaction serial without SQLITE_BUSY retries.
	db.SetMaxOpenConns(1)
	s := &DB{db: db}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return s, nil
}

func (s *DB) migrate(ctx context.Context) error {
	var v int
	if err := s.db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return err
	}
	if v > len(schema) {
		return fmt.Errorf("store schema version %d is newer than this binary knows (%d): run a newer paddock", v, len(schema))
	}
	if v == len(schema) {
		return nil
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		for _, stmt := range schema[v:] {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("migrate: %w", err)
			}
		}
		_, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", len(schema)))
		return err
	})
}

// Close closes the database.
func (s *DB) Close() error { return s.db.Close() }

func (s *DB) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

func ms(t time.Time) int64     { return t.UnixMilli() }
func fromMS(v int64) time.Time { return time.UnixMilli(v).UTC() }

func hasCode(err error, code int) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code() == code
}

func isUnique(err error) bool {
	return hasCode(err, sqlite3.SQLITE_CONSTRAINT_UNIQUE) || hasCode(err, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY)
}

func isForeignKey(err error) bool { return hasCode(err, sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY) }

func notFound(what, name string) error {
	return fmt.Errorf("%s %q: %w", what, name, store.ErrNotFound)
}

// CreateApp adds an app with the next app ID; store.ErrExists if the name
// is taken.
func (s *DB) CreateApp(ctx context.Context, a store.App) (store.App, error) {
	f, err := json.Marshal(a.Formation)
	if err != nil {
		return a, err
	}
	err = s.tx(ctx, func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx, `UPDATE counters SET value = value + 1 WHERE name = 'app_id' RETURNING value`).Scan(&a.ID); err != nil {
			return fmt.Errorf("next app id: %w", err)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO apps(id, name, created_at, release, formation, owner) VALUES (?, ?, ?, ?, ?, ?)`,
			a.ID, a.Name, ms(a.CreatedAt), a.Release, string(f), a.Owner)
		return err
	})
	if isUnique(err) {
		return a, fmt.Errorf("app %q: %w", a.Name, store.ErrExists)
	}
	return a, err
}

type scanner interface{ Scan(...any) error }

type rowsQuerier interface {
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
}

// queryAll runs query and scans every row it returns.
func queryAll[T any](ctx context.Context, q rowsQuerier, query string, scan func(scanner) (T, error), args ...any) ([]T, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

func scanApp(r scanner) (store.App, error) {
	var a store.App
	var created int64
	var formation string
	if err := r.Scan(&a.ID, &a.Name, &created, &a.Release, &formation, &a.Owner); err != nil {
		return a, err
	}
	a.CreatedAt = fromMS(created)
	if err := json.Unmarshal([]byte(formation), &a.Formation); err != nil {
		return a, fmt.Errorf("app %s: formation: %w", a.Name, err)
	}
	if a.Formation == nil {
		a.Formation = map[string]int{}
	}
	return a, nil
}

const appCols = `id, name, created_at, release, formation, owner`

// GetApp returns the named app.
func (s *DB) GetApp(ctx context.Context, name string) (store.App, error) {
	return getApp(ctx, s.db, name)
}

type querier interface {
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

func getApp(ctx context.Context, q querier, name string) (store.App, error) {
	a, err := scanApp(q.QueryRowContext(ctx, `SELECT `+appCols+` FROM apps WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return a, notFound("app", name)
	}
	return a, err
}

// ListApps returns every app by name.
func (s *DB) ListApps(ctx context.Context) ([]store.App, error) {
	return queryAll(ctx, s.db, `SELECT `+appCols+` FROM apps ORDER BY name`, scanApp)
}

// DeleteApp removes the app and everything that belongs to it.
func (s *DB) DeleteApp(ctx context.Context, name string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM apps WHERE name = ?`, name)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return notFound("app", name)
	}
	return nil
}

// SetFormation merges counts into the app's formation.
func (s *DB) SetFormation(ctx context.Context, app string, counts map[string]int) (store.App, error) {
	var a store.App
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var err error
		if a, err = getApp(ctx, tx, app); err != nil {
			return err
		}
		for k, v := range counts {
			a.Formation[k] = v
		}
		f, err := json.Marshal(a.Formation)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE apps SET formation = ? WHERE name = ?`, string(f), app)
		return err
	})
	return a, err
}

// SetRelease points app at release to if it still points at from.
func (s *DB) SetRelease(ctx context.Context, app string, from, to int) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if to != 0 {
			if _, err := getRelease(ctx, tx, app, to); err != nil {
				return err
			}
		}
		a, err := getApp(ctx, tx, app)
		if err != nil {
			return err
		}
		if a.Release != from {
			return fmt.Errorf("app %s: current release is v%d, not v%d: %w", app, a.Release, from, store.ErrConflict)
		}
		_, err = tx.ExecContext(ctx, `UPDATE apps SET release = ? WHERE name = ?`, to, app)
		return err
	})
}

// CreateBuild records a finished build.
func (s *DB) CreateBuild(ctx context.Context, b store.Build) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO builds(id, app, artifact, manifest, created_at) VALUES (?, ?, ?, ?, ?)`,
		b.ID, b.App, b.Artifact, string(b.Manifest), ms(b.CreatedAt))
	if isUnique(err) {
		return fmt.Errorf("build %q: %w", b.ID, store.ErrExists)
	}
	return err
}

// GetBuild returns a build by ID.
func (s *DB) GetBuild(ctx context.Context, id string) (store.Build, error) {
	var b store.Build
	var manifest string
	var created int64
	err := s.db.QueryRowContext(ctx, `SELECT id, app, artifact, manifest, created_at FROM builds WHERE id = ?`, id).
		Scan(&b.ID, &b.App, &b.Artifact, &manifest, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return b, notFound("build", id)
	}
	b.Manifest = json.RawMessage(manifest)
	b.CreatedAt = fromMS(created)
	return b, err
}

const releaseCols = `app, version, build, artifact, manifest, config, description, created_by, created_at, status, reason, secrets`

func scanRelease(r scanner) (store.Release, error) {
	var rel store.Release
	var manifest, config, secrets string
	var created int64
	err := r.Scan(&rel.App, &rel.Version, &rel.Build, &rel.Artifact, &manifest, &config,
		&rel.Description, &rel.CreatedBy, &created, &rel.Status, &rel.Reason, &secrets)
	if err != nil {
		return rel, err
	}
	if err := json.Unmarshal([]byte(secrets), &rel.Secrets); err != nil {
		return rel, fmt.Errorf("release %s v%d: secrets: %w", rel.App, rel.Version, err)
	}
	if manifest != "" {
		rel.Manifest = json.RawMessage(manifest)
	}
	rel.CreatedAt = fromMS(created)
	if err := json.Unmarshal([]byte(config), &rel.Config); err != nil {
		return rel, fmt.Errorf("release %s v%d: config: %w", rel.App, rel.Version, err)
	}
	if rel.Config == nil {
		rel.Config = map[string]string{}
	}
	return rel, nil
}

func getRelease(ctx context.Context, q querier, app string, version int) (store.Release, error) {
	rel, err := scanRelease(q.QueryRowContext(ctx, `SELECT `+releaseCols+` FROM releases WHERE app = ? AND version = ?`, app, version))
	if errors.Is(err, sql.ErrNoRows) {
		return rel, notFound("release", fmt.Sprintf("%s v%d", app, version))
	}
	return rel, err
}

// AddRelease creates the app's next release from fn and makes it current.
func (s *DB) AddRelease(ctx context.Context, app string, fn store.NewRelease) (store.Release, error) {
	var rel store.Release
	err := s.tx(ctx, func(tx *sql.Tx) error {
		a, err := getApp(ctx, tx, app)
		if err != nil {
			return err
		}
		var cur *store.Release
		if a.Release != 0 {
			r, err := getRelease(ctx, tx, app, a.Release)
			if err != nil {
				return err
			}
			cur = &r
		}
		if rel, err = fn(a, cur); err != nil {
			return err
		}
		var last int
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM releases WHERE app = ?`, app).Scan(&last); err != nil {
			return err
		}
		rel.App, rel.Version = app, last+1
		if rel.Status == "" {
			rel.Status = store.StatusPending
		}
		config, err := json.Marshal(rel.Config)
		if err != nil {
			return err
		}
		secrets, err := json.Marshal(rel.Secrets)
		if err != nil {
			return err
		}
		if rel.Secrets == nil {
			secrets = []byte("{}")
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO releases(`+releaseCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			rel.App, rel.Version, rel.Build, rel.Artifact, string(rel.Manifest), string(config),
			rel.Description, rel.CreatedBy, ms(rel.CreatedAt), rel.Status, rel.Reason, string(secrets)); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE apps SET release = ? WHERE name = ?`, rel.Version, app)
		return err
	})
	return rel, err
}

// GetRelease returns one release of app.
func (s *DB) GetRelease(ctx context.Context, app string, version int) (store.Release, error) {
	return getRelease(ctx, s.db, app, version)
}

// ListReleases returns app's releases, newest first.
func (s *DB) ListReleases(ctx context.Context, app string) ([]store.Release, error) {
	if _, err := s.GetApp(ctx, app); err != nil {
		return nil, err
	}
	return queryAll(ctx, s.db, `SELECT `+releaseCols+` FROM releases WHERE app = ? ORDER BY version DESC`, scanRelease, app)
}

// SetReleaseStatus records the outcome of a rollout.
func (s *DB) SetReleaseStatus(ctx context.Context, app string, version int, status, reason string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE releases SET status = ?, reason = ? WHERE app = ? AND version = ?`, status, reason, app, version)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return notFound("release", fmt.Sprintf("%s v%d", app, version))
	}
	return nil
}

// AddDomain routes a host to an app; store.ErrExists if the host is taken.
func (s *DB) AddDomain(ctx context.Context, d store.Domain) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO domains(host, app, created_at) VALUES (?, ?, ?)`, d.Host, d.App, ms(d.CreatedAt))
	if isUnique(err) {
		return fmt.Errorf("domain %q: %w", d.Host, store.ErrExists)
	}
	if isForeignKey(err) {
		return notFound("app", d.App)
	}
	return err
}

// RemoveDomain removes host from app.
func (s *DB) RemoveDomain(ctx context.Context, app, host string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM domains WHERE app = ? AND host = ?`, app, host)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return notFound("domain", host)
	}
	return nil
}

// ListDomains returns the domains of app, or of every app when app is "".
func (s *DB) ListDomains(ctx context.Context, app string) ([]store.Domain, error) {
	return queryAll(ctx, s.db, `SELECT host, app, created_at FROM domains WHERE ? = '' OR app = ? ORDER BY host`,
		func(r scanner) (store.Domain, error) {
			var d store.Domain
			var created int64
			err := r.Scan(&d.Host, &d.App, &created)
			d.CreatedAt = fromMS(created)
			return d, err
		}, app, app)
}

// maxEvents bounds the events kept per app.
const maxEvents = 10000

// AddEvent appends a platform event to an app's history.
func (s *DB) AddEvent(ctx context.Context, e store.Event) error {
	res, err := s.db.ExecContext(ctx, `INSERT INTO events(app, time, process, instance, message) VALUES (?, ?, ?, ?, ?)`,
		e.App, e.Time.UnixMicro(), e.Process, e.Instance, e.Message)
	if isForeignKey(err) {
		return notFound("app", e.App)
	}
	if err != nil {
		return err
	}
	// Now and then, drop what is past an app's bound.
	if id, _ := res.LastInsertId(); id%100 == 0 {
		_, err = s.db.ExecContext(ctx, `DELETE FROM events WHERE app = ? AND id <= ?`, e.App, id-maxEvents)
	}
	return err
}

// ListEvents returns app's events at or after since with an ID above
// afterID, oldest first.
func (s *DB) ListEvents(ctx context.Context, app string, since time.Time, afterID int64) ([]store.Event, error) {
	// From the start, the newest maxEvents; after an ID, what follows it.
	q := `SELECT * FROM (SELECT id, app, time, process, instance, message FROM events
		WHERE app = ? AND time >= ? AND id > ? ORDER BY id DESC LIMIT ?) ORDER BY id`
	if afterID > 0 {
		q = `SELECT id, app, time, process, instance, message FROM events
		WHERE app = ? AND time >= ? AND id > ? ORDER BY id LIMIT ?`
	}
	return queryAll(ctx, s.db, q, func(r scanner) (store.Event, error) {
		var e store.Event
		var t int64
		err := r.Scan(&e.ID, &e.App, &t, &e.Process, &e.Instance, &e.Message)
		e.Time = time.UnixMicro(t).UTC()
		return e, err
	}, app, since.UnixMicro(), afterID, maxEvents)
}
