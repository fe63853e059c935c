package csi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The pool of the btrfs backend, in the pool folder:
//
//	pool.img   a sparse image file holding a btrfs filesystem
//	mnt/       where that filesystem is mounted (0700, root only)
//
// The image is attached to a loop device with LO_FLAGS_AUTOCLEAR: the
// kernel detaches it by itself once the filesystem is unmounted everywhere
// (the pool's mount and every volume's bind mount), and after a reboot
// nothing is attached; opening the pool attaches it again, reusing the
// mount or the loop device that is still there after a restart of the
// plugin. An image is formatted only while it holds nothing but zeros.
const (
	poolImageName = "pool.img"
	poolMountName = "mnt"

	// minPoolSize is a bit above the smallest filesystem mkfs.btrfs makes
	// (109 MiB).
	minPoolSize = 128 << 20
)

// btrfsPool is the loop-backed btrfs filesystem of a pool folder.
type btrfsPool struct {
	dir   string // the pool folder
	image string // dir/pool.img
	mnt   string // dir/mnt
	dev   string // the loop device, /dev/loopN
	log   *slog.Logger
}

// openBtrfsPool makes the pool ready: it creates and formats the image the
// first time (size bytes, sparse), attaches and mounts it, and turns quotas
// on. A pool already mounted at dir/mnt (the plugin restarted) is adopted.
func openBtrfsPool(ctx context.Context, dir string, size int64, log *slog.Logger) (*btrfsPool, error) {
	p := &btrfsPool{
		dir:   dir,
		image: filepath.Join(dir, poolImageName),
		mnt:   filepath.Join(dir, poolMountName),
		log:   log,
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("make the pool folder: %w", err)
	}
	if err := os.Mkdir(p.mnt, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("make the pool's mount point: %w", err)
	}
	created, err := p.createImage(size)
	if err != nil {
		return nil, err
	}

	m, mounted, err := mountAt(p.mnt)
	if err != nil {
		return nil, err
	}
	if mounted {
		if m.FSType != "btrfs" {
			return nil, fmt.Errorf("%s has a %s filesystem mounted on it, not the pool's btrfs; unmount it", p.mnt, m.FSType)
		}
		ok, err := p.backs(m.Source)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("%s is mounted from %s, which is not backed by %s; unmount it", p.mnt, m.Source, p.image)
		}
		p.dev = m.Source
		log.Info("csi pool adopted", "image", p.image, "device", p.dev)
		return p, p.prepare()
	}

	if err := p.format(ctx, created); err != nil {
		return nil, err
	}
	dev, hold, err := p.attach()
	if err != nil {
		return nil, err
	}
	p.dev = dev
	// The loop device detaches itself when the last user goes: hold it
	// open until the filesystem is mounted from it.
	if hold != nil {
		defer hold.Close()
	}
	if err := unix.Mount(dev, p.mnt, "btrfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOATIME, ""); err != nil {
		return nil, fmt.Errorf("mount the pool %s (%s) at %s: %w", p.image, dev, p.mnt, err)
	}
	log.Info("csi pool mounted", "image", p.image, "device", dev, "mount", p.mnt)
	return p, p.prepare()
}

// createImage makes the sparse image file if there is none; it reports
// whether it did.
func (p *btrfsPool) createImage(size int64) (bool, error) {
	f, err := os.OpenFile(p.image, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("make the pool image: %w", err)
	}
	err = f.Truncate(size)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(p.image)
		return false, fmt.Errorf("make the pool image of %d bytes: %w", size, err)
	}
	return true, syncDir(p.dir)
}

