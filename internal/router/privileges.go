package router

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// The router starts as root to bind privileged ports, and should not stay
// root while it parses what strangers send. With Config.UID and GID it
// gives up root once everything that needs it is done: listeners and the
// admin socket bound, TLS material loaded, its state folder and files
// made its own.

// checkIdentity validates Config.UID and GID before anything starts.
func checkIdentity(uid, gid int) error {
	if uid < 0 || gid < 0 {
		return fmt.Errorf("UID %d / GID %d: want 0 (stay as is) or a user and group id", uid, gid)
	}
	if uid != 0 && gid == 0 {
		return fmt.Errorf("UID %d without GID: a router left in group 0 can read what root's group can; set both", uid)
	}
	if (uid == 0 || uid == os.Geteuid()) && (gid == 0 || gid == os.Getegid()) {
		return nil // nothing to change
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("switching to uid %d, gid %d needs the router to start as root (it runs as uid %d)", uid, gid, os.Geteuid())
	}
	return nil
}

// dropPrivileges switches every thread of the process to uid and gid
// (real, effective and saved ids), with no supplementary groups, and
// checks that root cannot be regained. Zero ids are left as they are.
// Go applies set*id calls to all threads of the process.
func dropPrivileges(uid, gid int) error {
	if os.Geteuid() != 0 || uid == 0 && gid == 0 {
		return nil
	}
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("drop supplementary groups: %w", err)
	}
	if gid != 0 {
		if err := syscall.Setgid(gid); err != nil {
			return fmt.Errorf("switch to gid %d: %w", gid, err)
		}
	}
	if uid != 0 {
		if err := syscall.Setuid(uid); err != nil {
			return fmt.Errorf("switch to uid %d: %w", uid, err)
		}
		if os.Getuid() != uid || os.Geteuid() != uid {
			return fmt.Errorf("switch to uid %d: still uid %d, euid %d", uid, os.Getuid(), os.Geteuid())
		}
		if syscall.Setuid(0) == nil {
			return errors.New("switched to another user but could switch back to root")
		}
	}
	return nil
}
