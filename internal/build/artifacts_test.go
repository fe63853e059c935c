package build

import (
	"context"
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"paddock.dev/paddock/internal/archive"
)

// writeTree creates files under dir; a value starting with "-> " is a symlink.
func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, v := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		if target, ok := strings.CutPrefix(v, "-> "); ok {
			err = os.Symlink(target, p)
		} else {
			err = os.WriteFile(p, []byte(v), 0o755)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// readTree returns every file and symlink under dir.
func readTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	got := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.Type()&fs.ModeSymlink != 0 {
			target, err := os.Readlink(p)
			got[filepath.ToSlash(rel)] = "-> " + target
			return err
		}
		b, err := os.ReadFile(p)
		got[filepath.ToSlash(rel)] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

var appTree = map[string]string{
	"main.go":     "package main",
	"bin/app":     "\x7fELF...",
	".gitignore":  "bin/\n", // ignore rules do not apply to artifacts
	"public/link": "-> ../main.go",
}

func TestStoreIsDeterministic(t *testing.T) {
	a := &Artifacts{Dir: filepath.Join(t.TempDir(), "artifacts")}
	src1, src2 := t.TempDir(), t.TempDir()
	writeTree(t, src1, appTree)
	writeTree(t, src2, appTree)
	old := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := os.Chtimes(filepath.Join(src2, "main.go"), old, old); err != nil {
		t.Fatal(err)
	}

	d1, err := a.Store(t.Context(), src1, 0)
	if err != nil {
		t.Fatalf("Store: %v", err)
	}
	d2, err := a.Store(t.Context(), src2, 0)
	if err != nil {
		t.Fatalf("Store: %v", err)
	}
	if d1 != d2 {
		t.Errorf("digests of the same tree: got %s and %s, want equal", d1, d2)
	}
	if !strings.HasPrefix(d1, "sha256:") || len(d1) != len("sha256:")+64 {
		t.Errorf("digest: got %q, want sha256:<64 hex>", d1)
	}

	entries, err := os.ReadDir(a.Dir)
	if err != nil {
		t.Fatal(err)
	}
	want := "sha256-" + strings.TrimPrefix(d1, "sha256:") + ".tar.gz"
	if len(entries) != 1 || entries[0].Name() != want {
		var got []string
		for _, e := range entries {
			got = append(got, e.Name())
		}
		t.Fatalf("artifact folder: got %q, want [%q] (no temp files)", got, want)
	}
	fi, err := entries[0].Info()
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o444 {
		t.Errorf("artifact mode: got %v, want -r--r--r--", got)
	}

	writeTree(t, src2, map[string]string{"extra": "x"})
	d3, err := a.Store(t.Context(), src2, 0)
	if err != nil {
		t.Fatalf("Store: %v", err)
	}
	if d3 == d1 {
		t.Errorf("digest of a different tree: got %s, want a different one", d3)
	}
}

func TestExtractRoundTrip(t *testing.T) {
	a := &Artifacts{Dir: t.TempDir()}
	src := t.TempDir()
	writeTree(t, src, appTree)
	digest, err := a.Store(t.Context(), src, 0)
	if err != nil {
		t.Fatalf("Store: %v", err)
	}
	dst := t.TempDir()
	if err := a.Extract(t.Context(), digest, dst); err != nil {
		t.Fatalf("Extract: %v", err)
	}
	if got, want := readTree(t, dst), readTree(t, src); !maps.Equal(got, want) {
		t.Errorf("extracted:\ngot  %q\nwant %q", got, want)
	}
	fi, err := os.Stat(filepath.Join(dst, "bin", "app"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&0o111 == 0 {
		t.Errorf("bin/app mode: got %v, want executable", fi.Mode())
	}
}

func TestExtractDetectsCorruption(t *testing.T) {
	tests := []struct {
		name    string
		corrupt func(t *testing.T, path, otherPath string)
	}{
		{"a flipped byte", func(t *testing.T, path, _ string) {
			b := readFile(t, path)
			b[len(b)/2] ^= 0xff
			overwrite(t, path, b)
		}},
		{"truncated", func(t *testing.T, path, _ string) {
			b := readFile(t, path)
			overwrite(t, path, b[:len(b)-10])
		}},
		{"trailing bytes", func(t *testing.T, path, _ string) {
			overwrite(t, path, append(readFile(t, path), "junk"...))
		}},
		{"another valid artifact in its place", func(t *testing.T, path, other string) {
			overwrite(t, path, readFile(t, other))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &Artifacts{Dir: t.TempDir()}
			src, other := t.TempDir(), t.TempDir()
			writeTree(t, src, appTree)
			writeTree(t, other, map[string]string{"evil": "replaced"})
			digest, err := a.Store(t.Context(), src, 0)
			if err != nil {
				t.Fatal(err)
			}
			otherDigest, err := a.Store(t.Context(), other, 0)
			if err != nil {
				t.Fatal(err)
			}
			tt.corrupt(t, artifactPath(a, digest), artifactPath(a, otherDigest))

			dst := t.TempDir()
			err = a.Extract(t.Context(), digest, dst)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Extract: got %v, want ErrCorrupt", err)
			}
			if got := readTree(t, dst); len(got) != 0 {
				t.Errorf("dst after a corrupt Extract: got %q, want empty", got)
			}

			// Storing the same tree again repairs the artifact.
			if _, err := a.Store(t.Context(), src, 0); err != nil {
				t.Fatal(err)
			}
			if err := a.Extract(t.Context(), digest, t.TempDir()); err != nil {
				t.Errorf("Extract after a new Store: got %v, want nil", err)
			}
		})
	}
}

func TestExtractErrors(t *testing.T) {
	a := &Artifacts{Dir: t.TempDir()}
	missing := "sha256:" + strings.Repeat("0", 64)
	tests := []struct {
		name    string
		digest  string
		wantErr error
		wantMsg string
	}{
		{"missing", missing, fs.ErrNotExist, "no such file"},
		{"path traversal", "sha256:../../etc/passwd", nil, "invalid artifact digest"},
		{"other algorithm", "md5:" + strings.Repeat("0", 32), nil, "invalid artifact digest"},
		{"upper case", "sha256:" + strings.Repeat("A", 64), nil, "invalid artifact digest"},
		{"short", "sha256:abc", nil, "invalid artifact digest"},
		{"empty", "", nil, "invalid artifact digest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := a.Extract(t.Context(), tt.digest, t.TempDir())
			if err == nil || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("Extract(%q): got %v, want an error containing %q", tt.digest, err, tt.wantMsg)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("Extract(%q): got %v, want it to match %v", tt.digest, err, tt.wantErr)
			}
		})
	}
}

