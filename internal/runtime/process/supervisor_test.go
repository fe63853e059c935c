package process

import (
	"context"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"paddock.dev/paddock/internal/runtime"
)

// supervisorPIDOf returns the pid of the supervisor of a running instance.
func supervisorPIDOf(t *testing.T, r *Runtime, id string) int {
	t.Helper()
	st, err := readState(filepath.Join(r.cfg.Dir, id))
	if err != nil || st.ShimPID <= 0 {
		t.Fatalf("no supervisor recorded for %s: %v", id, err)
	}
	return st.ShimPID
}

// TestOneSupervisorPerApp: an app's instances share one supervisor, which
// no other app's instance does; it ends, and its folder goes, with the last
// instance it supervises.
func TestOneSupervisorPerApp(t *testing.T) {
	r := newRuntime(t)
	ctx := context.Background()
	start := func(id, app string, appID int64) runtime.Instance {
		t.Helper()
		in, err := r.Start(ctx, runtime.Spec{ID: id, App: app, AppID: appID, Process: "web", Command: "exec sleep 100", StopTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return waitFor(t, r, in.ID, "running", func(in runtime.Instance) bool { return in.State == runtime.StateRunning })
	}
	a1, a2 := start("a.web.1", "a", 1), start("a.web.2", "a", 1)
	b1 := start("b.web.1", "b", 2)
	sa, sb := supervisorPIDOf(t, r, a1.ID), supervisorPIDOf(t, r, b1.ID)
	if got := supervisorPIDOf(t, r, a2.ID); got != sa {
		t.Errorf("two instances of one app have supervisors %d and %d, want one", sa, got)
	}
	if sa == sb {
		t.Errorf("apps a and b share the supervisor %d", sa)
	}
	// A process per app, not per instance.
	if n := len(mustGlob(t, filepath.Join(r.cfg.Supervisors, "*"))); n != 2 {
		t.Errorf("%d supervisor folders for 2 apps", n)
	}

	if err := r.Stop(ctx, a1.ID); err != nil {
		t.Fatal(err)
	}
	if !alive(a2.PID) || !alive(sa) {
		t.Fatal("stopping one instance ended the other instance of its app, or their supervisor")
	}
	if err := r.Stop(ctx, a2.ID); err != nil {
		t.Fatal(err)
	}
	waitGoneT(t, sa, "the supervisor of an app with no instance left")
	if left := mustGlob(t, filepath.Join(r.cfg.Supervisors, "1.*")); len(left) != 0 {
		t.Errorf("the folder of a supervisor that exited is left: %s", left)
	}
	if !alive(sb) || !alive(b1.PID) {
		t.Error("the end of app a's supervisor ended app b's")
	}

	// The app's next instance gets a supervisor again.
	a3 := start("a.web.3", "a", 1)
	if s := supervisorPIDOf(t, r, a3.ID); s == sa || !alive(s) {
		t.Errorf("the new instance's supervisor is %d (the old one was %d)", s, sa)
	}
}

// TestNewRuntimeUsesRunningSupervisor: a server that restarts with the
// same binary gives an app's new instances to the supervisor its running
// ones have.
func TestNewRuntimeUsesRunningSupervisor(t *testing.T) {
	r := newRuntime(t)
	ctx := context.Background()
	in, err := r.Start(ctx, runtime.Spec{ID: "a.web.1", App: "a", AppID: 1, Process: "web", Command: "exec sleep 100"})
	if err != nil {
		t.Fatal(err)
	}
	again, err := New(r.cfg)
	if err != nil {
		t.Fatal(err)
	}
	more, err := again.Start(ctx, runtime.Spec{ID: "a.web.2", App: "a", AppID: 1, Process: "web", Command: "exec sleep 100"})
	if err != nil {
		t.Fatal(err)
	}
	if a, b := supervisorPIDOf(t, r, in.ID), supervisorPIDOf(t, again, more.ID); a != b {
		t.Errorf("the restarted runtime started supervisor %d beside the running %d", b, a)
	}
}

// TestSupervisorRefusesOtherUsers: the control socket, which starts
// processes as any app's user, is the server's alone. An app's user can
// neither reach it through its folder nor, through a socket path it can
// reach, be served.
func TestSupervisorRefusesOtherUsers(t *testing.T) {
	r := newRuntime(t)
	ctx := context.Background()
	in, err := r.Start(ctx, runtime.Spec{ID: "a.web.1", App: "a", AppID: 1, Process: "web", Command: "exec sleep 100"})
	if err != nil {
		t.Fatal(err)
	}
	sup := r.sups["1"]
	if sup == "" {
		t.Fatal("no supervisor recorded for app 1")
	}
	dir := filepath.Join(r.cfg.Dir, in.ID)
	dial := func(path string) string { return dialAs(65534, path, dir) }
	if out := dial(filepath.Join(sup, "ctl")); !strings.Contains(out, "permission denied") {
		t.Errorf("another user dialling the control socket: %q, want permission denied", out)
	}
	// Open the way, as a mistake in the folders' modes would: the
	// supervisor still refuses the stranger.
	os.Chmod(r.cfg.Supervisors, 0o755)
	os.Chmod(sup, 0o755)
	os.Chmod(filepath.Join(sup, "ctl"), 0o777)
	if out := dial(filepath.Join(sup, "ctl")); !strings.Contains(out, "may not control this supervisor") {
		t.Errorf("another user asking the supervisor to stop an instance: %q, want a refusal", out)
	}
	got := waitFor(t, r, in.ID, "running", func(in runtime.Instance) bool { return in.State == runtime.StateRunning })
	if !alive(got.PID) {
		t.Error("the instance was stopped by another user's request")
	}
}

// dialAs asks the supervisor at socket to stop the instance in dir, from
// a thread that runs as uid, and returns what it answered or the error.
func dialAs(uid int, socket, dir string) string {
	res := make(chan string, 1)
	go func() {
		// The thread is changed for good and never given back: it ends
		// with this goroutine.
		goruntime.LockOSThread()
		if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESGID, uintptr(uid), uintptr(uid), uintptr(uid)); e != 0 {
			res <- "setresgid: " + e.Error()
			return
		}
		if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESUID, uintptr(uid), uintptr(uid), uintptr(uid)); e != 0 {
			res <- "setresuid: " + e.Error()
			return
		}
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			res <- err.Error()
			return
		}
		defer unix.Close(fd)
		if err := unix.Connect(fd, &unix.SockaddrUnix{Name: socket}); err != nil {
			res <- err.Error()
			return
		}
		unix.Write(fd, []byte(`{"op":"stop","dir":"`+dir+`"}`))
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5})
		b := make([]byte, 512)
		n, err := unix.Read(fd, b)
		if err != nil {
			res <- err.Error()
			return
		}
		res <- string(b[:n])
	}()
	return strings.TrimSpace(<-res)
}

