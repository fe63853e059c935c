package process

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"paddock.dev/paddock/internal/runtime"
)

// bindMounts binds each mount's source at its target in the working folder
// appDir and returns the environment entries that name them. The folders
// on the way come from the app's artifact: they are made and opened
// through an os.Root, one component at a time and following no link, and
// the mount goes to the opened folder (/proc/self/fd/N), never to a path
// the artifact could point elsewhere.
func bindMounts(appDir string, mounts []runtime.Mount, uid, gid uint32) ([]string, error) {
	if len(mounts) == 0 {
		return nil, nil
	}
	root, err := os.OpenRoot(appDir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	var env []string
	for _, m := range mounts {
		if err := bindOne(root, m, uid, gid); err != nil {
			unbindMounts(appDir, mounts)
			return nil, fmt.Errorf("mount volume at %s: %w", m.Target, err)
		}
		env = append(env, m.Env+"="+filepath.Join(appDir, m.Target))
	}
	return env, nil
}

func bindOne(root *os.Root, m runtime.Mount, uid, gid uint32) error {
	rel := filepath.Clean(m.Target)
	if filepath.IsAbs(rel) || rel == "." || strings.HasPrefix(rel, "..") {
		return fmt.Errorf("target %q is not inside the working folder", m.Target)
	}
	// Without root there is no bind mount: the instance runs as the
	// server's own user, and a link to the volume serves as well.
	link := os.Geteuid() != 0
	// Each component: a real folder, made if missing, never a link.
	cur := ""
	parts := strings.Split(rel, string(filepath.Separator))
	for i, part := range parts {
		cur = filepath.Join(cur, part)
		if link && i == len(parts)-1 {
			return linkOne(root, cur, m.Source)
		}
		fi, err := root.Lstat(cur)
		switch {
		case errors.Is(err, os.ErrNotExist):
			if err := root.Mkdir(cur, 0o755); err != nil {
				return err
			}
			if uid != 0 {
				root.Lchown(cur, int(uid), int(gid))
			}
		case err != nil:
			return err
		case !fi.IsDir():
			return fmt.Errorf("%s in the app's files is not a folder (a link or a file): a volume cannot be mounted there", cur)
		}
	}
	dir, err := root.OpenFile(rel, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer dir.Close()
	target := "/proc/self/fd/" + strconv.Itoa(int(dir.Fd()))
	if err := syscall.Mount(m.Source, target, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s: %w", m.Source, err)
	}
	return nil
}

// linkOne links name in root to source, replacing an earlier link there
// but nothing else.
func linkOne(root *os.Root, name, source string) error {
	fi, err := root.Lstat(name)
	switch {
	case err == nil && fi.Mode()&os.ModeSymlink != 0:
		if err := root.Remove(name); err != nil {
			return err
		}
	case err == nil:
		return fmt.Errorf("%s is in the app's files: a volume cannot be placed there", name)
	case !errors.Is(err, os.ErrNotExist):
		return err
	}
	return root.Symlink(source, name)
}

// unbindMounts takes the instance's volumes out of its working folder:
// those it was given, wherever the app has moved them since (it may rename
// a folder above a mount point), and any other mount below the folder.
// The app owns the folder and may have planted links in it: every path is
// resolved beneath the folder (os.Root), the last component never
// followed, and the unmount goes through the parent's descriptor.
func unbindMounts(appDir string, mounts []runtime.Mount) {
	root, err := os.OpenRoot(appDir)
	if err != nil {
		return
	}
	defer root.Close()
	for _, m := range mounts {
		rel := filepath.Clean(m.Target)
		if fi, err := root.Lstat(rel); err == nil && fi.Mode()&os.ModeSymlink != 0 {
			root.Remove(rel) // the link of a server without root
		}
	}
	left := mountedBelow(appDir)
	slices.Reverse(left) // deepest first
	for _, mp := range left {
		if rel, err := filepath.Rel(appDir, mp); err == nil && rel != "." {
			detachBeneath(root, rel)
		}
	}
}

// detachBeneath detaches the mount at rel in root, reached without leaving
// root and without following a link at rel itself.
func detachBeneath(root *os.Root, rel string) error {
	parent, err := root.OpenFile(filepath.Dir(rel), os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer parent.Close()
	path := "/proc/self/fd/" + strconv.Itoa(int(parent.Fd())) + "/" + filepath.Base(rel)
	return unix.Unmount(path, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
}

// mountedBelow lists the mount points at or below dir.
func mountedBelow(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 5 {
			continue
		}
		mp := unescapeMount(fs[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
