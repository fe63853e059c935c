// Package sqlite is the embedded Store: one SQLite file in WAL mode with
// full fsync, through a pure-Go driver so the binary needs no cgo.
package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"modernc.org/sqlite" // registers the "sqlite" driver
	sqlite3 "modernc.org/sqlite/lib"

	"paddock.dev/paddock/internal/store"
)

var _ store.Store = (*DB)(nil)

// DB is a Store kept in one SQLite file.
type DB struct {
	db     *conn
	cipher atomic.Pointer[Cipher] // seals releases' config; nil: kept as text
}

// Cipher seals and opens values the store keeps; the associated data binds
// a sealed value to its row. The secrets keyring is one.
type Cipher interface {
	Seal(ctx context.Context, plaintext, aad []byte) ([]byte, error)
	Open(ctx context.Context, sealed, aad []byte) ([]byte, error)
}

// SetCipher makes the store seal releases' config from now on, and open
// what it sealed. A cipher must not use the store while it is called from
// inside one of the store's transactions: the store calls it outside them.
func (s *DB) SetCipher(c Cipher) { s.cipher.Store(&c) }

func (s *DB) getCipher() Cipher {
	if c := s.cipher.Load(); c != nil {
		return *c
	}
	return nil
}

func configAAD(app string, version int) []byte {
	return []byte("paddock config\x00" + app + "\x00" + strconv.Itoa(version))
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
	// A release's config sealed by the store's cipher; config then holds ''.
	`ALTER TABLE releases ADD COLUMN config_sealed BLOB`,
	// Volumes outlive nothing by accident: an app with volumes cannot be
	// deleted (no cascade), nor a volume with snapshots.
	`CREATE TABLE volumes (
		name TEXT PRIMARY KEY,
		app TEXT NOT NULL REFERENCES apps(name),
		size INTEGER NOT NULL,
		csi_id TEXT NOT NULL,
		process TEXT NOT NULL DEFAULT '',
		path TEXT NOT NULL DEFAULT '',
		created_at INTEGER NOT NULL
	)`,
	`CREATE TABLE snapshots (
		id TEXT PRIMARY KEY,
		volume TEXT NOT NULL REFERENCES volumes(name),
		name TEXT NOT NULL DEFAULT '',
		csi_id TEXT NOT NULL,
		size INTEGER NOT NULL,
		created_at INTEGER NOT NULL
	)`,
	`CREATE TABLE data_keys (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		kind TEXT NOT NULL,
		wrapped BLOB NOT NULL,
		kek_id TEXT NOT NULL,
		seals INTEGER NOT NULL,
		created_at INTEGER NOT NULL
	)`,
	`ALTER TABLE snapshots ADD COLUMN checksum TEXT NOT NULL DEFAULT ''`,
	`ALTER TABLE snapshots ADD COLUMN verified_at INTEGER NOT NULL DEFAULT 0`,
	`ALTER TABLE snapshots ADD COLUMN backup INTEGER NOT NULL DEFAULT 0`,
	`CREATE TABLE backup_schedules (
		volume TEXT PRIMARY KEY REFERENCES volumes(name) ON DELETE CASCADE,
		app TEXT NOT NULL,
		every_ms INTEGER NOT NULL,
		keep INTEGER NOT NULL,
		verify_restore INTEGER NOT NULL,
		last_run INTEGER NOT NULL,
		last_success INTEGER NOT NULL,
		last_error TEXT NOT NULL
	)`,
	`ALTER TABLE volumes ADD COLUMN per_instance INTEGER NOT NULL DEFAULT 0`,
	`ALTER TABLE volumes ADD COLUMN template TEXT NOT NULL DEFAULT ''`,
	`ALTER TABLE apps ADD COLUMN placement TEXT NOT NULL DEFAULT '{}'`,
	`ALTER TABLE releases ADD COLUMN image TEXT NOT NULL DEFAULT ''`,
	`CREATE TABLE webhooks (
		id TEXT PRIMARY KEY,
		url TEXT NOT NULL,
		secret BLOB NOT NULL,
		created_at INTEGER NOT NULL
	)`,
	`CREATE TABLE drains (
		id TEXT PRIMARY KEY,
		app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
		url BLOB NOT NULL,
		ca BLOB,
		created_at INTEGER NOT NULL
	)`,
	`CREATE TABLE alert_rules (
		id TEXT PRIMARY KEY,
		app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
		metric TEXT NOT NULL,
		above INTEGER NOT NULL,
		threshold REAL NOT NULL,
		hold_ns INTEGER NOT NULL,
		created_by TEXT NOT NULL,
		created_at INTEGER NOT NULL
	)`,
	`CREATE TABLE credentials (
		name TEXT PRIMARY KEY,
		username TEXT NOT NULL,
		password BLOB NOT NULL,
		updated_by TEXT NOT NULL,
		updated_at INTEGER NOT NULL
	)`,
}

