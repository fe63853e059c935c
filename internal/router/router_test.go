package router

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestRouting(t *testing.T) {
	r := startRouter(t, "")
	a := newNamedBackend(t, "app-a")
	b := newNamedBackend(t, "app-b")
	r.push(t, Table{Version: 1, Routes: []Route{
		{Host: "a.localhost", App: "a", Backends: be(a.addr())},
		{Host: "shop.example.com", App: "b", Backends: be(b.addr())},
		{Host: "down.localhost", App: "down"},
	}})
	tests := []struct {
		name       string
		host       string
		wantStatus int
		wantBody   string // substring
	}{
		{"by host", "a.localhost", 200, "app-a"},
		{"custom domain", "shop.example.com", 200, "app-b"},
		{"port stripped", "a.localhost:8080", 200, "app-a"},
		{"case folded", "A.LocalHost", 200, "app-a"},
		{"trailing dot", "a.localhost.", 200, "app-a"},
		{"unknown host", "nope.localhost", 404, `"nope.localhost"`},
		{"no healthy instance", "down.localhost", 503, "app down has no healthy instance; check `paddock ps down` and `paddock logs down`"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := r.do(t, "GET", tt.host, "/", nil)
			if got, want := resp.StatusCode, tt.wantStatus; got != want {
				t.Errorf("status: got %d, want %d", got, want)
			}
			if !strings.Contains(body, tt.wantBody) {
				t.Errorf("body: got %q, want it to contain %q", body, tt.wantBody)
			}
			if tt.wantStatus >= 400 {
				if got, want := resp.Header.Get("Content-Type"), "text/plain; charset=utf-8"; got != want {
					t.Errorf("Content-Type: got %q, want %q", got, want)
				}
			}
			if tt.wantStatus == 503 && resp.Header.Get("Retry-After") == "" {
				t.Errorf("Retry-After: got none, want one")
			}
		})
	}
}

func TestRoundRobin(t *testing.T) {
	r := startRouter(t, "")
	var addrs []string
	for i := 0; i < 3; i++ {
		addrs = append(addrs, newNamedBackend(t, fmt.Sprintf("b%d", i)).addr())
	}
	r.push(t, Table{Version: 1, Routes: []Route{{Host: "rr.localhost", App: "rr", Backends: be(addrs...)}}})
	got := map[string]int{}
	for i := 0; i < 30; i++ {
		_, body := r.do(t, "GET", "rr.localhost", "/", nil)
		got[body]++
	}
	for i := 0; i < 3; i++ {
		name := fmt.Sprintf("b%d", i)
		if got[name] != 10 {
			t.Errorf("requests to %s: got %d, want 10 (all: %v)", name, got[name], got)
		}
	}
}

func TestRetry(t *testing.T) {
	tests := []struct {
		name      string
		bad       func(t *testing.T) (addr string, hits func() int64)
		method    string
		wantOK    int // of 6 requests, alternating bad/good
		wantRetry bool
	}{
		{"GET to closed listener", func(t *testing.T) (string, func() int64) { return closedAddr(t), nil }, "GET", 6, true},
		{"GET to resetting backend", func(t *testing.T) (string, func() int64) {
			b := newResetBackend(t)
			return b.addr(), b.hits.Load
		}, "GET", 6, true},
		{"HEAD to resetting backend", func(t *testing.T) (string, func() int64) {
			b := newResetBackend(t)
			return b.addr(), b.hits.Load
		}, "HEAD", 6, true},
		{"POST to closed listener (nothing sent)", func(t *testing.T) (string, func() int64) { return closedAddr(t), nil }, "POST", 6, true},
		{"POST to resetting backend is not retried", func(t *testing.T) (string, func() int64) {
			b := newResetBackend(t)
			return b.addr(), b.hits.Load
		}, "POST", 3, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := startRouter(t, "")
			good := newNamedBackend(t, "good")
			bad, badHits := tt.bad(t)
			r.push(t, Table{Version: 1, Routes: []Route{{Host: "app.localhost", App: "app", Backends: be(bad, good.addr())}}})
			ok, failed := 0, 0
			for i := 0; i < 6; i++ {
				var body io.Reader
				if tt.method == "POST" {
					body = strings.NewReader("payload")
				}
				resp, _ := r.do(t, tt.method, "app.localhost", "/", body)
				switch resp.StatusCode {
				case 200:
					ok++
				case 502:
					failed++
				default:
					t.Errorf("status: got %d, want 200 or 502", resp.StatusCode)
				}
			}
			if got, want := ok, tt.wantOK; got != want {
				t.Errorf("successful requests: got %d, want %d (502s: %d)", got, want, failed)
			}
			if got, want := good.hits.Load(), int64(tt.wantOK); got != want {
				t.Errorf("requests the good backend saw: got %d, want %d", got, want)
			}
			if !tt.wantRetry && badHits != nil {
				if got, want := badHits(), int64(6-tt.wantOK); got != want {
					t.Errorf("requests the bad backend saw: got %d, want %d", got, want)
				}
			}
		})
	}
}

