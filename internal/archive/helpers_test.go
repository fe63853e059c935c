package archive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// writeTree creates files under dir. A key ending in "/" is an empty folder;
// a value starting with "-> " is a symlink to the rest; a value starting
// with "x:" is an executable file with the rest as content.
func writeTree(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, v := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if strings.HasSuffix(name, "/") {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		switch {
		case strings.HasPrefix(v, "-> "):
			if err := os.Symlink(strings.TrimPrefix(v, "-> "), p); err != nil {
				t.Fatal(err)
			}
		case strings.HasPrefix(v, "x:"):
			if err := os.WriteFile(p, []byte(strings.TrimPrefix(v, "x:")), 0o755); err != nil {
				t.Fatal(err)
			}
		default:
			if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// listTree describes every entry under dir in writeTree's notation, folders
// with a trailing "/" and the value "".
func listTree(t testing.TB, dir string) map[string]string {
	t.Helper()
	got := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		rel = filepath.ToSlash(rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			got[rel+"/"] = ""
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			got[rel] = "-> " + target
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if fi.Mode()&0o111 != 0 {
				got[rel] = "x:" + string(b)
			} else {
				got[rel] = string(b)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// names returns the sorted keys of a listTree result.
func names(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// hdr is one hand-made tar entry.
type hdr struct {
	name     string
	typ      byte
	body     string
	linkname string
	mode     int64
}

// tarStream builds an uncompressed tar stream by hand, as an attacker would.
func tarStream(t testing.TB, entries ...hdr) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.linkname, Mode: e.mode, Format: tar.FormatPAX}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if e.typ == tar.TypeChar || e.typ == tar.TypeBlock {
			h.Devmajor, h.Devminor = 1, 3
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("write header %q: %v", e.name, err)
		}
		if e.body != "" {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// sandbox makes parent/dst (empty) and parent/outside/canary and returns
// parent and dst. checkSandbox verifies that nothing else appeared in parent.
func sandbox(t testing.TB) (parent, dst string) {
	t.Helper()
	parent = t.TempDir()
	dst = filepath.Join(parent, "dst")
	writeTree(t, parent, map[string]string{"dst/": "", "outside/canary": "canary"})
	return parent, dst
}

func checkSandbox(t testing.TB, parent string) {
	t.Helper()
	got := names(listTree(t, parent))
	var outside []string
	for _, n := range got {
		if !strings.HasPrefix(n, "dst/") {
			outside = append(outside, n)
		}
	}
	want := []string{"outside/", "outside/canary"}
	if !slices.Equal(outside, want) {
		t.Errorf("entries outside dst: got %q, want %q", outside, want)
	}
	if b, _ := os.ReadFile(filepath.Join(parent, "outside", "canary")); string(b) != "canary" {
		t.Errorf("outside/canary: got %q, want %q", b, "canary")
	}
}

// checkLinksInside resolves every symlink under dst on the real file system,
// independently of the package's own resolver, and fails if one leaves dst.
func checkLinksInside(t testing.TB, dst string) {
	t.Helper()
	err := filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Type()&fs.ModeSymlink == 0 {
			return err
		}
		rel, _ := filepath.Rel(dst, p)
		if err := resolveOnDisk(dst, filepath.ToSlash(rel)); err != nil {
			t.Errorf("symlink %s: %v", rel, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func resolveOnDisk(root, rel string) error {
	var cur []string
	pending := strings.Split(rel, "/")
	for follows := 0; len(pending) > 0; {
		el := pending[0]
		pending = pending[1:]
		switch el {
		case "", ".":
			continue
		case "..":
			if len(cur) == 0 {
				return fmt.Errorf("escapes %s", root)
			}
			cur = cur[:len(cur)-1]
			continue
		}
		p := filepath.Join(append([]string{root}, append(cur, el)...)...)
		fi, err := os.Lstat(p)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			cur = append(cur, el)
			continue
		}
		if follows++; follows > 40 {
			return nil // a loop: the kernel gives ELOOP, nothing escapes
		}
		target, err := os.Readlink(p)
		if err != nil {
			return err
		}
		if filepath.IsAbs(target) {
			return fmt.Errorf("absolute target %q", target)
		}
		pending = append(strings.Split(target, "/"), pending...)
	}
	return nil
}
