package isolate

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the tests start this binary as a helper process: with
// ISOLATE_TEST_LISTEN it listens on a port and prints it; with
// ISOLATE_TEST_DAEMON it starts a child in a new session that prints its
// pid and sleeps.
func TestMain(m *testing.M) {
	switch {
	case os.Getenv("ISOLATE_TEST_LISTEN") != "":
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Println(ln.Addr().(*net.TCPAddr).Port)
		time.Sleep(time.Minute)
		os.Exit(0)
	case os.Getenv("ISOLATE_TEST_NET") != "":
		// One line per probe: "OP ADDR ok|refused|denied|LOCAL".
		for _, arg := range os.Args[1:] {
			op, addr, _ := strings.Cut(arg, "=")
			fmt.Println(op, addr, netProbe(op, addr))
		}
		os.Exit(0)
	case os.Getenv("ISOLATE_TEST_DAEMON") != "":
		cmd := exec.Command("sleep", "300")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Println(cmd.Process.Pid)
		os.Exit(0) // the daemon is orphaned, in a session of its own
	}
	os.Exit(m.Run())
}

// netProbe tries one network operation and says how it went.
func netProbe(op, addr string) string {
	var err error
	switch op {
	case "connect":
		var c net.Conn
		if c, err = net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return "ok"
		}
	case "udp":
		var c net.PacketConn
		if c, err = net.ListenPacket("udp", "127.0.0.1:0"); err == nil {
			dst, _ := net.ResolveUDPAddr("udp", addr)
			_, err = c.WriteTo([]byte("x"), dst)
			c.Close()
			if err == nil {
				return "ok"
			}
		}
	case "bind", "bind6only":
		lc := net.ListenConfig{}
		if op == "bind6only" {
			lc.Control = func(_, _ string, rc syscall.RawConn) error {
				return rc.Control(func(fd uintptr) {
					syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IPV6, syscall.IPV6_V6ONLY, 1)
				})
			}
		}
		var ln net.Listener
		if ln, err = lc.Listen(context.Background(), "tcp", addr); err == nil {
			defer ln.Close()
			return ln.Addr().String()
		}
	}
	if errors.Is(err, syscall.EPERM) {
		return "denied"
	}
	return "refused: " + err.Error()
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (the tests run as root, as CI does): it checks users and cgroups only root can set up")
	}
}

func TestClaim(t *testing.T) {
	firstSlot = 3000
	t.Cleanup(func() { firstSlot = 0 })
	reg := t.TempDir()
	a, b := t.TempDir(), t.TempDir()
	ra, err := Claim(reg, a)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := Claim(reg, b)
	if err != nil {
		t.Fatal(err)
	}
	if ra.Slot == rb.Slot || ra.Contains(rb.Base) || rb.Contains(ra.Base) {
		t.Fatalf("two data folders share app users: %s and %s", ra, rb)
	}
	if again, err := Claim(reg, a); err != nil || again != ra {
		t.Errorf("second start of the same data folder: got %s, %v; want %s", again, err, ra)
	}
	uid, err := ra.App(7)
	if err != nil || uid != ra.Base+7 {
		t.Errorf("App(7): got %d, %v; want %d", uid, err, ra.Base+7)
	}
	if _, err := ra.App(int64(RangeSize)); err == nil {
		t.Errorf("App(%d): an app id past the block got a user", RangeSize)
	}
	for _, r := range []Range{ra, rb} {
		if overlaps(r, systemIDs()) {
			t.Errorf("block %s overlaps the system's users or subordinate IDs", r)
		}
	}

	t.Run("a copied data folder is refused", func(t *testing.T) {
		c := t.TempDir()
		rec, err := os.ReadFile(filepath.Join(a, rangeFile))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(c, rangeFile), rec, 0o644)
		_, err = Claim(reg, c)
		if err == nil || !strings.Contains(err.Error(), a) {
			t.Fatalf("got %v, want a refusal naming %s", err, a)
		}
	})

	t.Run("a stale claim is taken over only without processes", func(t *testing.T) {
		needRoot(t)
		gone := filepath.Join(t.TempDir(), "gone")
		os.Mkdir(gone, 0o700)
		rg, err := Claim(reg, gone)
		if err != nil {
			t.Fatal(err)
		}
		os.RemoveAll(gone)
		// A process still runs as one of the gone platform's app users.
		sleeper := exec.Command("sleep", "60")
		sleeper.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: rg.Base + 3, Gid: rg.Base + 3}}
		if err := sleeper.Start(); err != nil {
			t.Fatal(err)
		}
		d := t.TempDir()
		rd, err := Claim(reg, d)
		if err != nil {
			t.Fatal(err)
		}
		if rd.Slot == rg.Slot {
			t.Errorf("the block of a gone platform went to a new one while its app user still ran a process")
		}
		sleeper.Process.Kill()
		sleeper.Wait()
		e := t.TempDir()
		re, err := Claim(reg, e)
		if err != nil {
			t.Fatal(err)
		}
		if re.Slot != rg.Slot {
			t.Errorf("a stale block with no process left was not reused: got slot %d, want %d", re.Slot, rg.Slot)
		}
	})
}

