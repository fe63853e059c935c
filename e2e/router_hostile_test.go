package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"paddock.dev/paddock/internal/router"
	"paddock.dev/paddock/internal/testenv"
)

// Hostile clients and tenants against the router: each test reproduces an
// attack that worked before the router defended against it. The first
// test drives the real `paddock router` binary on its own (its flags set
// short time limits); the second a whole platform with hostile apps.

// hostileApp is the source of an app that misbehaves on request:
//
//	/host    answers the Host it received
//	/hang    answers only when its client has gone (never, to a patient one)
//	/stray   answers, then writes a second, unasked-for response on the
//	         same connection a moment later (and keeps doing so for every
//	         later request on it)
//	/        answers "NAME GREETING"
//
// With SQUAT_PORT set it also tries, every few milliseconds, to listen on
// 127.0.0.1:SQUAT_PORT (another app's port, while that app restarts) and
// answers "SQUATTED" there, health checks included.
const hostileApp = `package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	name, greeting := os.Getenv("NAME"), os.Getenv("GREETING")
	mux := http.NewServeMux()
	mux.HandleFunc("/host", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Host) })
	mux.HandleFunc("/hang", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Minute):
		}
	})
	mux.HandleFunc("/stray", func(w http.ResponseWriter, r *http.Request) {
		c, br, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		go stray(c, br)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "%s %s", name, greeting) })
	if p := os.Getenv("SQUAT_PORT"); p != "" {
		go squat(p)
	}
	http.ListenAndServe(":"+os.Getenv("PORT"), mux)
}

// stray answers every request on c with a response and, 1 ms later, a
// second one.
func stray(c net.Conn, br *bufio.ReadWriter) {
	defer c.Close()
	for {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		time.Sleep(time.Millisecond)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nSTRAY")
		req, err := http.ReadRequest(br.Reader)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
	}
}

func squat(port string) {
	for {
		ln, err := net.Listen("tcp", "127.0.0.1:"+port)
		if err == nil {
			http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "SQUATTED") }))
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}
`

// buildHostileApp compiles hostileApp into a folder ready to deploy
// (paddock.toml, no build step, the binary).
func buildHostileApp(t *testing.T, name string) string {
	t.Helper()
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "go.mod"), []byte("module hostile\n\ngo 1.22\n"), 0o644)
	os.WriteFile(filepath.Join(src, "main.go"), []byte(hostileApp), 0o644)
	dir := writeApp(t, map[string]string{"paddock.toml": `
[processes.web]
command = "./server"
stop_timeout = "2s"
[processes.web.health]
path = "/healthz"
interval = "1s"
timeout = "1s"
`})
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "server"), ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the hostile app: %v\n%s", err, out)
	}
	return dir
}

// rawGet sends one raw request to addr and returns the status and body.
func rawGet(addr, raw string) (int, string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		return 0, "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, "", err
	}
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// procStatus returns the fields of /proc/PID/status.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, _ := strings.Cut(line, ":")
		out[k] = strings.Join(strings.Fields(v), " ")
	}
	return out
}

