package archive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func packBytes(t testing.TB, dir string) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Pack(t.Context(), dir, &buf); err != nil {
		t.Fatalf("Pack: %v", err)
	}
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	long := strings.Repeat("d", 120) + "/" + strings.Repeat("f", 120)
	tests := []struct {
		name  string
		files map[string]string
	}{
		{"empty", map[string]string{}},
		{"files and folders", map[string]string{
			"main.go":         "package main",
			"bin/run":         "x:#!/bin/sh\necho hi\n",
			"a/b/c/deep.txt":  "deep",
			"empty/":          "",
			"a-b":             "sorts before a/",
			"space name.txt":  "spaces",
			"unicode-é.txt":   "é",
			long:              "long names need PAX headers",
			"zero-length.txt": "",
		}},
		{"symlinks inside", map[string]string{
			"data/real.txt":   "real",
			"link.txt":        "-> data/real.txt",
			"data/up.txt":     "-> ../link.txt",
			"dirlink":         "-> data",
			"dangling-inside": "-> missing/file",
			"self":            "-> .",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := t.TempDir()
			writeTree(t, src, tt.files)
			stream := packBytes(t, src)

			dst := t.TempDir()
			if err := Unpack(t.Context(), bytes.NewReader(stream), dst, Limits{}); err != nil {
				t.Fatalf("Unpack: %v", err)
			}
			got, want := listTree(t, dst), listTree(t, src)
			if !mapsEqual(got, want) {
				t.Errorf("unpacked tree:\ngot  %q\nwant %q", got, want)
			}
		})
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestPackDeterministic(t *testing.T) {
	files := map[string]string{"b.txt": "b", "a/x": "x:x", "a/y": "-> x", "c/": ""}
	src1, src2 := t.TempDir(), t.TempDir()
	writeTree(t, src1, files)
	writeTree(t, src2, files)
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	if err := os.Chtimes(filepath.Join(src2, "b.txt"), old, old); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(src2, "b.txt"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, want := packBytes(t, src1), packBytes(t, src2)
	if !bytes.Equal(got, want) {
		t.Errorf("same tree packed to different bytes (%d and %d bytes)", len(got), len(want))
	}

	// Entries are sorted by name in the stream.
	var order []string
	for _, e := range readEntries(t, got) {
		order = append(order, e.Name)
	}
	if !slices.IsSorted(order) {
		t.Errorf("entry order: got %q, want sorted", order)
	}
}

func readEntries(t testing.TB, stream []byte) []*tar.Header {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(stream))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var out []*tar.Header
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		out = append(out, h)
	}
	return out
}