func TestTrackerKillsDaemons(t *testing.T) {
	needRoot(t)
	tr, err := NewTracker("paddock-test-" + strconv.Itoa(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Kill(tr.Dir(), 5*time.Second); Remove(tr.Dir()) })
	dir, err := tr.Group(42, Instances, "web.abc")
	if err != nil {
		t.Fatal(err)
	}
	fd, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "ISOLATE_TEST_DAEMON=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(fd.Fd()), Setpgid: true}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("helper printed %q", out)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	if syscall.Kill(pid, 0) != nil {
		t.Fatal("the daemon is not running")
	}
	if !Populated(dir) {
		t.Fatal("the daemon left the cgroup")
	}
	if err := tr.KillApp(42); err != nil {
		t.Fatal(err)
	}
	// Reaped by init: gone, or a zombie for a moment.
	deadline := time.Now().Add(5 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon (pid %d) survived the app's kill", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := os.Stat(tr.AppDir(42)); !os.IsNotExist(err) {
		t.Errorf("the app's cgroup is still there: %v", err)
	}
}

func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z'
}

func TestGiveTreeFollowsNoLink(t *testing.T) {
	needRoot(t)
	outside := filepath.Join(t.TempDir(), "precious")
	os.WriteFile(outside, []byte("x"), 0o600)
	dir := filepath.Join(t.TempDir(), "tree")
	os.MkdirAll(filepath.Join(dir, "a", "b"), 0o700)
	os.WriteFile(filepath.Join(dir, "a", "b", "f"), []byte("y"), 0o600)
	os.Symlink(outside, filepath.Join(dir, "a", "link"))
	os.Symlink(filepath.Dir(outside), filepath.Join(dir, "dirlink"))
	if err := GiveTree(dir, 123456, 123456); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"", "a", "a/b", "a/b/f", "a/link", "dirlink"} {
		fi, err := os.Lstat(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != 123456 {
			t.Errorf("%s: owner %d, want 123456", p, uid)
		}
	}
	fi, _ := os.Stat(outside)
	if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != 0 {
		t.Errorf("a file outside the tree, behind a link, was given away: owner %d", uid)
	}
}

func TestListenerOwners(t *testing.T) {
	needRoot(t)
	cmd := exec.Command(publicCopy(t))
	cmd.Env = append(os.Environ(), "ISOLATE_TEST_LISTEN=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 123457, Gid: 123457}}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, _ := bufio.NewReader(out).ReadString('\n')
	port, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("helper printed %q", line)
	}
	ln6, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln6.Close()
	port6 := ln6.Addr().(*net.TCPAddr).Port
	// The kernel's sock_diag, and /proc/net/tcp where it is missing.
	for name, list := range map[string]func() (map[int][]Listener, error){"sock_diag": diagListeners, "/proc": procListeners} {
		owners, err := list()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := owners[port]; len(got) != 1 || got[0].UID != 123457 || got[0].Addr.String() != "127.0.0.1" || !got[0].Takes() {
			t.Errorf("%s: owners of port %d: got %v, want [123457]", name, port, got)
		}
		if v6 := owners[port6]; len(v6) != 1 || v6[0].UID != 0 || v6[0].Addr.String() != "::1" || v6[0].Takes() {
			t.Errorf("%s: owners of port %d (IPv6): got %v, want [0 on ::1]", name, port6, v6)
		}
	}
}

