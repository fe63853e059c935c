// Package testenv starts a real Paddock platform for tests: the real binary,
// built once per test process, serving on 127.0.0.1 ports picked by the
// kernel, with its data and CLI config in the test's temporary folder. Only
// tests import it.
package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"paddock.dev/paddock/internal/client"
	"paddock.dev/paddock/internal/isolate"
	"paddock.dev/paddock/internal/router"
)

// built holds the programs GoBuild made, by package.
var built sync.Map // package -> func() (string, error)

// GoBuild builds the Go package pkg (an import path, or a path relative to
// the test's package) once per test process and returns the binary's path.
func GoBuild(t testing.TB, pkg string) string {
	t.Helper()
	once, _ := built.LoadOrStore(pkg, sync.OnceValues(func() (string, error) {
		dir, err := os.MkdirTemp("", "paddock-bin-")
		if err != nil {
			return "", err
		}
		bin := filepath.Join(dir, filepath.Base(pkg))
		if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
		return bin, nil
	}))
	bin, err := once.(func() (string, error))()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// Binary builds the paddock binary once and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	return GoBuild(t, "paddock.dev/paddock/cmd/paddock")
}

// Platform is a running `paddock up` and what a test needs to drive it.
type Platform struct {
	t      testing.TB
	Bin    string
	Dir    string // holds data/ and config/
	Data   string
	API    string // base URL
	Router string // host:port of the router
	Token  string
	CA     string // PEM of the API's CA

	upArgs []string
	cmd    *exec.Cmd
	exited chan struct{}
	log    *bytes.Buffer
	logMu  *sync.Mutex
}

// Start starts a platform and stops it, its apps and its router when the
// test ends. Extra arguments go to `paddock up`.
func Start(t testing.TB, upArgs ...string) *Platform {
	t.Helper()
	p := &Platform{t: t, Bin: Binary(t), Dir: t.TempDir(), upArgs: upArgs}
	// Apps and builds run as users of their own: they pass through the
	// test's folders to reach theirs.
	os.Chmod(p.Dir, 0o711)
	os.Chmod(filepath.Dir(p.Dir), 0o711)
	p.Data = filepath.Join(p.Dir, "data")
	p.Up()
	t.Cleanup(p.cleanup)
	return p
}