func TestPackIgnore(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  []string // packed names, folders with a trailing "/"
	}{
		{
			name:  "name glob at any depth",
			files: map[string]string{".gitignore": "*.log\n", "a.log": "", "sub/b.log": "", "sub/c.txt": ""},
			want:  []string{".gitignore", "sub/", "sub/c.txt"},
		},
		{
			name:  "leading slash anchors to the root",
			files: map[string]string{".gitignore": "/build\n", "build/out": "", "src/build/keep": ""},
			want:  []string{".gitignore", "src/", "src/build/", "src/build/keep"},
		},
		{
			name:  "a slash in the middle anchors too",
			files: map[string]string{".gitignore": "doc/*.txt\n", "doc/a.txt": "", "doc/sub/b.txt": "", "x/doc/c.txt": ""},
			want:  []string{".gitignore", "doc/", "doc/sub/", "doc/sub/b.txt", "x/", "x/doc/", "x/doc/c.txt"},
		},
		{
			name:  "trailing slash matches folders only",
			files: map[string]string{".gitignore": "tmp/\n", "tmp/a": "", "sub/tmp": "a file named tmp"},
			want:  []string{".gitignore", "sub/", "sub/tmp"},
		},
		{
			name:  "negation re-includes",
			files: map[string]string{".gitignore": "*.log\n!keep.log\n", "a.log": "", "keep.log": ""},
			want:  []string{".gitignore", "keep.log"},
		},
		{
			name:  "a file in an excluded folder cannot be re-included",
			files: map[string]string{".gitignore": "logs/\n!logs/keep.log\n", "logs/keep.log": "", "logs/a.log": ""},
			want:  []string{".gitignore"},
		},
		{
			name:  "contents excluded, folder kept, then re-included",
			files: map[string]string{".gitignore": "logs/*\n!logs/keep.log\n", "logs/keep.log": "", "logs/a.log": ""},
			want:  []string{".gitignore", "logs/", "logs/keep.log"},
		},
		{
			name:  "leading **/",
			files: map[string]string{".gitignore": "**/cache\n", "cache/a": "", "x/y/cache/b": "", "x/cachex": ""},
			want:  []string{".gitignore", "x/", "x/cachex", "x/y/"},
		},
		{
			name:  "middle /**/",
			files: map[string]string{".gitignore": "a/**/b\n", "a/b": "", "a/x/b": "", "a/x/y/b": "", "a/x/c": "", "z/a/b": ""},
			want:  []string{".gitignore", "a/", "a/x/", "a/x/c", "a/x/y/", "z/", "z/a/", "z/a/b"},
		},
		{
			name:  "trailing /**",
			files: map[string]string{".gitignore": "out/**\n!out/keep\n", "out/a": "", "out/sub/b": "", "out/keep": ""},
			want:  []string{".gitignore", "out/", "out/keep"},
		},
		{
			name:  "comments, blank lines and escapes",
			files: map[string]string{".gitignore": "# a comment\n\n\\#hash\n\\!bang\n", "#hash": "", "!bang": "", "# a comment": ""},
			want:  []string{"# a comment", ".gitignore"},
		},
		{
			name:  "trailing spaces are trimmed unless escaped",
			files: map[string]string{".gitignore": "a.txt   \nb.txt\\ \n", "a.txt": "", "b.txt": "", "b.txt ": ""},
			want:  []string{".gitignore", "b.txt"},
		},
		{
			name:  "? and character classes",
			files: map[string]string{".gitignore": "file?.txt\n[ab].c\n[!x-z].go\n", "file1.txt": "", "file12.txt": "", "a.c": "", "c.c": "", "m.go": "", "y.go": ""},
			want:  []string{".gitignore", "c.c", "file12.txt", "y.go"},
		},
		{
			name:  "* does not cross folders",
			files: map[string]string{".gitignore": "src/*.o\n", "src/a.o": "", "src/sub/b.o": ""},
			want:  []string{".gitignore", "src/", "src/sub/", "src/sub/b.o"},
		},
		{
			name: "nested .gitignore applies below its folder and overrides the root",
			files: map[string]string{
				".gitignore":     "*.txt\n",
				"a.txt":          "",
				"sub/.gitignore": "!keep.txt\n/local\n",
				"sub/keep.txt":   "",
				"sub/drop.txt":   "",
				"sub/local":      "",
				"local":          "root local is not anchored by sub/.gitignore",
			},
			want: []string{".gitignore", "local", "sub/", "sub/.gitignore", "sub/keep.txt"},
		},
		{
			name: ".paddockignore at the root, overriding .gitignore",
			files: map[string]string{
				".gitignore":     "bin/\n",
				".paddockignore": "secrets.env\n!bin/\n",
				"secrets.env":    "",
				"bin/tool":       "",
			},
			want: []string{".gitignore", ".paddockignore", "bin/", "bin/tool"},
		},
		{
			name:  ".paddockignore in a subfolder is not read",
			files: map[string]string{"sub/.paddockignore": "*\n", "sub/a": ""},
			want:  []string{"sub/", "sub/.paddockignore", "sub/a"},
		},
		{
			name:  ".git is always skipped",
			files: map[string]string{".git/HEAD": "ref", "sub/.git": "gitdir: ../x", "a": ""},
			want:  []string{"a", "sub/"},
		},
		{
			name:  "ignored symlink pointing outside is fine",
			files: map[string]string{".gitignore": "/outside\n", "outside": "-> /etc/passwd", "a": ""},
			want:  []string{".gitignore", "a"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := t.TempDir()
			writeTree(t, src, tt.files)
			dst := t.TempDir()
			if err := Unpack(t.Context(), bytes.NewReader(packBytes(t, src)), dst, Limits{}); err != nil {
				t.Fatalf("Unpack: %v", err)
			}
			if got := names(listTree(t, dst)); !slices.Equal(got, tt.want) {
				t.Errorf("packed:\ngot  %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestPackSymlinkOutside(t *testing.T) {
	tests := []struct {
		name     string
		files    map[string]string
		wantLink string
	}{
		{"absolute", map[string]string{"abs": "-> /etc/passwd"}, `"abs"`},
		{"absolute inside the folder too", map[string]string{"a": "", "abs": "-> /"}, `"abs"`},
		{"dot-dot", map[string]string{"up": "-> ../x"}, `"up"`},
		{"dot-dot from a subfolder", map[string]string{"sub/up": "-> ../../x"}, `"sub/up"`},
		{"through another symlink", map[string]string{"x/l": "-> ..", "y": "-> x/l/../z"}, `"y"`},
		{"loop", map[string]string{"a": "-> b", "b": "-> a"}, `"a"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := t.TempDir()
			writeTree(t, src, tt.files)
			err := Pack(t.Context(), src, new(bytes.Buffer))
			if err == nil {
				t.Fatal("Pack: got nil error, want an error naming the link")
			}
			if !strings.Contains(err.Error(), "symlink "+tt.wantLink) {
				t.Errorf("Pack error: got %q, want it to name symlink %s", err, tt.wantLink)
			}
		})
	}
}

func TestPackSkipsSpecialFiles(t *testing.T) {
	src := t.TempDir()
	writeTree(t, src, map[string]string{"a": "a"})
	if err := syscall.Mkfifo(filepath.Join(src, "fifo"), 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	dst := t.TempDir()
	if err := Unpack(t.Context(), bytes.NewReader(packBytes(t, src)), dst, Limits{}); err != nil {
		t.Fatalf("Unpack: %v", err)
	}
	if got, want := names(listTree(t, dst)), []string{"a"}; !slices.Equal(got, want) {
		t.Errorf("packed: got %q, want %q", got, want)
	}
}

func TestPackAllKeepsIgnored(t *testing.T) {
	src := t.TempDir()
	writeTree(t, src, map[string]string{".gitignore": "bin/\n", "bin/app": "x:elf", ".git/HEAD": "ref"})
	var buf bytes.Buffer
	if err := PackAll(t.Context(), src, &buf); err != nil {
		t.Fatalf("PackAll: %v", err)
	}
	dst := t.TempDir()
	if err := Unpack(t.Context(), &buf, dst, Limits{}); err != nil {
		t.Fatalf("Unpack: %v", err)
	}
	if got, want := listTree(t, dst), listTree(t, src); !mapsEqual(got, want) {
		t.Errorf("PackAll tree:\ngot  %q\nwant %q", got, want)
	}
}

func TestPackCanceled(t *testing.T) {
	src := t.TempDir()
	writeTree(t, src, map[string]string{"a": "a"})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := Pack(ctx, src, new(bytes.Buffer)); !errors.Is(err, context.Canceled) {
		t.Errorf("Pack with a canceled context: got %v, want context.Canceled", err)
	}
}

// maliciousCases are hand-made streams Unpack must refuse. They seed
// FuzzUnpack too.
var maliciousCases = []struct {
	name    string
	entries []hdr
	lim     Limits
	want    error
}{
	{"dot-dot", []hdr{{name: "../evil", typ: tar.TypeReg, body: "x"}}, Limits{}, ErrUnsafePath},
	{"dot-dot in the middle", []hdr{{name: "a/../../evil", typ: tar.TypeReg, body: "x"}}, Limits{}, ErrUnsafePath},
	{"dot-dot folder", []hdr{{name: "../outside/", typ: tar.TypeDir}}, Limits{}, ErrUnsafePath},
	{"absolute path", []hdr{{name: "/tmp/evil", typ: tar.TypeReg, body: "x"}}, Limits{}, ErrUnsafePath},
	{"absolute symlink", []hdr{{name: "l", typ: tar.TypeSymlink, linkname: "/etc"}}, Limits{}, ErrUnsafePath},
	{"symlink escape then write through it", []hdr{
		{name: "l", typ: tar.TypeSymlink, linkname: "../outside"},
		{name: "l/evil", typ: tar.TypeReg, body: "x"},
	}, Limits{}, ErrUnsafePath},
	{"write through an inside symlink", []hdr{
		{name: "sub/", typ: tar.TypeDir},
		{name: "l", typ: tar.TypeSymlink, linkname: "sub"},
		{name: "l/evil", typ: tar.TypeReg, body: "x"},
	}, Limits{}, ErrUnsafePath},
	{"symlink escaping through another symlink", []hdr{
		{name: "y", typ: tar.TypeSymlink, linkname: "x/l/../outside"},
		{name: "x/l", typ: tar.TypeSymlink, linkname: ".."},
	}, Limits{}, ErrUnsafePath},
	{"symlink over a folder", []hdr{
		{name: "d/f", typ: tar.TypeReg, body: "x"},
		{name: "d", typ: tar.TypeSymlink, linkname: "../outside"},
	}, Limits{}, ErrUnsafePath},
	{"hard link", []hdr{{name: "a", typ: tar.TypeReg, body: "x"}, {name: "h", typ: tar.TypeLink, linkname: "a"}}, Limits{}, ErrUnsafePath},
	{"hard link outside", []hdr{{name: "h", typ: tar.TypeLink, linkname: "../outside/canary"}}, Limits{}, ErrUnsafePath},
	{"char device", []hdr{{name: "null", typ: tar.TypeChar}}, Limits{}, ErrUnsafePath},
	{"block device", []hdr{{name: "sda", typ: tar.TypeBlock}}, Limits{}, ErrUnsafePath},
	{"fifo", []hdr{{name: "fifo", typ: tar.TypeFifo}}, Limits{}, ErrUnsafePath},
	{"duplicate file", []hdr{{name: "a", typ: tar.TypeReg, body: "1"}, {name: "a", typ: tar.TypeReg, body: "2"}}, Limits{}, ErrUnsafePath},
	{"duplicate after cleaning", []hdr{{name: "a", typ: tar.TypeReg, body: "1"}, {name: "./a", typ: tar.TypeReg, body: "2"}}, Limits{}, ErrUnsafePath},
	{"duplicate folder", []hdr{{name: "d/", typ: tar.TypeDir}, {name: "d/", typ: tar.TypeDir}}, Limits{}, ErrUnsafePath},
	{"file over a folder", []hdr{{name: "d/a", typ: tar.TypeReg, body: "1"}, {name: "d", typ: tar.TypeReg, body: "2"}}, Limits{}, ErrUnsafePath},
	{"file under a file", []hdr{{name: "f", typ: tar.TypeReg, body: "1"}, {name: "f/a", typ: tar.TypeReg, body: "2"}}, Limits{}, ErrUnsafePath},
	{"too many bytes", []hdr{{name: "a", typ: tar.TypeReg, body: "123456"}, {name: "b", typ: tar.TypeReg, body: "12345"}}, Limits{MaxBytes: 10}, ErrTooLarge},
	{"too many files", []hdr{{name: "a/", typ: tar.TypeDir}, {name: "a/b", typ: tar.TypeReg}, {name: "c", typ: tar.TypeReg}}, Limits{MaxFiles: 2}, ErrTooLarge},
}

func TestUnpackRejects(t *testing.T) {
	for _, tt := range maliciousCases {
		t.Run(tt.name, func(t *testing.T) {
			parent, dst := sandbox(t)
			err := Unpack(t.Context(), bytes.NewReader(gzipped(tarStream(t, tt.entries...))), dst, tt.lim)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Unpack: got %v, want %v", err, tt.want)
			}
			if tt.want == ErrUnsafePath && !strings.Contains(err.Error(), "entry ") {
				t.Errorf("Unpack error: got %q, want it to name the entry", err)
			}
			checkSandbox(t, parent)
			if got := listTree(t, dst); len(got) != 0 {
				t.Errorf("dst after a failed Unpack: got %q, want empty", names(got))
			}
		})
	}
}

func TestUnpackAccepts(t *testing.T) {
	tests := []struct {
		name    string
		entries []hdr
		want    map[string]string
	}{
		{"no folder entries", []hdr{{name: "a/b/c", typ: tar.TypeReg, body: "c"}}, map[string]string{"a/": "", "a/b/": "", "a/b/c": "c"}},
		{"root entry and dot prefixes", []hdr{{name: "./", typ: tar.TypeDir}, {name: "./a", typ: tar.TypeReg, body: "a"}}, map[string]string{"a": "a"}},
		{"folder entry after its files", []hdr{{name: "d/a", typ: tar.TypeReg, body: "a"}, {name: "d/", typ: tar.TypeDir}}, map[string]string{"d/": "", "d/a": "a"}},
		{"modes normalised", []hdr{{name: "x", typ: tar.TypeReg, body: "x", mode: 0o4711}, {name: "r", typ: tar.TypeReg, body: "r", mode: 0o600}}, map[string]string{"x": "x:x", "r": "r"}},
		{"symlink before its target", []hdr{{name: "l", typ: tar.TypeSymlink, linkname: "d/f"}, {name: "d/f", typ: tar.TypeReg, body: "f"}}, map[string]string{"l": "-> d/f", "d/": "", "d/f": "f"}},
		{"up and down inside", []hdr{{name: "d/l", typ: tar.TypeSymlink, linkname: "../e/./f"}}, map[string]string{"d/": "", "d/l": "-> ../e/./f"}},
		{"exactly at the limits", []hdr{{name: "a", typ: tar.TypeReg, body: "12345"}, {name: "b", typ: tar.TypeReg, body: "12345"}}, map[string]string{"a": "12345", "b": "12345"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent, dst := sandbox(t)
			if err := Unpack(t.Context(), bytes.NewReader(gzipped(tarStream(t, tt.entries...))), dst, Limits{MaxBytes: 10, MaxFiles: 3}); err != nil {
				t.Fatalf("Unpack: %v", err)
			}
			if got := listTree(t, dst); !mapsEqual(got, tt.want) {
				t.Errorf("unpacked:\ngot  %q\nwant %q", got, tt.want)
			}
			checkSandbox(t, parent)
		})
	}
}

func TestUnpackBadInput(t *testing.T) {
	valid := gzipped(tarStream(t, hdr{name: "a", typ: tar.TypeReg, body: "hello"}))
	tests := []struct {
		name   string
		stream []byte
		want   string
	}{
		{"not gzip", []byte("plain text"), "not a gzip stream"},
		{"truncated", valid[:len(valid)/2], "unexpected EOF"},
		{"gzip of garbage", gzipped([]byte(strings.Repeat("garbage!", 100))), "read archive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, dst := sandbox(t)
			err := Unpack(t.Context(), bytes.NewReader(tt.stream), dst, Limits{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Unpack: got %v, want an error containing %q", err, tt.want)
			}
			if got := listTree(t, dst); len(got) != 0 {
				t.Errorf("dst after a failed Unpack: got %q, want empty", names(got))
			}
		})
	}
}

func TestUnpackNonEmptyDestination(t *testing.T) {
	dst := t.TempDir()
	writeTree(t, dst, map[string]string{"keep": "mine"})
	stream := gzipped(tarStream(t, hdr{name: "a", typ: tar.TypeReg, body: "a"}))
	err := Unpack(t.Context(), bytes.NewReader(stream), dst, Limits{})
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("Unpack into a non-empty folder: got %v, want a \"not empty\" error", err)
	}
	if got, want := listTree(t, dst), map[string]string{"keep": "mine"}; !mapsEqual(got, want) {
		t.Errorf("dst: got %q, want %q", got, want)
	}
}

func TestUnpackCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, dst := sandbox(t)
	stream := gzipped(tarStream(t, hdr{name: "a", typ: tar.TypeReg, body: "a"}))
	if err := Unpack(ctx, bytes.NewReader(stream), dst, Limits{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Unpack with a canceled context: got %v, want context.Canceled", err)
	}
}

// TestPackOwnedDoesNotBlockOnAFIFO: a file swapped for a FIFO while the
// tree is packed fails the pack at once rather than holding it forever.
func TestPackOwnedDoesNotBlockOnAFIFO(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(dir, "trap"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := &packer{owner: int64(os.Getuid())}
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	p.root = root
	done := make(chan error, 1)
	go func() {
		done <- p.write(context.Background(), tar.NewWriter(io.Discard), entry{name: "trap", kind: kindFile})
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "no longer a regular file") {
			t.Errorf("packing a FIFO: got %v, want it refused as not a regular file", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("packing blocked on a FIFO")
	}
}