// publicCopy copies the test binary where any user may run it.
func publicCopy(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "isolate-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "helper")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// TestFence: an app's process cannot bind another app's instance port, nor
// an instance port given to none, nor reach another app's instance on this
// machine but through the router; its own port it binds on loopback only.
// Local services in the instance range and processes outside the
// platform's cgroup are left alone.
func TestFence(t *testing.T) {
	needRoot(t)
	tr, err := NewTracker("paddock-test-fence-" + strconv.Itoa(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Kill(tr.Dir(), 5*time.Second); Remove(tr.Dir()) })
	const app, other = 123460, 123461
	// Ports in the instance range that nothing listens on yet.
	free := freePorts(t, 4)
	mine, theirs, nobodys, service := free[0], free[1], free[2], free[3]
	if err := tr.Fence(map[int]uint32{mine: 1}); err != nil {
		t.Fatal(err)
	}
	// A restarted server fences again, with the ports given now.
	if err := tr.Fence(map[int]uint32{theirs: other}); err != nil {
		t.Fatalf("second Fence: %v", err)
	}
	if err := tr.Assign(mine, app); err != nil {
		t.Fatal(err)
	}
	// The other app's instance and a local service, outside the fence.
	victim := listen(t, "127.0.0.1:"+strconv.Itoa(theirs))
	local := listen(t, "127.0.0.1:"+strconv.Itoa(service))
	outside := listen(t, "127.0.0.1:0") // not in the instance range

	dir, err := tr.Group(1, Instances, "probe")
	if err != nil {
		t.Fatal(err)
	}
	cg, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close()
	p := strconv.Itoa
	run := func(inside bool, probes ...string) string {
		cmd := exec.Command(publicCopy(t), probes...)
		cmd.Env = append(os.Environ(), "ISOLATE_TEST_NET=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: app, Gid: app}}
		if inside {
			cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, int(cg.Fd())
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return string(out)
	}
	got := run(true,
		"bind=0.0.0.0:"+p(mine), "bind=[::]:"+p(mine), "bind6only=[::]:"+p(mine), "bind=127.0.0.1:"+p(mine),
		"bind=127.0.0.2:"+p(theirs), "bind=[::1]:"+p(theirs), "bind=0.0.0.0:"+p(nobodys),
		"connect=127.0.0.1:"+p(theirs), "connect=127.0.0.2:"+p(theirs), "connect=0.0.0.0:"+p(theirs),
		"connect=[::1]:"+p(theirs), "connect=[::ffff:127.0.0.1]:"+p(theirs), "udp=127.0.0.1:"+p(theirs),
		"connect="+local, "connect="+outside)
	for _, want := range []string{
		"bind 0.0.0.0:" + p(mine) + " 127.0.0.1:" + p(mine), "bind [::]:" + p(mine) + " 127.0.0.1:" + p(mine),
		"bind6only [::]:" + p(mine) + " refused: listen tcp 0.0.0.0:" + p(mine) + ": bind: invalid argument", "bind 127.0.0.1:" + p(mine) + " 127.0.0.1:" + p(mine),
		"bind 127.0.0.2:" + p(theirs) + " denied", "bind [::1]:" + p(theirs) + " denied", "bind 0.0.0.0:" + p(nobodys) + " denied",
		"connect 127.0.0.1:" + p(theirs) + " denied", "connect 127.0.0.2:" + p(theirs) + " denied", "connect 0.0.0.0:" + p(theirs) + " denied",
		"connect [::1]:" + p(theirs) + " denied", "connect [::ffff:127.0.0.1]:" + p(theirs) + " denied", "udp 127.0.0.1:" + p(theirs) + " denied",
		"connect " + local + " ok", "connect " + outside + " ok",
	} {
		if !strings.Contains(got, want+"\n") {
			t.Errorf("inside the fence: want %q in:\n%s", want, got)
		}
	}
	got = run(false, "connect="+victim, "bind=0.0.0.0:"+p(nobodys))
	if !strings.Contains(got, "connect "+victim+" ok\n") || !strings.Contains(got, "bind 0.0.0.0:"+p(nobodys)+" [::]:"+p(nobodys)+"\n") {
		t.Errorf("outside the fence, a process was fenced too:\n%s", got)
	}
	tr.Release(mine)
	if got := run(true, "bind=127.0.0.1:"+p(mine)); !strings.Contains(got, " denied\n") {
		t.Errorf("a released port is still the app's:\n%s", got)
	}
}

// freePorts returns n ports of the instance range that nothing listens on.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var out []int
	for port := PortLow + os.Getpid()%5000; len(out) < n && port < PortHigh; port += 13 {
		if ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
			ln.Close()
			if ln6, err := net.Listen("tcp6", "[::1]:"+strconv.Itoa(port)); err == nil {
				ln6.Close()
				out = append(out, port)
			}
		}
	}
	if len(out) < n {
		t.Fatal("no free instance ports")
	}
	return out
}

// listen listens on addr, accepting and closing connections, and returns
// the address.
func listen(t testing.TB, addr string) string {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln.Addr().String()
}

// BenchmarkListenerOwners reads the listeners with 5,000 connections in
// TIME_WAIT beside them, as health checks and proxied requests leave: by
// sock_diag, which the kernel filters, and by /proc/net/tcp, which lists
// them all.
func BenchmarkListenerOwners(b *testing.B) {
	addr := listen(b, "127.0.0.1:0")
	for range 5000 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
	for name, list := range map[string]func() (map[int][]Listener, error){"sock_diag": diagListeners, "proc": procListeners} {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if _, err := list(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