// TestKillInstanceUnderLoad kills a real backend process while GET requests
// flow and expects no request to fail.
func TestKillInstanceUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	start := func(name string) (*exec.Cmd, string) {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "ROUTER_TEST_BACKEND=1", "ROUTER_TEST_NAME="+name)
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
		return cmd, strings.TrimSpace(line)
	}
	victim, victimAddr := start("victim")
	_, survivorAddr := start("survivor")
	r := startRouter(t, "")
	r.push(t, Table{Version: 1, Routes: []Route{{Host: "app.localhost", App: "app", Backends: be(victimAddr, survivorAddr)}}})

	var total, failed, fromVictim atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("GET", r.url("/"), nil)
				req.Host = "app.localhost"
				resp, err := testClient.Do(req)
				total.Add(1)
				if err != nil {
					failed.Add(1)
					continue
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 {
					failed.Add(1)
					continue
				}
				if string(body) == "ok victim" {
					fromVictim.Add(1)
				}
			}
		}()
	}
	waitFor(t, "traffic to the victim", func() bool { return fromVictim.Load() > 50 })
	if err := victim.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	victim.Wait()
	before := total.Load()
	waitFor(t, "traffic after the kill", func() bool { return total.Load() > before+500 })
	close(stop)
	wg.Wait()
	if got := failed.Load(); got != 0 {
		t.Errorf("failed requests: got %d of %d, want 0", got, total.Load())
	}
}

// echoBackend answers with the request's method, headers and body as JSON.
func echoBackend(t *testing.T) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"method": r.Method, "header": r.Header, "host": r.Host, "body": string(body),
			"te": r.TransferEncoding, "uri": r.RequestURI,
		})
	}))
	t.Cleanup(s.Close)
	return s
}

type echoed struct {
	Method string      `json:"method"`
	Header http.Header `json:"header"`
	Host   string      `json:"host"`
	Body   string      `json:"body"`
	TE     []string    `json:"te"`
	URI    string      `json:"uri"`
}

