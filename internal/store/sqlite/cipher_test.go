package sqlite

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"paddock.dev/paddock/internal/secrets"
	"paddock.dev/paddock/internal/store"
)

// testCipher seals with a real keyring, over keys kept in memory.
type testCipher struct{ kr *secrets.Keyring }

func (c testCipher) Seal(ctx context.Context, p, aad []byte) ([]byte, error) {
	s, err := c.kr.Seal(ctx, p, aad)
	if err != nil {
		return nil, err
	}
	return s.MarshalBinary()
}

func (c testCipher) Open(ctx context.Context, b, aad []byte) ([]byte, error) {
	var s secrets.Sealed
	if err := s.UnmarshalBinary(b); err != nil {
		return nil, err
	}
	return c.kr.Open(ctx, s, aad)
}

// TestConfigSealed: with a cipher, no config value is in the store's files
// in the clear, those written before included once SealConfigs has run, and
// every release reads back as it was written.
func TestConfigSealed(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "paddock.db")
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.CreateApp(ctx, store.App{Name: "a"}); err != nil {
		t.Fatal(err)
	}
	add := func(value string) store.Release {
		rel, err := db.AddRelease(ctx, "a", func(store.App, *store.Release) (store.Release, error) {
			return store.Release{Config: map[string]string{"SETTING": value}}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return rel
	}
	// A store from before secure_delete: the config of a destroyed app
	// stays in free pages until the file is rewritten.
	if _, err := db.db.ExecContext(ctx, `PRAGMA secure_delete = 0`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.CreateApp(ctx, store.App{Name: "gone"}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		if _, err := db.AddRelease(ctx, "gone", func(store.App, *store.Release) (store.Release, error) {
			return store.Release{Config: map[string]string{"OLD": "of-a-destroyed-app-3d8e"}}, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.DeleteApp(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	before := add("written-before-the-cipher-5c1e")
	kek, err := secrets.GenerateKEK()
	if err != nil {
		t.Fatal(err)
	}
	kr, err := secrets.New(ctx, secrets.Config{KEK: kek, Store: secrets.NewMemStore()})
	if err != nil {
		t.Fatal(err)
	}
	db.SetCipher(testCipher{kr})
	if n, err := db.SealConfigs(ctx); err != nil || n != 1 {
		t.Fatalf("SealConfigs: %d, %v; want 1 sealed", n, err)
	}
	after := add("written-after-the-cipher-9a7b")
	for _, want := range []store.Release{before, after} {
		got, err := db.GetRelease(ctx, "a", want.Version)
		if err != nil || got.Config["SETTING"] != want.Config["SETTING"] {
			t.Errorf("v%d: got %v (%v), want %v", want.Version, got.Config, err, want.Config)
		}
	}
	if rels, err := db.ListReleases(ctx, "a"); err != nil || len(rels) != 2 || rels[1].Config["SETTING"] != before.Config["SETTING"] {
		t.Errorf("ListReleases: %+v, %v", rels, err)
	}
	for _, f := range []string{path, path + "-wal"} {
		b, _ := os.ReadFile(f)
		for _, v := range []string{"written-before-the-cipher-5c1e", "written-after-the-cipher-9a7b", "of-a-destroyed-app-3d8e"} {
			if bytes.Contains(b, []byte(v)) {
				t.Errorf("%s holds the config value %q in the clear", filepath.Base(f), v)
			}
		}
	}
	// A sealed config moved to another release does not open there.
	if _, err := db.db.ExecContext(ctx, `UPDATE releases SET config_sealed = (SELECT config_sealed FROM releases WHERE version = ?) WHERE version = ?`, after.Version, before.Version); err != nil {
		t.Fatal(err)
	}
	if _, err := db.GetRelease(ctx, "a", before.Version); err == nil {
		t.Errorf("a config moved to another release opened")
	}
}
