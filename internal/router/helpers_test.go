package router

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary run as a backend process (for the tests
// that kill a real instance or squat a port) or as a router process (for
// the tests of its lifecycle and privileges).
func TestMain(m *testing.M) {
	if os.Getenv("ROUTER_TEST_BACKEND") == "1" {
		runBackendProcess()
		return
	}
	if cfg, ok := os.LookupEnv("ROUTER_TEST_ROUTER"); ok {
		runRouterProcess(cfg)
		return
	}
	os.Exit(m.Run())
}

// procConfig is the part of a Config a router process gets (as JSON in
// ROUTER_TEST_ROUTER).
type procConfig struct {
	StateDir, Listen string
	UID, GID         int
}

// runRouterProcess runs Run with the procConfig in cfg until SIGTERM, as
// `paddock router` does, logging to stderr.
func runRouterProcess(cfg string) {
	var pc procConfig
	if err := json.Unmarshal([]byte(cfg), &pc); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	c := Config{StateDir: pc.StateDir, Listen: pc.Listen, UID: pc.UID, GID: pc.GID}
	c.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := Run(ctx, c); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// runBackendProcess serves "ok NAME" on 127.0.0.1:0 and prints its address.
func runBackendProcess() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr().String())
	name := os.Getenv("ROUTER_TEST_NAME")
	_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok "+name)
	}))
}

// testRouter is a router started by Run in this process.
type testRouter struct {
	addr    string
	tlsAddr string // with Config.TLSListen
	dir     string
	client  *Client
	cancel  context.CancelFunc
	done    chan error
	once    sync.Once
}

// startRouter runs a router on 127.0.0.1:0 with a state folder (a new one
// if dir is empty) and stops it at the end of the test.
func startRouter(t testing.TB, dir string) *testRouter {
	t.Helper()
	return startRouterConfig(t, Config{StateDir: dir})
}

// startRouterConfig is startRouter with more of the Config: Listen is
// 127.0.0.1:0, and StateDir a new folder if empty.
func startRouterConfig(t testing.TB, cfg Config) *testRouter {
	t.Helper()
	if cfg.StateDir == "" {
		cfg.StateDir = t.TempDir()
	}
	cfg.Listen = "127.0.0.1:0"
	dir := cfg.StateDir
	ctx, cancel := context.WithCancel(context.Background())
	r := &testRouter{dir: dir, client: &Client{StateDir: dir}, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- Run(ctx, cfg) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if st, err := r.client.Status(ctx); err == nil {
			r.addr, r.tlsAddr = st.Listen, st.TLSListen
			break
		}
		select {
		case err := <-r.done:
			t.Fatalf("Run: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("router did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels Run and waits for it (idempotent).
func (r *testRouter) stop(t testing.TB) {
	t.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
}

func (r *testRouter) push(t *testing.T, tbl Table) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.client.Push(ctx, tbl); err != nil {
		t.Fatalf("Push: %v", err)
	}
}

func (r *testRouter) status(t *testing.T) Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := r.client.Status(ctx)
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	return st
}

// url is the router's URL for path.
func (r *testRouter) url(path string) string { return "http://" + r.addr + path }

// get sends a request for host through the router with a fresh client.
func (r *testRouter) do(t *testing.T, method, host, path string, body io.Reader) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, r.url(path), body)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	resp, err := testClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s %s: %v", method, host, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s %s: read body: %v", method, host, path, err)
	}
	return resp, string(b)
}

var testClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

// namedBackend answers "NAME" to every request and counts them.
type namedBackend struct {
	*httptest.Server
	hits atomic.Int64
}

func newNamedBackend(t *testing.T, name string) *namedBackend {
	t.Helper()
	b := &namedBackend{}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, name)
	}))
	t.Cleanup(b.Close)
	return b
}

// addr is the backend's "127.0.0.1:PORT".
func (b *namedBackend) addr() string { return b.Listener.Addr().String() }

// resetBackend accepts connections, reads a request head and resets the
// connection without answering. It counts the requests it received.
type resetBackend struct {
	ln   net.Listener
	hits atomic.Int64
}

func newResetBackend(t *testing.T) *resetBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &resetBackend{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err == nil {
					b.hits.Add(1)
				}
				c.(*net.TCPConn).SetLinger(0)
				c.Close()
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return b
}

func (b *resetBackend) addr() string { return b.ln.Addr().String() }

// closedAddr returns an address on which nothing listens any more.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// rawRequest sends raw bytes to the router on a new connection and reads
// one response.
func rawRequest(t *testing.T, addr, raw string) (*http.Response, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	method := raw[:strings.IndexByte(raw, ' ')]
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("read body: %v", err)
	}
	return resp, string(body)
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// be makes the backends of a route from addresses of listeners this test
// process owns.
func be(addrs ...string) []Backend {
	bs := make([]Backend, len(addrs))
	for i, a := range addrs {
		bs[i] = Backend{Addr: a, UID: uint32(os.Geteuid())}
	}
	return bs
}
