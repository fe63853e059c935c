package secrets

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBackupRoundTrip(t *testing.T) {
	kek := newKEK(t)
	for _, pass := range []string{"", "correct horse battery staple"} {
		b, err := Export(kek, []byte(pass))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, []byte("-----BEGIN PADDOCK KEY BACKUP-----\n")) {
			t.Errorf("backup starts %q", b[:40])
		}
		if pass != "" && bytes.Contains(b, kekText(kek)[:20]) {
			t.Error("a passphrase-protected backup holds the key in the clear")
		}
		got, err := ParseBackup(b, []byte(pass))
		if err != nil {
			t.Fatalf("passphrase %q: %v", pass, err)
		}
		if got.ID() != kek.ID() || got.root != kek.root {
			t.Errorf("passphrase %q: the backup gives back another key", pass)
		}
	}
	if _, err := Export(&failingKEK{LocalKEK: kek}, nil); err == nil {
		t.Error("Export of a key that is not local succeeded")
	}
}

// TestImportRefuses feeds ImportKEK wrong, damaged and foreign backups and
// checks the error and that the key folder did not change.
func TestImportRefuses(t *testing.T) {
	ctx := context.Background()
	kek := newKEK(t)
	store := NewMemStore()
	kr := newKeyring(t, Config{KEK: kek, Store: store})
	seal(t, kr, "v", nil)

	plain, _ := Export(kek, nil)
	protected, _ := Export(kek, []byte("pass"))
	foreign, _ := Export(newKEK(t), nil)

	block, _ := pem.Decode(plain)
	reencode := func(edit func(*pem.Block)) []byte {
		b := &pem.Block{Type: block.Type, Headers: map[string]string{}, Bytes: bytes.Clone(block.Bytes)}
		for k, v := range block.Headers {
			b.Headers[k] = v
		}
		edit(b)
		return pem.EncodeToMemory(b)
	}
	body := bytes.Index(plain, []byte("\n\n")) + 2

	tests := []struct {
		name    string
		backup  []byte
		pass    string
		wantErr error
		want    string
	}{
		{"empty file", nil, "", ErrNotBackup, "not a Paddock key backup"},
		{"some text", []byte("hello, world\n"), "", ErrNotBackup, "not a Paddock key backup"},
		{"another PEM", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}), "", ErrNotBackup, "not a Paddock key backup"},
		{"the key file itself", kekText(kek), "", ErrNotBackup, "not a Paddock key backup"},
		{"cut short", plain[:len(plain)-20], "", ErrBackupDamaged, "damaged"},
		{"a character changed", func() []byte {
			c := bytes.Clone(plain)
			if c[body] == 'A' {
				c[body] = 'B'
			} else {
				c[body] = 'A'
			}
			return c
		}(), "", ErrBackupDamaged, "damaged: checksum mismatch"},
		{"a byte of the key changed", reencode(func(b *pem.Block) { b.Bytes[0] ^= 1 }), "", ErrBackupDamaged, "checksum mismatch"},
		{"key ID changed", reencode(func(b *pem.Block) { b.Headers["Key-Id"] = "0000000000000000" }), "", ErrBackupDamaged, "checksum mismatch"},
		{"checksum removed", reencode(func(b *pem.Block) { delete(b.Headers, "Checksum") }), "", ErrBackupDamaged, "checksum mismatch"},
		{"unknown version", reencode(func(b *pem.Block) { b.Headers["Version"] = "9" }), "", ErrBackupDamaged, "version"},
		{"no passphrase", protected, "", ErrPassphrase, "protected by a passphrase"},
		{"wrong passphrase", protected, "Pass", ErrPassphrase, "passphrase does not open"},
		{"another platform's", foreign, "", ErrWrongKEK, "this key does not open the data keys in the store: it is another platform's backup"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "keys")
			before, err := CreateKEK(dir)
			if err != nil {
				t.Fatal(err)
			}
			beforeText, _ := os.ReadFile(filepath.Join(dir, KEKFile))
			_, err = ImportKEK(ctx, dir, store, tt.backup, []byte(tt.pass))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("ImportKEK = %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
			afterText, _ := os.ReadFile(filepath.Join(dir, KEKFile))
			entries, _ := os.ReadDir(dir)
			if !bytes.Equal(beforeText, afterText) || len(entries) != 1 {
				t.Errorf("a refused import changed the key folder (key %s)", before.ID())
			}
		})
	}
}

func TestImport(t *testing.T) {
	ctx := context.Background()
	kek := newKEK(t)
	store := NewMemStore()
	kr := newKeyring(t, Config{KEK: kek, Store: store})
	s := seal(t, kr, "v", nil)
	backup, _ := Export(kek, []byte("pass"))

	// The platform lost its key and made another one: the import replaces
	// it, keeping the other beside.
	dir := filepath.Join(t.TempDir(), "keys")
	wrong, _ := CreateKEK(dir)
	wrongText, _ := os.ReadFile(filepath.Join(dir, KEKFile))
	got, err := ImportKEK(ctx, dir, store, append([]byte("some words before\n"), backup...), []byte("pass"))
	if err != nil {
		t.Fatal(err)
	}
	if got.ID() != kek.ID() {
		t.Errorf("imported %s, want %s", got.ID(), kek.ID())
	}
	kept, _ := os.ReadFile(filepath.Join(dir, KEKFile+".replaced.1"))
	if !bytes.Equal(kept, wrongText) {
		t.Errorf("the replaced key %s was not kept aside", wrong.ID())
	}
	reopened, _ := openLocal(t, dir, store)
	if mustOpen(t, reopened, s, nil) != "v" {
		t.Error("after the import the value does not open")
	}
	// Importing it again changes nothing.
	if _, err := ImportKEK(ctx, dir, store, backup, []byte("pass")); err != nil {
		t.Fatal(err)
	}
	if exists(filepath.Join(dir, KEKFile+".replaced.2")) {
		t.Error("importing the key in use moved it aside")
	}
	// Into an empty folder.
	fresh := filepath.Join(t.TempDir(), "fresh")
	if _, err := ImportKEK(ctx, fresh, store, backup, []byte("pass")); err != nil {
		t.Fatal(err)
	}
	if k, err := LoadKEK(fresh, ""); err != nil || k.ID() != kek.ID() {
		t.Errorf("LoadKEK after import into a new folder: %v", err)
	}
}
