package volume

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tree writes files (path → content; "->target" makes a link) under dir.
func tree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for p, content := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := strings.CutPrefix(content, "->"); ok {
			if err := os.Symlink(target, full); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(full, []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
	}
}

func export(t *testing.T, dir string) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := writeStream(context.Background(), dir, &b, contents{Volume: "v"}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestStreamRoundTrip: what is exported imports as it was: files, modes,
// folders and links (as written, never followed); sockets and fifos are
// left out; the checksums of both sides agree.
func TestStreamRoundTrip(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	tree(t, src, map[string]string{"a.txt": "alpha", "sub/deep/b.bin": strings.Repeat("x", 300<<10), "out": "->/etc/passwd", "sub/in": "->../a.txt"})
	os.Chmod(filepath.Join(src, "a.txt"), 0o600)
	if err := syscall.Mkfifo(filepath.Join(src, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, want, err := manifestOf(context.Background(), src, 0)
	if err != nil {
		t.Fatal(err)
	}
	m, err := readStream(context.Background(), bytes.NewReader(export(t, src)), dst, 0, 0, 1<<30, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.Checksum != want {
		t.Errorf("the stream's checksum %s, the source's %s", m.Checksum, want)
	}
	if _, got, _ := manifestOf(context.Background(), dst, 0); got != want {
		t.Errorf("the imported tree's checksum %s, the source's %s", got, want)
	}
	if target, err := os.Readlink(filepath.Join(dst, "out")); err != nil || target != "/etc/passwd" {
		t.Errorf("link out: %q %v", target, err)
	}
	if fi, err := os.Stat(filepath.Join(dst, "a.txt")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("a.txt: %v %v, want mode 0600", fi, err)
	}
	if _, err := os.Lstat(filepath.Join(dst, "fifo")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a fifo was imported: %v", err)
	}
	// A budget smaller than the files is refused.
	if _, _, err := manifestOf(context.Background(), src, 100<<10); !errors.Is(err, ErrInvalid) {
		t.Errorf("a checksum over its read budget: %v, want ErrInvalid", err)
	}
	// A change anywhere changes the checksum.
	os.WriteFile(filepath.Join(src, "sub/deep/b.bin"), []byte(strings.Repeat("x", 300<<10-1)+"y"), 0o640)
	if _, got, _ := manifestOf(context.Background(), src, 0); got == want {
		t.Error("one byte changed and the checksum did not")
	}
}

// TestStreamRefusesHostileInput: streams that write out of the volume,
// hold what a volume does not, lie about their content, or are cut short
// are refused with ErrInvalid or ErrCorrupt, and write nothing outside.
func TestStreamRefusesHostileInput(t *testing.T) {
	src := t.TempDir()
	tree(t, src, map[string]string{"a.txt": "alpha", "b.txt": "beta"})
	good := export(t, src)
	outside := t.TempDir()

	raw := func(entries ...tar.Header) []byte {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		for _, h := range entries {
			tw.WriteHeader(&h)
			if h.Typeflag == tar.TypeReg {
				tw.Write(bytes.Repeat([]byte("z"), int(h.Size)))
			}
		}
		tw.Close()
		return b.Bytes()
	}
	flipped := bytes.Clone(good)
	flipped[bytes.Index(flipped, []byte("alpha"))] = 'A'
	trailing := raw(tar.Header{Name: manifestName, Typeflag: tar.TypeReg, Size: 2}, tar.Header{Name: "data/x", Typeflag: tar.TypeReg, Size: 1})
	for name, tc := range map[string]struct {
		stream []byte
		want   error
	}{
		"dot-dot":          {raw(tar.Header{Name: "data/../../" + filepath.Base(outside) + "/evil", Typeflag: tar.TypeReg, Size: 4, Mode: 0o644}), ErrInvalid},
		"absolute":         {raw(tar.Header{Name: "/" + outside + "/evil", Typeflag: tar.TypeReg, Size: 4}), ErrInvalid},
		"outside data":     {raw(tar.Header{Name: "evil", Typeflag: tar.TypeReg, Size: 4}), ErrInvalid},
		"through a link":   {raw(tar.Header{Name: "data/l", Typeflag: tar.TypeSymlink, Linkname: outside}, tar.Header{Name: "data/l/evil", Typeflag: tar.TypeReg, Size: 4}), nil},
		"hard link":        {raw(tar.Header{Name: "data/h", Typeflag: tar.TypeLink, Linkname: "/etc/shadow"}), ErrInvalid},
		"device":           {raw(tar.Header{Name: "data/d", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}), ErrInvalid},
		"no manifest":      {raw(tar.Header{Name: "data/x", Typeflag: tar.TypeReg, Size: 4}), ErrInvalid},
		"after manifest":   {trailing, ErrInvalid},
		"flipped byte":     {flipped, ErrCorrupt},
		"cut short":        {good[:len(good)/3], ErrInvalid},
		"not a tar stream": {[]byte("hello, this is not a volume"), ErrInvalid},
		"too large":        {raw(tar.Header{Name: "data/big", Typeflag: tar.TypeReg, Size: 2 << 20}), ErrInvalid},
	} {
		t.Run(name, func(t *testing.T) {
			dst := t.TempDir()
			_, err := readStream(context.Background(), bytes.NewReader(tc.stream), dst, 0, 0, 1<<20, nil, nil)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
			if ents, _ := os.ReadDir(outside); len(ents) != 0 {
				t.Errorf("the stream wrote outside the volume: %v", ents)
			}
		})
	}
}

// TestPacedCopy: a paced copy keeps to its rate.
func TestPacedCopy(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	tree(t, src, map[string]string{"blob": strings.Repeat("p", 2<<20)})
	start := time.Now()
	var last int64
	_, err := readStream(context.Background(), bytes.NewReader(export(t, src)), dst, 0, 0, 1<<30, newPacer(4<<20), func(n int64) { last = n })
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	// 2 MiB at 4 MiB/s: half a second; a loaded machine may add to it, a
	// pacer that does not hold is far below it.
	if took < 450*time.Millisecond || took > 5*time.Second {
		t.Errorf("2 MiB at 4 MiB/s took %s, want about 500ms", took)
	}
	if last != 2<<20 {
		t.Errorf("progress ended at %d, want %d", last, 2<<20)
	}
}
