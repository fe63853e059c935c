package router

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// These tests play hostile clients and backends against the router, each
// reproducing an attack that worked before the router defended against it.

// logCapture collects a router's logs.
type logCapture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logCapture) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logCapture) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logCapture) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// echo sends raw to the router and decodes what echoBackend saw.
func echo(t *testing.T, addr, raw string) (int, echoed) {
	t.Helper()
	resp, body := rawRequest(t, addr, raw)
	var e echoed
	if resp.StatusCode == 200 {
		if err := json.Unmarshal([]byte(body), &e); err != nil {
			t.Fatalf("decode %q: %v", body, err)
		}
	}
	return resp.StatusCode, e
}

// TestAbsoluteFormSetsHost: a client may not route by one host and show
// the app another (password-reset and cache poisoning).
func TestAbsoluteFormSetsHost(t *testing.T) {
	r := startRouter(t, "")
	e := echoBackend(t)
	r.push(t, Table{Version: 1, Routes: []Route{{Host: "vic.localhost", App: "vic", Backends: be(e.Listener.Addr().String())}}})
	tests := []struct {
		name, target     string
		wantStatus       int
		wantURI, wantHst string
	}{
		{"path", "http://vic.localhost/reset?user=1", 200, "/reset?user=1", "vic.localhost"},
		{"with port", "http://VIC.localhost:8080/x", 200, "/x", "VIC.localhost:8080"},
		{"userinfo", "http://vic.localhost@attacker.example/x", 400, "", ""},
		{"no path", "http://vic.localhost", 200, "/", "vic.localhost"},
		{"query only", "http://vic.localhost?a=b", 200, "/?a=b", "vic.localhost"},
		{"https scheme", "https://vic.localhost/s", 200, "/s", "vic.localhost"},
		{"other scheme", "ftp://vic.localhost/x", 400, "", ""},
		{"fragment", "http://vic.localhost/x#y", 400, "", ""},
		{"empty authority", "http:///x", 400, "", ""},
		{"relative", "x/y", 400, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, got := echo(t, r.addr, "GET "+tt.target+" HTTP/1.1\r\nHost: attacker.example\r\n\r\n")
			if code != tt.wantStatus {
				t.Fatalf("status: got %d, want %d", code, tt.wantStatus)
			}
			if code != 200 {
				return
			}
			if got.URI != tt.wantURI {
				t.Errorf("request target at the app: got %q, want %q", got.URI, tt.wantURI)
			}
			if got.Host != tt.wantHst {
				t.Errorf("Host at the app: got %q, want %q", got.Host, tt.wantHst)
			}
			if got, want := got.Header.Values("X-Forwarded-Host"), []string{tt.wantHst}; fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("X-Forwarded-Host: got %q, want %q", got, want)
			}
		})
	}
}

// TestConnectionCannotStripHost: Connection may name any number of
// fields, but not Host or the framing fields; names with an underscore
// never reach the app (they would merge with dashed ones in CGI/WSGI).
func TestConnectionHeaderAndUnderscores(t *testing.T) {
	r := startRouter(t, "")
	e := echoBackend(t)
	r.push(t, Table{Version: 1, Routes: []Route{{Host: "app.localhost", App: "app", Backends: be(e.Listener.Addr().String())}}})
	var names, fields strings.Builder
	for i := 0; i < 20; i++ {
		fmt.Fprintf(&names, "X-Drop-%d, ", i)
		fmt.Fprintf(&fields, "X-Drop-%d: v\r\n", i)
	}
	raw := "POST /p HTTP/1.1\r\nHost: app.localhost\r\nConnection: host, content-length, transfer-encoding, " + names.String() + "keep-alive\r\n" +
		fields.String() + "X_Forwarded_User: admin\r\nX-Forwarded-User: alice\r\nContent-Length: 5\r\n\r\nhello"
	code, got := echo(t, r.addr, raw)
	if code != 200 {
		t.Fatalf("status: got %d, want 200", code)
	}
	if got.Host != "app.localhost" {
		t.Errorf("Host at the app: got %q, want %q", got.Host, "app.localhost")
	}
	if got.Body != "hello" {
		t.Errorf("body at the app: got %q, want %q", got.Body, "hello")
	}
	for i := 0; i < 20; i++ {
		if v := got.Header.Values(fmt.Sprintf("X-Drop-%d", i)); len(v) != 0 {
			t.Errorf("X-Drop-%d, listed in Connection: got %q, want it dropped", i, v)
		}
	}
	if got, want := got.Header.Values("X-Forwarded-User"), []string{"alice"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("X-Forwarded-User: got %q, want %q (the underscore spelling dropped)", got, want)
	}
	for name := range got.Header {
		if strings.Contains(name, "_") {
			t.Errorf("header %q with an underscore reached the app", name)
		}
	}
}

