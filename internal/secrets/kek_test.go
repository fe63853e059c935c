package secrets

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// keyDir returns a fresh 0700 key folder.
func keyDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "keys")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

func writeFile(t *testing.T, path, text string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func b64(n int) string { return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, n)) }

func TestLoadKEKFromFile(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, dir string)
		wantErr error    // nil: loads
		want    []string // in the error message
	}{
		{
			name:  "good file",
			setup: func(t *testing.T, dir string) { writeFile(t, filepath.Join(dir, KEKFile), b64(32)+"\n", 0o600) },
		},
		{
			name:  "read-only file",
			setup: func(t *testing.T, dir string) { writeFile(t, filepath.Join(dir, KEKFile), b64(32), 0o400) },
		},
		{
			name:    "missing file",
			setup:   func(t *testing.T, dir string) {},
			wantErr: ErrNoKEK,
			want:    []string{"kek does not exist", "PADDOCK_TEST_KEK is not set", "paddock keys export", "paddock keys import"},
		},
		{
			name:    "missing folder",
			setup:   func(t *testing.T, dir string) { os.Remove(dir) },
			wantErr: ErrNoKEK,
			want:    []string{"key folder", "does not exist", "paddock keys export"},
		},
		{
			name:    "file readable by others",
			setup:   func(t *testing.T, dir string) { writeFile(t, filepath.Join(dir, KEKFile), b64(32), 0o644) },
			wantErr: ErrBadKEK,
			want:    []string{"mode 0644", "chmod 600"},
		},
		{
			name: "folder open to others",
			setup: func(t *testing.T, dir string) {
				writeFile(t, filepath.Join(dir, KEKFile), b64(32), 0o600)
				os.Chmod(dir, 0o755)
			},
			wantErr: ErrBadKEK,
			want:    []string{"mode 0755", "chmod 700"},
		},
		{
			name:    "too short",
			setup:   func(t *testing.T, dir string) { writeFile(t, filepath.Join(dir, KEKFile), b64(31), 0o600) },
			wantErr: ErrBadKEK,
			want:    []string{"31 bytes", "a key is 32 bytes", "backup"},
		},
		{
			name: "not base64",
			setup: func(t *testing.T, dir string) {
				writeFile(t, filepath.Join(dir, KEKFile), "this is not a key!!", 0o600)
			},
			wantErr: ErrBadKEK,
			want:    []string{"is not base64", "head -c 32 /dev/urandom | base64"},
		},
		{
			name: "symbolic link",
			setup: func(t *testing.T, dir string) {
				other := filepath.Join(t.TempDir(), "elsewhere")
				writeFile(t, other, b64(32), 0o600)
				if err := os.Symlink(other, filepath.Join(dir, KEKFile)); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: ErrBadKEK,
			want:    []string{"symbolic link"},
		},
		{
			name:    "a folder, not a file",
			setup:   func(t *testing.T, dir string) { os.Mkdir(filepath.Join(dir, KEKFile), 0o700) },
			wantErr: ErrBadKEK,
			want:    []string{"not a regular file"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := keyDir(t)
			tt.setup(t, dir)
			k, err := LoadKEK(dir, "PADDOCK_TEST_KEK")
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("LoadKEK: %v", err)
				}
				want, _ := newLocalKEK(bytes.Repeat([]byte{7}, 32))
				if got := k.ID(); got != want.ID() {
					t.Errorf("ID = %s, want %s", got, want.ID())
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("LoadKEK error = %v, want %v", err, tt.wantErr)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestLoadKEKFromEnv(t *testing.T) {
	const env = "PADDOCK_TEST_KEK"
	good := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 32))
	tests := []struct {
		name    string
		value   string
		wantErr error
		want    []string
	}{
		{name: "good", value: good},
		{name: "good with newline", value: good + "\n"},
		{name: "not base64", value: "secret-looking-value!", wantErr: ErrBadKEK, want: []string{"environment variable " + env, "not base64"}},
		{name: "wrong length", value: base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 16)), wantErr: ErrBadKEK, want: []string{env, "16 bytes", "32 bytes"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(env, tt.value)
			// The file is there too, with another key: the variable wins.
			dir := keyDir(t)
			writeFile(t, filepath.Join(dir, KEKFile), b64(32), 0o600)
			k, err := LoadKEK(dir, env)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("LoadKEK: %v", err)
				}
				want, _ := newLocalKEK(bytes.Repeat([]byte{9}, 32))
				if k.ID() != want.ID() {
					t.Errorf("ID = %s, want the variable's %s", k.ID(), want.ID())
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error = %v, want %v", err, tt.wantErr)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), strings.TrimSpace(tt.value)) {
				t.Errorf("error %q quotes the variable's value", err)
			}
		})
	}
}

func TestCreateKEK(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "keys")
	k, err := CreateKEK(dir)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, KEKFile): 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s mode = %04o, want %04o", path, got, want)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("key folder holds %d entries, want only %s (no temporary file left)", len(entries), KEKFile)
	}
	loaded, err := LoadKEK(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if loaded.ID() != k.ID() {
		t.Errorf("loaded ID %s, created %s", loaded.ID(), k.ID())
	}

	before, _ := os.ReadFile(filepath.Join(dir, KEKFile))
	if _, err := CreateKEK(dir); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("second CreateKEK error = %v, want a refusal", err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, KEKFile))
	if !bytes.Equal(before, after) {
		t.Error("second CreateKEK changed the key file")
	}

	open := filepath.Join(t.TempDir(), "open")
	os.Mkdir(open, 0o755)
	if _, err := CreateKEK(open); !errors.Is(err, ErrBadKEK) {
		t.Errorf("CreateKEK in a 0755 folder: error = %v, want ErrBadKEK", err)
	}
}

func TestKEKWrap(t *testing.T) {
	k, _ := GenerateKEK()
	other, _ := GenerateKEK()
	if k.ID() == other.ID() || len(k.ID()) != 16 {
		t.Fatalf("IDs %q and %q: want two different 16-digit IDs", k.ID(), other.ID())
	}
	secret := []byte("data key bytes, 32 of them.....!")
	w, err := k.Wrap(secret, []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(w, secret) {
		t.Fatal("wrapped key contains the plaintext")
	}
	w2, _ := k.Wrap(secret, []byte("aad"))
	if bytes.Equal(w, w2) {
		t.Error("two wraps of one key are equal: the nonce is not random")
	}
	got, err := k.Unwrap(w, []byte("aad"))
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Unwrap = %q, %v", got, err)
	}
	flip := func(i int) []byte { c := bytes.Clone(w); c[i] ^= 1; return c }
	bad := map[string]func() ([]byte, error){
		"other key":      func() ([]byte, error) { return other.Unwrap(w, []byte("aad")) },
		"other aad":      func() ([]byte, error) { return k.Unwrap(w, []byte("aae")) },
		"version byte":   func() ([]byte, error) { return k.Unwrap(flip(0), []byte("aad")) },
		"nonce bit":      func() ([]byte, error) { return k.Unwrap(flip(3), []byte("aad")) },
		"ciphertext bit": func() ([]byte, error) { return k.Unwrap(flip(20), []byte("aad")) },
		"tag bit":        func() ([]byte, error) { return k.Unwrap(flip(len(w)-1), []byte("aad")) },
		"cut short":      func() ([]byte, error) { return k.Unwrap(w[:10], []byte("aad")) },
	}
	for name, f := range bad {
		if got, err := f(); err == nil {
			t.Errorf("%s: Unwrap = %q, want an error", name, got)
		}
	}
}
