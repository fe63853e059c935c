// Package e2e drives the real paddock binary the way a person does: `paddock
// up`, then the CLI, with requests through the router on loopback.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"paddock.dev/paddock/internal/router"
	"paddock.dev/paddock/internal/testenv"
)

func exampleDir(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "examples", "hello")
}

// serving waits until host answers 200 through the router with a body
// containing want.
func serving(t *testing.T, p *testenv.Platform, host, want string) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, func() error {
		code, body, err := p.Get(host, "/")
		if err != nil {
			return err
		}
		if code != 200 || !strings.Contains(body, want) {
			return fmt.Errorf("GET %s: %d %q, want 200 with %q", host, code, body, want)
		}
		return nil
	})
}

// load sends GETs through the router from several goroutines until stopped,
// and counts what failed.
type load struct {
	stop     chan struct{}
	wg       sync.WaitGroup
	ok, fail atomic.Int64
	mu       sync.Mutex
	errs     []string
}

func startLoad(p *testenv.Platform, host string, workers int) *load {
	l := &load{stop: make(chan struct{})}
	for i := 0; i < workers; i++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				code, body, err := p.Get(host, "/")
				if err != nil || code != 200 {
					l.fail.Add(1)
					l.mu.Lock()
					if len(l.errs) < 10 {
						l.errs = append(l.errs, fmt.Sprintf("%d %q %v", code, body, err))
					}
					l.mu.Unlock()
					continue
				}
				l.ok.Add(1)
			}
		}()
	}
	return l
}

func (l *load) finish(t *testing.T, what string) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	t.Logf("%s: %d requests succeeded, %d failed", what, l.ok.Load(), l.fail.Load())
	if l.ok.Load() == 0 {
		t.Errorf("%s: no request succeeded", what)
	}
	if n := l.fail.Load(); n != 0 {
		t.Errorf("%s: %d requests failed, want 0; first: %v", what, n, l.errs)
	}
}

type psRow struct {
	ID       string `json:"id"`
	Release  int    `json:"release"`
	State    string `json:"state"`
	PID      int    `json:"pid"`
	Healthy  bool   `json:"healthy"`
	Restarts int    `json:"restarts"`
	Process  string `json:"process"`
	Port     int    `json:"port"`
	Node     string `json:"node"`
}

func ps(t *testing.T, p *testenv.Platform, app string) []psRow {
	t.Helper()
	var rows []psRow
	out := p.MustRun("ps", app, "--json")
	if err := jsonUnmarshal(out, &rows); err != nil {
		t.Fatalf("ps --json: %v\n%s", err, out)
	}
	return rows
}

// settled waits until app runs exactly n healthy web instances of release v
// and nothing else.
func settled(t *testing.T, p *testenv.Platform, app string, n, v int) []psRow {
	t.Helper()
	var rows []psRow
	testenv.Eventually(t, 60*time.Second, func() error {
		rows = ps(t, p, app)
		healthy := 0
		for _, r := range rows {
			if r.Process == "web" && r.Release == v && r.Healthy && r.State == "running" {
				healthy++
			}
		}
		if healthy != n || len(rows) != n {
			return fmt.Errorf("want %d healthy web instances of v%d and nothing else, have %+v", n, v, rows)
		}
		return nil
	})
	return rows
}