func TestForwardedHeaders(t *testing.T) {
	r := startRouter(t, "")
	e := echoBackend(t)
	r.push(t, Table{Version: 1, Routes: []Route{{Host: "app.localhost", App: "app", Backends: be(e.Listener.Addr().String())}}})
	tests := []struct {
		name  string
		extra string // raw header lines
		check func(t *testing.T, h http.Header)
	}{
		{"fresh", "", func(t *testing.T, h http.Header) {
			if got, want := h.Get("X-Forwarded-For"), "127.0.0.1"; got != want {
				t.Errorf("X-Forwarded-For: got %q, want %q", got, want)
			}
			if got, want := h.Get("X-Forwarded-Proto"), "http"; got != want {
				t.Errorf("X-Forwarded-Proto: got %q, want %q", got, want)
			}
			if got, want := h.Get("X-Forwarded-Host"), "app.localhost:8080"; got != want {
				t.Errorf("X-Forwarded-Host: got %q, want %q", got, want)
			}
			if got := h.Get("X-Request-Id"); len(got) < 8 {
				t.Errorf("X-Request-Id: got %q, want a generated id", got)
			}
		}},
		{"appends to X-Forwarded-For", "X-Forwarded-For: 10.1.2.3\r\nX-Forwarded-For: 10.4.5.6\r\n", func(t *testing.T, h http.Header) {
			if got, want := h.Values("X-Forwarded-For"), []string{"10.1.2.3, 10.4.5.6, 127.0.0.1"}; fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("X-Forwarded-For: got %q, want %q", got, want)
			}
		}},
		{"overrides spoofed proto and host", "X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\n", func(t *testing.T, h http.Header) {
			if got, want := h.Values("X-Forwarded-Proto"), []string{"http"}; fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("X-Forwarded-Proto: got %q, want %q", got, want)
			}
			if got, want := h.Values("X-Forwarded-Host"), []string{"app.localhost:8080"}; fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("X-Forwarded-Host: got %q, want %q", got, want)
			}
		}},
		{"keeps a valid request id", "X-Request-Id: abc-123_XYZ\r\n", func(t *testing.T, h http.Header) {
			if got, want := h.Values("X-Request-Id"), []string{"abc-123_XYZ"}; fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("X-Request-Id: got %q, want %q", got, want)
			}
		}},
		{"replaces an invalid request id", "X-Request-Id: bad id <script>\r\n", func(t *testing.T, h http.Header) {
			got := h.Values("X-Request-Id")
			if len(got) != 1 || got[0] == "bad id <script>" || got[0] == "" {
				t.Errorf("X-Request-Id: got %q, want one generated id", got)
			}
		}},
		{"strips hop-by-hop", "Connection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: x\r\nTE: trailers\r\nProxy-Authorization: Basic x\r\nX-Kept: yes\r\n", func(t *testing.T, h http.Header) {
			for _, name := range []string{"Connection", "X-Secret", "Keep-Alive", "Proxy-Connection", "Te", "Proxy-Authorization"} {
				if got := h.Values(name); len(got) != 0 {
					t.Errorf("%s: got %q, want it stripped", name, got)
				}
			}
			if got, want := h.Get("X-Kept"), "yes"; got != want {
				t.Errorf("X-Kept: got %q, want %q", got, want)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := rawRequest(t, r.addr, "GET /p?q=1 HTTP/1.1\r\nHost: app.localhost:8080\r\n"+tt.extra+"\r\n")
			if got, want := resp.StatusCode, 200; got != want {
				t.Fatalf("status: got %d, want %d (%s)", got, want, body)
			}
			var e echoed
			if err := json.Unmarshal([]byte(body), &e); err != nil {
				t.Fatalf("decode %q: %v", body, err)
			}
			if got, want := e.URI, "/p?q=1"; got != want {
				t.Errorf("request URI: got %q, want %q", got, want)
			}
			if got, want := e.Host, "app.localhost:8080"; got != want {
				t.Errorf("Host: got %q, want %q", got, want)
			}
			tt.check(t, e.Header)
		})
	}
}

