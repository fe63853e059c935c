package router

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// These tests run routers and backends as processes of their own: the
// router's privileges, its lifecycle across a restart, and backends
// owned by other users. They need root, as CI has.

// Users the tests run processes as; no account needs to exist.
const (
	testRouterUID = 54320
	testSquatUID  = 54321
	testAppUID    = 54322
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (to run processes as other users)")
	}
}

// startBackendAs runs a backend process ("ok NAME" on 127.0.0.1:0) as
// uid (0: as this process) and returns its address.
func startBackendAs(t *testing.T, name string, uid uint32) string {
	t.Helper()
	// Exec through /proc/self/exe: the test binary's folder is not
	// reachable by another user, the file itself is.
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = append(os.Environ(), "ROUTER_TEST_BACKEND=1", "ROUTER_TEST_NAME="+name)
	if uid != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("backend %s: %v", name, err)
	}
	return strings.TrimSpace(line)
}

// TestPortSquatting: a listener of another user on an instance's port
// gets none of its traffic.
func TestPortSquatting(t *testing.T) {
	needRoot(t)
	squatter := startBackendAs(t, "squatter", testSquatUID)
	legit := newNamedBackend(t, "legit")
	me := uint32(os.Geteuid())
	r := startRouter(t, "")
	r.push(t, Table{Version: 1, Routes: []Route{
		{Host: "vic.localhost", App: "vic", Backends: []Backend{{Addr: squatter, UID: testAppUID}, {Addr: legit.addr(), UID: me}}},
		{Host: "only.localhost", App: "only", Backends: []Backend{{Addr: squatter, UID: testAppUID}}},
		{Host: "evil.localhost", App: "evil", Backends: []Backend{{Addr: squatter, UID: testSquatUID}}},
		{Host: "pod.localhost", App: "pod", Backends: []Backend{{Addr: squatter, Pod: true}}},
	}})
	for i := 0; i < 20; i++ {
		if resp, body := r.do(t, "GET", "vic.localhost", "/", nil); resp.StatusCode != 200 || body != "legit" {
			t.Fatalf("request %d to vic: got %d %q, want 200 from the legit instance", i, resp.StatusCode, body)
		}
	}
	resp, body := r.do(t, "GET", "only.localhost", "/", nil)
	if want := "bad gateway: no instance of app only could be reached (connections refused, timed out or closed); check `paddock ps only` and `paddock logs only`\n"; resp.StatusCode != 502 || body != want {
		t.Errorf("the only instance's port squatted: got %d %q, want 502 %q", resp.StatusCode, body, want)
	}
	if got, want := r.status(t).Impostors, map[string]uint32{squatter: testSquatUID}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Status.Impostors: got %v, want %v", got, want)
	}
	// The same listener, for the app that owns it, is served.
	if resp, body := r.do(t, "GET", "evil.localhost", "/", nil); resp.StatusCode != 200 || body != "ok squatter" {
		t.Errorf("the squatter's own app: got %d %q, want 200 %q", resp.StatusCode, body, "ok squatter")
	}
	// A pod's address is the cluster's to keep: its owner is not checked.
	if resp, body := r.do(t, "GET", "pod.localhost", "/", nil); resp.StatusCode != 200 || body != "ok squatter" {
		t.Errorf("a pod backend: got %d %q, want 200 %q", resp.StatusCode, body, "ok squatter")
	}
}

// TestOwnerLookup checks both ways of asking the kernel, on IPv4 and on
// an IPv6 socket accepting IPv4 (a dual-stack listener, here bound to
// ::ffff:127.0.0.1).
func TestOwnerLookup(t *testing.T) {
	needRoot(t)
	other := startBackendAs(t, "other", testSquatUID)
	mine := newNamedBackend(t, "mine").addr()
	mapped := mappedListener(t)
	me := uint32(os.Geteuid())
	for _, proc := range []bool{false, true} {
		for _, tt := range []struct {
			name string
			addr string
			want uint32
		}{
			{"another user's listener", other, testSquatUID},
			{"our listener", mine, me},
			{"dual-stack listener", mapped, me},
		} {
			t.Run(fmt.Sprintf("%s/proc=%v", tt.name, proc), func(t *testing.T) {
				o := newOwnerLookup()
				defer o.close()
				if proc {
					o.forceProc()
				}
				c, err := net.Dial("tcp", tt.addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				got, err := o.owner(c.LocalAddr().(*net.TCPAddr).AddrPort(), c.RemoteAddr().(*net.TCPAddr).AddrPort())
				if err != nil {
					t.Fatal(err)
				}
				if got != tt.want {
					t.Errorf("owner: got %d, want %d", got, tt.want)
				}
				if !proc && o.proc {
					t.Error("sock_diag fell back to /proc: want it to work on this kernel")
				}
			})
		}
	}
	t.Run("closed connection", func(t *testing.T) {
		o := newOwnerLookup()
		defer o.close()
		_, err := o.owner(netip.MustParseAddrPort("127.0.0.1:1"), netip.MustParseAddrPort("127.0.0.1:2"))
		if !errors.Is(err, errOwnerUnknown) {
			t.Errorf("got %v, want %v", err, errOwnerUnknown)
		}
	})
}

// mappedListener listens on an IPv6 socket bound to ::ffff:127.0.0.1 and
// accepts (and closes) connections until the test ends.
func mappedListener(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET6, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	sa := &syscall.SockaddrInet6{Addr: netip.MustParseAddr("::ffff:127.0.0.1").As16()}
	if err := syscall.Bind(fd, sa); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 16); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "mapped")
	ln, err := net.FileListener(f)
	f.Close()
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
			t.Cleanup(func() { c.Close() })
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// routerProc is a router running as a process of its own.
type routerProc struct {
	cmd    *exec.Cmd
	dir    string
	client *Client
	status Status
	exited chan error
	log    *logCapture
}

