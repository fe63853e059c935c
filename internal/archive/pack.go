// Package archive moves a folder between machines as a gzip-compressed tar
// stream, safely: Pack on the sending side applies .gitignore and
// .paddockignore rules and refuses symlinks that point outside the folder;
// Unpack on the receiving side treats the stream as hostile and refuses any
// entry that could write outside the destination, through a symlink, or past
// the size limits.
//
// The output of Pack and PackAll is deterministic: entries are sorted and
// times, owners and modes are normalised, so the same tree gives the same
// bytes (with the same Go version). The build package relies on this to
// address artifacts by their digest.
package archive

import (
	"archive/tar"
	"compress/gzip"
	"context"
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

// Pack writes dir as a gzip-compressed tar stream to w. It skips .git (at
// any depth) and what the .gitignore files (the root's and nested ones) and a
// root .paddockignore name, with gitignore semantics; .paddockignore rules
// come after the root .gitignore's, so they can override them.
//
// Entries are sorted by name; regular files keep their executable bit
// (modes are normalised to 0644 or 0755, folders to 0755); times and owners
// are zeroed. Symlinks are kept as symlinks when they resolve inside dir and
// are an error naming the link when they point outside it (absolute, or
// escaping with ".."). Sockets, devices and fifos are skipped.
func Pack(ctx context.Context, dir string, w io.Writer) error {
	return pack(ctx, dir, w, true, -1)
}

// PackAll is Pack without ignore rules: it packs every regular file, folder
// and symlink under dir, .git included. It is meant for build artifacts,
// whose output is usually git-ignored.
func PackAll(ctx context.Context, dir string, w io.Writer) error {
	return pack(ctx, dir, w, false, -1)
}

// PackOwned is PackAll for a tree that a user could write, read by a
// process that may read more than that user (root packing a build's
// output): every regular file packed must be owned by uid, as the opened
// file itself says, or PackOwned fails with ErrNotOwned. A hard link to a
// file of another user (which the kernel allows where protected_hardlinks
// is off) or a file swapped in meanwhile is refused, never read.
func PackOwned(ctx context.Context, dir string, w io.Writer, uid uint32) error {
	return pack(ctx, dir, w, false, int64(uid))
}

// ErrNotOwned is a file that PackOwned found owned by another user.
var ErrNotOwned = errors.New("file not owned by the folder's user")

// entry is one file, folder or symlink to pack.
type entry struct {
	name   string // slash-separated, relative to the root
	kind   kind
	exec   bool   // regular files: any executable bit set
	target string // symlinks
}

type packer struct {
	root      *os.Root
	useIgnore bool
	owner     int64 // every file's owner must be this uid; -1: anyone
	entries   []entry
}

func pack(ctx context.Context, dir string, w io.Writer, useIgnore bool, owner int64) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("pack: %w", err)
	}
	defer root.Close()

	p := &packer{root: root, useIgnore: useIgnore, owner: owner}
	if err := p.walk(ctx, "", nil); err != nil {
		return fmt.Errorf("pack %s: %w", dir, err)
	}
	slices.SortFunc(p.entries, func(a, b entry) int { return strings.Compare(a.name, b.name) })

	tree := make(map[string]node, len(p.entries))
	for _, e := range p.entries {
		tree[e.name] = node{kind: e.kind, target: e.target}
	}
	for _, e := range p.entries {
		if e.kind != kindSymlink {
			continue
		}
		if err := checkLink(tree, e.name, e.target); err != nil {
			return fmt.Errorf("pack %s: symlink %q -> %q: %w; replace it with a copy or a relative link inside the folder, or ignore it in .paddockignore", dir, e.name, e.target, err)
		}
	}

	// Speed over size: uploads cross loopback or a LAN, and artifacts are
	// written once per build and read once per instance start.
	gz, _ := gzip.NewWriterLevel(w, gzip.BestSpeed)
	tw := tar.NewWriter(gz)
	for _, e := range p.entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := p.write(ctx, tw, e); err != nil {
			return fmt.Errorf("pack %s: %q: %w", dir, e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("pack %s: %w", dir, err)
	}
	if err := gz.Close(); err != nil {
		return fmt.Errorf("pack %s: %w", dir, err)
	}
	return nil
}