// TestTrailersFiltered: trailers cannot smuggle framing, routing or
// hop-by-hop fields, in either direction.
func TestTrailersFiltered(t *testing.T) {
	const evil = "Host: evil.example\r\nContent-Length: 99\r\nTransfer-Encoding: gzip\r\nConnection: close\r\nKeep-Alive: 1\r\nTrailer: X-Ok\r\nX_Under: 1\r\nX-Ok: yes\r\n"
	// Response trailers from a backend speaking raw HTTP.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
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
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n%s\r\n", evil)
				}
			}()
		}
	}()
	e := echoTrailerBackend(t)
	r := startRouter(t, "")
	r.push(t, Table{Version: 1, Routes: []Route{
		{Host: "resp.localhost", App: "resp", Backends: be(ln.Addr().String())},
		{Host: "req.localhost", App: "req", Backends: be(e)},
	}})

	t.Run("response", func(t *testing.T) {
		c, err := net.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: resp.localhost\r\nConnection: close\r\n\r\n")
		raw, _ := io.ReadAll(c)
		_, trailer, _ := strings.Cut(string(raw), "\r\n0\r\n")
		if got, want := trailer, "X_Under: 1\r\nX-Ok: yes\r\n\r\n"; got != want {
			t.Errorf("trailer at the client: got %q, want %q", got, want)
		}
	})
	t.Run("request", func(t *testing.T) {
		resp, body := rawRequest(t, r.addr, "POST / HTTP/1.1\r\nHost: req.localhost\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n"+evil+"\r\n")
		if resp.StatusCode != 200 {
			t.Fatalf("status: got %d, want 200 (%s)", resp.StatusCode, body)
		}
		if got, want := body, "X-Ok: yes\r\n"; got != want {
			t.Errorf("trailer at the app: got %q, want %q", got, want)
		}
	})
}

// echoTrailerBackend answers with the raw trailer section of a chunked
// request body.
func echoTrailerBackend(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
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
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					// Head, then chunks until the last one, then the trailer.
					for {
						line, err := br.ReadString('\n')
						if err != nil {
							return
						}
						if line == "\r\n" {
							break
						}
					}
					for {
						size, err := br.ReadString('\n')
						if err != nil {
							return
						}
						if size == "0\r\n" {
							break
						}
						var n int
						fmt.Sscanf(size, "%x", &n)
						io.CopyN(io.Discard, br, int64(n)+2)
					}
					var trailer string
					for {
						line, err := br.ReadString('\n')
						if err != nil {
							return
						}
						if line == "\r\n" {
							break
						}
						trailer += line
					}
					fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(trailer), trailer)
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// TestMalformedClientBody: a broken request body is the client's fault:
// 400, logged as such, and the app is not blamed.
func TestMalformedClientBody(t *testing.T) {
	var logs logCapture
	r := startRouterConfig(t, Config{Logger: logs.logger()})
	e := echoBackend(t)
	r.push(t, Table{Version: 1, Routes: []Route{{Host: "app.localhost", App: "app", Backends: be(e.Listener.Addr().String())}}})
	tests := []struct{ name, body string }{
		{"bad chunk size", "zz\r\nhello\r\n0\r\n\r\n"},
		{"chunk longer than its size", "2\r\nhello\r\n0\r\n\r\n"},
		{"bad trailer", "0\r\nno colon\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The body comes after the head, as the router forwards it.
			c, err := net.Dial("tcp", r.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, "POST / HTTP/1.1\r\nHost: app.localhost\r\nTransfer-Encoding: chunked\r\n\r\n")
			time.Sleep(50 * time.Millisecond)
			io.WriteString(c, tt.body)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			if got, want := resp.StatusCode, 400; got != want {
				t.Errorf("status: got %d, want %d (%s)", got, want, body)
			}
			if got, want := string(body), "malformed request body\n"; got != want {
				t.Errorf("body: got %q, want %q", got, want)
			}
		})
	}
	logged := logs.String()
	if got, want := strings.Count(logged, "malformed request body from the client"), len(tests); got != want {
		t.Errorf("client faults logged: got %d, want %d:\n%s", got, want, logged)
	}
	if strings.Contains(logged, "backend failed") || strings.Contains(logged, "level=WARN") {
		t.Errorf("the app was blamed:\n%s", logged)
	}
}