// TestRouterBinaryAgainstHostileClients runs `paddock router` as root
// with --uid/--gid and short time limits, in front of a backend of this
// test.
func TestRouterBinaryAgainstHostileClients(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the router starts as root and drops to another user")
	}
	const routerUID = 54330
	var mu sync.Mutex
	var bodyErrs []string
	backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			mu.Lock()
			bodyErrs = append(bodyErrs, err.Error())
			mu.Unlock()
			return
		}
		fmt.Fprintf(w, "host=%s uri=%s", r.Host, r.RequestURI)
	})}
	bln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go backend.Serve(bln)
	t.Cleanup(func() { backend.Close() })

	state := t.TempDir()
	cmd := exec.Command(testenv.Binary(t), "router", "--state", state, "--listen", "127.0.0.1:0",
		"--uid", strconv.Itoa(routerUID), "--gid", strconv.Itoa(routerUID), "--body-timeout", "1s")
	var logs lockedBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("router log:\n%s", logs.String())
		}
	})
	rc := &router.Client{StateDir: state}
	var st router.Status
	testenv.Eventually(t, 10*time.Second, func() error {
		st, err = rc.Status(context.Background())
		return err
	})
	if err := rc.Push(context.Background(), router.Table{Version: 1, Routes: []router.Route{
		{Host: "vic.localhost", App: "vic", Backends: []router.Backend{{Addr: bln.Addr().String(), UID: uint32(os.Geteuid())}}},
	}}); err != nil {
		t.Fatal(err)
	}
	addr := st.Listen

	t.Run("runs as the user it was given", func(t *testing.T) {
		s := procStatus(t, cmd.Process.Pid)
		want := fmt.Sprintf("%d %d %d %d", routerUID, routerUID, routerUID, routerUID)
		if s["Uid"] != want || s["Gid"] != want || s["Groups"] != "" {
			t.Errorf("/proc/%d/status: Uid %q Gid %q Groups %q, want %q, %q and none", cmd.Process.Pid, s["Uid"], s["Gid"], s["Groups"], want, want)
		}
	})

	t.Run("absolute-form request", func(t *testing.T) {
		code, body, err := rawGet(addr, "GET http://vic.localhost/reset HTTP/1.1\r\nHost: attacker.example\r\n\r\n")
		if err != nil || code != 200 || body != "host=vic.localhost uri=/reset" {
			t.Errorf("got %d %q %v, want 200 %q", code, body, err, "host=vic.localhost uri=/reset")
		}
	})

	t.Run("slow request body", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		io.WriteString(c, "POST / HTTP/1.1\r\nHost: vic.localhost\r\nContent-Length: 1000\r\n\r\nfirst bytes")
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("after %v: %v", time.Since(start), err)
		}
		if resp.StatusCode != 408 || time.Since(start) > 5*time.Second {
			t.Errorf("got %d after %v, want 408 after about the 1s body timeout", resp.StatusCode, time.Since(start))
		}
		testenv.Eventually(t, 5*time.Second, func() error {
			mu.Lock()
			defer mu.Unlock()
			if len(bodyErrs) == 0 {
				return fmt.Errorf("the app still waits for the rest of the body")
			}
			return nil
		})
	})

	t.Run("3000 idle connections", func(t *testing.T) {
		before := procStatus(t, cmd.Process.Pid)
		var idle []net.Conn
		defer func() {
			for _, c := range idle {
				c.Close()
			}
		}()
		for i := 0; i < 3000; i++ {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatalf("idle connection %d: %v", i, err)
			}
			idle = append(idle, c)
		}
		code, body, err := rawGet(addr, "GET / HTTP/1.1\r\nHost: vic.localhost\r\n\r\n")
		if err != nil || code != 200 {
			t.Errorf("a client after 3000 idle connections: got %d %q %v, want 200", code, body, err)
		}
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", cmd.Process.Pid))
		after := procStatus(t, cmd.Process.Pid)
		if len(fds) > 1100 {
			t.Errorf("router file descriptors with 3000 idle clients: %d, want at most about 1000 (the per-address limit)", len(fds))
		}
		rss := func(s map[string]string) int { n, _ := strconv.Atoi(strings.TrimSuffix(s["VmRSS"], " kB")); return n }
		if grew := rss(after) - rss(before); grew > 64<<10 {
			t.Errorf("router memory grew by %d KiB for 3000 idle clients, want under 64 MiB", grew)
		}
		t.Logf("3000 idle clients: router holds %d descriptors, RSS %s -> %s", len(fds), before["VmRSS"], after["VmRSS"])
	})
}

// deployApp deploys the hostile app as app name with env set.
func deployApp(t *testing.T, p *testenv.Platform, name, dir string, env ...string) {
	t.Helper()
	if _, _, err := p.Run("apps", "create", name); err != nil {
		t.Fatalf("apps create %s: %v", name, err)
	}
	if len(env) > 0 {
		p.MustRun(append([]string{"config", "set", name}, env...)...)
	}
	if stdout, stderr, err := p.Run("deploy", dir, "--app", name); err != nil {
		t.Fatalf("deploy %s: %v\n%s\n%s", name, err, stdout, stderr)
	}
}

// routedBackend returns the backend address the router's table has for
// host.
func routedBackend(t *testing.T, p *testenv.Platform, host string) string {
	t.Helper()
	var addr string
	testenv.Eventually(t, 30*time.Second, func() error {
		data, err := os.ReadFile(filepath.Join(p.Data, "router", "routes.json"))
		if err != nil {
			return err
		}
		var tbl router.Table
		if err := json.Unmarshal(data, &tbl); err != nil {
			return err
		}
		for _, r := range tbl.Routes {
			if r.Host == host && len(r.Backends) == 1 {
				addr = r.Backends[0].Addr
				return nil
			}
		}
		return fmt.Errorf("no single backend for %s in %s", host, data)
	})
	return addr
}

