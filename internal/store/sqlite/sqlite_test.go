package sqlite

import (
	"context"
	"path/filepath"
	"testing"

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