// TestSlowClients: a client that sends its head or body a byte at a time
// cannot hold a connection (and a backend connection) for longer than the
// time limits.
func TestSlowClients(t *testing.T) {
	const limit = 300 * time.Millisecond
	var bodyErr atomic.Value
	backendDone := make(chan struct{}, 1)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		bodyErr.Store(fmt.Sprint(err))
		backendDone <- struct{}{}
	}))
	t.Cleanup(slow.Close)
	r := startRouterConfig(t, Config{HeaderTimeout: limit, BodyTimeout: limit})
	r.push(t, Table{Version: 1, Routes: []Route{{Host: "app.localhost", App: "app", Backends: be(slow.Listener.Addr().String())}}})

	tests := []struct {
		name     string
		first    string // sent at once
		trickle  string // then one byte every limit/2, which does not help
		wantCode int    // 0: closed without an answer
	}{
		{"idle first connection", "", "", 0},
		{"slow head", "GET / HTTP/1.1\r\nHost: app", ".localhost\r\nX-A: b\r\n", 408},
		{"slow body", "POST / HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: 100\r\n\r\nab", "", 408},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", r.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			io.WriteString(c, tt.first)
			stop := make(chan struct{})
			defer close(stop)
			go func() {
				for i := 0; i < len(tt.trickle); i++ {
					select {
					case <-stop:
						return
					case <-time.After(limit / 2):
					}
					if _, err := c.Write([]byte{tt.trickle[i]}); err != nil {
						return
					}
				}
			}()
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			raw, err := io.ReadAll(c)
			took := time.Since(start)
			if err != nil {
				t.Fatalf("read: %v (after %v): the router still holds the connection", err, took)
			}
			code := 0
			if len(raw) > 0 {
				resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), nil)
				if err != nil {
					t.Fatalf("answer %q: %v", raw, err)
				}
				code = resp.StatusCode
			}
			if code != tt.wantCode {
				t.Errorf("answer: got %d (%q), want %d", code, raw, tt.wantCode)
			}
			if took > limit+1500*time.Millisecond {
				t.Errorf("connection closed after %v, want about %v", took, limit)
			}
		})
	}
	select {
	case <-backendDone:
		if got := bodyErr.Load().(string); got == "<nil>" {
			t.Errorf("the app read a whole body, want the router to cut it")
		}
	case <-time.After(5 * time.Second):
		t.Error("the app's connection stayed open after the slow body was cut")
	}
}

// TestResponseHeaderTimeout: an app that never answers gets the client a
// 504, not a wait without end.
func TestResponseHeaderTimeout(t *testing.T) {
	addr, _, _ := blockingBackend(t)
	r := startRouterConfig(t, Config{ResponseHeaderTimeout: 300 * time.Millisecond})
	r.push(t, Table{Version: 1, Routes: []Route{{Host: "app.localhost", App: "app", Backends: be(addr)}}})
	for _, method := range []string{"GET", "POST"} {
		t.Run(method, func(t *testing.T) {
			start := time.Now()
			resp, body := r.do(t, method, "app.localhost", "/", strings.NewReader("x"))
			if got, want := resp.StatusCode, 504; got != want {
				t.Errorf("status: got %d, want %d", got, want)
			}
			if want := "gateway timeout: an instance of app app did not answer in time; check `paddock logs app`\n"; body != want {
				t.Errorf("body: got %q, want %q", body, want)
			}
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("took %v, want about 300ms", took)
			}
		})
	}
}

// TestClientGoneClosesBackend: a client that gives up on a slow request
// does not leave the router and the app holding the connection.
func TestClientGoneClosesBackend(t *testing.T) {
	cancelled := make(chan struct{}, 1)
	entered := make(chan struct{}, 1)
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body) // net/http watches the connection once the body is read
		entered <- struct{}{}
		<-r.Context().Done() // and cancels the context when it closes
		cancelled <- struct{}{}
	}))
	t.Cleanup(s.Close)
	r := startRouterConfig(t, Config{ResponseHeaderTimeout: -1})
	r.push(t, Table{Version: 1, Routes: []Route{{Host: "app.localhost", App: "app", Backends: be(s.Listener.Addr().String())}}})
	for _, tt := range []struct{ name, raw string }{
		{"GET", "GET /poll HTTP/1.1\r\nHost: app.localhost\r\n\r\n"},
		{"POST with its body sent", "POST /poll HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: 2\r\n\r\nok"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", r.addr)
			if err != nil {
				t.Fatal(err)
			}
			io.WriteString(c, tt.raw)
			<-entered
			c.Close()
			select {
			case <-cancelled:
			case <-time.After(5 * time.Second):
				t.Fatal("the app's request was not cancelled after its client left")
			}
			waitFor(t, "no request in flight", func() bool { return r.status(t).Inflight[s.Listener.Addr().String()] == 0 })
		})
	}
}

// strayBackend answers each request, then, a moment later (up to 2 ms),
// writes a second response nobody asked for on the same connection; a
// HEAD response gets its "body" late.
func strayBackend(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var n atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					k := n.Add(1)
					if req.Method == "HEAD" {
						io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
						time.Sleep(time.Duration(k%3) * time.Millisecond)
						io.WriteString(c, "STRAY")
						continue
					}
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
					time.Sleep(time.Duration(k%3) * time.Millisecond)
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nSTRAY")
				}
			}()
		}
	}()
	return ln.Addr().String(), &n
}

