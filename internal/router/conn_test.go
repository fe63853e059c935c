package router

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestConnectionHandling runs raw exchanges on one client connection.
func TestConnectionHandling(t *testing.T) {
	r := startRouter(t, "")
	b := newNamedBackend(t, "b")
	r.push(t, Table{Version: 1, Routes: []Route{{Host: "app.localhost", App: "app", Backends: be(b.addr())}}})
	tests := []struct {
		name      string
		raw       string // written at once
		methods   []string
		wantConn  []string // Connection header of each response
		wantClose bool     // the router closes the connection after the last response
	}{
		{"pipelined", "GET / HTTP/1.1\r\nHost: app.localhost\r\n\r\nHEAD / HTTP/1.1\r\nHost: app.localhost\r\n\r\nGET / HTTP/1.1\r\nHost: app.localhost\r\n\r\n", []string{"GET", "HEAD", "GET"}, []string{"", "", ""}, false},
		{"HTTP/1.1 Connection: close", "GET / HTTP/1.1\r\nHost: app.localhost\r\nConnection: close\r\n\r\n", []string{"GET"}, []string{"close"}, true},
		{"HTTP/1.0 keep-alive", "GET / HTTP/1.0\r\nHost: app.localhost\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\nHost: app.localhost\r\nConnection: keep-alive\r\n\r\n", []string{"GET", "GET"}, []string{"keep-alive", "keep-alive"}, false},
		{"HTTP/1.0 plain", "GET / HTTP/1.0\r\nHost: app.localhost\r\n\r\n", []string{"GET"}, []string{"close"}, true},
		{"unknown host keeps the connection", "GET / HTTP/1.1\r\nHost: x.localhost\r\n\r\nGET / HTTP/1.1\r\nHost: app.localhost\r\n\r\n", []string{"GET", "GET"}, []string{"", ""}, false},
		{"error with an unread body closes", "POST / HTTP/1.1\r\nHost: x.localhost\r\nContent-Length: 3\r\n\r\nabc", []string{"POST"}, []string{"close"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", r.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, tt.raw)
			br := bufio.NewReader(c)
			for i, m := range tt.methods {
				resp, err := http.ReadResponse(br, &http.Request{Method: m})
				if err != nil {
					t.Fatalf("response %d: %v", i, err)
				}
				body, err := io.ReadAll(resp.Body)
				if err != nil {
					t.Fatalf("response %d: body: %v", i, err)
				}
				if m == "HEAD" && len(body) != 0 {
					t.Errorf("response %d: HEAD body: got %q, want none", i, body)
				}
				conn := strings.ToLower(resp.Header.Get("Connection"))
				if resp.Close { // net/http takes "close" out of the header
					conn = "close"
				}
				if got, want := conn, tt.wantConn[i]; got != want {
					t.Errorf("response %d: Connection: got %q, want %q", i, got, want)
				}
			}
			c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			_, err = br.ReadByte()
			closed := err == io.EOF
			if ne, ok := err.(net.Error); err != nil && !closed && !(ok && ne.Timeout()) {
				t.Fatalf("after the last response: %v", err)
			}
			if got, want := closed, tt.wantClose; got != want {
				t.Errorf("connection closed by the router: got %v, want %v", got, want)
			}
		})
	}
}

// TestChunkedResponseTrailers checks that a chunked response with trailers
// reaches the client intact.
func TestChunkedResponseTrailers(t *testing.T) {
	s := newTrailerBackend(t)
	r := startRouter(t, "")
	r.push(t, Table{Version: 1, Routes: []Route{{Host: "app.localhost", App: "app", Backends: be(s)}}})
	req, _ := http.NewRequest("GET", r.url("/"), nil)
	req.Host = "app.localhost"
	resp, err := testClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(body), "part1part2"; got != want {
		t.Errorf("body: got %q, want %q", got, want)
	}
	if got, want := resp.Trailer.Get("X-Checksum"), "abc"; got != want {
		t.Errorf("trailer: got %q, want %q", got, want)
	}
}

func newTrailerBackend(t *testing.T) string {
	t.Helper()
	s := http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Checksum")
		io.WriteString(w, "part1")
		w.(http.Flusher).Flush()
		io.WriteString(w, "part2")
		w.Header().Set("X-Checksum", "abc")
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return ln.Addr().String()
}
