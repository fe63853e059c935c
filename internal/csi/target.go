package csi

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// Publishing puts a volume at a target path the caller chose, usually in a
// folder the app itself can write. So that an app cannot steer the mount (or
// the unmount) elsewhere by swapping a folder on the way for a symbolic
// link, the target's parent is opened with RESOLVE_NO_SYMLINKS and every
// step after that goes through that open folder: mkdirat, a mount moved
// onto an open file (open_tree and move_mount), an unmount through
// /proc/self/fd, rmdir with unlinkat. A mount point cannot be renamed or
// removed while mounted, so once checked it stays what was checked.
//
// Where the plugin cannot mount (not root, folders backend), the target is
// a symbolic link to the volume instead.

// errNoTarget is a target path that does not exist.
var errNoTarget = errors.New("the target path does not exist")

// target is an open parent folder and the name of the target in it.
type target struct {
	path   string
	parent int // O_PATH file descriptor of the parent folder
	name   string
}

// openTarget opens the parent folder of path, which must be absolute and
// clean, following no symbolic link.
func openTarget(path string) (*target, error) {
	if !filepath.IsAbs(path) || filepath.Clean(path) != path || path == "/" {
		return nil, fmt.Errorf("the target path %q must be an absolute, clean path", path)
	}
	dir, name := filepath.Split(path)
	fd, err := unix.Openat2(unix.AT_FDCWD, dir, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS,
	})
	if errors.Is(err, unix.ELOOP) {
		return nil, fmt.Errorf("the target path %s goes through a symbolic link; give the path with no link in it", path)
	}
	if errors.Is(err, unix.ENOENT) {
		return nil, fmt.Errorf("the folder of the target path %s does not exist: %w", path, errNoTarget)
	}
	if err != nil {
		return nil, fmt.Errorf("open the folder of the target path %s: %w", path, err)
	}
	return &target{path: path, parent: fd, name: name}, nil
}

func (t *target) close() { unix.Close(t.parent) }

// procPath names the target through the open parent.
func (t *target) procPath() string {
	return "/proc/self/fd/" + strconv.Itoa(t.parent) + "/" + t.name
}

// targetState is what is at a target path.
type targetState int

const (
	targetMissing targetState = iota
	targetOther               // something else: a folder, a file, another mount
	targetMounted             // a mount of the volume
	targetLinked              // a symbolic link to the volume
)

// state reports what is at the target compared with the volume folder src,
// and whether a mount there is read-only.
func (t *target) state(src string) (targetState, bool, error) {
	var ts unix.Statx_t
	err := unix.Statx(t.parent, t.name, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_TYPE|unix.STATX_INO, &ts)
	if errors.Is(err, unix.ENOENT) {
		return targetMissing, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("stat %s: %w", t.path, err)
	}
	if ts.Mode&unix.S_IFMT == unix.S_IFLNK {
		link := make([]byte, 4096)
		n, err := unix.Readlinkat(t.parent, t.name, link)
		if err == nil && string(link[:n]) == src {
			return targetLinked, false, nil
		}
		return targetOther, false, nil
	}
	var ss unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, src, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_INO, &ss); err != nil {
		return 0, false, fmt.Errorf("stat the volume %s: %w", src, err)
	}
	mountRoot := ts.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 && ts.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0
	if !mountRoot || ts.Ino != ss.Ino || ts.Dev_major != ss.Dev_major || ts.Dev_minor != ss.Dev_minor {
		return targetOther, false, nil
	}
	var sf unix.Statfs_t
	if err := unix.Statfs(t.procPath(), &sf); err != nil {
		return 0, false, fmt.Errorf("statfs %s: %w", t.path, err)
	}
	return targetMounted, sf.Flags&unix.ST_RDONLY != 0, nil
}

// bind mounts the volume folder src at the target, which it makes if
// missing; nosuid and nodev always, read-only when asked.
func (t *target) bind(src string, readOnly bool) error {
	if err := unix.Mkdirat(t.parent, t.name, 0o750); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("make the target %s: %w", t.path, err)
	}
	to, err := unix.Openat(t.parent, t.name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("the target %s is not a folder: %w", t.path, err)
	}
	defer unix.Close(to)
	from, err := unix.Open(src, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open the volume %s: %w", src, err)
	}
	tree, err := unix.OpenTree(from, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH)
	unix.Close(from)
	if err != nil {
		return fmt.Errorf("clone the volume's mount: %w", err)
	}
	defer unix.Close(tree)
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	if readOnly {
		attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
	}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		return fmt.Errorf("set the mount's options: %w", err)
	}
	if err := unix.MoveMount(tree, "", to, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return fmt.Errorf("mount the volume at %s: %w", t.path, err)
	}
	return nil
}

// unmount unmounts the mount at the target; the caller checked it is the
// volume's.
func (t *target) unmount() error {
	if err := unix.Unmount(t.procPath(), unix.UMOUNT_NOFOLLOW); err != nil {
		return fmt.Errorf("unmount %s: %w", t.path, err)
	}
	return nil
}

// link makes the target a symbolic link to src, replacing an empty folder.
func (t *target) link(src string) error {
	unix.Unlinkat(t.parent, t.name, unix.AT_REMOVEDIR) // an empty folder the caller made
	if err := unix.Symlinkat(src, t.parent, t.name); err != nil {
		return fmt.Errorf("link %s to the volume: %w", t.path, err)
	}
	return nil
}

// unlink removes the symbolic link at the target.
func (t *target) unlink() error {
	if err := unix.Unlinkat(t.parent, t.name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove the link %s: %w", t.path, err)
	}
	return nil
}

// removeDir removes the target folder if it is empty, as the node service
// must after unpublishing; a folder that holds anything is left alone.
func (t *target) removeDir() {
	unix.Unlinkat(t.parent, t.name, unix.AT_REMOVEDIR)
}