// format makes the btrfs filesystem on an image that has none. It refuses an
// image that holds anything but zeros where a filesystem would start: that
// is someone's data, not a pool.
func (p *btrfsPool) format(ctx context.Context, created bool) error {
	f, err := os.Open(p.image)
	if err != nil {
		return fmt.Errorf("open the pool image: %w", err)
	}
	head := make([]byte, 1<<20)
	n, err := io.ReadFull(f, head)
	f.Close()
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read the pool image: %w", err)
	}
	head = head[:n]
	// The primary superblock is at 64 KiB; its magic 64 bytes into it.
	const magicAt = 64<<10 + 64
	if len(head) >= magicAt+8 && string(head[magicAt:magicAt+8]) == "_BHRfS_M" {
		return nil
	}
	if !created && len(bytes.Trim(head, "\x00")) > 0 {
		return fmt.Errorf("the pool image %s holds data that is not a btrfs filesystem; Paddock formats only an empty image: move it away, or give another pool folder", p.image)
	}
	mkfs, err := findTool("mkfs.btrfs")
	if err != nil {
		return err
	}
	// No -f: mkfs.btrfs itself refuses to overwrite a filesystem it knows.
	out, err := exec.CommandContext(ctx, mkfs, "-q", "-L", "paddock-pool", p.image).CombinedOutput()
	if err != nil {
		return fmt.Errorf("format the pool image %s: %w: %s", p.image, err, strings.TrimSpace(string(out)))
	}
	p.log.Info("csi pool formatted", "image", p.image)
	return nil
}

// attach returns the loop device backed by the image: the one attached
// already if there is one, else a free one it attaches, returned open
// (the caller closes it once the filesystem is mounted).
func (p *btrfsPool) attach() (string, *os.File, error) {
	dev, err := p.findLoop()
	if err != nil || dev != "" {
		return dev, nil, err
	}
	img, err := os.OpenFile(p.image, os.O_RDWR, 0)
	if err != nil {
		return "", nil, fmt.Errorf("open the pool image: %w", err)
	}
	defer img.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return "", nil, fmt.Errorf("open the loop device control: %w", err)
	}
	defer ctl.Close()
	for range 20 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return "", nil, fmt.Errorf("find a free loop device: %w", err)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		f, err := openLoop(dev, n)
		if err != nil {
			return "", nil, err
		}
		cfg := unix.LoopConfig{Fd: uint32(img.Fd())}
		cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR
		copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], p.image)
		err = unix.IoctlLoopConfigure(int(f.Fd()), &cfg)
		if errors.Is(err, unix.EBUSY) {
			f.Close() // another process took it first
			continue
		}
		if err != nil {
			f.Close()
			return "", nil, fmt.Errorf("attach the pool image to %s: %w", dev, err)
		}
		return dev, f, nil
	}
	return "", nil, errors.New("attach the pool image: every free loop device was taken before it could be used; try again")
}

// openLoop opens /dev/loopN, making the device node when /dev has none.
func openLoop(dev string, n int) (*os.File, error) {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		if err := unix.Mknod(dev, unix.S_IFBLK|0o660, int(unix.Mkdev(7, uint32(n)))); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("make the device node %s: %w", dev, err)
		}
		f, err = os.OpenFile(dev, os.O_RDWR, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dev, err)
	}
	return f, nil
}

// findLoop returns the loop device the image is attached to, or "".
func (p *btrfsPool) findLoop() (string, error) {
	names, err := filepath.Glob("/sys/block/loop*")
	if err != nil {
		return "", err
	}
	for _, name := range names {
		dev := "/dev/" + filepath.Base(name)
		if ok, err := p.backs(dev); err != nil {
			return "", err
		} else if ok {
			return dev, nil
		}
	}
	return "", nil
}

// backs reports whether the block device dev is a loop device backed by the
// pool's image (the same file, not just the same name).
func (p *btrfsPool) backs(dev string) (bool, error) {
	name, ok := strings.CutPrefix(dev, "/dev/")
	if !ok || !strings.HasPrefix(name, "loop") || strings.Contains(name, "/") {
		return false, nil
	}
	b, err := os.ReadFile("/sys/block/" + name + "/loop/backing_file")
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil // not attached
	}
	if err != nil {
		return false, err
	}
	backing := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), " (deleted)")
	a, err := os.Stat(backing)
	if err != nil {
		return false, nil
	}
	img, err := os.Stat(p.image)
	if err != nil {
		return false, fmt.Errorf("stat the pool image: %w", err)
	}
	return os.SameFile(a, img), nil
}