// walk lists the folder rel ("" for the root) and what is under it.
func (p *packer) walk(ctx context.Context, rel string, stack []ignoreFile) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f, err := p.root.Open(orDot(rel))
	if err != nil {
		return err
	}
	des, err := f.ReadDir(-1)
	f.Close()
	if err != nil {
		return err
	}
	slices.SortFunc(des, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })

	if p.useIgnore {
		files := []string{".gitignore"}
		if rel == "" {
			files = append(files, ".paddockignore")
		}
		for _, name := range files {
			data, ok, err := p.readIgnore(path.Join(rel, name))
			if err != nil {
				return err
			}
			if ok {
				stack = append(stack[:len(stack):len(stack)], parseIgnore(rel, data))
			}
		}
	}

	for _, de := range des {
		name := path.Join(rel, de.Name())
		if p.useIgnore && de.Name() == ".git" {
			continue
		}
		typ := de.Type()
		isDir := typ.IsDir()
		if p.useIgnore && ignored(stack, name, isDir) {
			continue
		}
		switch {
		case isDir:
			p.entries = append(p.entries, entry{name: name, kind: kindDir})
			if err := p.walk(ctx, name, stack); err != nil {
				return err
			}
		case typ.IsRegular():
			fi, err := de.Info()
			if err != nil {
				return err
			}
			p.entries = append(p.entries, entry{name: name, kind: kindFile, exec: fi.Mode()&0o111 != 0})
		case typ&fs.ModeSymlink != 0:
			target, err := p.root.Readlink(name)
			if err != nil {
				return err
			}
			p.entries = append(p.entries, entry{name: name, kind: kindSymlink, target: target})
		default:
			// sockets, devices, fifos: nothing an app's source needs
		}
	}
	return nil
}

// readIgnore reads an ignore file if it is a regular file.
func (p *packer) readIgnore(name string) ([]byte, bool, error) {
	fi, err := p.root.Lstat(name)
	if err != nil || !fi.Mode().IsRegular() {
		return nil, false, nil
	}
	data, err := p.root.ReadFile(name)
	if err != nil {
		return nil, false, err
	}
	return data, true, nil
}

// epoch is the modification time of every entry, for reproducible output.
var epoch = time.Unix(0, 0)

func (p *packer) write(ctx context.Context, tw *tar.Writer, e entry) error {
	hdr := &tar.Header{Name: e.name, ModTime: epoch}
	switch e.kind {
	case kindDir:
		hdr.Typeflag = tar.TypeDir
		hdr.Name += "/"
		hdr.Mode = 0o755
		return tw.WriteHeader(hdr)
	case kindSymlink:
		hdr.Typeflag = tar.TypeSymlink
		hdr.Linkname = e.target
		hdr.Mode = 0o777
		return tw.WriteHeader(hdr)
	}

	// The folder may be written to while it is packed (a build's stray
	// process): open through the root so nothing outside it can be read,
	// without blocking (a file swapped for a FIFO would hold the open
	// forever) or following a last link, and check that what was opened
	// is still a regular file.
	f, err := p.root.OpenFile(e.name, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("changed while packing: no longer a regular file")
	}
	if p.owner >= 0 {
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("%w: its owner is unknown", ErrNotOwned)
		}
		if int64(st.Uid) != p.owner {
			return fmt.Errorf("%w: owned by uid %d, not %d (a hard link to another user's file?)", ErrNotOwned, st.Uid, p.owner)
		}
	}
	hdr.Typeflag = tar.TypeReg
	hdr.Mode = 0o644
	if e.exec {
		hdr.Mode = 0o755
	}
	hdr.Size = fi.Size()
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	n, err := io.Copy(tw, ctxReader{ctx, io.LimitReader(f, hdr.Size)})
	if err != nil {
		return err
	}
	if n != hdr.Size {
		return fmt.Errorf("changed while packing: read %d of %d bytes", n, hdr.Size)
	}
	return nil
}

func orDot(rel string) string {
	if rel == "" {
		return "."
	}
	return rel
}
