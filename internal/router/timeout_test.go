package router

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// blackholeAddr returns a loopback address where connection attempts time
// out: a socket listening with a backlog of 0 that never accepts, its
// accept queue filled first. Linux drops the SYNs a full queue cannot
// take, so the connecting side retransmits until it gives up (a socket
// bound but not listening would refuse at once instead).
func blackholeAddr(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	for i := 0; i < 16; i++ {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err != nil {
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
				return addr
			}
			t.Fatalf("fill the accept queue of %s: %v", addr, err)
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatalf("connections to %s still succeed after 16: cannot make a black hole here", addr)
	return ""
}

func TestConnectTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	r := startRouterConfig(t, Config{ConnectTimeout: timeout})
	hole := blackholeAddr(t)
	good := newNamedBackend(t, "good")
	r.push(t, Table{Version: 1, Routes: []Route{
		{Host: "mixed.localhost", App: "mixed", Backends: be(hole, good.addr())},
		{Host: "hole.localhost", App: "hole", Backends: be(hole)},
	}})

	t.Run("retried on another backend, then passed over", func(t *testing.T) {
		var slow int
		for i := 0; i < 10; i++ {
			start := time.Now()
			resp, body := r.do(t, "GET", "mixed.localhost", "/", nil)
			took := time.Since(start)
			if got, want := resp.StatusCode, 200; got != want {
				t.Fatalf("request %d: status: got %d, want %d (%s)", i, got, want, body)
			}
			if took >= timeout {
				slow++
			}
			if took > 5*timeout {
				t.Errorf("request %d took %v, want about the connect timeout (%v) at most", i, took, timeout)
			}
		}
		// Round robin sends the first or the second request to the black
		// hole; after that it is down for 5 s and passed over.
		if got, want := slow, 1; got != want {
			t.Errorf("requests that waited for the connect timeout: got %d, want %d", got, want)
		}
		if got, want := good.hits.Load(), int64(10); got != want {
			t.Errorf("requests the good backend saw: got %d, want %d", got, want)
		}
	})

	t.Run("502 when no backend answers", func(t *testing.T) {
		start := time.Now()
		resp, body := r.do(t, "GET", "hole.localhost", "/", nil)
		took := time.Since(start)
		if got, want := resp.StatusCode, 502; got != want {
			t.Errorf("status: got %d, want %d", got, want)
		}
		if got, want := body, "bad gateway: no instance of app hole could be reached (connections refused, timed out or closed); check `paddock ps hole` and `paddock logs hole`\n"; got != want {
			t.Errorf("body: got %q, want %q", got, want)
		}
		if took < timeout || took > 5*timeout {
			t.Errorf("took %v, want about the connect timeout (%v)", took, timeout)
		}
	})
}

func TestBadGatewayWording(t *testing.T) {
	r := startRouter(t, "")
	reset := newResetBackend(t)
	r.push(t, Table{Version: 1, Routes: []Route{
		{Host: "refused.localhost", App: "web", Backends: be(closedAddr(t), closedAddr(t))},
		{Host: "reset.localhost", App: "api", Backends: be(reset.addr())},
	}})
	tests := []struct {
		name, method, host string
		want               string
	}{
		{"every instance refuses", "GET", "refused.localhost", "bad gateway: no instance of app web could be reached (connections refused, timed out or closed); check `paddock ps web` and `paddock logs web`\n"},
		{"retryable request, instance resets", "GET", "reset.localhost", "bad gateway: no instance of app api could be reached (connections refused, timed out or closed); check `paddock ps api` and `paddock logs api`\n"},
		{"POST, instance resets", "POST", "reset.localhost", "bad gateway: an instance of app api closed the connection or sent an invalid response; check `paddock logs api`\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader
			if tt.method == "POST" {
				body = strings.NewReader("x") // not replayable once sent
			}
			resp, got := r.do(t, tt.method, tt.host, "/", body)
			if got, want := resp.StatusCode, 502; got != want {
				t.Errorf("status: got %d, want %d", got, want)
			}
			if want := tt.want; got != want {
				t.Errorf("body: got %q, want %q", got, want)
			}
			if got, want := resp.Header.Get("Content-Type"), "text/plain; charset=utf-8"; got != want {
				t.Errorf("Content-Type: got %q, want %q", got, want)
			}
		})
	}
}