func TestBodies(t *testing.T) {
	r := startRouter(t, "")
	e := echoBackend(t)
	r.push(t, Table{Version: 1, Routes: []Route{{Host: "app.localhost", App: "app", Backends: be(e.Listener.Addr().String())}}})
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	tests := []struct {
		name     string
		method   string
		body     io.Reader
		wantBody string
		wantTE   string
	}{
		{"small POST", "POST", strings.NewReader("hello"), "hello", ""},
		{"1 MiB PUT", "PUT", strings.NewReader(big), big, ""},
		{"chunked POST", "POST", io.MultiReader(strings.NewReader("chunk1-"), strings.NewReader("chunk2")), "chunk1-chunk2", "chunked"},
		{"empty DELETE", "DELETE", nil, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := tt.body
			if tt.wantTE == "chunked" {
				body = struct{ io.Reader }{body} // unknown length: chunked
			}
			resp, out := r.do(t, tt.method, "app.localhost", "/", body)
			if got, want := resp.StatusCode, 200; got != want {
				t.Fatalf("status: got %d, want %d (%s)", got, want, out)
			}
			var e echoed
			if err := json.Unmarshal([]byte(out), &e); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if got, want := e.Method, tt.method; got != want {
				t.Errorf("method: got %q, want %q", got, want)
			}
			if got, want := len(e.Body), len(tt.wantBody); got != want || e.Body != tt.wantBody {
				t.Errorf("body: got %d bytes, want %d", got, want)
			}
			if got, want := strings.Join(e.TE, ","), tt.wantTE; got != want {
				t.Errorf("transfer encoding at the backend: got %q, want %q", got, want)
			}
		})
	}

	t.Run("large response", func(t *testing.T) {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", fmt.Sprint(len(big)))
			io.WriteString(w, big)
		}))
		defer s.Close()
		r.push(t, Table{Version: 2, Routes: []Route{
			{Host: "app.localhost", App: "app", Backends: be(e.Listener.Addr().String())},
			{Host: "big.localhost", App: "big", Backends: be(s.Listener.Addr().String())},
		}})
		for i := 0; i < 3; i++ {
			resp, out := r.do(t, "GET", "big.localhost", "/", nil)
			if resp.StatusCode != 200 || out != big {
				t.Fatalf("got status %d and %d bytes, want 200 and %d bytes", resp.StatusCode, len(out), len(big))
			}
		}
	})

	t.Run("HEAD and 204 and 304", func(t *testing.T) {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/204":
				w.WriteHeader(204)
			case "/304":
				w.WriteHeader(304)
			default:
				w.Header().Set("Content-Length", "5")
				io.WriteString(w, "hello")
			}
		}))
		defer s.Close()
		r.push(t, Table{Version: 3, Routes: []Route{
			{Host: "app.localhost", App: "app", Backends: be(e.Listener.Addr().String())},
			{Host: "h.localhost", App: "h", Backends: be(s.Listener.Addr().String())},
		}})
		c, err := net.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		br := bufio.NewReader(c)
		// All on one connection: a wrong body length would break the next one.
		for _, tc := range []struct {
			method, path string
			status       int
			length       int64
		}{{"HEAD", "/", 200, 5}, {"GET", "/204", 204, 0}, {"GET", "/304", 304, 0}, {"GET", "/", 200, 5}} {
			fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: h.localhost\r\n\r\n", tc.method, tc.path)
			resp, err := http.ReadResponse(br, &http.Request{Method: tc.method})
			if err != nil {
				t.Fatalf("%s %s: %v", tc.method, tc.path, err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if got, want := resp.StatusCode, tc.status; got != want {
				t.Errorf("%s %s: status got %d, want %d", tc.method, tc.path, got, want)
			}
			if tc.method == "HEAD" {
				if got, want := resp.ContentLength, tc.length; got != want {
					t.Errorf("%s %s: Content-Length got %d, want %d", tc.method, tc.path, got, want)
				}
			}
		}
	})

	t.Run("answer before the body is read", func(t *testing.T) {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "too large", http.StatusRequestEntityTooLarge)
		}))
		defer s.Close()
		r.push(t, Table{Version: 4, Routes: []Route{
			{Host: "app.localhost", App: "app", Backends: be(e.Listener.Addr().String())},
			{Host: "early.localhost", App: "early", Backends: be(s.Listener.Addr().String())},
		}})
		c, err := net.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "POST / HTTP/1.1\r\nHost: early.localhost\r\nContent-Length: 100000000\r\n\r\n")
		c.Write(make([]byte, 64<<10)) // and then the client stalls
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, &http.Request{Method: "POST"})
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		if got, want := resp.StatusCode, http.StatusRequestEntityTooLarge; got != want {
			t.Errorf("status: got %d, want %d", got, want)
		}
		if _, err := br.ReadByte(); err != io.EOF {
			t.Errorf("after the answer: got %v, want EOF (the unread body closes the connection)", err)
		}
	})

	t.Run("Expect 100-continue", func(t *testing.T) {
		c, err := net.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "POST / HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
		br := bufio.NewReader(c)
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if got, want := line, "HTTP/1.1 100 Continue\r\n"; got != want {
			t.Fatalf("first line: got %q, want %q", got, want)
		}
		for l, _ := br.ReadString('\n'); l != "\r\n" && l != ""; l, _ = br.ReadString('\n') {
		}
		io.WriteString(c, "ping")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(resp.Body)
		var e echoed
		json.Unmarshal(out, &e)
		if got, want := e.Body, "ping"; got != want {
			t.Errorf("body: got %q, want %q", got, want)
		}
	})
}

