package csi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"syscall"

	"golang.org/x/sys/unix"
)

// foldersBackend keeps each volume in a plain folder of the pool folder,
// where btrfs cannot run (no root, no loop devices, no btrfs). Sizes are
// recorded but not enforced, usage is measured by walking the folder, and
// snapshots and clones are full copies. Walking and copying go through
// os.Root: a symbolic link an app planted in its volume is copied as a link
// and never followed, and nothing outside the volume is reached.
type foldersBackend struct {
	dir    string // the pool folder
	reason string // why sizes are not enforced here
	log    *slog.Logger
}

var _ backend = (*foldersBackend)(nil)

func (f *foldersBackend) kind() string             { return "folders" }
func (f *foldersBackend) enforced() (bool, string) { return false, f.reason }
func (f *foldersBackend) root() string             { return f.dir }

// prepare makes the folders of volumes and snapshots.
func (f *foldersBackend) prepare() error {
	if err := os.MkdirAll(f.dir, 0o700); err != nil {
		return fmt.Errorf("make the pool folder: %w", err)
	}
	for _, d := range []string{volumesDir, snapshotsDir} {
		if err := os.Mkdir(path.Join(f.dir, d), 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("make the pool's %s folder: %w", d, err)
		}
	}
	return nil
}

func (f *foldersBackend) create(ctx context.Context, p string, size int64) error {
	if err := os.Mkdir(p, 0o700); err != nil {
		return poolErr("make the volume's folder", err)
	}
	return nil
}

func (f *foldersBackend) copy(ctx context.Context, src, dst string, readOnly bool, size int64) error {
	if err := os.Mkdir(dst, 0o700); err != nil {
		return poolErr("make the copy's folder", err)
	}
	sr, err := os.OpenRoot(src)
	if err != nil {
		return fmt.Errorf("open %s: %w", src, err)
	}
	defer sr.Close()
	dr, err := os.OpenRoot(dst)
	if err != nil {
		return fmt.Errorf("open %s: %w", dst, err)
	}
	defer dr.Close()
	if err := copyTree(ctx, sr, dr, ".", 0); err != nil {
		return err
	}
	fi, err := sr.Lstat(".")
	if err != nil {
		return fmt.Errorf("stat %s: %w", src, err)
	}
	return setMeta(dr, ".", fi)
}

// copyTree copies the folder dir of sr into dr, where it exists already.
func copyTree(ctx context.Context, sr, dr *os.Root, dir string, depth int) error {
	if depth > 1000 {
		return fmt.Errorf("copy %s: more than 1000 levels of folders", dir)
	}
	d, err := sr.Open(dir)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	entries, err := d.ReadDir(-1)
	d.Close()
	if err != nil {
		return fmt.Errorf("list %s: %w", dir, err)
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		name := path.Join(dir, e.Name())
		fi, err := sr.Lstat(name)
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			return fmt.Errorf("stat %s: %w", name, err)
		}
		switch mode := fi.Mode(); {
		case mode.IsDir():
			if err := dr.Mkdir(name, 0o700); err != nil {
				return poolErr("copy "+name, err)
			}
			if err := copyTree(ctx, sr, dr, name, depth+1); err != nil {
				return err
			}
		case mode.IsRegular():
			if err := copyFile(sr, dr, name); err != nil {
				return err
			}
		case mode&fs.ModeSymlink != 0:
			target, err := sr.Readlink(name)
			if err != nil {
				return fmt.Errorf("read the link %s: %w", name, err)
			}
			if err := dr.Symlink(target, name); err != nil {
				return poolErr("copy the link "+name, err)
			}
		default:
			continue // sockets, pipes and devices are not data
		}
		if err := setMeta(dr, name, fi); err != nil {
			return err
		}
	}
	return nil
}

// copyFile copies one regular file; O_NOFOLLOW and O_NONBLOCK keep a file
// swapped meanwhile for a link or a pipe from being followed or blocking.
func copyFile(sr, dr *os.Root, name string) error {
	in, err := sr.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", name, err)
	}
	defer in.Close()
	if fi, err := in.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil // changed under us: not a file any more
	}
	out, err := dr.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return poolErr("copy "+name, err)
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return poolErr("copy "+name, err)
	}
	return nil
}

// setMeta gives a copied entry its original's owner (when running as root)
// and mode; the owner first, as changing it clears set-id bits.
func setMeta(dr *os.Root, name string, fi fs.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if ok && os.Geteuid() == 0 {
		if err := dr.Lchown(name, int(st.Uid), int(st.Gid)); err != nil {
			return fmt.Errorf("give %s its owner: %w", name, err)
		}
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return nil
	}
	if err := dr.Chmod(name, fi.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
		return fmt.Errorf("give %s its mode: %w", name, err)
	}
	return nil
}

func (f *foldersBackend) resize(p string, size int64) error { return nil }

func (f *foldersBackend) remove(p string) error {
	if err := os.RemoveAll(p); err != nil {
		return fmt.Errorf("remove %s: %w", p, err)
	}
	return nil
}

// usage adds up the blocks of everything in the folder, each file once.
func (f *foldersBackend) usage(ctx context.Context, p string) (int64, string, error) {
	r, err := os.OpenRoot(p)
	if err != nil {
		return 0, "", fmt.Errorf("open %s: %w", p, err)
	}
	defer r.Close()
	seen := map[uint64]bool{}
	var used int64
	var walk func(dir string, depth int) error
	walk = func(dir string, depth int) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		d, err := r.Open(dir)
		if err != nil {
			return nil // removed meanwhile
		}
		entries, err := d.ReadDir(-1)
		d.Close()
		if err != nil {
			return nil
		}
		for _, e := range entries {
			name := path.Join(dir, e.Name())
			fi, err := r.Lstat(name)
			if err != nil {
				continue
			}
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				if st.Nlink > 1 && !fi.IsDir() {
					if seen[st.Ino] {
						continue
					}
					seen[st.Ino] = true
				}
				used += st.Blocks * 512
			}
			if fi.IsDir() && depth < 1000 {
				if err := walk(name, depth+1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk(".", 0); err != nil {
		return 0, "", err
	}
	return used, "", nil
}

// statfs returns the size and the free space of the disk under the pool.
func (f *foldersBackend) statfs() (total, free int64, err error) {
	var sf unix.Statfs_t
	if err := unix.Statfs(f.dir, &sf); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", f.dir, err)
	}
	return int64(sf.Blocks) * sf.Bsize, int64(sf.Bavail) * sf.Bsize, nil
}

// reserve refuses only a volume larger than the whole disk: sizes are not
// enforced here, so the pool is never full on paper.
func (f *foldersBackend) reserve(ctx context.Context, total, size int64) error {
	disk, _, err := f.statfs()
	if err != nil {
		return err
	}
	if size > disk {
		return &noRoomError{Size: size, Need: size, Max: disk, Alone: true, Where: "the size of the disk under " + f.dir}
	}
	return nil
}

func (f *foldersBackend) available(ctx context.Context, total int64) (int64, error) {
	_, free, err := f.statfs()
	return free, err
}

func (f *foldersBackend) free() (int64, error) {
	_, free, err := f.statfs()
	return free, err
}

func (f *foldersBackend) close() error  { return nil }
func (f *foldersBackend) detach() error { return nil }