func TestDownWindows(t *testing.T) {
	const connectTimeout = 2 * time.Second
	clock := &fakeClock{t: time.Unix(1_000_000, 0)}
	newSet := func() *backendSet {
		s := &backendSet{now: func() int64 { return clock.Now().UnixNano() }}
		s.dialer.Timeout = connectTimeout
		return s
	}
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	timedOut := &net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}
	// Each step advances the clock, then asks isDown (twice when checking
	// that one caller probes and the next passes over).
	type step struct {
		advance time.Duration
		want    []bool
	}
	tests := []struct {
		name  string
		err   error
		steps []step
	}{
		{"refused: down 1s, then one probe", refused, []step{
			{0, []bool{true}},
			{999 * time.Millisecond, []bool{true}},
			{time.Millisecond, []bool{false, true}},
			{connectTimeout - time.Millisecond, []bool{true}},
			{time.Millisecond, []bool{false, true}}, // the probe never dialled: another may
		}},
		{"timed out: down 5s", timedOut, []step{
			{time.Second, []bool{true}},
			{4*time.Second - time.Millisecond, []bool{true}},
			{time.Millisecond, []bool{false, true}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBackend("127.0.0.1:1", newSet())
			b.markDown(tt.err)
			elapsed := time.Duration(0)
			for i, st := range tt.steps {
				clock.Add(st.advance)
				elapsed += st.advance
				for j, want := range st.want {
					var now int64
					if got := b.isDown(&now); got != want {
						t.Errorf("step %d (%v after), call %d: isDown: got %v, want %v", i, elapsed, j, got, want)
					}
				}
			}
		})
	}

	t.Run("a dial ends the window", func(t *testing.T) {
		good := newNamedBackend(t, "good")
		b := newBackend(good.addr(), newSet())
		b.markDown(refused)
		bc, err := b.dial()
		if err != nil {
			t.Fatal(err)
		}
		bc.c.Close()
		var now int64
		if b.isDown(&now) {
			t.Error("isDown after a successful dial: got true, want false")
		}
	})

	t.Run("pick passes over a down backend", func(t *testing.T) {
		set := newSet()
		down, up := newBackend("127.0.0.1:1", set), newBackend("127.0.0.1:2", set)
		down.markDown(refused)
		rt := &route{backends: []*backend{down, up}}
		for i := 0; i < 4; i++ {
			if got := rt.pick(nil); got != up {
				t.Errorf("pick %d: got %s, want %s", i, got.addr, up.addr)
			}
		}
		if got := rt.pick([]*backend{up}); got != down {
			t.Errorf("pick with the up one skipped: got %v, want the down one", got)
		}
	})
}

// TestClientWriteTimeout sends a large response to a client that does not
// read: the router gives up after the write timeout and closes both
// connections, which the backend sees as a failed write.
func TestClientWriteTimeout(t *testing.T) {
	caDir, pool := newCA(t)
	backendDone := make(chan error, 1)
	var started atomic.Bool
	big := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started.Store(true)
		w.Header().Set("Content-Length", fmt.Sprint(1<<30))
		chunk := make([]byte, 64<<10)
		var err error
		for n := 0; n < 1<<30 && err == nil; n += len(chunk) {
			_, err = w.Write(chunk)
		}
		backendDone <- err
	}))
	t.Cleanup(big.Close)
	r := startRouterConfig(t, Config{ClientWriteTimeout: 300 * time.Millisecond, TLSListen: "127.0.0.1:0", CADir: caDir})
	r.push(t, Table{Version: 1, Routes: []Route{{Host: "big.localhost", App: "big", Backends: be(big.Listener.Addr().String())}}})

	tests := []struct {
		name string
		dial func() (net.Conn, error)
	}{
		{"http", func() (net.Conn, error) { return net.Dial("tcp", r.addr) }},
		{"https", func() (net.Conn, error) {
			return tls.Dial("tcp", r.tlsAddr, &tls.Config{ServerName: "big.localhost", RootCAs: pool})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			started.Store(false)
			c, err := tt.dial()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: big.localhost\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			// Read nothing: the socket buffers fill, the router's writes block.
			select {
			case err := <-backendDone:
				if err == nil {
					t.Error("backend: wrote 1 GiB to a client that reads nothing")
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the router still holds the response to a client that reads nothing")
			}
			if !started.Load() {
				t.Error("the backend never got the request")
			}
		})
	}
}
