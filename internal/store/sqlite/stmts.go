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
	kept
	db *sql.DB

	mu    sync.Mutex
	stmts map[string]*sql.Stmt
}

func newConn(db *sql.DB) *conn {
	c := &conn{db: db, stmts: map[string]*sql.Stmt{}}
	c.kept = kept{run: db, stmt: c.prepare}
	return c
}

// prepare returns the statement prepared for query, preparing it the first
// time; nil when it cannot be (the caller then runs the text, which
// reports the error) or when the cache is full. The lock is not held while
// preparing: that waits for the connection, which a transaction may hold.
func (c *conn) prepare(ctx context.Context, query string) *sql.Stmt {
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
type txn struct{ kept }

// in returns tx as a txn. A query whose statement is not kept yet runs as
// text: preparing one for the connection pool would wait for the
// connection this transaction holds.
func (c *conn) in(tx *sql.Tx) *txn {
	return &txn{kept{run: tx, stmt: func(ctx context.Context, query string) *sql.Stmt {
		if st := c.prepared(query); st != nil {
			return tx.StmtContext(ctx, st)
		}
		return nil
	}}}
}

// runner is what *sql.DB and *sql.Tx have that the store uses.
type runner interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// kept runs a query through the statement stmt gives for its text, or as
// text through run when it gives none.
type kept struct {
	run  runner
	stmt func(ctx context.Context, query string) *sql.Stmt
}

func (k kept) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := k.stmt(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return k.run.ExecContext(ctx, query, args...)
}

func (k kept) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := k.stmt(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return k.run.QueryContext(ctx, query, args...)
}

func (k kept) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := k.stmt(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return k.run.QueryRowContext(ctx, query, args...)
}
