package archive

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Sentinel errors of Unpack, for errors.Is.
var (
	// ErrUnsafePath: an entry could write outside the destination, through a
	// symlink, or is of a type that is not allowed (hard link, device, fifo),
	// or is a duplicate.
	ErrUnsafePath = errors.New("unsafe path in archive")
	// ErrTooLarge: the archive holds more bytes or entries than the limits.
	ErrTooLarge = errors.New("archive too large")
)

// Limits bounds what Unpack extracts.
type Limits struct {
	MaxBytes int64 // max unpacked total bytes of regular files; 0 means 512 MiB
	MaxFiles int   // max entries of any type; 0 means 100000
}

// Defaults of Limits.
const (
	DefaultMaxBytes = 512 << 20
	DefaultMaxFiles = 100000
)

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxFiles <= 0 {
		l.MaxFiles = DefaultMaxFiles
	}
	return l
}

// Unpack extracts a Pack stream into dst, which must exist and be empty.
//
// The stream is treated as hostile. Unpack refuses, with an error that names
// the entry and wraps ErrUnsafePath: absolute paths, any path with a ".."
// element, symlinks that are absolute or resolve outside dst (following the
// archive's other symlinks), entries under a symlink (writing through it),
// hard links, devices and fifos, duplicate entries. It refuses with
// ErrTooLarge an archive beyond lim. Symlinks are created last, after every
// check, so nothing is ever written through one; all operations go through
// an os.Root on dst as a second line of defence.
//
// Regular files get mode 0755 if the entry has any executable bit, else
// 0644; folders get 0755; times and owners are not restored.
//
// On error Unpack removes what it extracted, so nothing usable is left in
// dst; the caller removes dst itself.
func Unpack(ctx context.Context, r io.Reader, dst string, lim Limits) (err error) {
	root, err := os.OpenRoot(dst)
	if err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	defer root.Close()
	if err := checkEmpty(root); err != nil {
		return fmt.Errorf("unpack: %s: %w", dst, err)
	}

	u := &unpacker{root: root, lim: lim.withDefaults(), tree: make(map[string]node)}
	defer func() {
		if err != nil {
			u.clean()
		}
	}()
	if err := u.run(ctx, r); err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	return nil
}

func checkEmpty(root *os.Root) error {
	f, err := root.Open(".")
	if err != nil {
		return err
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if len(names) > 0 {
		return errors.New("destination is not empty")
	}
	return nil
}

type unpacker struct {
	root    *os.Root
	lim     Limits
	tree    map[string]node
	links   []string // names of symlinks, created at the end
	entries int
	bytes   int64
}

func (u *unpacker) run(ctx context.Context, r io.Reader) error {
	gz, err := gzip.NewReader(ctxReader{ctx, r})
	if err != nil {
		return fmt.Errorf("not a gzip stream: %w", err)
	}
	defer gz.Close()
	tr := tar.NewReader(gz)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("read archive: %w", err)
		}
		u.entries++
		if u.entries > u.lim.MaxFiles {
			return fmt.Errorf("more than %d entries: %w", u.lim.MaxFiles, ErrTooLarge)
		}
		if err := u.extract(hdr, tr); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
	}
	return u.createLinks()
}

// cleanName validates an entry's name and returns it clean, slash-separated
// and relative ("" for the root folder itself).
func cleanName(name string) (string, error) {
	switch {
	case name == "":
		return "", unsafe(name, "empty name")
	case strings.ContainsRune(name, 0):
		return "", unsafe(name, "name contains a NUL byte")
	case strings.HasPrefix(name, "/"):
		return "", unsafe(name, "absolute path")
	}
	var elems []string
	for el := range strings.SplitSeq(name, "/") {
		switch el {
		case "", ".":
		case "..":
			return "", unsafe(name, `path has a ".." element`)
		default:
			elems = append(elems, el)
		}
	}
	return strings.Join(elems, "/"), nil
}

