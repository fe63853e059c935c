package archive

import (
	"archive/tar"
	"bytes"
	"errors"
	"testing"
)

// FuzzUnpack feeds Unpack arbitrary tar streams (gzipped by the harness, so
// the fuzzer mutates the tar structure rather than compressed bytes). Unpack
// must never panic, write outside dst, leave a symlink that resolves outside
// dst, or leave anything behind when it fails.
func FuzzUnpack(f *testing.F) {
	f.Add(tarStream(f,
		hdr{name: "dir/", typ: tar.TypeDir},
		hdr{name: "dir/file", typ: tar.TypeReg, body: "hello"},
		hdr{name: "link", typ: tar.TypeSymlink, linkname: "dir/file"},
		hdr{name: "x/l", typ: tar.TypeSymlink, linkname: ".."},
	))
	for _, c := range maliciousCases {
		f.Add(tarStream(f, c.entries...))
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		parent, dst := sandbox(t)
		err := Unpack(t.Context(), bytes.NewReader(gzipped(stream)), dst, Limits{MaxBytes: 1 << 20, MaxFiles: 200})
		checkSandbox(t, parent)
		checkLinksInside(t, dst)
		if err != nil {
			if got := listTree(t, dst); len(got) != 0 {
				t.Errorf("dst after a failed Unpack (%v): got %q, want empty", err, names(got))
			}
		}
		if errors.Is(err, ErrUnsafePath) && errors.Is(err, ErrTooLarge) {
			t.Errorf("error wraps both sentinels: %v", err)
		}
	})
}