// Env is the environment the server and CLI run with.
func (p *Platform) Env() []string {
	env := []string{"XDG_CONFIG_HOME=" + filepath.Join(p.Dir, "config"), "PADDOCK_DATA=" + p.Data}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "XDG_") || strings.HasPrefix(kv, "PADDOCK_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// Up starts the server (again) on the same data folder.
func (p *Platform) Up() {
	p.t.Helper()
	api := "127.0.0.1:0"
	if p.API != "" {
		_, api, _ = strings.Cut(p.API, "://") // keep the address the CLI config has
	}
	p.cmd = exec.Command(p.Bin, append([]string{"up", "--api", api, "--http", "127.0.0.1:0"}, p.upArgs...)...)
	p.cmd.Env = p.Env()
	p.log, p.logMu = &bytes.Buffer{}, &sync.Mutex{}
	w := &lockedWriter{mu: p.logMu, w: p.log}
	p.cmd.Stdout, p.cmd.Stderr = w, w
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.exited = make(chan struct{})
	go func() { p.cmd.Wait(); close(p.exited) }()

	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			p.t.Fatalf("paddock up exited at start:\n%s", p.ServerLog())
		default:
		}
		if strings.Contains(p.ServerLog(), "is up.") {
			c, err := p.config()
			if err == nil {
				p.API, p.Token, p.CA = c.Server, c.Token, c.CA
				info, err := router.ReadInfo(filepath.Join(p.Data, "router"))
				if err == nil {
					// The router outlives server restarts: its address, which
					// load generators read meanwhile, is set only once.
					if p.Router == "" {
						p.Router = info.Listen
					} else if p.Router != info.Listen {
						p.t.Fatalf("the router moved from %s to %s across a server restart", p.Router, info.Listen)
					}
					return
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.t.Fatalf("paddock up did not come up within 30s:\n%s", p.ServerLog())
}

func (p *Platform) config() (client.Config, error) {
	var c client.Config
	b, err := os.ReadFile(filepath.Join(p.Dir, "config", "paddock", "config.json"))
	if err != nil {
		return c, err
	}
	return c, json.Unmarshal(b, &c)
}

// PID is the server's process ID.
func (p *Platform) PID() int { return p.cmd.Process.Pid }

// ServerLog returns what the server printed.
func (p *Platform) ServerLog() string {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	return p.log.String()
}

// Kill kills the server with SIGKILL, leaving apps and router running.
func (p *Platform) Kill() {
	p.t.Helper()
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// Stop stops the server with SIGTERM and waits for it.
func (p *Platform) Stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.exited
	}
}

// WaitExit waits for the server to exit by itself (after `paddock down`),
// and fails the test if it has not within d.
func (p *Platform) WaitExit(d time.Duration) {
	p.t.Helper()
	select {
	case <-p.exited:
	case <-time.After(d):
		p.t.Fatalf("the server did not exit within %s", d)
	}
}

// cleanup stops everything the platform started: through the API when the
// server runs, and by PID in any case.
func (p *Platform) cleanup() {
	select {
	case <-p.exited:
	default:
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		p.Client().Shutdown(ctx, true)
		cancel()
		select {
		case <-p.exited:
		case <-time.After(30 * time.Second):
			p.cmd.Process.Signal(syscall.SIGKILL)
			<-p.exited
		}
	}
	users := p.AppUsers()
	KillLeftovers(p.Data)
	// Nothing the platform started may outlive it: a process still working
	// in its folders, or running as one of its app users, is a leak.
	for _, pid := range processesIn(p.Dir, users) {
		syscall.Kill(pid, syscall.SIGKILL)
		p.t.Errorf("process %d was left running in %s or as an app user (%s)", pid, p.Dir, users)
	}
	// The storage pool stays mounted by design, for apps that outlive the
	// server; any other mount left is a leak.
	pool := filepath.Join(p.Data, "volumes", "pool", "mnt")
	for _, m := range Unmount(p.Dir) {
		if m != pool {
			p.t.Errorf("%s was left mounted", m)
		}
	}
	if p.t.Failed() {
		p.t.Logf("server log:\n%s", p.ServerLog())
	}
}

// Unmount detaches every mount at or below dir, deepest first, and returns
// their mount points.
func Unmount(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var points []string
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		// Octal escapes in mountinfo (\040 for a space) do not occur in
		// the temporary folders tests use.
		if mp := f[4]; mp == dir || strings.HasPrefix(mp, dir+"/") {
			points = append(points, mp)
		}
	}
	slices.Reverse(points)
	for _, mp := range points {
		syscall.Unmount(mp, syscall.MNT_DETACH)
	}
	return points
}

// KillLeftovers kills, by the PIDs in their state files, any instance
// supervisor, app process group or router still running from data.
func KillLeftovers(data string) {
	sups, _ := filepath.Glob(filepath.Join(data, "supervisors", "*"))
	for _, dir := range sups {
		var pid int
		if b, err := os.ReadFile(filepath.Join(dir, "pid")); err == nil && json.Unmarshal(b, &pid) == nil && pid > 0 && cmdlineHas(pid, dir) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(data, "instances", "*"))
	for _, dir := range dirs {
		var st struct {
			PID int `json:"pid"`
		}
		b, err := os.ReadFile(filepath.Join(dir, "state.json"))
		if err != nil || json.Unmarshal(b, &st) != nil {
			continue
		}
		if st.PID > 0 {
			if cwd, _ := os.Readlink("/proc/" + strconv.Itoa(st.PID) + "/cwd"); cwd == filepath.Join(dir, "app") {
				syscall.Kill(-st.PID, syscall.SIGKILL)
			}
		}
	}
	// Every app process is in the platform's cgroup, whatever it did.
	var r isolate.Range
	if b, err := os.ReadFile(filepath.Join(data, "uid-range.json")); err == nil && json.Unmarshal(b, &r) == nil {
		if tr, err := isolate.NewTracker(r.Cgroup()); err == nil {
			isolate.Kill(tr.Dir(), 10*time.Second)
			isolate.Remove(tr.Dir())
		}
	}
	state := filepath.Join(data, "router")
	if info, err := router.ReadInfo(state); err == nil && info.PID > 0 && cmdlineHas(info.PID, state) {
		syscall.Kill(info.PID, syscall.SIGKILL)
	}
}

// AppUsers returns the block of users the platform's apps run as.
func (p *Platform) AppUsers() isolate.Range {
	var r isolate.Range
	b, err := os.ReadFile(filepath.Join(p.Data, "uid-range.json"))
	if err != nil || json.Unmarshal(b, &r) != nil {
		p.t.Errorf("the data folder records no block of app users: %v", err)
	}
	return r
}

// processesIn lists the processes whose working folder is inside dir or
// that run as a user of users, waiting a moment for those already stopping.
func processesIn(dir string, users isolate.Range) []int {
	var pids []int
	for try := 0; try < 50; try++ {
		pids = pids[:0]
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			if cwd, err := os.Readlink("/proc/" + e.Name() + "/cwd"); err == nil && strings.HasPrefix(cwd, dir+"/") {
				pids = append(pids, pid)
			}
		}
		if users.Size > 0 {
			pids = append(pids, isolate.ProcessesOf(users)...)
			slices.Sort(pids)
			pids = slices.Compact(pids)
		}
		if len(pids) == 0 {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return pids
}

func cmdlineHas(pid int, s string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return err == nil && bytes.Contains(b, []byte(s))
}

// Client returns an API client with the admin token.
func (p *Platform) Client() *client.Client { return p.ClientWith(p.Token) }

// ClientWith returns an API client with another token.
func (p *Platform) ClientWith(token string) *client.Client {
	c, err := client.New(client.Config{Server: p.API, CA: p.CA, Token: token})
	if err != nil {
		p.t.Fatal(err)
	}
	return c
}

// Viewer makes a user of role viewer, in a team of its own that is viewer
// on app, and returns a token of that user.
func (p *Platform) Viewer(t testing.TB, user, app string) string {
	t.Helper()
	ctx, admin := context.Background(), p.Client()
	if _, err := admin.CreateUser(ctx, user, "viewer"); err != nil {
		t.Fatal(err)
	}
	tok, err := admin.CreateToken(ctx, client.TokenRequest{Name: user, User: user})
	if err != nil {
		t.Fatal(err)
	}
	team := user + "-team"
	if _, err := admin.CreateTeam(ctx, team); err != nil {
		t.Fatal(err)
	}
	if err := admin.AddTeamMember(ctx, team, user); err != nil {
		t.Fatal(err)
	}
	if err := admin.Grant(ctx, app, team, "viewer"); err != nil {
		t.Fatal(err)
	}
	return tok.Value
}

// Run runs the CLI and returns its stdout, stderr and error.
func (p *Platform) Run(args ...string) (stdout, stderr string, err error) {
	return p.RunIn("", nil, args...)
}

// RunIn runs the CLI in dir with stdin.
func (p *Platform) RunIn(dir string, stdin io.Reader, args ...string) (string, string, error) {
	cmd := exec.Command(p.Bin, args...)
	cmd.Env = p.Env()
	cmd.Dir = dir
	cmd.Stdin = stdin
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	return out.String(), errOut.String(), err
}

// MustRun runs the CLI and fails the test if it fails.
func (p *Platform) MustRun(args ...string) string {
	p.t.Helper()
	out, errOut, err := p.Run(args...)
	if err != nil {
		p.t.Fatalf("paddock %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// HTTP is a client for requests through the router, with keep-alives.
var HTTP = &http.Client{
	Timeout: 10 * time.Second,
	Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 64,
	},
}

// Get requests path from host through the router.
func (p *Platform) Get(host, path string) (int, string, error) {
	req, err := http.NewRequest("GET", "http://"+p.Router+path, nil)
	if err != nil {
		return 0, "", err
	}
	req.Host = host
	resp, err := HTTP.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// Eventually retries f until it returns nil or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("not within %s: %v", timeout, err)
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}
