package drains

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"paddock.dev/paddock/internal/logs"
)

func TestCheck(t *testing.T) {
	for _, ok := range []string{"syslog://logs.example:514", "syslog+tls://logs.example:6514", "https://logs.example/in?token=x"} {
		if _, err := Check(ok); err != nil {
			t.Errorf("Check(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "ftp://x/y", "syslog://nohostport", "syslog://h:1/path", "https://", "http://plain.example/in", "::"} {
		if _, err := Check(bad); !errors.Is(err, ErrBadURL) {
			t.Errorf("Check(%q): %v, want ErrBadURL", bad, err)
		}
	}
}

// TestNoLocalDrains: without AllowLocal a drain reaches no loopback or
// link-local address, whatever name leads there.
func TestNoLocalDrains(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	for _, addr := range []string{ln.Addr().String(), "localhost:" + port, "169.254.169.254:80", "[::1]:" + port} {
		if c, err := dialer(false).Dial("tcp", addr); !errors.Is(err, ErrLocal) {
			if c != nil {
				c.Close()
			}
			t.Errorf("dial %s: %v, want ErrLocal", addr, err)
		}
	}
	c, err := dialer(true).Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("with AllowLocal: %v", err)
	}
	c.Close()
}

// TestSyslog: RFC 5424 headers, with what an app controls (its output)
// only in MSG and what the platform names made safe for the header.
func TestSyslog(t *testing.T) {
	l := logs.Line{Time: time.Date(2026, 12, 1, 12, 0, 0, 123456000, time.UTC), Source: "web.x1 y", Stream: "err", Text: "boom <14>1 fake"}
	got := string(Syslog(l, "shop", "host name"))
	want := "<11>1 2026-12-01T12:00:00.123456Z host_name shop web.x1_y - - boom <14>1 fake"
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

// BenchmarkSyslog measures lines of 100 bytes formatted as RFC 5424
// messages and sent, octet-counted, in batches of 500 to a receiver on
// loopback TCP that discards them.
func BenchmarkSyslog(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go io.Copy(io.Discard, c)
		}
	}()
	u, _ := Check("syslog://" + ln.Addr().String())
	d := &drainer{d: Drain{App: "shop"}, u: u}
	batch := make([]logs.Line, 500)
	for i := range batch {
		batch[i] = logs.Line{Time: time.Now(), Source: "web.x1y2z3", Stream: "out", Text: strings.Repeat("x", 100)}
	}
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := d.send(ctx, batch, "host"); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "lines/s")
}