func TestCoreLoop(t *testing.T) {
	p := testenv.Start(t)
	host := "hello.localhost"

	out := p.MustRun("apps", "create", "hello")
	if !strings.Contains(out, "Created hello") {
		t.Fatalf("apps create: got %q", out)
	}
	stdout, stderr, err := p.Run("deploy", exampleDir(t))
	if err != nil {
		t.Fatalf("deploy: %v\n%s\n%s", err, stdout, stderr)
	}
	if !strings.Contains(stdout, "Released v1 of hello") || !strings.Contains(stderr, "go build") {
		t.Fatalf("deploy output: stdout %q stderr %q", stdout, stderr)
	}
	serving(t, p, host, "hello from")
	settled(t, p, "hello", 1, 1)

	t.Run("unknown host is 404", func(t *testing.T) {
		code, body, err := p.Get("nope.localhost", "/")
		if err != nil || code != 404 {
			t.Fatalf("got %d %q %v, want 404", code, body, err)
		}
	})

	t.Run("scale up spreads requests", func(t *testing.T) {
		p.MustRun("scale", "hello", "web=3")
		rows := settled(t, p, "hello", 3, 1)
		seen := map[string]bool{}
		for i := 0; i < 30 && len(seen) < 3; i++ {
			_, body, err := p.Get(host, "/")
			if err != nil {
				t.Fatal(err)
			}
			seen[body] = true
		}
		if len(seen) != 3 {
			t.Errorf("requests reached %d instances, want 3: %v (instances %+v)", len(seen), seen, rows)
		}
	})

	t.Run("killed instance is restarted without failed requests", func(t *testing.T) {
		rows := settled(t, p, "hello", 3, 1)
		l := startLoad(p, host, 4)
		time.Sleep(300 * time.Millisecond)
		if err := syscall.Kill(rows[0].PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 30*time.Second, func() error {
			for _, r := range ps(t, p, "hello") {
				if r.ID == rows[0].ID && r.Restarts == 1 && r.Healthy {
					return nil
				}
			}
			return fmt.Errorf("instance %s not restarted and healthy", rows[0].ID)
		})
		l.finish(t, "kill -9 of one instance")
	})

	t.Run("config set rolls out a new release under load", func(t *testing.T) {
		l := startLoad(p, host, 4)
		out := p.MustRun("config", "set", "hello", "GREETING=hi")
		if !strings.Contains(out, "v2 of hello is live") {
			t.Errorf("config set: got %q", out)
		}
		settled(t, p, "hello", 3, 2)
		l.finish(t, "rollout of v2")
		serving(t, p, host, "hi from")
	})

	t.Run("scale down under load", func(t *testing.T) {
		l := startLoad(p, host, 4)
		p.MustRun("scale", "hello", "web=1")
		settled(t, p, "hello", 1, 2)
		l.finish(t, "scale down 3 to 1")
	})

	t.Run("releases and rollback under load", func(t *testing.T) {
		out := p.MustRun("releases", "hello")
		for _, want := range []string{"v1", "v2 *", "Deploy ", "Config: set GREETING"} {
			if !strings.Contains(out, want) {
				t.Errorf("releases: missing %q in\n%s", want, out)
			}
		}
		l := startLoad(p, host, 4)
		out = p.MustRun("rollback", "hello", "v1")
		if !strings.Contains(out, "v3 of hello is live") {
			t.Errorf("rollback: got %q", out)
		}
		settled(t, p, "hello", 1, 3)
		l.finish(t, "rollback to v1")
		serving(t, p, host, "hello from")
		if out := p.MustRun("config", "hello"); strings.Contains(out, "GREETING") {
			t.Errorf("config after rollback to v1: got %q, want no GREETING", out)
		}
	})

	t.Run("logs merge output, build and events", func(t *testing.T) {
		out := p.MustRun("logs", "hello", "-n", "0")
		for _, want := range []string{"build: ", "paddock: v3 rolled out", "listening on :", "web."} {
			if !strings.Contains(out, want) {
				t.Errorf("logs: missing %q in\n%s", want, out)
			}
		}
		out = p.MustRun("logs", "hello", "--process", "web", "-n", "3")
		if n := strings.Count(strings.TrimSpace(out), "\n") + 1; n != 3 {
			t.Errorf("logs -n 3: got %d lines:\n%s", n, out)
		}
	})

	t.Run("server killed with SIGKILL: apps keep serving and are adopted", func(t *testing.T) {
		p.MustRun("scale", "hello", "web=2")
		before := settled(t, p, "hello", 2, 3)
		l := startLoad(p, host, 4)
		time.Sleep(200 * time.Millisecond)
		p.Kill()
		time.Sleep(time.Second)
		p.Up()
		after := settled(t, p, "hello", 2, 3)
		time.Sleep(500 * time.Millisecond)
		l.finish(t, "server kill -9 and restart")
		pids := func(rows []psRow) string {
			var s []string
			for _, r := range rows {
				s = append(s, r.ID+":"+strconv.Itoa(r.PID))
			}
			return strings.Join(s, " ")
		}
		if pids(before) != pids(after) {
			t.Errorf("instances after restart: got %s, want the same as before: %s", pids(after), pids(before))
		}
	})

	t.Run("custom domain, and 503 without a healthy instance", func(t *testing.T) {
		p.MustRun("domains", "add", "hello", "WWW.Example.test")
		if out := p.MustRun("domains", "hello"); !strings.Contains(out, "www.example.test") {
			t.Errorf("domains: got %q", out)
		}
		serving(t, p, "www.example.test", "hello from")
		p.MustRun("scale", "hello", "web=0")
		testenv.Eventually(t, 30*time.Second, func() error {
			code, body, err := p.Get(host, "/")
			if err != nil || code != 503 || !strings.Contains(body, "no healthy instance") {
				return fmt.Errorf("GET with web=0: %d %q %v, want 503 saying there is no healthy instance", code, body, err)
			}
			return nil
		})
		p.MustRun("scale", "hello", "web=2")
		settled(t, p, "hello", 2, 3)
	})

	t.Run("logs -f follows new lines", func(t *testing.T) {
		cmd := exec.Command(p.Bin, "logs", "hello", "-f", "-n", "1")
		cmd.Env = p.Env()
		var out lockedBuffer
		cmd.Stdout = &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		time.Sleep(500 * time.Millisecond)
		p.MustRun("config", "set", "hello", "MARKER=1")
		testenv.Eventually(t, 30*time.Second, func() error {
			if s := out.String(); !strings.Contains(s, "set MARKER") || !strings.Contains(s, "listening on") {
				return fmt.Errorf("logs -f printed %q, want the config change and the new instances' output", s)
			}
			return nil
		})
	})

	t.Run("router killed with SIGKILL is restarted on its address", func(t *testing.T) {
		before, err := router.ReadInfo(filepath.Join(p.Data, "router"))
		if err != nil {
			t.Fatal(err)
		}
		syscall.Kill(before.PID, syscall.SIGKILL)
		serving(t, p, host, "from")
		after, err := router.ReadInfo(filepath.Join(p.Data, "router"))
		if err != nil || after.PID == before.PID || after.Listen != before.Listen {
			t.Errorf("router after kill: %+v (%v), want a new process on %s", after, err, before.Listen)
		}
	})

	t.Run("destroy stops instances", func(t *testing.T) {
		rows := ps(t, p, "hello")
		if _, _, err := p.Run("apps", "destroy", "hello"); err == nil {
			t.Fatal("apps destroy without --yes and without a terminal: want an error")
		}
		p.MustRun("apps", "destroy", "hello", "--yes")
		testenv.Eventually(t, 30*time.Second, func() error {
			for _, r := range rows {
				if syscall.Kill(r.PID, 0) == nil {
					return fmt.Errorf("pid %d of %s still runs", r.PID, r.ID)
				}
			}
			if code, _, _ := p.Get(host, "/"); code != 404 {
				return fmt.Errorf("GET after destroy: %d, want 404", code)
			}
			// The folders go once the supervisors have ended everything.
			if entries, _ := os.ReadDir(filepath.Join(p.Data, "instances")); len(entries) != 0 {
				return fmt.Errorf("instance folders left after destroy: %d", len(entries))
			}
			return nil
		})
		testenv.Eventually(t, 10*time.Second, func() error {
			if left, _ := filepath.Glob(filepath.Join(p.Data, "logs", "hello.*")); len(left) > 0 {
				return fmt.Errorf("the logs of the destroyed app are still on disk: %s", left)
			}
			return nil
		})
	})
}

// TestConfigOutlivesAFailedFirstDeploy: config set before a first deploy
// that fails is still there for the next deploy, and for the next config
// change.
func TestConfigOutlivesAFailedFirstDeploy(t *testing.T) {
	p := testenv.Start(t)
	p.MustRun("apps", "create", "shop")
	p.MustRun("config", "set", "shop", "NAME=kept")
	if out, errOut, err := p.Run("deploy", tenantApp(t, "[processes.web]\ncommand = \"exit 3\"\n"), "--app", "shop"); err == nil {
		t.Fatalf("deploy of a crashing first release succeeded:\n%s\n%s", out, errOut)
	}
	p.MustRun("config", "set", "shop", "OTHER=1")
	if out, errOut, err := p.Run("deploy", tenantApp(t, "[processes.web]\ncommand = \"./tenant serve\"\n"), "--app", "shop"); err != nil {
		t.Fatalf("deploy: %v\n%s\n%s", err, out, errOut)
	}
	serving(t, p, "shop.localhost", "kept")
	if cfg := p.MustRun("config", "shop"); !strings.Contains(cfg, "OTHER") {
		t.Errorf("config after a failed first deploy:\n%s", cfg)
	}
}