// startRouterProcess runs a router process on dir and waits until it
// answers.
func startRouterProcess(t *testing.T, cfg Config) *routerProc {
	t.Helper()
	data, err := json.Marshal(procConfig{StateDir: cfg.StateDir, Listen: cfg.Listen, UID: cfg.UID, GID: cfg.GID})
	if err != nil {
		t.Fatal(err)
	}
	rp := &routerProc{dir: cfg.StateDir, client: &Client{StateDir: cfg.StateDir}, exited: make(chan error, 1), log: &logCapture{}}
	rp.cmd = exec.Command("/proc/self/exe")
	rp.cmd.Env = append(os.Environ(), "ROUTER_TEST_ROUTER="+string(data))
	rp.cmd.Stderr = rp.log
	if err := rp.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { rp.exited <- rp.cmd.Wait() }()
	t.Cleanup(func() {
		rp.cmd.Process.Signal(syscall.SIGKILL)
		<-rp.exited
		rp.exited <- nil
		if t.Failed() {
			t.Logf("log of router %d:\n%s", rp.cmd.Process.Pid, rp.log)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := rp.client.Status(ctx)
		cancel()
		if err == nil && st.PID == rp.cmd.Process.Pid {
			rp.status = st
			return rp
		}
		select {
		case err := <-rp.exited:
			rp.exited <- err
			t.Fatalf("router process exited: %v\n%s", err, rp.log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("router process did not answer: %v\n%s", err, rp.log)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (rp *routerProc) push(t *testing.T, tbl Table) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rp.client.Push(ctx, tbl); err != nil {
		t.Fatalf("push to router %d: %v", rp.cmd.Process.Pid, err)
	}
}

// get sends a GET for host to addr on a new connection.
func get(addr, host string) (int, string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return 0, "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host)
	raw, err := io.ReadAll(c)
	if err != nil {
		return 0, "", err
	}
	var code int
	fmt.Sscanf(string(raw), "HTTP/1.1 %d", &code)
	_, body, _ := strings.Cut(string(raw), "\r\n\r\n")
	return code, body, nil
}

// procIDs returns the Uid:, Gid: and Groups: lines of /proc/PID/status.
func procIDs(t *testing.T, pid int) (uid, gid, groups string) {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, _ := strings.Cut(line, ":")
		switch k {
		case "Uid":
			uid = strings.Join(strings.Fields(v), " ")
		case "Gid":
			gid = strings.Join(strings.Fields(v), " ")
		case "Groups":
			groups = strings.TrimSpace(v)
		}
	}
	return uid, gid, groups
}

// TestDropPrivileges: a router started as root runs as the user it is
// given once its ports are bound, and still does all of its work.
func TestDropPrivileges(t *testing.T) {
	needRoot(t)
	backend := newNamedBackend(t, "app")
	dir := t.TempDir() // its parent is not reachable by the router's user
	rp := startRouterProcess(t, Config{StateDir: dir, Listen: "127.0.0.1:0", UID: testRouterUID, GID: testRouterUID})
	pid := rp.cmd.Process.Pid
	uid, gid, groups := procIDs(t, pid)
	want := fmt.Sprintf("%d %d %d %d", testRouterUID, testRouterUID, testRouterUID, testRouterUID)
	if uid != want || gid != want || groups != "" {
		t.Errorf("/proc/%d/status: Uid %q, Gid %q, Groups %q; want %q, %q and none", pid, uid, gid, groups, want, want)
	}
	rp.push(t, Table{Version: 3, Routes: []Route{{Host: "app.localhost", App: "app", Backends: be(backend.addr())}}})
	if code, body, err := get(rp.status.Listen, "app.localhost"); err != nil || code != 200 || body != "app" {
		t.Errorf("request through the router: got %d %q %v, want 200 %q", code, body, err, "app")
	}
	data, err := os.ReadFile(filepath.Join(dir, routesFile))
	if err != nil || !strings.Contains(string(data), `"version": 3`) {
		t.Errorf("routes.json after a push: got %q (%v), want version 3", data, err)
	}
	for _, name := range []string{".", routesFile, infoFile, socketFile} {
		fi, err := os.Lstat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != testRouterUID || st.Gid != testRouterUID {
			t.Errorf("%s: owned by %d:%d, want %d:%d", name, st.Uid, st.Gid, testRouterUID, testRouterUID)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if st, err := rp.client.Status(ctx); err != nil || st.Version != 3 {
		t.Errorf("admin socket: got %+v, %v; want version 3", st, err)
	}
	// A clean stop still clears its pid.
	rp.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-rp.exited; err != nil {
		t.Errorf("router exit: %v\n%s", err, rp.log)
	}
	rp.exited <- nil
	if info, err := ReadInfo(dir); err != nil || info.PID != 0 {
		t.Errorf("router.json after a clean stop: %+v, %v; want pid 0", info, err)
	}
}

// TestRestartDuringHangingRequest: a router told to stop while a request
// hangs at its backend lets a new router take over at once, cuts the
// request after its grace, and leaves the new router's state alone.
func TestRestartDuringHangingRequest(t *testing.T) {
	needRoot(t) // not for privileges: to run the routers as processes like the real ones
	hang, entered, _ := blockingBackend(t)
	fresh := newNamedBackend(t, "fresh")
	dir := t.TempDir()
	old := startRouterProcess(t, Config{StateDir: dir, Listen: "127.0.0.1:0"})
	listen := old.status.Listen
	old.push(t, Table{Version: 1, Routes: []Route{{Host: "app.localhost", App: "app", Backends: be(hang)}}})

	hung, err := net.Dial("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	defer hung.Close()
	io.WriteString(hung, "GET /hang HTTP/1.1\r\nHost: app.localhost\r\n\r\n")
	<-entered

	stopped := time.Now()
	old.cmd.Process.Signal(syscall.SIGTERM)
	// The server notices the old router no longer answers and starts a
	// new one on the same folder and address, while the old one drains.
	var next *routerProc
	waitFor(t, "the old router to let go of its folder", func() bool {
		_, err := old.client.Status(context.Background())
		return err != nil
	})
	next = startRouterProcess(t, Config{StateDir: dir, Listen: listen})
	if syscall.Kill(old.cmd.Process.Pid, 0) != nil {
		t.Fatal("the old router exited at once: the test needs it draining")
	}
	next.push(t, Table{Version: 2, Routes: []Route{{Host: "app.localhost", App: "app", Backends: be(fresh.addr())}}})
	if code, body, err := get(listen, "app.localhost"); err != nil || code != 200 || body != "fresh" {
		t.Errorf("request to the new router: got %d %q %v, want 200 %q", code, body, err, "fresh")
	}

	select {
	case err := <-old.exited:
		old.exited <- err
		took := time.Since(stopped)
		if took > shutdownGrace+3*time.Second {
			t.Errorf("the old router exited %v after SIGTERM, want within its grace (%v) and a little", took, shutdownGrace)
		}
		if err != nil {
			t.Errorf("old router exit: %v", err)
		}
	case <-time.After(shutdownGrace + 10*time.Second):
		t.Fatalf("the old router still runs %v after SIGTERM", time.Since(stopped))
	}
	hung.SetReadDeadline(time.Now().Add(time.Second))
	if raw, err := io.ReadAll(hung); err != nil {
		t.Errorf("the hanging request after the grace: %v, want the connection closed (got %q)", err, raw)
	}

	// The new router is intact: socket, router.json, routing.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := next.client.Status(ctx)
	if err != nil || st.PID != next.cmd.Process.Pid {
		t.Fatalf("the new router's admin socket after the old one exited: %+v, %v", st, err)
	}
	info, err := ReadInfo(dir)
	if err != nil || info.PID != next.cmd.Process.Pid || info.Instance != st.Instance || info.Listen != listen {
		t.Errorf("router.json after the old router exited: %+v, %v; want pid %d, instance %s, listen %s", info, err, next.cmd.Process.Pid, st.Instance, listen)
	}
	other := newNamedBackend(t, "newer")
	next.push(t, Table{Version: 3, Routes: []Route{{Host: "app.localhost", App: "app", Backends: be(other.addr())}}})
	if code, body, err := get(listen, "app.localhost"); err != nil || code != 200 || body != "newer" {
		t.Errorf("a table pushed after the old router exited: got %d %q %v, want 200 %q", code, body, err, "newer")
	}
	if !strings.Contains(old.log.String(), "a newer router runs on the state folder") {
		t.Errorf("the old router did not say it left the folder alone:\n%s", old.log)
	}
}

// TestSecondRouterRefused: while a router runs, another on its folder
// does not start.
func TestSecondRouterRefused(t *testing.T) {
	dir := t.TempDir()
	startRouter(t, dir)
	err := Run(context.Background(), Config{StateDir: dir, Listen: "127.0.0.1:0"})
	if !errors.Is(err, ErrAlreadyRunning) {
		t.Errorf("second Run: got %v, want %v", err, ErrAlreadyRunning)
	}
}