// TestHostileTenantsThroughTheRouter runs a platform with hostile apps.
func TestHostileTenantsThroughTheRouter(t *testing.T) {
	p := testenv.Start(t)
	app := buildHostileApp(t, "vic")
	deployApp(t, p, "vic", app, "NAME=vic", "GREETING=v1")
	deployApp(t, p, "slow", app, "NAME=slow", "GREETING=s")
	serving(t, p, "vic.localhost", "vic v1")
	serving(t, p, "slow.localhost", "slow s")

	t.Run("absolute-form request", func(t *testing.T) {
		code, body, err := rawGet(p.Router, "GET http://vic.localhost/host HTTP/1.1\r\nHost: attacker.example\r\n\r\n")
		if err != nil || code != 200 || body != "vic.localhost" {
			t.Errorf("Host at the app: got %d %q %v, want 200 %q", code, body, err, "vic.localhost")
		}
	})

	t.Run("stray backend response", func(t *testing.T) {
		// One client makes the app answer twice; the 30 after it, a few
		// milliseconds apart, each get their own answer.
		if code, body, err := rawGet(p.Router, "GET /stray HTTP/1.1\r\nHost: vic.localhost\r\n\r\n"); err != nil || code != 200 || body != "ok" {
			t.Fatalf("GET /stray: %d %q %v", code, body, err)
		}
		var wrong []string
		for i := 0; i < 30; i++ {
			time.Sleep(5 * time.Millisecond)
			code, body, err := p.Get("vic.localhost", "/")
			if err != nil || code != 200 || body != "vic v1" {
				wrong = append(wrong, fmt.Sprintf("%d %q %v", code, body, err))
			}
		}
		if len(wrong) != 0 {
			t.Errorf("%d of 30 clients did not get their own answer: %q", len(wrong), wrong)
		}
	})

	t.Run("router SIGTERM during a hanging request, then a deploy", func(t *testing.T) {
		state := filepath.Join(p.Data, "router")
		old, err := router.ReadInfo(state)
		if err != nil {
			t.Fatal(err)
		}
		// A request that hangs at an app the deploy below leaves alone:
		// only the old router's grace can end it.
		hang, err := net.Dial("tcp", p.Router)
		if err != nil {
			t.Fatal(err)
		}
		defer hang.Close()
		io.WriteString(hang, "GET /hang HTTP/1.1\r\nHost: slow.localhost\r\n\r\n")
		time.Sleep(300 * time.Millisecond)
		stopped := time.Now()
		if err := syscall.Kill(old.PID, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		// The server starts a new router while the old one drains; a new
		// release must be routed by it.
		p.MustRun("config", "set", "vic", "GREETING=v2")
		serving(t, p, "vic.localhost", "vic v2")
		testenv.Eventually(t, 15*time.Second, func() error {
			if syscall.Kill(old.PID, 0) == nil {
				return fmt.Errorf("the old router %d still runs %v after SIGTERM", old.PID, time.Since(stopped))
			}
			return nil
		})
		if took := time.Since(stopped); took > 13*time.Second {
			t.Errorf("the old router exited %v after SIGTERM, want within its 10s grace and a little", took)
		}
		hang.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := io.ReadAll(hang); err != nil {
			t.Errorf("the hanging request after the old router's grace: %v, want its connection closed", err)
		}
		info, err := router.ReadInfo(state)
		if err != nil || info.PID == 0 || info.PID == old.PID || syscall.Kill(info.PID, 0) != nil {
			t.Fatalf("router.json after the old router exited: %+v, %v; want the running new router", info, err)
		}
		rc := &router.Client{StateDir: state}
		st, err := rc.Status(context.Background())
		if err != nil || st.PID != info.PID {
			t.Errorf("admin socket after the old router exited: %+v, %v; want pid %d", st, err, info.PID)
		}
		p.MustRun("config", "set", "vic", "GREETING=v3")
		serving(t, p, "vic.localhost", "vic v3")
	})

	t.Run("port squatting during a restart", func(t *testing.T) {
		port := routedBackend(t, p, "vic.localhost")
		_, portNum, _ := net.SplitHostPort(port)
		deployApp(t, p, "evil", app, "NAME=evil", "GREETING=x", "SQUAT_PORT="+portNum)
		serving(t, p, "evil.localhost", "evil x")
		rows := ps(t, p, "vic")
		if len(rows) != 1 {
			t.Fatalf("vic instances: %+v", rows)
		}
		// Kill vic's process: while it restarts, evil binds its port.
		syscall.Kill(rows[0].PID, syscall.SIGKILL)
		var squatted, served int
		codes := map[int]int{}
		impostors := map[string]uint32{}
		rc := &router.Client{StateDir: filepath.Join(p.Data, "router")}
		deadline := time.Now().Add(8 * time.Second)
		for time.Now().Before(deadline) {
			code, body, err := p.Get("vic.localhost", "/")
			codes[code]++
			if st, err := rc.Status(context.Background()); err == nil {
				for a, u := range st.Impostors {
					impostors[a] = u
				}
			}
			switch {
			case err == nil && strings.Contains(body, "SQUATTED"):
				squatted++
			case err == nil && code == 200:
				served++
			}
			time.Sleep(20 * time.Millisecond)
		}
		direct, _ := http.Get("http://" + port + "/")
		if direct != nil {
			b, _ := io.ReadAll(direct.Body)
			direct.Body.Close()
			t.Logf("direct to %s: %q", port, b)
		}
		t.Logf("answers for vic after its kill: %v (%d from vic); the router saw impostors %v; vic now %+v", codes, served, impostors, ps(t, p, "vic"))
		if squatted != 0 {
			t.Errorf("%d requests for vic reached the app squatting its port", squatted)
		}
	})
}
