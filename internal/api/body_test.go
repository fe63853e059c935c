package api

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// bodyServer serves the API's body handling over a real connection, with
// short limits and handlers that stand for the guard's decisions.
func bodyServer(t *testing.T, limits bodyLimits) (addr string, results chan string) {
	t.Helper()
	results = make(chan string, 10)
	s := &Server{mux: http.NewServeMux(), limits: limits}
	s.mux.HandleFunc("POST /refused", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized) // not admitted: the body is not wanted
	})
	read := func(upload bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			admit(r, route{Route: Route{Upload: upload}})
			n, err := io.Copy(io.Discard, r.Body)
			if err != nil {
				results <- fmt.Sprintf("cut after %d bytes", n)
				w.WriteHeader(http.StatusRequestTimeout)
				return
			}
			// The body is read: the rest of the request may take its time.
			time.Sleep(3 * max(limits.json, limits.uploadIdle))
			results <- fmt.Sprintf("read %d bytes, context %v", n, r.Context().Err())
		}
	}
	s.mux.HandleFunc("POST /json", read(false))
	s.mux.HandleFunc("POST /upload", read(true))
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String(), results
}

// send writes a request head and the first part of its body, then the
// rest in pieces every gap, and returns the connection.
func send(t *testing.T, addr, path string, length int, first string, rest int, gap time.Duration) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", path, length, first)
	go func() {
		for i := 0; i < rest; i++ {
			time.Sleep(gap)
			if _, err := c.Write([]byte("x")); err != nil {
				return
			}
		}
	}()
	return c
}

func answer(t *testing.T, c net.Conn, within time.Duration) (*http.Response, error) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(within))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	// The connection must be closed after the answer, or kept for the
	// next request: never left waiting for the rest of a stalled body.
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		return resp, fmt.Errorf("after the answer: %v, want the connection closed", err)
	}
	return resp, nil
}

func TestBodyLimits(t *testing.T) {
	// The upload's read limit leaves a wide margin over the 250ms between
	// its bytes: a loaded machine (the whole suite under -race) must not
	// make a moving upload look stalled.
	limits := bodyLimits{preAdmit: 5 * time.Second, json: 300 * time.Millisecond, uploadIdle: time.Second}
	addr, results := bodyServer(t, limits)

	t.Run("a refused request's stalled body is not waited for", func(t *testing.T) {
		c := send(t, addr, "/refused", 1000, "{\"na", 0, 0)
		resp, err := answer(t, c, 4*time.Second) // well under preAdmit: not drained at all
		if err != nil || resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("got %v, %v; want 401 and the connection closed", resp, err)
		}
	})
	t.Run("an admitted JSON body that stalls is cut", func(t *testing.T) {
		c := send(t, addr, "/json", 1000, "{\"na", 0, 0)
		if got := <-results; got != "cut after 4 bytes" {
			t.Errorf("handler: %s, want cut after the 4 bytes sent", got)
		}
		if _, err := answer(t, c, 5*time.Second); err != nil {
			t.Errorf("answer: %v", err)
		}
	})
	t.Run("an upload that keeps moving may take longer than any one read", func(t *testing.T) {
		// 12 bytes 250ms apart: 3s in all, three read limits.
		c := send(t, addr, "/upload", 12, "", 12, 250*time.Millisecond)
		if got, want := <-results, "read 12 bytes, context <nil>"; got != want {
			t.Errorf("handler: %s, want %s (the request alive after its body was read)", got, want)
		}
		c.Close()
	})
	t.Run("an upload that stalls is cut", func(t *testing.T) {
		c := send(t, addr, "/upload", 1000, strings.Repeat("x", 10), 0, 0)
		if got := <-results; got != "cut after 10 bytes" {
			t.Errorf("handler: %s, want cut after the 10 bytes sent", got)
		}
		if _, err := answer(t, c, 5*time.Second); err != nil {
			t.Errorf("answer: %v", err)
		}
	})
	t.Run("a JSON body read whole lifts its deadline", func(t *testing.T) {
		c := send(t, addr, "/json", 2, "{}", 0, 0)
		if got, want := <-results, "read 2 bytes, context <nil>"; got != want {
			t.Errorf("handler: %s, want %s", got, want)
		}
		c.Close()
	})
}
