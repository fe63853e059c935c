package csi

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// The tests run apps' side of things (writing into a volume, making a
// subvolume in it) as another user, in a child process: this test binary
// again, with PADDOCK_CSI_HELPER set.
const helperEnv = "PADDOCK_CSI_HELPER"

func TestMain(m *testing.M) {
	if h := os.Getenv(helperEnv); h != "" {
		os.Exit(helper(strings.Fields(h)))
	}
	os.Exit(m.Run())
}

// helper runs one app-side action and prints its outcome on stdout:
//
//	write FILE BYTES   writes random bytes: "wrote N" or "wrote N error ERRNO"
//	subvol DIR NAME    makes a btrfs subvolume: "ok" or "error ERRNO"
func helper(args []string) int {
	switch {
	case len(args) == 3 && args[0] == "write":
		n, _ := strconv.ParseInt(args[2], 10, 64)
		written, err := writeFile(args[1], n)
		if err != nil {
			var errno syscall.Errno
			if errors.As(err, &errno) {
				fmt.Printf("wrote %d error %s\n", written, unix.ErrnoName(errno))
			} else {
				fmt.Printf("wrote %d error %v\n", written, err)
			}
			return 0
		}
		fmt.Printf("wrote %d\n", written)
		return 0
	case len(args) == 3 && args[0] == "subvol":
		d, err := unix.Open(args[1], unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err == nil {
			err = btrfsSubvolCreate(d, args[2])
		}
		if err != nil {
			fmt.Printf("error %v\n", err)
			return 0
		}
		fmt.Println("ok")
		return 0
	}
	fmt.Fprintf(os.Stderr, "unknown helper command %q\n", args)
	return 2
}

func writeFile(path string, n int64) (int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, err
	}
	buf := make([]byte, 1<<20)
	rand.Read(buf)
	var written int64
	for written < n {
		m, err := f.Write(buf[:min(int64(len(buf)), n-written)])
		written += int64(m)
		if err != nil {
			f.Close()
			return written, err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return written, err
	}
	return written, f.Close()
}

// asUser runs a helper command as uid:gid (the same number) and returns
// what it printed.
func asUser(t *testing.T, uid int, args ...string) string {
	t.Helper()
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = append(os.Environ(), helperEnv+"="+strings.Join(args, " "))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper %q as %d: %v\n%s", args, uid, err, out)
	}
	return strings.TrimSpace(string(out))
}

// writeAs writes n random bytes to file as uid; it returns the bytes
// written and the errno name of the failure ("" if none).
func writeAs(t *testing.T, uid int, file string, n int64) (int64, string) {
	t.Helper()
	out := asUser(t, uid, "write", file, strconv.FormatInt(n, 10))
	var written int64
	var errno string
	if _, err := fmt.Sscanf(out, "wrote %d error %s", &written, &errno); err != nil {
		if _, err := fmt.Sscanf(out, "wrote %d", &written); err != nil {
			t.Fatalf("helper printed %q", out)
		}
	}
	return written, errno
}

// reachable opens the folders from dir up to / to every user (x only), so
// that a helper running as another user can reach a target under dir.
func reachable(t *testing.T, dir string) {
	t.Helper()
	for d := dir; d != "/" && d != "."; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(d, fi.Mode().Perm()|0o011); err != nil {
				t.Fatal(err)
			}
		}
	}
}