func mustGlob(t *testing.T, pattern string) []string {
	t.Helper()
	m, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestAdoptsShimsOfEarlierVersions: an instance that a server from before
// supervisors were per app started (a shim of its own serving the
// instance's folder, no supervisor in its spec) is adopted: listed as
// running, and stopped through its shim, which goes with it.
func TestAdoptsShimsOfEarlierVersions(t *testing.T) {
	r := newRuntime(t)
	ctx := context.Background()
	dir := filepath.Join(r.cfg.Dir, "a.web.1")
	if err := os.MkdirAll(filepath.Join(dir, "app"), 0o755); err != nil {
		t.Fatal(err)
	}
	spec := runtime.Spec{ID: "a.web.1", App: "a", AppID: 1, Process: "web", StopTimeout: time.Second}
	if err := writeJSON(filepath.Join(dir, "spec.json"), shimSpec{Spec: spec, LogFile: r.LogFile(spec)}); err != nil {
		t.Fatal(err)
	}
	// Those servers passed the folder as given: a relative data folder
	// gave a relative path.
	exe, _ := os.Executable()
	cmd := exec.Command(exe, "shim", filepath.Join(filepath.Base(r.cfg.Dir), "a.web.1"))
	cmd.Dir = filepath.Dir(r.cfg.Dir)
	cmd.Env = append(os.Environ(), "PADDOCK_TEST_OLD_SHIM=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill() })

	in := waitFor(t, r, spec.ID, "running", func(in runtime.Instance) bool { return in.State == runtime.StateRunning })
	if err := r.Stop(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Fatal("the instance's own shim still runs after Stop")
	}
	waitGoneT(t, in.PID, "the process of a stopped instance")
}

// TestStopWithCancelledContext: a stop whose caller has given up (the
// server shutting down mid-stop) still reaches the supervisor, which ends
// the instance for good rather than restarting what the runtime kills.
func TestStopWithCancelledContext(t *testing.T) {
	r := newRuntime(t)
	in, err := r.Start(context.Background(), runtime.Spec{ID: "a.web.1", App: "a", AppID: 1, Process: "web", Command: "exec sleep 100", StopTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	in = waitFor(t, r, in.ID, "running", func(in runtime.Instance) bool { return in.State == runtime.StateRunning })
	sup := supervisorPIDOf(t, r, in.ID)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.Stop(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	waitGoneT(t, in.PID, "the process of a stopped instance")
	waitGoneT(t, sup, "the supervisor of an app with no instance left")
	b, _ := os.ReadFile(r.LogFile(in.Spec))
	if strings.Contains(string(b), "restarting") {
		t.Errorf("the supervisor restarted the stopped instance:\n%s", b)
	}
}

// oldShim is the test binary run as `shim DIR` with PADDOCK_TEST_OLD_SHIM=1:
// what a shim of its own did for its instance, reduced to what a runtime
// sees: it runs a process and reports it in state.json, and on SIGTERM
// stops it, reports so and exits.
func oldShim(dir string) {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	cmd := exec.Command("sleep", "1000")
	cmd.Dir = filepath.Join(dir, "app")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		os.Exit(1)
	}
	writeJSON(filepath.Join(dir, "state.json"), shimState{ShimPID: os.Getpid(), PID: cmd.Process.Pid, State: runtime.StateRunning})
	<-stop
	syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	cmd.Wait()
	writeJSON(filepath.Join(dir, "state.json"), shimState{ShimPID: os.Getpid(), State: runtime.StateStopped})
}
