package volume

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"syscall"
	"time"
)

// A volume's content is read and written here by the server, as root, in
// folders no app reaches (a snapshot's scratch copy, a volume being
// filled before it is handed over): through an os.Root, following no
// link, opening nothing but regular files and folders.

// ErrCorrupt is content that does not match its checksum manifest.
var ErrCorrupt = errors.New("content does not match its checksum manifest")

// entry is one file, folder or link of a volume.
type entry struct {
	Path   string      `json:"path"` // slash-separated, relative to the volume's root
	Type   string      `json:"type"` // "dir", "file" or "link"
	Mode   fs.FileMode `json:"mode"` // permission bits
	Size   int64       `json:"size,omitempty"`
	SHA256 string      `json:"sha256,omitempty"` // files
	Target string      `json:"target,omitempty"` // links, as written, never followed
}

// contents is a volume's checksum manifest: its entries and their sum.
type contents struct {
	Format   string    `json:"format"`
	Volume   string    `json:"volume"`
	Snapshot string    `json:"snapshot,omitempty"`
	Size     int64     `json:"size"` // the volume's size
	Created  time.Time `json:"created"`
	Entries  []entry   `json:"entries"`
	Checksum string    `json:"checksum"`
}

const (
	streamFormat   = "paddock-volume/1"
	manifestName   = "manifest.json"
	dataPrefix     = "data/"
	maxManifest    = 256 << 20
	copyBufferSize = 256 << 10
)

