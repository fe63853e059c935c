package process

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"paddock.dev/paddock/internal/runtime"
)

// One supervisor process runs per app and binary on this machine, for all
// of the app's instances the runtime started from that binary: the Go
// runtime and the platform's package state cost a few MiB a process, paid
// once per app instead of once per instance. An app is one tenant, so its
// instances share a supervisor and no other tenant's. A server that runs a
// new binary starts new supervisors for the instances it starts; the old
// ones go with the last instance they supervise.
//
// On disk, for a supervisor:
//
//	Supervisors/APP.RAND/ctl       its control socket (the runtime's alone)
//	Supervisors/APP.RAND/pid       written once it listens
//	Supervisors/APP.RAND/shim.log  its own errors
//
// The runtime sends one request a connection, as a JSON object, and reads
// one reply: start the instance in a folder (its secrets in the request,
// never on disk), or stop it. A supervisor exits, removing its folder, when
// it supervises nothing and serves no request; SIGTERM stops all its
// instances first.

// request is what the runtime asks of a supervisor.
type request struct {
	Op      string           `json:"op"`  // "start" or "stop"
	Dir     string           `json:"dir"` // the instance's folder
	Secrets []runtime.Secret `json:"secrets,omitempty"`
}

// reply is a supervisor's answer; Error is "" when it did what was asked.
type reply struct {
	Error string `json:"error,omitempty"`
	// Gone says the supervisor is exiting and took nothing on: ask
	// another.
	Gone bool `json:"gone,omitempty"`
}

const (
	// maxRequest bounds what a supervisor reads of one request.
	maxRequest = 16 << 20
	// idleFirst is how long a new supervisor waits for its first
	// instance before it exits.
	idleFirst = 30 * time.Second
)

// RunShim runs the supervisor whose folder is dir until it supervises no
// instance any more, or until SIGTERM, SIGINT or ctx stops all of them.
func RunShim(ctx context.Context, dir string) error {
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	// No core dumps, here or in the processes it starts: one would write
	// the instances' environments, their secrets, to disk.
	syscall.Setrlimit(syscall.RLIMIT_CORE, &syscall.Rlimit{})
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(stop)

	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "ctl"), Net: "unix"})
	if err != nil {
		return fmt.Errorf("shim: %w", err)
	}
	sv := &supervisor{ln: ln, insts: map[string]*supervised{}}
	if err := writeJSON(filepath.Join(dir, "pid"), os.Getpid()); err != nil {
		ln.Close()
		return fmt.Errorf("shim: %w", err)
	}
	// Give back the pages that the start-up garbage of the binary's
	// packages left free: 0.45 MiB of the 5.4 a supervisor has (measured).
	debug.FreeOSMemory()
	idle := time.AfterFunc(idleFirst, sv.exitIfIdle)
	defer idle.Stop()
	go func() {
		select {
		case <-stop:
		case <-ctx.Done():
		}
		sv.stopAll()
	}()
	for {
		c, err := ln.AcceptUnix()
		if errors.Is(err, net.ErrClosed) {
			break // nothing left to supervise
		}
		if err != nil {
			// Out of descriptors, say: the instances run on, and the
			// runtime asks again.
			time.Sleep(100 * time.Millisecond)
			continue
		}
		sv.mu.Lock()
		sv.busy++
		sv.mu.Unlock()
		go sv.serve(c)
	}
	sv.wg.Wait()
	os.RemoveAll(dir)
	return nil
}

// supervisor is the state of a supervisor process.
type supervisor struct {
	ln *net.UnixListener
	wg sync.WaitGroup // the instances' goroutines

	mu      sync.Mutex
	insts   map[string]*supervised // by instance folder
	busy    int                    // requests being served
	closing bool                   // stopping all; no new instance
}

