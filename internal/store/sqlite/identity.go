package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"paddock.dev/paddock/internal/store"
)

// Bootstrap creates the first user with its first token, atomically.
func (s *DB) Bootstrap(ctx context.Context, u store.User, t store.Token) error {
	return s.tx(ctx, func(tx *txn) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO users(name, role, disabled, created_at) VALUES (?, ?, ?, ?)`,
			u.Name, u.Role, u.Disabled, ms(u.CreatedAt)); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO tokens(id, name, user, hash, role, apps, created_at) VALUES (?, ?, ?, ?, ?, '[]', ?)`,
			t.ID, t.Name, t.User, t.Hash, t.Role, ms(t.CreatedAt))
		return err
	})
}

// CreateUser adds a user; store.ErrExists if the name is taken.
func (s *DB) CreateUser(ctx context.Context, u store.User) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO users(name, role, disabled, created_at) VALUES (?, ?, ?, ?)`,
		u.Name, u.Role, u.Disabled, ms(u.CreatedAt))
	if isUnique(err) {
		return fmt.Errorf("user %q: %w", u.Name, store.ErrExists)
	}
	return err
}

func scanUser(r scanner) (store.User, error) {
	var u store.User
	var created int64
	err := r.Scan(&u.Name, &u.Role, &u.Disabled, &created)
	u.CreatedAt = fromMS(created)
	return u, err
}

// GetUser returns a user by name.
func (s *DB) GetUser(ctx context.Context, name string) (store.User, error) {
	u, err := scanUser(s.db.QueryRowContext(ctx, `SELECT name, role, disabled, created_at FROM users WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return u, notFound("user", name)
	}
	return u, err
}

// ListUsers returns every user by name.
func (s *DB) ListUsers(ctx context.Context) ([]store.User, error) {
	return listUsers(ctx, s.db)
}

func listUsers(ctx context.Context, q rowsQuerier) ([]store.User, error) {
	return queryAll(ctx, q, `SELECT name, role, disabled, created_at FROM users ORDER BY name`, scanUser)
}

// SetUserDisabled disables or enables a user.
func (s *DB) SetUserDisabled(ctx context.Context, name string, disabled bool) error {
	res, err := s.db.ExecContext(ctx, `UPDATE users SET disabled = ? WHERE name = ?`, disabled, name)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return notFound("user", name)
	}
	return nil
}

func msPtr(t *time.Time) any {
	if t == nil {
		return nil
	}
	return ms(*t)
}

// AddToken stores a token; store.ErrExists if its name or ID is taken,
// store.ErrNotFound if its user does not exist.
func (s *DB) AddToken(ctx context.Context, t store.Token) error {
	apps, err := json.Marshal(t.Apps)
	if err != nil {
		return err
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO tokens(id, name, user, hash, role, apps, created_at, expires_at, last_used, parent)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		t.ID, t.Name, t.User, t.Hash, t.Role, string(apps), ms(t.CreatedAt), msPtr(t.ExpiresAt), msPtr(t.LastUsed), t.Parent)
	if isUnique(err) {
		return fmt.Errorf("token %q: %w", t.Name, store.ErrExists)
	}
	if isForeignKey(err) {
		return notFound("user", t.User)
	}
	return err
}

const tokenCols = `id, name, user, hash, role, apps, created_at, expires_at, last_used, parent`

func scanToken(r scanner) (store.Token, error) {
	var t store.Token
	var apps string
	var created int64
	var expires, used sql.NullInt64
	if err := r.Scan(&t.ID, &t.Name, &t.User, &t.Hash, &t.Role, &apps, &created, &expires, &used, &t.Parent); err != nil {
		return t, err
	}
	t.CreatedAt = fromMS(created)
	if expires.Valid {
		v := fromMS(expires.Int64)
		t.ExpiresAt = &v
	}
	if used.Valid {
		v := fromMS(used.Int64)
		t.LastUsed = &v
	}
	return t, json.Unmarshal([]byte(apps), &t.Apps)
}