// Open opens or creates the store at path and brings its schema up to date.
func Open(ctx context.Context, path string) (*DB, error) {
	// secure_delete: what a change removes is overwritten with zeros, so a
	// value sealed in place leaves no plaintext in free pages.
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)" +
		"&_pragma=foreign_keys(1)&_pragma=busy_timeout(10000)&_pragma=secure_delete(1)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	// One connection: SQLite has one writer, and a single connection makes
	// every transaction serial without SQLITE_BUSY retries.
	db.SetMaxOpenConns(1)
	s := &DB{db: newConn(db)}
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
	return s.tx(ctx, func(tx *txn) error {
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

// Ping runs a query: the store answers.
func (s *DB) Ping(ctx context.Context) error {
	var n int
	return s.db.QueryRowContext(ctx, `SELECT count(*) FROM apps`).Scan(&n)
}

func (s *DB) tx(ctx context.Context, fn func(*txn) error) error {
	tx, err := s.db.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(s.db.in(tx)); err != nil {
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
	place, err := json.Marshal(a.Placement)
	if err != nil {
		return a, err
	}
	err = s.tx(ctx, func(tx *txn) error {
		if err := tx.QueryRowContext(ctx, `UPDATE counters SET value = value + 1 WHERE name = 'app_id' RETURNING value`).Scan(&a.ID); err != nil {
			return fmt.Errorf("next app id: %w", err)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO apps(id, name, created_at, release, formation, owner, placement) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			a.ID, a.Name, ms(a.CreatedAt), a.Release, string(f), a.Owner, string(place))
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
	var formation, placement string
	if err := r.Scan(&a.ID, &a.Name, &created, &a.Release, &formation, &a.Owner, &placement); err != nil {
		return a, err
	}
	if err := json.Unmarshal([]byte(placement), &a.Placement); err != nil {
		return a, fmt.Errorf("app %s: placement: %w", a.Name, err)
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

const appCols = `id, name, created_at, release, formation, owner, placement`

// LastAppID is the highest app ID handed out so far.
func (s *DB) LastAppID(ctx context.Context) (int64, error) {
	var id int64
	err := s.db.QueryRowContext(ctx, `SELECT value FROM counters WHERE name = 'app_id'`).Scan(&id)
	return id, err
}

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

// DeleteApp removes the app and everything that belongs to it; an app
// with volumes is refused (store.ErrConflict): data goes only on purpose.
func (s *DB) DeleteApp(ctx context.Context, name string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM apps WHERE name = ?`, name)
	if isForeignKey(err) {
		return fmt.Errorf("app %s has volumes: %w", name, store.ErrConflict)
	}
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
	err := s.tx(ctx, func(tx *txn) error {
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
	return s.tx(ctx, func(tx *txn) error {
		if to != 0 {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM releases WHERE app = ? AND version = ?`, app, to).Scan(&n); err != nil {
				return err
			}
			if n == 0 {
				return notFound("release", fmt.Sprintf("%s v%d", app, to))
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

const releaseCols = `app, version, build, artifact, manifest, config, description, created_by, created_at, status, reason, secrets, config_sealed, image`

// releaseRow is a release as stored, its config still as kept.
type releaseRow struct {
	store.Release
	config       string
	configSealed []byte
}

func scanRelease(r scanner) (releaseRow, error) {
	var row releaseRow
	rel := &row.Release
	var manifest, secrets string
	var created int64
	err := r.Scan(&rel.App, &rel.Version, &rel.Build, &rel.Artifact, &manifest, &row.config,
		&rel.Description, &rel.CreatedBy, &created, &rel.Status, &rel.Reason, &secrets, &row.configSealed, &rel.Image)
	if err != nil {
		return row, err
	}
	if err := json.Unmarshal([]byte(secrets), &rel.Secrets); err != nil {
		return row, fmt.Errorf("release %s v%d: secrets: %w", rel.App, rel.Version, err)
	}
	if manifest != "" {
		rel.Manifest = json.RawMessage(manifest)
	}
	rel.CreatedAt = fromMS(created)
	return row, nil
}

// release opens a row's config. It may call the cipher, so never inside a
// transaction.
func (s *DB) release(ctx context.Context, row releaseRow) (store.Release, error) {
	rel := row.Release
	config := []byte(row.config)
	if row.configSealed != nil {
		c := s.getCipher()
		if c == nil {
			return rel, fmt.Errorf("release %s v%d: its config is sealed and the store has no cipher to open it", rel.App, rel.Version)
		}
		var err error
		if config, err = c.Open(ctx, row.configSealed, configAAD(rel.App, rel.Version)); err != nil {
			return rel, fmt.Errorf("release %s v%d: config does not open: %w", rel.App, rel.Version, err)
		}
		defer clear(config)
	}
	if err := json.Unmarshal(config, &rel.Config); err != nil {
		return rel, fmt.Errorf("release %s v%d: config: %w", rel.App, rel.Version, err)
	}
	if rel.Config == nil {
		rel.Config = map[string]string{}
	}
	return rel, nil
}

// encodeConfig returns what the config column and config_sealed hold for
// rel: the JSON as text, or sealed when the store has a cipher.
func (s *DB) encodeConfig(ctx context.Context, rel store.Release) (string, []byte, error) {
	config, err := json.Marshal(rel.Config)
	if err != nil {
		return "", nil, err
	}
	c := s.getCipher()
	if c == nil {
		return string(config), nil, nil
	}
	defer clear(config)
	sealed, err := c.Seal(ctx, config, configAAD(rel.App, rel.Version))
	if err != nil {
		return "", nil, fmt.Errorf("seal the config of %s v%d: %w", rel.App, rel.Version, err)
	}
	return "", sealed, nil
}

func getRelease(ctx context.Context, q querier, app string, version int) (releaseRow, error) {
	row, err := scanRelease(q.QueryRowContext(ctx, `SELECT `+releaseCols+` FROM releases WHERE app = ? AND version = ?`, app, version))
	if errors.Is(err, sql.ErrNoRows) {
		return row, notFound("release", fmt.Sprintf("%s v%d", app, version))
	}
	return row, err
}

// errRaced: the app changed between reading it and writing a release.
var errRaced = errors.New("changed meanwhile")

// AddRelease creates the app's next release from fn and makes it current.
// It reads the app and its release, calls fn and seals the config outside
// any transaction (the cipher may use the store), then writes in one that
// checks nothing changed meanwhile, and tries again if something did: fn
// may be called more than once.
func (s *DB) AddRelease(ctx context.Context, app string, fn store.NewRelease) (store.Release, error) {
	for {
		a, err := s.GetApp(ctx, app)
		if err != nil {
			return store.Release{}, err
		}
		var cur *store.Release
		if a.Release != 0 {
			r, err := s.GetRelease(ctx, app, a.Release)
			if err != nil {
				return store.Release{}, err
			}
			cur = &r
		}
		rel, err := fn(a, cur)
		if err != nil {
			return rel, err
		}
		var last int
		if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM releases WHERE app = ?`, app).Scan(&last); err != nil {
			return rel, err
		}
		rel.App, rel.Version = app, last+1
		if rel.Status == "" {
			rel.Status = store.StatusPending
		}
		config, sealed, err := s.encodeConfig(ctx, rel)
		if err != nil {
			return rel, err
		}
		secrets, err := json.Marshal(rel.Secrets)
		if err != nil {
			return rel, err
		}
		if rel.Secrets == nil {
			secrets = []byte("{}")
		}
		err = s.tx(ctx, func(tx *txn) error {
			var now, nowLast int
			if err := tx.QueryRowContext(ctx, `SELECT release, (SELECT COALESCE(MAX(version), 0) FROM releases WHERE app = ?) FROM apps WHERE name = ?`, app, app).Scan(&now, &nowLast); err != nil {
				if errors.Is(err, sql.ErrNoRows) {
					return notFound("app", app)
				}
				return err
			}
			if now != a.Release || nowLast != last {
				return errRaced
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO releases(`+releaseCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
				rel.App, rel.Version, rel.Build, rel.Artifact, string(rel.Manifest), config,
				rel.Description, rel.CreatedBy, ms(rel.CreatedAt), rel.Status, rel.Reason, string(secrets), sealed, rel.Image); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `UPDATE apps SET release = ? WHERE name = ?`, rel.Version, app)
			return err
		})
		if errors.Is(err, errRaced) {
			continue
		}
		return rel, err
	}
}

// GetRelease returns one release of app.
func (s *DB) GetRelease(ctx context.Context, app string, version int) (store.Release, error) {
	row, err := getRelease(ctx, s.db, app, version)
	if err != nil {
		return row.Release, err
	}
	return s.release(ctx, row)
}

// ListReleases returns app's releases, newest first.
func (s *DB) ListReleases(ctx context.Context, app string) ([]store.Release, error) {
	if _, err := s.GetApp(ctx, app); err != nil {
		return nil, err
	}
	rows, err := queryAll(ctx, s.db, `SELECT `+releaseCols+` FROM releases WHERE app = ? ORDER BY version DESC`, scanRelease, app)
	if err != nil {
		return nil, err
	}
	out := make([]store.Release, len(rows))
	for i, row := range rows {
		if out[i], err = s.release(ctx, row); err != nil {
			return nil, err
		}
	}
	return out, nil
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

// SealConfigs seals the config of every release the store keeps as text
// (written before it had a cipher) and returns how many it sealed. Then,
// if it sealed any, it rewrites the whole file (VACUUM), since a store made
// before secure_delete was on keeps old copies of rows in its free pages,
// and checkpoints and truncates the WAL, so that no copy of the text stays
// anywhere.
func (s *DB) SealConfigs(ctx context.Context) (int, error) {
	c := s.getCipher()
	if c == nil {
		return 0, errors.New("seal configs: the store has no cipher")
	}
	type plain struct {
		app     string
		version int
		config  string
	}
	rows, err := queryAll(ctx, s.db, `SELECT app, version, config FROM releases WHERE config_sealed IS NULL`, func(r scanner) (plain, error) {
		var p plain
		return p, r.Scan(&p.app, &p.version, &p.config)
	})
	if err != nil {
		return 0, err
	}
	for _, p := range rows {
		sealed, err := c.Seal(ctx, []byte(p.config), configAAD(p.app, p.version))
		if err != nil {
			return 0, fmt.Errorf("seal the config of %s v%d: %w", p.app, p.version, err)
		}
		if _, err := s.db.ExecContext(ctx, `UPDATE releases SET config = '', config_sealed = ? WHERE app = ? AND version = ? AND config_sealed IS NULL`,
			sealed, p.app, p.version); err != nil {
			return 0, err
		}
	}
	if len(rows) > 0 {
		if _, err := s.db.ExecContext(ctx, `VACUUM`); err != nil {
			return len(rows), fmt.Errorf("rewrite the store without the old copies of its config: %w", err)
		}
		var busy, logFrames, checkpointed int
		if err := s.db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &logFrames, &checkpointed); err != nil {
			return len(rows), fmt.Errorf("checkpoint the store's WAL: %w", err)
		}
		if busy != 0 {
			return len(rows), errors.New("checkpoint the store's WAL: a reader held it; start again to finish")
		}
	}
	return len(rows), nil
}
