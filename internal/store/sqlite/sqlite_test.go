package sqlite

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"paddock.dev/paddock/internal/store"
	"paddock.dev/paddock/internal/store/storetest"
)

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		db, err := Open(context.Background(), filepath.Join(t.TempDir(), "paddock.db"))
		if err != nil {
			t.Fatal(err)
		}
		return db
	})
}

func TestReopenKeepsData(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "paddock.db")
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.CreateApp(ctx, store.App{Name: "a"}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if db, err = Open(ctx, path); err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.GetApp(ctx, "a"); err != nil {
		t.Errorf("after reopening: %v", err)
	}
}

// TestKeptStatementsUnderConcurrency mixes transactions, which hold the
// one connection, with reads through kept statements from many
// goroutines: every read sees a formation some write made, and none waits
// forever for the connection.
func TestKeptStatementsUnderConcurrency(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db, err := Open(ctx, filepath.Join(t.TempDir(), "paddock.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.CreateApp(ctx, store.App{Name: "a"}); err != nil {
		t.Fatal(err)
	}
	var g errgroup.Group
	for w := 0; w < 4; w++ {
		g.Go(func() error {
			for i := 1; i <= 50; i++ {
				if _, err := db.SetFormation(ctx, "a", map[string]int{"web": i}); err != nil {
					return err
				}
				a, err := db.GetApp(ctx, "a")
				if err != nil {
					return err
				}
				if n := a.Formation["web"]; n < 1 || n > 50 {
					return fmt.Errorf("formation web=%d, no write made that", n)
				}
				if _, err := db.ListApps(ctx); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if n := len(db.db.stmts); n == 0 || n > maxStmts {
		t.Errorf("%d statements kept, want between 1 and %d", n, maxStmts)
	}
}