func TestMalformedRequests(t *testing.T) {
	r := startRouter(t, "")
	e := echoBackend(t)
	r.push(t, Table{Version: 1, Routes: []Route{{Host: "app.localhost", App: "app", Backends: be(e.Listener.Addr().String())}}})
	tests := []struct {
		name string
		raw  string
		want int
	}{
		{"both Content-Length and chunked", "POST / HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"two different Content-Length", "POST / HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400},
		{"unsupported transfer coding", "POST / HTTP/1.1\r\nHost: app.localhost\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400},
		{"space before colon", "GET / HTTP/1.1\r\nHost : app.localhost\r\n\r\n", 400},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: app.localhost\r\nX-A: a\r\n b\r\n\r\n", 400},
		{"no Host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"two Host", "GET / HTTP/1.1\r\nHost: app.localhost\r\nHost: other\r\n\r\n", 400},
		{"HTTP/2.0 line", "GET / HTTP/2.0\r\nHost: app.localhost\r\n\r\n", 505},
		{"huge head", "GET / HTTP/1.1\r\nHost: app.localhost\r\nX-Big: " + strings.Repeat("a", 70<<10) + "\r\n\r\n", 431},
		{"absolute form routes by its authority", "GET http://app.localhost/x HTTP/1.1\r\nHost: other\r\n\r\n", 200},
		{"HTTP/1.0 without Host", "GET / HTTP/1.0\r\n\r\n", 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := rawRequest(t, r.addr, tt.raw)
			if got := resp.StatusCode; got != tt.want {
				t.Errorf("status: got %d, want %d (%s)", got, tt.want, body)
			}
		})
	}
}

// wsAccept computes Sec-WebSocket-Accept (RFC 6455).
func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// newWSBackend is a WebSocket server reduced to the handshake and an echo
// of the frames' bytes (the router never looks inside them).
func newWSBackend(t *testing.T) string {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") || !strings.Contains(strings.ToLower(r.Header.Get("Connection")), "upgrade") {
			http.Error(w, "want an upgrade", 400)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", wsAccept(r.Header.Get("Sec-WebSocket-Key")))
		brw.Flush()
		io.Copy(c, brw)
	}))
	t.Cleanup(s.Close)
	return s.Listener.Addr().String()
}

// checkWebSocket upgrades c (a connection to the router) for host and
// expects two frames echoed.
func checkWebSocket(t *testing.T, c net.Conn, host string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	key := "dGhlIHNhbXBsZSBub25jZQ=="
	fmt.Fprintf(c, "GET /chat HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", host, key)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := resp.StatusCode, 101; got != want {
		t.Fatalf("status: got %d, want %d", got, want)
	}
	if got, want := resp.Header.Get("Sec-WebSocket-Accept"), wsAccept(key); got != want {
		t.Errorf("Sec-WebSocket-Accept: got %q, want %q", got, want)
	}
	if got, want := resp.Header.Get("Upgrade"), "websocket"; got != want {
		t.Errorf("Upgrade: got %q, want %q", got, want)
	}
	for i, msg := range []string{"\x81\x05hello", "\x81\x05world"} { // unmasked text frames, echoed as bytes
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(br, buf); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if got, want := string(buf), msg; got != want {
			t.Errorf("frame %d: got %q, want %q", i, got, want)
		}
	}
}