// checksum sums entries, sorted by path, one line each.
func checksum(entries []entry) string {
	sorted := slices.Clone(entries)
	slices.SortFunc(sorted, func(a, b entry) int { return strings.Compare(a.Path, b.Path) })
	h := sha256.New()
	for _, e := range sorted {
		fmt.Fprintf(h, "%s %q %o %d %s %q\n", e.Type, e.Path, e.Mode, e.Size, e.SHA256, e.Target)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// walk calls fn for each folder, regular file and link below dir, parents
// before children, names sorted; a file is passed open. Sockets, devices
// and fifos are skipped: they hold no data.
func walk(ctx context.Context, dir string, fn func(e entry, f *os.File) error) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	var visit func(rel string) error
	visit = func(rel string) error {
		d, err := root.OpenFile(rel, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
		if err != nil {
			return err
		}
		names, err := d.Readdirnames(-1)
		d.Close()
		if err != nil {
			return err
		}
		slices.Sort(names)
		for _, name := range names {
			if err := ctx.Err(); err != nil {
				return err
			}
			p := name
			if rel != "." {
				p = rel + "/" + name
			}
			fi, err := root.Lstat(p)
			if err != nil {
				return err
			}
			e := entry{Path: p, Mode: fi.Mode().Perm()}
			switch {
			case fi.IsDir():
				e.Type = "dir"
				if err := fn(e, nil); err != nil {
					return err
				}
				if err := visit(p); err != nil {
					return err
				}
			case fi.Mode()&fs.ModeSymlink != 0:
				e.Type = "link"
				if e.Target, err = root.Readlink(p); err != nil {
					return err
				}
				if err := fn(e, nil); err != nil {
					return err
				}
			case fi.Mode().IsRegular():
				f, err := root.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
				if err != nil {
					return err
				}
				st, err := f.Stat()
				if err == nil && !st.Mode().IsRegular() {
					err = fmt.Errorf("%s changed while read", p)
				}
				if err == nil {
					e.Type, e.Size = "file", st.Size()
					err = fn(e, f)
				}
				f.Close()
				if err != nil {
					return err
				}
			}
		}
		return nil
	}
	return visit(".")
}

// manifestOf reads every file below dir and returns the content's
// entries and checksum. It reads at most budget bytes (0: no limit): sparse
// files and hard links make a volume's files add up to more than it holds,
// and an app must not make the server read without end.
func manifestOf(ctx context.Context, dir string, budget int64) ([]entry, string, error) {
	var entries []entry
	var read int64
	buf := make([]byte, copyBufferSize)
	err := walk(ctx, dir, func(e entry, f *os.File) error {
		if f != nil {
			if read += e.Size; budget > 0 && read > budget {
				return fmt.Errorf("%w: the volume's files add up to more than %s (sparse files or hard links): too much to read for a checksum", ErrInvalid, human(budget))
			}
			h := sha256.New()
			n, err := io.CopyBuffer(h, contextReader{ctx, f}, buf)
			if err != nil {
				return fmt.Errorf("read %s: %w", e.Path, err)
			}
			e.Size, e.SHA256 = n, hex.EncodeToString(h.Sum(nil))
		}
		entries = append(entries, e)
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	return entries, checksum(entries), nil
}

// writeStream writes dir as a tar stream: the content under data/, then
// its manifest, whose sums are of the bytes written.
func writeStream(ctx context.Context, dir string, w io.Writer, m contents) error {
	tw := tar.NewWriter(w)
	buf := make([]byte, copyBufferSize)
	err := walk(ctx, dir, func(e entry, f *os.File) error {
		hdr := &tar.Header{Name: dataPrefix + e.Path, Mode: int64(e.Mode), Format: tar.FormatPAX}
		switch e.Type {
		case "dir":
			hdr.Typeflag, hdr.Name = tar.TypeDir, hdr.Name+"/"
		case "link":
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, e.Target
		case "file":
			hdr.Typeflag, hdr.Size = tar.TypeReg, e.Size
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if f != nil {
			h := sha256.New()
			// Exactly the size the header gave: a file that grew is cut,
			// one that shrank fails the write.
			n, err := io.CopyBuffer(io.MultiWriter(tw, h), io.LimitReader(contextReader{ctx, f}, e.Size), buf)
			if err != nil {
				return fmt.Errorf("read %s: %w", e.Path, err)
			}
			if n != e.Size {
				return fmt.Errorf("read %s: it shrank while read", e.Path)
			}
			e.SHA256 = hex.EncodeToString(h.Sum(nil))
		}
		m.Entries = append(m.Entries, e)
		return nil
	})
	if err != nil {
		return err
	}
	m.Format, m.Checksum = streamFormat, checksum(m.Entries)
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: manifestName, Mode: 0o600, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	if _, err := tw.Write(b); err != nil {
		return err
	}
	return tw.Close()
}

// readStream fills the empty folder dir from a stream writeStream made,
// giving every file to uid and gid, and checks what it wrote against the
// stream's manifest. It takes at most limit bytes of file data and, with
// a pacer, no faster than it allows. A stream that is not one, holds a
// path out of dir, or does not match its manifest is an error: ErrInvalid
// or ErrCorrupt.
func readStream(ctx context.Context, r io.Reader, dir string, uid, gid int, limit int64, pace *pacer, progress func(int64)) (contents, error) {
	var m contents
	root, err := os.OpenRoot(dir)
	if err != nil {
		return m, err
	}
	defer root.Close()
	tr := tar.NewReader(r)
	var written []entry
	var total int64
	buf := make([]byte, copyBufferSize)
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: not a volume stream, or a damaged one: %s", ErrInvalid, fmt.Sprintf(format, args...))
	}
	seenManifest := false
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return m, bad("%v", err)
		}
		if err := ctx.Err(); err != nil {
			return m, err
		}
		if seenManifest {
			return m, bad("%s after the manifest", hdr.Name)
		}
		if hdr.Name == manifestName {
			if hdr.Size > maxManifest {
				return m, bad("a manifest of %d bytes", hdr.Size)
			}
			if err := json.NewDecoder(io.LimitReader(tr, maxManifest)).Decode(&m); err != nil {
				return m, bad("its manifest: %v", err)
			}
			seenManifest = true
			continue
		}
		rel, ok := strings.CutPrefix(strings.TrimSuffix(hdr.Name, "/"), dataPrefix)
		if !ok || rel == "" || path.IsAbs(rel) || path.Clean(rel) != rel || rel == ".." || strings.HasPrefix(rel, "../") {
			return m, bad("the entry %q is not a path inside the volume", hdr.Name)
		}
		e := entry{Path: rel, Mode: fs.FileMode(hdr.Mode).Perm()}
		switch hdr.Typeflag {
		case tar.TypeDir:
			e.Type = "dir"
			err = root.Mkdir(rel, e.Mode)
		case tar.TypeSymlink:
			e.Type, e.Target = "link", hdr.Linkname
			err = root.Symlink(hdr.Linkname, rel)
		case tar.TypeReg:
			e.Type = "file"
			if total+hdr.Size > limit {
				return m, fmt.Errorf("%w: the stream holds more than the volume's %s: give a larger --size", ErrInvalid, human(limit))
			}
			base := total
			e.Size, e.SHA256, err = writeFile(ctx, root, rel, e.Mode, tr, hdr.Size, buf, pace, func(n int64) {
				if progress != nil {
					progress(base + n)
				}
			})
			total += e.Size
		default:
			return m, bad("the entry %q is of a kind a volume does not hold", hdr.Name)
		}
		if err != nil {
			switch {
			case errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT):
				return m, fmt.Errorf("%w: the volume is full at %s: give a larger --size", ErrInvalid, rel)
			case errors.Is(err, io.ErrUnexpectedEOF):
				return m, bad("it is cut short in %s", rel)
			}
			return m, fmt.Errorf("write %s: %w", rel, err)
		}
		if uid != 0 || gid != 0 {
			if err := root.Lchown(rel, uid, gid); err != nil {
				return m, err
			}
		}
		written = append(written, e)
	}
	switch {
	case !seenManifest:
		return m, bad("it ends before its manifest (cut short?)")
	case m.Format != streamFormat:
		return m, bad("its format is %q, not %q", m.Format, streamFormat)
	case checksum(m.Entries) != m.Checksum:
		return m, fmt.Errorf("%w: the stream's manifest does not match its own checksum", ErrCorrupt)
	case checksum(written) != m.Checksum:
		return m, fmt.Errorf("%w: the files in the stream differ from what its manifest lists", ErrCorrupt)
	}
	return m, nil
}

// writeFile writes size bytes from r to a new file name in root and
// returns their count and SHA-256.
func writeFile(ctx context.Context, root *os.Root, name string, mode fs.FileMode, r io.Reader, size int64, buf []byte, pace *pacer, progress func(int64)) (int64, string, error) {
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, mode)
	if err != nil {
		return 0, "", err
	}
	h := sha256.New()
	var w io.Writer = &countWriter{w: io.MultiWriter(f, h), progress: progress}
	if pace != nil {
		w = pacedWriter{ctx, w, pace}
	}
	n, err := io.CopyBuffer(w, io.LimitReader(contextReader{ctx, r}, size), buf)
	if err == nil && n != size {
		err = io.ErrUnexpectedEOF
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return n, hex.EncodeToString(h.Sum(nil)), err
}

// countWriter tells progress the bytes written so far.
type countWriter struct {
	w        io.Writer
	n        int64
	progress func(int64)
}

func (c *countWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	c.progress(c.n)
	return n, err
}

// pacer holds a copy to a rate, in bytes a second, from its first byte.
type pacer struct {
	rate  int64
	start time.Time
	n     int64
}

func newPacer(rate int64) *pacer {
	if rate <= 0 {
		return nil
	}
	return &pacer{rate: rate}
}

// wait counts n bytes and sleeps until they are due.
func (p *pacer) wait(ctx context.Context, n int) error {
	if p.start.IsZero() {
		p.start = time.Now()
	}
	p.n += int64(n)
	due := p.start.Add(time.Duration(float64(p.n) / float64(p.rate) * float64(time.Second)))
	if d := time.Until(due); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

type pacedWriter struct {
	ctx context.Context
	w   io.Writer
	p   *pacer
}

func (w pacedWriter) Write(b []byte) (int, error) {
	// Small steps, so that the pace is even, not bursts of a whole buffer.
	const step = 64 << 10
	done := 0
	for done < len(b) {
		n := min(step, len(b)-done)
		if err := w.p.wait(w.ctx, n); err != nil {
			return done, err
		}
		m, err := w.w.Write(b[done : done+n])
		done += m
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// contextReader ends a read once ctx is done.
type contextReader struct {
	ctx context.Context
	r   io.Reader
}

func (r contextReader) Read(b []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(b)
}