func (u *unpacker) extract(hdr *tar.Header, r io.Reader) error {
	name, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil // metadata for the entries that follow; nothing we use
	case tar.TypeLink:
		return unsafe(hdr.Name, "hard links are not allowed")
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return unsafe(hdr.Name, "devices and fifos are not allowed")
	case tar.TypeDir, tar.TypeReg, tar.TypeSymlink:
	default:
		return unsafe(hdr.Name, fmt.Sprintf("unsupported entry type %q", hdr.Typeflag))
	}
	if name == "" {
		if hdr.Typeflag == tar.TypeDir {
			return nil // "./": the destination itself
		}
		return unsafe(hdr.Name, "empty name")
	}
	if err := u.parents(hdr.Name, name); err != nil {
		return err
	}
	if old, ok := u.tree[name]; ok {
		if old.kind == kindImplicitDir && hdr.Typeflag == tar.TypeDir {
			u.tree[name] = node{kind: kindDir}
			return nil
		}
		return unsafe(hdr.Name, "duplicate entry")
	}

	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := u.root.Mkdir(name, 0o755); err != nil {
			return err
		}
		u.tree[name] = node{kind: kindDir}
	case tar.TypeSymlink:
		// Checked on its own now, and against the whole tree at the end.
		if err := checkLink(nil, name, hdr.Linkname); err != nil {
			return unsafe(hdr.Name, fmt.Sprintf("symlink to %q: %v", hdr.Linkname, err))
		}
		u.tree[name] = node{kind: kindSymlink, target: hdr.Linkname}
		u.links = append(u.links, name)
	case tar.TypeReg:
		if hdr.Size > u.lim.MaxBytes-u.bytes {
			return fmt.Errorf("entry %q: more than %d bytes unpacked: %w", hdr.Name, u.lim.MaxBytes, ErrTooLarge)
		}
		u.tree[name] = node{kind: kindFile}
		if err := u.writeFile(name, hdr, r); err != nil {
			return fmt.Errorf("entry %q: %w", hdr.Name, err)
		}
	}
	return nil
}

// parents checks the folders above name and creates the missing ones.
func (u *unpacker) parents(raw, name string) error {
	for i := 0; i < len(name); i++ {
		if name[i] != '/' {
			continue
		}
		dir := name[:i]
		n, ok := u.tree[dir]
		switch {
		case !ok:
			if err := u.root.Mkdir(dir, 0o755); err != nil {
				return err
			}
			u.tree[dir] = node{kind: kindImplicitDir}
		case n.kind == kindSymlink:
			return unsafe(raw, fmt.Sprintf("writes through the symlink %q", dir))
		case n.kind == kindFile:
			return unsafe(raw, fmt.Sprintf("parent %q is a file", dir))
		}
	}
	return nil
}

func (u *unpacker) writeFile(name string, hdr *tar.Header, r io.Reader) error {
	mode := os.FileMode(0o644)
	if hdr.Mode&0o111 != 0 {
		mode = 0o755
	}
	f, err := u.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, io.LimitReader(r, hdr.Size))
	u.bytes += n
	if err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil { // the umask may have removed bits
		f.Close()
		return err
	}
	return f.Close()
}

// createLinks checks every symlink against the whole tree, then creates them.
func (u *unpacker) createLinks() error {
	for _, name := range u.links {
		target := u.tree[name].target
		if err := checkLink(u.tree, name, target); err != nil {
			return unsafe(name, fmt.Sprintf("symlink to %q: %v", target, err))
		}
	}
	for _, name := range u.links {
		if err := u.root.Symlink(u.tree[name].target, name); err != nil {
			return fmt.Errorf("entry %q: %w", name, err)
		}
	}
	return nil
}

// clean removes everything extracted so far, best effort.
func (u *unpacker) clean() {
	f, err := u.root.Open(".")
	if err != nil {
		return
	}
	names, _ := f.Readdirnames(-1)
	f.Close()
	for _, n := range names {
		_ = u.root.RemoveAll(n)
	}
}