func TestWebSocket(t *testing.T) {
	r := startRouter(t, "")
	r.push(t, Table{Version: 1, Routes: []Route{{Host: "ws.localhost", App: "ws", Backends: be(newWSBackend(t))}}})
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	checkWebSocket(t, c, "ws.localhost")
}

func TestStreaming(t *testing.T) {
	tests := []struct {
		name    string
		backend func(t *testing.T, release <-chan struct{}) string
	}{
		{"chunked server-sent events", func(t *testing.T, release <-chan struct{}) string {
			s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				io.WriteString(w, "data: first\n\n")
				w.(http.Flusher).Flush()
				<-release
				io.WriteString(w, "data: second\n\n")
			}))
			t.Cleanup(s.Close)
			return s.Listener.Addr().String()
		}},
		{"close-delimited", func(t *testing.T, release <-chan struct{}) string {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				http.ReadRequest(bufio.NewReader(c))
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\ndata: first\n\n")
				<-release
				io.WriteString(c, "data: second\n\n")
			}()
			return ln.Addr().String()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			release := make(chan struct{})
			addr := tt.backend(t, release)
			r := startRouter(t, "")
			r.push(t, Table{Version: 1, Routes: []Route{{Host: "s.localhost", App: "s", Backends: be(addr)}}})
			req, _ := http.NewRequest("GET", r.url("/events"), nil)
			req.Host = "s.localhost"
			resp, err := testClient.Do(req)
			if err != nil {
				close(release)
				t.Fatal(err)
			}
			defer resp.Body.Close()
			first := make(chan string, 1)
			go func() {
				buf := make([]byte, len("data: first\n\n"))
				_, err := io.ReadFull(resp.Body, buf)
				if err != nil {
					first <- err.Error()
					return
				}
				first <- string(buf)
			}()
			select {
			case got := <-first:
				if want := "data: first\n\n"; got != want {
					t.Errorf("first event: got %q, want %q", got, want)
				}
			case <-time.After(5 * time.Second):
				t.Error("first event did not arrive before the backend finished")
			}
			close(release)
			rest, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := string(rest), "data: second\n\n"; got != want {
				t.Errorf("rest: got %q, want %q", got, want)
			}
		})
	}
}

