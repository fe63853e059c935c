package csi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// btrfsBackend keeps each volume in a btrfs subvolume of the pool, its size
// enforced by a quota group limit on the bytes it references; snapshots are
// read-only snapshots of it, clones and restores writable ones.
//
// Why the referenced limit and not the exclusive one: "referenced" counts
// every byte the volume can see, shared with a snapshot or a clone's source
// or not; "exclusive" counts only what no other subvolume shares. With an
// exclusive limit, a snapshot would give the volume room again (everything
// it holds becomes shared, and only new writes count), so a 16 MiB volume
// could hold 16 MiB per snapshot taken, and a clone of a full 1 GiB
// snapshot would start empty and hold 2 GiB. With the referenced limit the
// volume never shows more than its size, a clone starts with its source's
// bytes, and a snapshot neither eats into nor adds to the live volume's
// room: what only the snapshot still holds (data since overwritten) is
// charged to the pool, which reserve accounts for.
//
// What btrfs charges is allocated extents: copy-on-write makes a rewrite
// in place need room for the new copy until the old one is released, and
// an extent partly rewritten stays whole while any part of it is used. A
// volume whose files are rewritten in place in large pieces can therefore
// refuse writes before it holds its size in live data; deleting files
// always works (truncating one at the limit may not).
type btrfsBackend struct {
	pool    *btrfsPool
	maxPool int64 // Config.MaxPoolSize
	log     *slog.Logger
}

var _ backend = (*btrfsBackend)(nil)

func (b *btrfsBackend) kind() string             { return "btrfs" }
func (b *btrfsBackend) enforced() (bool, string) { return true, "" }
func (b *btrfsBackend) root() string             { return b.pool.mnt }

// openDir opens a folder of the pool; the pool's own folders are reachable
// only by root, and no symbolic link is followed at the end.
func openDir(path string) (int, error) {
	return unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
}

// poolErr turns the filesystem running out of room into errPoolFull.
func poolErr(op string, err error) error {
	if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) {
		return fmt.Errorf("%s: %w", op, errPoolFull)
	}
	return fmt.Errorf("%s: %w", op, err)
}

func (b *btrfsBackend) create(ctx context.Context, path string, size int64) error {
	dir, name := filepath.Split(path)
	d, err := openDir(dir)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	err = btrfsSubvolCreate(d, name)
	unix.Close(d)
	if err != nil {
		return poolErr("make the subvolume", err)
	}
	return b.resize(path, size)
}

func (b *btrfsBackend) copy(ctx context.Context, src, dst string, readOnly bool, size int64) error {
	s, err := openDir(src)
	if err != nil {
		return fmt.Errorf("open %s: %w", src, err)
	}
	defer unix.Close(s)
	dir, name := filepath.Split(dst)
	d, err := openDir(dir)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	err = btrfsSnapshot(s, d, name, readOnly)
	unix.Close(d)
	if err != nil {
		return poolErr("snapshot the subvolume", err)
	}
	if readOnly {
		return nil // it keeps its source's limit, and no one writes to it
	}
	return b.resize(dst, size)
}

func (b *btrfsBackend) resize(path string, size int64) error {
	fd, err := openDir(path)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd)
	if err := btrfsLimitReferenced(fd, uint64(size)); err != nil {
		return poolErr("set the size limit", err)
	}
	return nil
}

func (b *btrfsBackend) remove(path string) error {
	fd, err := openDir(path)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	id, err := subvolRoot(fd)
	unix.Close(fd)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	mnt, err := openDir(b.pool.mnt)
	if err != nil {
		return fmt.Errorf("open the pool: %w", err)
	}
	defer unix.Close(mnt)
	return deleteSubvolTree(mnt, id, 0)
}

// subvolRoot returns the id of the subvolume whose root folder is fd, and
// an error if fd is some other folder.
func subvolRoot(fd int) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, err
	}
	if st.Ino != firstFreeObjectID {
		return 0, errors.New("not a subvolume")
	}
	return btrfsSubvolID(fd)
}

// deleteSubvolTree deletes the subvolume id and, first, every subvolume an
// app made inside it (btrfs refuses to delete a subvolume that has some),
// by id: no path inside the volume is followed.
func deleteSubvolTree(mnt int, id uint64, depth int) error {
	if depth > 1000 {
		return errors.New("delete the subvolume: more than 1000 levels of subvolumes inside it")
	}
	children, err := btrfsChildSubvols(mnt, id)
	if err != nil {
		return fmt.Errorf("list the subvolumes inside subvolume %d: %w", id, err)
	}
	for _, c := range children {
		if err := deleteSubvolTree(mnt, c, depth+1); err != nil {
			return err
		}
	}
	if err := btrfsSubvolDeleteID(mnt, id); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete subvolume %d: %w", id, err)
	}
	return nil
}

