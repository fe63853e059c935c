package volume_test

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// An app's processes write into their volumes as the app's user, not as
// root: the tests do it in a child process, this test binary again with
// helperEnv set.
const helperEnv = "PADDOCK_VOLUME_TEST_HELPER"

func TestMain(m *testing.M) {
	if h := os.Getenv(helperEnv); h != "" {
		os.Exit(helper(strings.Fields(h)))
	}
	os.Exit(m.Run())
}

// helper writes random bytes to a file and prints "wrote N", or
// "wrote N error ERRNO" when a write failed after N bytes.
//
//	write FILE BYTES
func helper(args []string) int {
	if len(args) != 3 || args[0] != "write" {
		fmt.Fprintf(os.Stderr, "unknown helper command %q\n", args)
		return 2
	}
	n, err := strconv.ParseInt(args[2], 10, 64)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	written, err := writeRandom(args[1], n)
	var errno syscall.Errno
	switch {
	case err == nil:
		fmt.Printf("wrote %d\n", written)
	case errors.As(err, &errno):
		fmt.Printf("wrote %d error %s\n", written, unix.ErrnoName(errno))
	default:
		fmt.Printf("wrote %d error %v\n", written, err)
	}
	return 0
}

// writeRandom writes n random bytes to path and syncs them.
func writeRandom(path string, n int64) (int64, error) {
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

// writeAs writes n random bytes to file as uid (and gid uid); it returns
// the bytes written and the errno name of the failure, "" if none.
func writeAs(t *testing.T, uid uint32, file string, n int64) (int64, string) {
	t.Helper()
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = append(os.Environ(), helperEnv+"=write "+file+" "+strconv.FormatInt(n, 10))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("write %s as %d: %v\n%s", file, uid, err, out)
	}
	var written int64
	var errno string
	line := strings.TrimSpace(string(out))
	if _, err := fmt.Sscanf(line, "wrote %d error %s", &written, &errno); err != nil {
		if _, err := fmt.Sscanf(line, "wrote %d", &written); err != nil {
			t.Fatalf("write %s as %d printed %q", file, uid, line)
		}
	}
	return written, errno
}
