package sqlite

import (
	"context"
	"database/sql"
	"sync"
)

// maxStmts bounds the prepared statements kept: the store's queries are
// a fixed set of texts, far fewer than this.
const maxStmts = 256

// conn runs the store's queries through statements prepared once and kept
// by their text. Parsing and planning a query in SQLite costs more than
// running one of the store's small lookups, and every API request makes
// several. It has the methods of *sql.DB the store uses, so queries read
// the same either way.
type conn struct {
	db *sql.DB

	mu    sync.Mutex
	stmts map[string]*sql.Stmt
}

func newConn(db *sql.DB) *conn {
	return &conn{db: db, stmts: map[string]*sql.Stmt{}}
}

// stmt returns the statement prepared for query, preparing it the first
// time; nil when it cannot be (the caller then runs the text, which
// reports the error) or when the cache is full. The lock is not held while
// preparing: that waits for the connection, which a transaction may hold.
func (c *conn) stmt(ctx context.Context, query string) *sql.Stmt {
	c.mu.Lock()
	st, ok := c.stmts[query]
	full := len(c.stmts) >= maxStmts
	c.mu.Unlock()
	if ok || full {
		return st
	}
	st, err := c.db.PrepareContext(ctx, query)
	if err != nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if had, ok := c.stmts[query]; ok {
		st.Close()
		return had
	}
	if len(c.stmts) >= maxStmts {
		st.Close()
		return nil
	}
	c.stmts[query] = st
	return st
}

// prepared returns the statement kept for query, or nil.
func (c *conn) prepared(query string) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stmts[query]
}

func (c *conn) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := c.stmt(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return c.db.ExecContext(ctx, query, args...)
}

func (c *conn) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := c.stmt(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return c.db.QueryContext(ctx, query, args...)
}

func (c *conn) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := c.stmt(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return c.db.QueryRowContext(ctx, query, args...)
}

// Close closes the statements, then the database.
func (c *conn) Close() error {
	c.mu.Lock()
	for q, st := range c.stmts {
		st.Close()
		delete(c.stmts, q)
	}
	c.mu.Unlock()
	return c.db.Close()
}

// txn is a transaction that runs the kept statements on its connection.
type txn struct {
	tx *sql.Tx
	c  *conn
}

// stmt returns the kept statement for query on the transaction's
// connection, or nil when none is kept yet: preparing one for the
// connection pool would wait for the connection this transaction holds.
func (t *txn) stmt(ctx context.Context, query string) *sql.Stmt {
	if st := t.c.prepared(query); st != nil {
		return t.tx.StmtContext(ctx, st)
	}
	return nil
}

func (t *txn) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := t.stmt(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return t.tx.ExecContext(ctx, query, args...)
}

func (t *txn) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := t.stmt(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return t.tx.QueryContext(ctx, query, args...)
}

func (t *txn) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := t.stmt(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return t.tx.QueryRowContext(ctx, query, args...)
}