// prepare turns quotas on and makes the folders of volumes and snapshots.
func (p *btrfsPool) prepare() error {
	f, err := os.Open(p.mnt)
	if err != nil {
		return fmt.Errorf("open the pool: %w", err)
	}
	defer f.Close()
	if err := btrfsQuotaEnable(int(f.Fd())); err != nil {
		return fmt.Errorf("turn on quotas in the pool %s: %w", p.mnt, err)
	}
	for _, d := range []string{volumesDir, snapshotsDir} {
		if err := os.Mkdir(filepath.Join(p.mnt, d), 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("make the pool's %s folder: %w", d, err)
		}
	}
	return nil
}

// size is the size of the image: the pool's size.
func (p *btrfsPool) size() (int64, error) {
	fi, err := os.Stat(p.image)
	if err != nil {
		return 0, fmt.Errorf("stat the pool image: %w", err)
	}
	return fi.Size(), nil
}

// growable returns the size the image may grow to on the disk under the
// pool folder: its current size plus the disk's free space, less a reserve
// of 5% of the disk (at most 2 GiB) kept for everything else. The image is
// sparse: the part of it not written yet takes no disk space, so it counts
// against the disk's free space too.
func (p *btrfsPool) growable() (int64, error) {
	var st unix.Stat_t
	if err := unix.Stat(p.image, &st); err != nil {
		return 0, fmt.Errorf("stat the pool image: %w", err)
	}
	var sf unix.Statfs_t
	if err := unix.Statfs(p.dir, &sf); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", p.dir, err)
	}
	total := int64(sf.Blocks) * sf.Bsize
	free := int64(sf.Bavail) * sf.Bsize
	reserve := min(total/20, 2<<30)
	allocated := st.Blocks * 512
	room := allocated + free - reserve
	return max(room, st.Size), nil
}

// grow makes the image size bytes large, tells the loop device, and grows
// the filesystem into it, while it is mounted and in use.
func (p *btrfsPool) grow(size int64) error {
	cur, err := p.size()
	if err != nil || size <= cur {
		return err
	}
	if err := os.Truncate(p.image, size); err != nil {
		return fmt.Errorf("grow the pool image to %d bytes: %w", size, err)
	}
	dev, err := os.OpenFile(p.dev, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open the pool's loop device: %w", err)
	}
	err = unix.IoctlSetInt(int(dev.Fd()), unix.LOOP_SET_CAPACITY, 0)
	dev.Close()
	if err != nil {
		return fmt.Errorf("tell %s the pool image grew: %w", p.dev, err)
	}
	mnt, err := os.Open(p.mnt)
	if err != nil {
		return fmt.Errorf("open the pool: %w", err)
	}
	defer mnt.Close()
	if err := btrfsResizeMax(int(mnt.Fd())); err != nil {
		return fmt.Errorf("grow the pool's filesystem: %w", err)
	}
	p.log.Info("csi pool grown", "image", p.image, "size", size)
	return nil
}

// unmount unmounts the pool and waits for its loop device to detach. The
// device stays attached while a volume is still mounted somewhere.
func (p *btrfsPool) unmount() error {
	if err := unix.Unmount(p.mnt, 0); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("unmount the pool %s: %w", p.mnt, err)
	}
	for range 100 {
		ok, err := p.backs(p.dev)
		if err != nil || !ok {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Still attached with no mount left here: detach it explicitly (the
	// kernel defers this while some other mount still uses it).
	f, err := os.OpenFile(p.dev, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", p.dev, err)
	}
	defer f.Close()
	if err := unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0); err != nil {
		return fmt.Errorf("detach %s: %w", p.dev, err)
	}
	return nil
}

// findTool finds a btrfs-progs program, in PATH or in the sbin folders a
// non-login PATH may lack.
func findTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s is not installed (Debian: apt-get install btrfs-progs)", name)
}

// syncDir makes a folder's entries durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