// GetToken returns a token by ID.
func (s *DB) GetToken(ctx context.Context, id string) (store.Token, error) {
	t, err := scanToken(s.db.QueryRowContext(ctx, `SELECT `+tokenCols+` FROM tokens WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return t, fmt.Errorf("token: %w", store.ErrNotFound)
	}
	return t, err
}

// ListTokens returns the tokens of user, or every token when user is "".
func (s *DB) ListTokens(ctx context.Context, user string) ([]store.Token, error) {
	return queryAll(ctx, s.db, `SELECT `+tokenCols+` FROM tokens WHERE ? = '' OR user = ? ORDER BY user, name`, scanToken, user, user)
}

// RevokeToken deletes the token called name, of owner unless owner is "",
// with the tokens it made for its own user, and theirs.
func (s *DB) RevokeToken(ctx context.Context, name, owner string) error {
	res, err := s.db.ExecContext(ctx, `WITH RECURSIVE gone(id, user) AS (
			SELECT id, user FROM tokens WHERE name = ? AND (? = '' OR user = ?)
			UNION SELECT t.id, t.user FROM tokens t JOIN gone g ON t.parent = g.id AND t.user = g.user)
		DELETE FROM tokens WHERE id IN (SELECT id FROM gone)`, name, owner, owner)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return notFound("token", name)
	}
	return nil
}

// TouchToken records when a token was last used.
func (s *DB) TouchToken(ctx context.Context, id string, at time.Time) error {
	_, err := s.db.ExecContext(ctx, `UPDATE tokens SET last_used = ? WHERE id = ?`, ms(at), id)
	return err
}

// CreateTeam adds an empty team.
func (s *DB) CreateTeam(ctx context.Context, t store.Team) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO teams(name, created_at) VALUES (?, ?)`, t.Name, ms(t.CreatedAt))
	if isUnique(err) {
		return fmt.Errorf("team %q: %w", t.Name, store.ErrExists)
	}
	return err
}

// AddTeamMember adds user to team.
func (s *DB) AddTeamMember(ctx context.Context, team, user string) error {
	err := s.tx(ctx, func(tx *txn) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM teams WHERE name = ?`, team).Scan(&n); err != nil || n == 0 {
			if err == nil {
				err = notFound("team", team)
			}
			return err
		}
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM users WHERE name = ?`, user).Scan(&n); err != nil || n == 0 {
			if err == nil {
				err = notFound("user", user)
			}
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO team_members(team, user) VALUES (?, ?)`, team, user)
		return err
	})
	if isUnique(err) {
		return fmt.Errorf("%s in team %s: %w", user, team, store.ErrExists)
	}
	return err
}

// RemoveTeamMember removes user from team.
func (s *DB) RemoveTeamMember(ctx context.Context, team, user string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM team_members WHERE team = ? AND user = ?`, team, user)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return notFound("member", user+" of team "+team)
	}
	return nil
}

// SetGrant gives a team a role on an app, or removes it for role "".
func (s *DB) SetGrant(ctx context.Context, g store.Grant) error {
	var err error
	if g.Role == "" {
		_, err = s.db.ExecContext(ctx, `DELETE FROM grants WHERE app = ? AND team = ?`, g.App, g.Team)
		return err
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO grants(app, team, role) VALUES (?, ?, ?)
		ON CONFLICT (app, team) DO UPDATE SET role = excluded.role`, g.App, g.Team, g.Role)
	if isForeignKey(err) {
		return fmt.Errorf("app %q or team %q: %w", g.App, g.Team, store.ErrNotFound)
	}
	return err
}

// Access reads everything authorization needs in one transaction.
func (s *DB) Access(ctx context.Context) (store.Access, error) {
	var a store.Access
	pair := func(r scanner) ([2]string, error) {
		var p [2]string
		err := r.Scan(&p[0], &p[1])
		return p, err
	}
	err := s.tx(ctx, func(tx *txn) error {
		var err error
		if a.Users, err = listUsers(ctx, tx); err != nil {
			return err
		}
		a.Teams, err = queryAll(ctx, tx, `SELECT name, created_at FROM teams ORDER BY name`, func(r scanner) (store.Team, error) {
			var t store.Team
			var created int64
			err := r.Scan(&t.Name, &created)
			t.CreatedAt = fromMS(created)
			return t, err
		})
		if err != nil {
			return err
		}
		members, err := queryAll(ctx, tx, `SELECT team, user FROM team_members ORDER BY team, user`, pair)
		if err != nil {
			return err
		}
		index := map[string]int{}
		for i, t := range a.Teams {
			index[t.Name] = i
		}
		for _, m := range members {
			if i, ok := index[m[0]]; ok {
				a.Teams[i].Members = append(a.Teams[i].Members, m[1])
			}
		}
		a.Grants, err = queryAll(ctx, tx, `SELECT app, team, role FROM grants ORDER BY app, team`, func(r scanner) (store.Grant, error) {
			var g store.Grant
			err := r.Scan(&g.App, &g.Team, &g.Role)
			return g, err
		})
		if err != nil {
			return err
		}
		owners, err := queryAll(ctx, tx, `SELECT name, owner FROM apps`, pair)
		a.Owners = map[string]string{}
		for _, o := range owners {
			a.Owners[o[0]] = o[1]
		}
		return err
	})
	return a, err
}