// supervised is one instance a supervisor runs.
type supervised struct {
	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

func (s *supervised) end() { s.stopOnce.Do(func() { close(s.stop) }) }

// serve answers one request of the runtime.
func (sv *supervisor) serve(c *net.UnixConn) {
	defer func() {
		c.Close()
		sv.mu.Lock()
		sv.busy--
		sv.mu.Unlock()
		sv.exitIfIdle()
	}()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := samePeer(c); err != nil {
		json.NewEncoder(c).Encode(reply{Error: err.Error()})
		return
	}
	var req request
	if err := json.NewDecoder(io.LimitReader(c, maxRequest)).Decode(&req); err != nil {
		json.NewEncoder(c).Encode(reply{Error: "read request: " + err.Error()})
		return
	}
	var err error
	switch req.Op {
	case "start":
		err = sv.start(req.Dir, req.Secrets)
	case "stop":
		sv.stopOne(req.Dir)
	default:
		err = fmt.Errorf("unknown request %q", req.Op)
	}
	var rep reply
	if errors.Is(err, errGone) {
		rep.Gone = true
	} else if err != nil {
		rep.Error = err.Error()
	}
	json.NewEncoder(c).Encode(rep)
}

// samePeer refuses a connection from any user but the supervisor's own:
// the socket's folder already keeps others out.
func samePeer(c *net.UnixConn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var cerr error
	raw.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
	if cerr != nil {
		return cerr
	}
	if int(cred.Uid) != os.Geteuid() {
		return fmt.Errorf("uid %d may not control this supervisor", cred.Uid)
	}
	return nil
}

// start begins supervising the instance in dir.
func (sv *supervisor) start(dir string, given []runtime.Secret) error {
	if !filepath.IsAbs(dir) {
		return fmt.Errorf("instance folder %q is not absolute", dir)
	}
	sv.mu.Lock()
	_, dup := sv.insts[dir]
	closing := sv.closing
	sv.mu.Unlock()
	if dup {
		return fmt.Errorf("%s is supervised already", dir)
	}
	if closing {
		return errGone
	}
	sh, err := newShim(dir, given)
	if err != nil {
		return err
	}
	s := &supervised{stop: make(chan struct{}), done: make(chan struct{})}
	sv.mu.Lock()
	if _, dup := sv.insts[dir]; dup || sv.closing { // came meanwhile
		sv.mu.Unlock()
		sh.logs.Close()
		if dup {
			return fmt.Errorf("%s is supervised already", dir)
		}
		return errGone // stopAll would miss this one
	}
	sv.insts[dir] = s
	sv.wg.Add(1)
	sv.mu.Unlock()
	go func() {
		defer sv.wg.Done()
		sh.supervise(s.stop)
		sv.mu.Lock()
		delete(sv.insts, dir)
		sv.mu.Unlock()
		close(s.done)
		sv.exitIfIdle()
	}()
	return nil
}

// stopOne stops the instance in dir, if it supervises it, and waits for
// it to end.
func (sv *supervisor) stopOne(dir string) {
	sv.mu.Lock()
	s := sv.insts[dir]
	sv.mu.Unlock()
	if s != nil {
		s.end()
		<-s.done
	}
}

// stopAll stops every instance and lets the supervisor exit.
func (sv *supervisor) stopAll() {
	sv.mu.Lock()
	sv.closing = true
	all := make([]*supervised, 0, len(sv.insts))
	for _, s := range sv.insts {
		all = append(all, s)
	}
	sv.mu.Unlock()
	for _, s := range all {
		s.end()
	}
	for _, s := range all {
		<-s.done
	}
	sv.ln.Close()
}

// exitIfIdle closes the control socket once the supervisor runs no
// instance and serves no request: RunShim then returns. A request that
// comes after finds no socket, and the runtime starts a new supervisor.
func (sv *supervisor) exitIfIdle() {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	if len(sv.insts) == 0 && sv.busy == 0 {
		sv.closing = true
		sv.ln.Close()
	}
}

// errGone says a supervisor did not take a request: it has exited or is
// exiting, and a new one can be asked instead.
var errGone = errors.New("supervisor gone")

// callTimeout bounds a request that its caller gives no deadline.
const callTimeout = 10 * time.Second

// call sends one request to the supervisor in dir and waits for its reply.
// It returns errGone only when the supervisor is known not to have taken
// the request: nothing listens, or it said so, or it closed the connection
// without a word (it exited, or never accepted). A request cut short on this
// side (ctx, a timeout) may have been taken.
func call(ctx context.Context, dir string, req request) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, callTimeout)
		defer cancel()
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", filepath.Join(dir, "ctl"))
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("%w: %v", errGone, err)
		}
		return fmt.Errorf("supervisor %s: %w", dir, err)
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	c.SetDeadline(dl)
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	_, err = c.Write(b)
	clear(b)
	if err != nil {
		if errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
			return fmt.Errorf("%w: %v", errGone, err)
		}
		return fmt.Errorf("supervisor %s: %w", dir, err)
	}
	var rep reply
	if err := json.NewDecoder(c).Decode(&rep); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			return fmt.Errorf("%w: %v", errGone, err)
		}
		return fmt.Errorf("supervisor %s: %w", dir, err)
	}
	if rep.Gone {
		return fmt.Errorf("%w: it is exiting", errGone)
	}
	if rep.Error != "" {
		return fmt.Errorf("supervisor: %s", rep.Error)
	}
	return nil
}

