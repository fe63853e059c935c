package router

import (
	"bytes"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// TestSendWait checks that sendWait writes a request and returns once the
// answer can be read, whether it comes later or at once, and that a
// deadline or a close ends the wait.
func TestSendWait(t *testing.T) {
	t.Run("answer later", func(t *testing.T) {
		c, s := tcpPair(t)
		x := newRawIO(c)
		go func() {
			buf := make([]byte, 5)
			io.ReadFull(s, buf)
			time.Sleep(50 * time.Millisecond)
			s.Write(append(buf, " back"...))
		}()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		start := time.Now()
		if n, stale, err := x.sendWait([]byte("hello"), true); n != 5 || stale != peekEmpty || err != nil {
			t.Fatalf("sendWait: %d, %v, %v", n, stale, err)
		}
		if waited := time.Since(start); waited < 40*time.Millisecond {
			t.Errorf("sendWait returned after %v, before the answer was sent", waited)
		}
		buf := make([]byte, 64)
		n, err := x.read(buf)
		if err != nil || string(buf[:n]) != "hello back" {
			t.Fatalf("read after sendWait: %q, %v", buf[:n], err)
		}
	})
	t.Run("answer at once, several times", func(t *testing.T) {
		c, s := tcpPair(t)
		x := newRawIO(c)
		go io.Copy(s, s) // an echo server
		buf := make([]byte, 64)
		for i := 0; i < 1000; i++ {
			msg := []byte{'a' + byte(i%26)}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, stale, err := x.sendWait(msg, i%2 == 0); stale != peekEmpty || err != nil {
				t.Fatal(stale, err)
			}
			n, err := x.read(buf)
			if err != nil || !bytes.Equal(buf[:n], msg) {
				t.Fatalf("exchange %d: %q, %v", i, buf[:n], err)
			}
		}
	})
	t.Run("deadline", func(t *testing.T) {
		c, _ := tcpPair(t)
		x := newRawIO(c)
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if n, _, err := x.sendWait([]byte("hello"), false); n != 5 || err != nil {
			t.Fatalf("sendWait: %d, %v; want the request written and the failed wait left to the read", n, err)
		}
		if _, err := x.read(make([]byte, 8)); !isTimeout(err) {
			t.Fatalf("read after a wait past its deadline: %v, want a timeout", err)
		}
	})
	t.Run("closed while waiting", func(t *testing.T) {
		c, _ := tcpPair(t)
		x := newRawIO(c)
		time.AfterFunc(50*time.Millisecond, func() { c.Close() })
		x.sendWait([]byte("hello"), false)
		if _, err := x.read(make([]byte, 8)); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read after a close during the wait: %v, want net.ErrClosed", err)
		}
	})
	// A connection that an idle backend closed, or sent bytes on, is found
	// by the check, and nothing is written to it.
	for _, tt := range []struct {
		name string
		peer func(s *net.TCPConn)
		want peekResult
	}{
		{"closed by the peer", func(s *net.TCPConn) { s.Close() }, peekClosed},
		// A lingering close: the peer stops writing but still reads, so
		// a request written to it would draw no reset.
		{"half-closed by the peer", func(s *net.TCPConn) { s.CloseWrite() }, peekClosed},
		{"stray bytes", func(s *net.TCPConn) { s.Write([]byte("HTTP/1.1 200 OK\r\n\r\n")) }, peekStray},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, s := tcpPair(t)
			x := newRawIO(c)
			tt.peer(s)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			time.Sleep(20 * time.Millisecond) // the peer's segment is in
			n, stale, err := x.sendWait([]byte("hello"), true)
			if n != 0 || stale != tt.want || err != nil {
				t.Fatalf("sendWait: %d, %v, %v; want nothing written and %v", n, stale, err, tt.want)
			}
		})
	}
	t.Run("full socket buffer", func(t *testing.T) {
		c, s := tcpPair(t)
		x := newRawIO(c)
		big := bytes.Repeat([]byte("x"), 32<<20) // more than both sockets' buffers hold
		n, _, err := x.sendWait(big, false)
		if n >= len(big) || !errors.Is(err, syscall.EAGAIN) {
			t.Fatalf("sendWait of 32 MiB to a peer that does not read: %d, %v; want part of it and EAGAIN", n, err)
		}
		// The caller writes the rest the usual way, and all of it arrives.
		got := make(chan int64)
		go func() { m, _ := io.Copy(io.Discard, s); got <- m }()
		if _, err := x.write(big[n:]); err != nil {
			t.Fatal(err)
		}
		c.CloseWrite()
		if m := <-got; m != int64(len(big)) {
			t.Fatalf("the peer got %d bytes, want %d", m, len(big))
		}
	})
}