func TestExtractIntoNonEmptyFolder(t *testing.T) {
	a := &Artifacts{Dir: t.TempDir()}
	src := t.TempDir()
	writeTree(t, src, appTree)
	digest, err := a.Store(t.Context(), src, 0)
	if err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	writeTree(t, dst, map[string]string{"mine": "keep me"})
	if err := a.Extract(t.Context(), digest, dst); err == nil {
		t.Fatal("Extract into a non-empty folder: got nil, want an error")
	}
	if got, want := readTree(t, dst), map[string]string{"mine": "keep me"}; !maps.Equal(got, want) {
		t.Errorf("dst: got %q, want %q", got, want)
	}
}

func TestStoreRejectsOutsideSymlink(t *testing.T) {
	a := &Artifacts{Dir: t.TempDir()}
	src := t.TempDir()
	writeTree(t, src, map[string]string{"a": "a", "escape": "-> /etc/passwd"})
	_, err := a.Store(t.Context(), src, 0)
	if err == nil || !strings.Contains(err.Error(), `symlink "escape"`) {
		t.Fatalf("Store: got %v, want an error naming symlink \"escape\"", err)
	}
	if entries, _ := os.ReadDir(a.Dir); len(entries) != 0 {
		t.Errorf("artifact folder after a failed Store: got %d entries, want none", len(entries))
	}
}

func artifactPath(a *Artifacts, digest string) string {
	return filepath.Join(a.Dir, "sha256-"+strings.TrimPrefix(digest, "sha256:")+".tar.gz")
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func overwrite(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestPrune(t *testing.T) {
	ctx := context.Background()
	a := &Artifacts{Dir: t.TempDir()}
	var digests []string
	for _, content := range []string{"one", "two", "three"} {
		src := t.TempDir()
		if err := os.WriteFile(filepath.Join(src, "f"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		d, err := a.Store(ctx, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, d)
	}
	old := time.Now().Add(-2 * time.Hour)
	for _, d := range digests[:2] {
		os.Chtimes(a.path(strings.TrimPrefix(d, "sha256:")), old, old)
	}
	// digests[0] is kept, [1] is unused and old, [2] unused but new.
	n, err := a.Prune(map[string]bool{digests[0]: true}, time.Now().Add(-time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("Prune: removed %d (%v), want 1", n, err)
	}
	for i, want := range []bool{true, false, true} {
		_, err := os.Stat(a.path(strings.TrimPrefix(digests[i], "sha256:")))
		if got := err == nil; got != want {
			t.Errorf("artifact %d present: got %v, want %v", i, got, want)
		}
	}
}

// TestStoreRefusesAnotherUsersFile: a build's output, stored as its app's
// user, may not hold a hard link to a file of another user (the kernel
// allows one where protected_hardlinks is off): root would read it.
func TestStoreRefusesAnotherUsersFile(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (the tests run as root, as CI does)")
	}
	const app = 123458
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("root only"), 0o600); err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	writeTree(t, src, map[string]string{"bin/app": "ok"})
	if err := os.Link(secret, filepath.Join(src, "bin", "loot")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{src, filepath.Join(src, "bin"), filepath.Join(src, "bin", "app")} {
		os.Lchown(p, app, app)
	}
	a := &Artifacts{Dir: t.TempDir()}
	_, err := a.Store(t.Context(), src, app)
	if !errors.Is(err, archive.ErrNotOwned) || !strings.Contains(err.Error(), "loot") {
		t.Fatalf("Store: got %v, want ErrNotOwned naming loot", err)
	}
	if entries, _ := os.ReadDir(a.Dir); len(entries) != 0 {
		t.Errorf("artifact folder after a refused Store: got %d entries, want none", len(entries))
	}
	// The same tree without the link is stored.
	os.Remove(filepath.Join(src, "bin", "loot"))
	if _, err := a.Store(t.Context(), src, app); err != nil {
		t.Fatalf("Store of the app's own files: %v", err)
	}
}