// supervisorOf returns the folder of a supervisor of s's app that runs the
// runtime's binary: the one it used last, one a previous server started,
// or a new one. skip names a supervisor that just refused to serve.
func (r *Runtime) supervisorOf(s runtime.Spec, skip string) (string, error) {
	key := appKey(s)
	r.supMu.Lock()
	defer r.supMu.Unlock()
	if dir := r.sups[key]; dir != "" && dir != skip && r.runsOurBinary(dir) {
		return dir, nil
	}
	found, _ := filepath.Glob(filepath.Join(r.cfg.Supervisors, key+".*"))
	for _, dir := range found {
		if dir != skip && r.runsOurBinary(dir) {
			r.sups[key] = dir
			return dir, nil
		}
	}
	dir, err := r.startSupervisor(key)
	if err != nil {
		return "", err
	}
	r.sups[key] = dir
	return dir, nil
}

// appKey names an app's supervisors: by the app's ID, which is never
// reused, when it has one. A supervisor's folder is the key, a dot (which
// no app name holds) and a random suffix.
func appKey(s runtime.Spec) string {
	if s.AppID > 0 {
		return strconv.FormatInt(s.AppID, 10)
	}
	return s.App
}

// supervisorPID returns the pid of the supervisor in dir while it runs.
func supervisorPID(dir string) int {
	var pid int
	if readJSON(filepath.Join(dir, "pid"), &pid) != nil || !shimAlive(pid, dir) {
		return 0
	}
	return pid
}

// runsOurBinary reports whether the supervisor in dir runs and runs the
// runtime's binary, not one an upgrade has replaced.
func (r *Runtime) runsOurBinary(dir string) bool {
	pid := supervisorPID(dir)
	if pid == 0 {
		return false
	}
	theirs, err := os.Stat("/proc/" + strconv.Itoa(pid) + "/exe")
	if err != nil {
		return false
	}
	ours, err := os.Stat(r.cfg.Binary)
	return err == nil && os.SameFile(theirs, ours)
}

// startSupervisor starts a supervisor for the app key and waits until it
// listens.
func (r *Runtime) startSupervisor(key string) (string, error) {
	var rnd [6]byte
	rand.Read(rnd[:])
	dir := filepath.Join(r.cfg.Supervisors, key+"."+hex.EncodeToString(rnd[:]))
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", fmt.Errorf("start supervisor: %w", err)
	}
	if len(filepath.Join(dir, "ctl")) >= len(unix.RawSockaddrUnix{}.Path) {
		os.Remove(dir)
		return "", fmt.Errorf("start supervisor: the path of its socket %s is too long for a unix socket; use a shorter data folder", filepath.Join(dir, "ctl"))
	}
	logPath := filepath.Join(dir, "shim.log")
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		os.Remove(dir)
		return "", fmt.Errorf("start supervisor: %w", err)
	}
	defer out.Close()
	cmd := exec.Command(r.cfg.Binary, "shim", dir)
	cmd.Stdout, cmd.Stderr = out, out
	// One processor is plenty to wait on children and copy their output,
	// and costs the least memory.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "GOMAXPROCS=1"}
	// A session of its own: no signal sent to the server's process group
	// (a Ctrl-C in its terminal) reaches the instances.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("start supervisor: %w", err)
	}
	exited := make(chan struct{})
	// Reap it if it exits while this server is still its parent.
	go func() { cmd.Wait(); close(exited) }()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		var pid int
		if err := readJSON(filepath.Join(dir, "pid"), &pid); err == nil && pid == cmd.Process.Pid {
			return dir, nil
		} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
			cmd.Process.Kill()
			return "", fmt.Errorf("start supervisor: %w", err)
		}
		select {
		case <-exited:
			msg, _ := os.ReadFile(logPath)
			os.RemoveAll(dir)
			return "", fmt.Errorf("start supervisor: it exited at start: %s", lastLine(msg))
		case <-deadline.C:
			cmd.Process.Kill()
			<-exited
			msg, _ := os.ReadFile(logPath)
			os.RemoveAll(dir)
			return "", fmt.Errorf("start supervisor: it did not listen within 10s: %s", lastLine(msg))
		case <-tick.C:
		}
	}
}

// lastLine is the last line of a process's output, or a note that it
// printed nothing.
func lastLine(b []byte) string {
	t := tail{b: b}
	if l := t.lastLine(); l != "" {
		return l
	}
	return "no output"
}