// TestStrayResponseNeverReachesAnotherClient: response queue poisoning.
// Clients come one after the other, each 20 milliseconds after the
// last: a stray answer is on the pooled connection by the time the next
// client's request would go out on it. (A stray that arrives after the
// next request went out cannot be told from the answer to it, by any
// proxy: HTTP/1.1 responses carry no request id.)
func TestStrayResponseNeverReachesAnotherClient(t *testing.T) {
	addr, served := strayBackend(t)
	r := startRouter(t, "")
	r.push(t, Table{Version: 1, Routes: []Route{{Host: "app.localhost", App: "app", Backends: be(addr)}}})
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	var stray, failed []string
	for i := 0; i < 31; i++ {
		method := "GET"
		if i%3 == 0 {
			method = "HEAD"
		}
		req, _ := http.NewRequest(method, r.url("/"), nil)
		req.Host = "app.localhost"
		resp, err := client.Do(req)
		if err != nil {
			failed = append(failed, err.Error())
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			failed = append(failed, fmt.Sprintf("%d %q", resp.StatusCode, body))
		}
		if strings.Contains(string(body), "STRAY") || method == "GET" && string(body) != "ok" {
			stray = append(stray, fmt.Sprintf("%s %q", method, body))
		}
		// The stray comes 0-2 ms after the answer; the next client well
		// after it, even on a loaded machine.
		time.Sleep(20 * time.Millisecond)
	}
	if len(stray) != 0 {
		t.Errorf("%d of the 30 clients after the first got another request's answer: %q", len(stray), stray)
	}
	if len(failed) != 0 {
		t.Errorf("%d requests failed: %q", len(failed), failed)
	}
	if got := served.Load(); got != 31 {
		t.Errorf("the backend answered %d requests, want 31", got)
	}
}

// TestConnectionLimits: idle connections cannot keep clients out; busy
// ones beyond the limit get a clear 503.
func TestConnectionLimits(t *testing.T) {
	const perIP = 4
	addr, entered, release := blockingBackend(t)
	fast := newNamedBackend(t, "fast")
	r := startRouterConfig(t, Config{MaxConnsPerIP: perIP})
	r.push(t, Table{Version: 1, Routes: []Route{
		{Host: "slow.localhost", App: "slow", Backends: be(addr)},
		{Host: "fast.localhost", App: "fast", Backends: be(fast.addr())},
	}})
	dial := func() net.Conn {
		c, err := net.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	get := func(c net.Conn, host string) (int, string) {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", host)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return 0, err.Error()
		}
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}

	// Idle connections, the oldest first: each new one over the limit
	// closes the oldest idle one.
	var idle []net.Conn
	for i := 0; i < 2*perIP; i++ {
		idle = append(idle, dial())
		time.Sleep(10 * time.Millisecond) // accepted in this order
	}
	if code, body := get(dial(), "fast.localhost"); code != 200 || body != "fast" {
		t.Fatalf("a client behind %d idle connections: got %d %q, want 200", 2*perIP, code, body)
	}
	for i, c := range idle[:perIP+1] {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("idle connection %d (of the oldest): got %v, want it closed (EOF)", i, err)
		}
	}
	for _, c := range idle {
		c.Close()
	}

	// Busy connections: none can be closed for a newcomer.
	waitFor(t, "the idle connections to go", func() bool { return r.status(t).Connections <= 1 })
	for i := 0; i < perIP; i++ {
		c := dial()
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: slow.localhost\r\n\r\n")
		<-entered
	}
	code, body := get(dial(), "fast.localhost")
	if code != 503 || body != overLimitBody {
		t.Errorf("over the limit with every connection busy: got %d %q, want 503 %q", code, body, overLimitBody)
	}
	close(release)
}

// TestBackendAnswersBeforeTheBody: an app that answers (413) without
// reading a slow client's body has the rest of the body cut off at once,
// not after the body timeout.
func TestBackendAnswersBeforeTheBody(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
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
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntoo large")
			}()
		}
	}()
	r := startRouter(t, "")
	r.push(t, Table{Version: 1, Routes: []Route{{Host: "app.localhost", App: "app", Backends: be(ln.Addr().String())}}})
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: 100000\r\n\r\nfirst bytes")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	raw, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("after %v: %v (got %q)", time.Since(start), err, raw)
	}
	if !strings.HasPrefix(string(raw), "HTTP/1.1 413 ") || !strings.HasSuffix(string(raw), "too large") {
		t.Errorf("answer: got %q, want the app's 413", raw)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the connection closed %v after the answer, want at once", took)
	}
}