func TestPushStatusAndInfo(t *testing.T) {
	r := startRouter(t, "")
	b := newNamedBackend(t, "b")
	r.push(t, Table{Version: 7, Routes: []Route{{Host: "app.localhost", App: "app", Backends: be(b.addr())}}})
	st := r.status(t)
	if got, want := st.Version, uint64(7); got != want {
		t.Errorf("version: got %d, want %d", got, want)
	}
	if got, want := st.PID, os.Getpid(); got != want {
		t.Errorf("pid: got %d, want %d", got, want)
	}
	if got, want := st.Listen, r.addr; got != want {
		t.Errorf("listen: got %q, want %q", got, want)
	}
	if st.Started.IsZero() || time.Since(st.Started) > time.Minute {
		t.Errorf("started: got %v, want a moment ago", st.Started)
	}
	if n, ok := st.Inflight[b.addr()]; !ok || n != 0 {
		t.Errorf("inflight: got %v, want %s: 0", st.Inflight, b.addr())
	}
	info, err := ReadInfo(r.dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(info.PID, info.Listen, info.Started.Equal(st.Started)), fmt.Sprint(st.PID, st.Listen, true); got != want {
		t.Errorf("ReadInfo: got %s, want %s", got, want)
	}
	fi, err := os.Stat(filepath.Join(r.dir, socketFile))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fi.Mode().Perm(), os.FileMode(0o600); got != want {
		t.Errorf("socket mode: got %v, want %v", got, want)
	}

	t.Run("invalid table refused", func(t *testing.T) {
		err := r.client.Push(context.Background(), Table{Version: 8, Routes: []Route{{Host: "a.localhost"}, {Host: "A.localhost"}}})
		if err == nil {
			t.Errorf("Push with a duplicate host: got no error, want one")
		}
		if got, want := r.status(t).Version, uint64(7); got != want {
			t.Errorf("version after a refused push: got %d, want %d", got, want)
		}
	})

	t.Run("second router on the same folder", func(t *testing.T) {
		err := Run(context.Background(), Config{Listen: "127.0.0.1:0", StateDir: r.dir})
		if err == nil || !strings.Contains(err.Error(), ErrAlreadyRunning.Error()) {
			t.Errorf("Run: got %v, want %v", err, ErrAlreadyRunning)
		}
	})
}

func TestOlderVersionIgnored(t *testing.T) {
	r := startRouter(t, "")
	one := newNamedBackend(t, "one")
	two := newNamedBackend(t, "two")
	r.push(t, Table{Version: 5, Routes: []Route{{Host: "app.localhost", App: "app", Backends: be(one.addr())}}})
	r.push(t, Table{Version: 3, Routes: []Route{{Host: "app.localhost", App: "app", Backends: be(two.addr())}}})
	if got, want := r.status(t).Version, uint64(5); got != want {
		t.Errorf("version: got %d, want %d", got, want)
	}
	if _, body := r.do(t, "GET", "app.localhost", "/", nil); body != "one" {
		t.Errorf("answer: got %q, want %q", body, "one")
	}
	r.push(t, Table{Version: 6, Routes: []Route{{Host: "app.localhost", App: "app", Backends: be(two.addr())}}})
	if _, body := r.do(t, "GET", "app.localhost", "/", nil); body != "two" {
		t.Errorf("answer after v6: got %q, want %q", body, "two")
	}
}

func TestTablePersistedAndReloaded(t *testing.T) {
	dir := t.TempDir()
	b := newNamedBackend(t, "b")
	r := startRouter(t, dir)
	r.push(t, Table{Version: 4, Routes: []Route{{Host: "app.localhost", App: "app", Backends: be(b.addr())}}})
	r.stop(t)
	if info, err := ReadInfo(dir); err != nil || info.PID != 0 || info.Listen != r.addr {
		t.Errorf("ReadInfo after a clean stop: got %+v, %v; want pid 0 and listen %s", info, err, r.addr)
	}
	data, err := os.ReadFile(filepath.Join(dir, routesFile))
	if err != nil {
		t.Fatal(err)
	}
	var saved Table
	if err := json.Unmarshal(data, &saved); err != nil {
		t.Fatal(err)
	}
	if got, want := saved.Version, uint64(4); got != want {
		t.Errorf("saved version: got %d, want %d", got, want)
	}

	if _, err := (&Client{StateDir: dir}).Status(context.Background()); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Status of a stopped router: got %v, want %v", err, ErrNotRunning)
	}

	r2 := startRouter(t, dir) // no push: the saved table serves
	if got, want := r2.status(t).Version, uint64(4); got != want {
		t.Errorf("version after restart: got %d, want %d", got, want)
	}
	if resp, body := r2.do(t, "GET", "app.localhost", "/", nil); resp.StatusCode != 200 || body != "b" {
		t.Errorf("after restart: got %d %q, want 200 %q", resp.StatusCode, body, "b")
	}
}

// blockingBackend holds every request until release is closed.
func blockingBackend(t *testing.T) (addr string, entered <-chan struct{}, release chan struct{}) {
	t.Helper()
	in := make(chan struct{}, 16)
	rel := make(chan struct{})
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		in <- struct{}{}
		<-rel
		io.WriteString(w, "done")
	}))
	t.Cleanup(func() {
		select {
		case <-rel:
		default:
			close(rel)
		}
		s.Close()
	})
	return s.Listener.Addr().String(), in, rel
}