func (b *btrfsBackend) usage(ctx context.Context, path string) (int64, string, error) {
	fd, err := openDir(path)
	if err != nil {
		return 0, "", fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd)
	id, err := subvolRoot(fd)
	if err != nil {
		return 0, "", fmt.Errorf("%s: %w", path, err)
	}
	groups, _, err := btrfsQgroups(fd)
	if err != nil {
		return 0, "", fmt.Errorf("read the quota groups: %w", err)
	}
	used := groups[id].Referenced
	// Subvolumes made inside the volume have quota groups of their own,
	// which its limit does not cover: count them, and say so.
	var nested []uint64
	queue := []uint64{id}
	for len(queue) > 0 && len(nested) < 10000 {
		children, err := btrfsChildSubvols(fd, queue[0])
		if err != nil {
			return 0, "", fmt.Errorf("list the subvolumes inside %s: %w", path, err)
		}
		queue = append(queue[1:], children...)
		nested = append(nested, children...)
	}
	warning := ""
	if len(nested) > 0 {
		var extra int64
		for _, c := range nested {
			extra += groups[c].Referenced
		}
		used += extra
		warning = fmt.Sprintf("%d btrfs subvolumes were made inside the volume; they hold %s that its size does not limit, and snapshots do not copy them", len(nested), formatBytes(extra))
	}
	return used, warning, nil
}

// poolOverhead is what btrfs takes of the smallest pools for itself: its
// first metadata and system chunks, each kept twice (measured: a 128 MiB
// pool holds 47 MiB of data, a 512 MiB one 431 MiB).
const poolOverhead = 96 << 20

// poolNeed is the pool size that holds volumes of total bytes: the volumes,
// a sixteenth more for the metadata of larger pools, and poolOverhead.
func poolNeed(total int64) int64 {
	return total + total/16 + poolOverhead
}

// snapshotsHeld sums the bytes that only snapshots hold (what their volumes
// have overwritten or deleted since): pool space no volume limit covers.
func (b *btrfsBackend) snapshotsHeld() (int64, error) {
	dir := filepath.Join(b.pool.mnt, snapshotsDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("list the snapshots: %w", err)
	}
	mnt, err := openDir(b.pool.mnt)
	if err != nil {
		return 0, fmt.Errorf("open the pool: %w", err)
	}
	defer unix.Close(mnt)
	groups, _, err := btrfsQgroups(mnt)
	if err != nil {
		return 0, fmt.Errorf("read the quota groups: %w", err)
	}
	var held int64
	for _, e := range entries {
		if !e.IsDir() || !snapshotIDPattern.MatchString(e.Name()) {
			continue
		}
		fd, err := openDir(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		id, err := subvolRoot(fd)
		unix.Close(fd)
		if err == nil {
			held += groups[id].Exclusive
		}
	}
	return held, nil
}

// limits returns the pool's size now and the largest it may grow to, with
// what sets that bound.
func (b *btrfsBackend) limits() (cur, most int64, where string, err error) {
	cur, err = b.pool.size()
	if err != nil {
		return 0, 0, "", err
	}
	room, err := b.pool.growable()
	if err != nil {
		return 0, 0, "", err
	}
	most = room
	where = fmt.Sprintf("the disk under %s keeps room for a pool of %s", b.pool.dir, formatBytes(room))
	if b.maxPool > 0 && b.maxPool < most {
		most = b.maxPool
		where = fmt.Sprintf("the pool's largest size is set to %s", formatBytes(b.maxPool))
	}
	return cur, max(most, cur), where, nil
}

func (b *btrfsBackend) reserve(ctx context.Context, total, size int64) error {
	held, err := b.snapshotsHeld()
	if err != nil {
		return err
	}
	need := poolNeed(total + held)
	cur, most, where, err := b.limits()
	if err != nil {
		return err
	}
	if need <= cur {
		return nil
	}
	if poolNeed(size) > most {
		return &noRoomError{Size: size, Need: poolNeed(size), Max: most, Alone: true, Where: where}
	}
	if need > most {
		return &noRoomError{Size: size, Need: need, Max: most, Where: where}
	}
	// Grow in steps of 256 MiB at least, so that each new volume does not
	// grow it again.
	const step = 256 << 20
	target := min((need+step-1)/step*step, most)
	return b.pool.grow(target)
}

func (b *btrfsBackend) available(ctx context.Context, total int64) (int64, error) {
	held, err := b.snapshotsHeld()
	if err != nil {
		return 0, err
	}
	_, most, _, err := b.limits()
	if err != nil {
		return 0, err
	}
	// The largest x with poolNeed(total+held+x) <= most.
	avail := (most-poolOverhead)*16/17 - total - held
	return max(avail, 0), nil
}

func (b *btrfsBackend) free() (int64, error) {
	var sf unix.Statfs_t
	if err := unix.Statfs(b.pool.mnt, &sf); err != nil {
		return 0, fmt.Errorf("statfs the pool: %w", err)
	}
	return int64(sf.Bavail) * sf.Bsize, nil
}

func (b *btrfsBackend) close() error  { return nil }
func (b *btrfsBackend) detach() error { return b.pool.unmount() }
