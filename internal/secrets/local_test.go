package secrets

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func openLocal(t *testing.T, dir string, store KeyStore) (*Keyring, bool) {
	t.Helper()
	kr, created, err := OpenLocal(context.Background(), dir, "PADDOCK_TEST_KEK", Config{Store: store})
	if err != nil {
		t.Fatalf("OpenLocal: %v", err)
	}
	return kr, created
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

func TestOpenLocalFirstStartAndRestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	store := NewMemStore()
	kr, created := openLocal(t, dir, store)
	if !created {
		t.Error("first start: created = false, want a new key")
	}
	s := seal(t, kr, "v", nil)

	kr2, created := openLocal(t, dir, store)
	if created {
		t.Error("restart: created = true, want the key file reused")
	}
	if got := mustOpen(t, kr2, s, nil); got != "v" {
		t.Errorf("after a restart the value opens as %q", got)
	}
}

// TestOpenLocalNeverStrands: with data keys in the store and no key file,
// OpenLocal refuses, names the key the store needs, and makes no key.
func TestOpenLocalNeverStrands(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "keys")
	store := NewMemStore()
	kr, _ := openLocal(t, dir, store)
	seal(t, kr, "v", nil)
	need := kr.KEK().ID()

	os.Remove(filepath.Join(dir, KEKFile))
	_, _, err := OpenLocal(ctx, dir, "PADDOCK_TEST_KEK", Config{Store: store})
	if !errors.Is(err, ErrNoKEK) {
		t.Fatalf("OpenLocal without the key file: %v, want ErrNoKEK", err)
	}
	for _, want := range []string{"does not exist", need, "paddock keys import", "PADDOCK_TEST_KEK"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if exists(filepath.Join(dir, KEKFile)) {
		t.Error("OpenLocal made a key file over a store that needs another key")
	}

	// Another key in the file: refused too, naming both.
	if _, err := CreateKEK(dir); err != nil {
		t.Fatal(err)
	}
	_, _, err = OpenLocal(ctx, dir, "", Config{Store: store})
	if !errors.Is(err, ErrWrongKEK) || !strings.Contains(err.Error(), need) {
		t.Errorf("OpenLocal with another key: %v, want ErrWrongKEK naming %s", err, need)
	}

	// A key file with loose permissions: the error says chmod, not restore.
	os.Chmod(filepath.Join(dir, KEKFile), 0o644)
	_, _, err = OpenLocal(ctx, dir, "", Config{Store: store})
	if !errors.Is(err, ErrBadKEK) || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("OpenLocal with a 0644 key file: %v, want ErrBadKEK saying chmod 600", err)
	}
}

func TestOpenLocalFromEnv(t *testing.T) {
	kek := newKEK(t)
	t.Setenv("PADDOCK_TEST_KEK", string(kekText(kek)))
	dir := filepath.Join(t.TempDir(), "keys")
	store := NewMemStore()
	kr, created := openLocal(t, dir, store)
	if created || kr.KEK().ID() != kek.ID() {
		t.Errorf("created %v, KEK %s; want the variable's %s and no new key", created, kr.KEK().ID(), kek.ID())
	}
	if exists(dir) {
		t.Error("OpenLocal with the key in the environment made a key folder")
	}
	if err := kr.RotateLocal(context.Background(), dir); err == nil {
		t.Error("RotateLocal of a key from the environment succeeded")
	}
}

func kekText(k *LocalKEK) []byte {
	dir, _ := os.MkdirTemp("", "kek")
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o700)
	writeKeyFile(dir, KEKFile, k, false)
	b, _ := os.ReadFile(filepath.Join(dir, KEKFile))
	return b
}

func TestRotateLocal(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "keys")
	store := NewMemStore()
	kr, _ := openLocal(t, dir, store)
	s := seal(t, kr, "v", nil)
	old := kr.KEK()
	oldText, _ := os.ReadFile(filepath.Join(dir, KEKFile))

	if err := kr.RotateLocal(ctx, dir); err != nil {
		t.Fatal(err)
	}
	if kr.KEK().ID() == old.ID() {
		t.Fatal("the KEK did not change")
	}
	if exists(filepath.Join(dir, StagedKEKFile)) {
		t.Error("the staged key is still there after a rotation")
	}
	newText, _ := os.ReadFile(filepath.Join(dir, KEKFile))
	if string(newText) == string(oldText) {
		t.Error("the key file did not change")
	}
	fresh, _ := openLocal(t, dir, store)
	if fresh.KEK().ID() != kr.KEK().ID() || mustOpen(t, fresh, s, nil) != "v" {
		t.Error("after a rotation, a restart does not open the values with the new key")
	}
	if err := VerifyKEK(ctx, store, old); !errors.Is(err, ErrWrongKEK) {
		t.Errorf("the old key: VerifyKEK = %v, want ErrWrongKEK", err)
	}
}

// TestRotateLocalCrash stops a rotation at each point a crash could and
// checks that the next start opens the values and cleans up.
func TestRotateLocalCrash(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name      string
		committed bool // the store's transaction happened before the crash
	}{
		{"after staging, before the store", false},
		{"after the store, before the rename", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "keys")
			store := NewMemStore()
			kr, _ := openLocal(t, dir, store)
			s := seal(t, kr, "v", nil)
			next := newKEK(t)
			if err := writeKeyFile(dir, StagedKEKFile, next, true); err != nil {
				t.Fatal(err)
			}
			want := kr.KEK().ID()
			if tt.committed {
				if err := kr.Rotate(ctx, next); err != nil {
					t.Fatal(err)
				}
				want = next.ID()
			}

			after, _ := openLocal(t, dir, store)
			if got := after.KEK().ID(); got != want {
				t.Errorf("KEK after restart = %s, want %s", got, want)
			}
			if mustOpen(t, after, s, nil) != "v" {
				t.Error("value does not open")
			}
			if exists(filepath.Join(dir, StagedKEKFile)) {
				t.Error("the staged key is still there")
			}
			onDisk, err := LoadKEK(dir, "")
			if err != nil || onDisk.ID() != want {
				t.Errorf("key file holds %v (%v), want %s", onDisk, err, want)
			}
			// And a rotation from there works.
			if err := after.RotateLocal(ctx, dir); err != nil {
				t.Errorf("RotateLocal after recovery: %v", err)
			}
		})
	}
}