func TestInflight(t *testing.T) {
	r := startRouter(t, "")
	addr, entered, release := blockingBackend(t)
	other := newNamedBackend(t, "other")
	r.push(t, Table{Version: 1, Routes: []Route{{Host: "app.localhost", App: "app", Backends: be(addr)}}})
	done := make(chan string, 2)
	for i := 0; i < 2; i++ {
		go func() {
			_, body := r.do(t, "GET", "app.localhost", "/", nil)
			done <- body
		}()
	}
	<-entered
	<-entered
	if got, want := r.status(t).Inflight[addr], 2; got != want {
		t.Errorf("inflight: got %d, want %d", got, want)
	}
	// Drop the backend from the table: it stays listed while it drains.
	r.push(t, Table{Version: 2, Routes: []Route{{Host: "app.localhost", App: "app", Backends: be(other.addr())}}})
	if got, want := r.status(t).Inflight[addr], 2; got != want {
		t.Errorf("inflight of the removed backend: got %d, want %d", got, want)
	}
	close(release)
	for i := 0; i < 2; i++ {
		if got, want := <-done, "done"; got != want {
			t.Errorf("answer: got %q, want %q", got, want)
		}
	}
	waitFor(t, "the removed backend to drain", func() bool {
		_, listed := r.status(t).Inflight[addr]
		return !listed
	})
}

func TestRemovedBackendIdleConnsClosed(t *testing.T) {
	var mu sync.Mutex
	states := map[net.Conn]http.ConnState{}
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "x") }))
	s.Config.ConnState = func(c net.Conn, st http.ConnState) {
		mu.Lock()
		states[c] = st
		mu.Unlock()
	}
	s.Start()
	defer s.Close()
	other := newNamedBackend(t, "other")
	r := startRouter(t, "")
	r.push(t, Table{Version: 1, Routes: []Route{{Host: "app.localhost", App: "app", Backends: be(s.Listener.Addr().String())}}})
	for i := 0; i < 3; i++ {
		r.do(t, "GET", "app.localhost", "/", nil)
	}
	count := func(want http.ConnState) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, st := range states {
			if st == want {
				n++
			}
		}
		return n
	}
	// The backend marks its connection idle just after the response is
	// out, so the client may see the response first.
	waitFor(t, "one idle connection before the push", func() bool { return count(http.StateIdle) == 1 })
	r.push(t, Table{Version: 2, Routes: []Route{{Host: "app.localhost", App: "app", Backends: be(other.addr())}}})
	waitFor(t, "the router to close its idle connection", func() bool { return count(http.StateIdle) == 0 && count(http.StateClosed) == 1 })
}

func TestGracefulShutdown(t *testing.T) {
	r := startRouter(t, "")
	addr, entered, release := blockingBackend(t)
	r.push(t, Table{Version: 1, Routes: []Route{{Host: "app.localhost", App: "app", Backends: be(addr)}}})
	idle, err := net.Dial("tcp", r.addr) // an idle keep-alive client
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	done := make(chan string, 1)
	go func() {
		resp, body := r.do(t, "GET", "app.localhost", "/", nil)
		done <- fmt.Sprint(resp.StatusCode, " ", body)
	}()
	<-entered
	r.cancel()
	// The idle connection is closed at once.
	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := idle.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("idle connection: got %d bytes, %v; want EOF", n, err)
	}
	// New connections are refused.
	waitFor(t, "the listener to close", func() bool {
		c, err := net.Dial("tcp", r.addr)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	select {
	case err := <-r.done:
		t.Fatalf("Run returned before the in-flight request finished: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if got, want := <-done, "200 done"; got != want {
		t.Errorf("in-flight request: got %q, want %q", got, want)
	}
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
		r.once.Do(func() {}) // stopped already
	case <-time.After(5 * time.Second):
		t.Error("Run did not return after the last request")
	}
}
