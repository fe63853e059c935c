package router

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

type bytesPool struct{}

func (bytesPool) Get() []byte  { return *(bufPool.Get().(*[]byte)) }
func (bytesPool) Put(b []byte) { bufPool.Put(&b) }

// BenchmarkProxy measures a keep-alive GET of a 1 KiB body straight to a
// backend, through the router (with its defaults; without a client write
// timeout; over HTTPS), and through net/http/httputil's ReverseProxy, in
// the same run, with 64 concurrent clients. The difference per op is the
// proxy's cost; run with -cpu 2 and -benchmem (allocations are the whole
// process's: backend, proxy, client).
func BenchmarkProxy(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 1024)
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1024")
		w.Write(body)
	}))
	defer s.Close()
	caDir, pool := newCA(b)
	r := startRouterConfig(b, Config{TLSListen: "127.0.0.1:0", CADir: caDir})
	nowt := startRouterConfig(b, Config{ClientWriteTimeout: -1})
	for _, r := range []*testRouter{r, nowt} {
		if err := r.client.Push(b.Context(), Table{Version: 1, Routes: []Route{{Host: "bench.localhost", App: "bench", Backends: be(s.Listener.Addr().String())}}}); err != nil {
			b.Fatal(err)
		}
	}
	tlsConf := &tls.Config{ServerName: "bench.localhost", RootCAs: pool}
	// For comparison: the standard library's reverse proxy with a tuned
	// transport (the design this package's hand-written path replaces).
	target, _ := url.Parse(s.URL)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute}
	rp.BufferPool = bytesPool{}
	std := httptest.NewServer(rp)
	defer std.Close()

	for _, tc := range []struct {
		name, addr string
		tls        *tls.Config
	}{
		{"direct", s.Listener.Addr().String(), nil},
		{"router", r.addr, nil},
		{"router-nowritetimeout", nowt.addr, nil},
		{"router-https", r.tlsAddr, tlsConf},
		{"stdlib", std.Listener.Addr().String(), nil},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(32)
			b.RunParallel(func(pb *testing.PB) {
				var c net.Conn
				var err error
				if tc.tls != nil {
					c, err = tls.Dial("tcp", tc.addr, tc.tls)
				} else {
					c, err = net.Dial("tcp", tc.addr)
				}
				if err != nil {
					b.Error(err)
					return
				}
				defer c.Close()
				br := bufio.NewReaderSize(c, 4096)
				req := []byte("GET / HTTP/1.1\r\nHost: bench.localhost\r\n\r\n")
				for pb.Next() {
					if _, err := c.Write(req); err != nil {
						b.Error(err)
						return
					}
					if err := readResponse(br); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// readResponse reads one response with a Content-Length body.
func readResponse(br *bufio.Reader) error {
	n := -1
	status := true
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if status {
			if !bytes.HasPrefix(line, []byte("HTTP/1.1 200")) {
				return fmt.Errorf("status line %q", line)
			}
			status = false
			continue
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		if k, v, ok := bytes.Cut(line, []byte(":")); ok && eqFold(k, "content-length") {
			n, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
		}
	}
	if n < 0 {
		return fmt.Errorf("no Content-Length")
	}
	_, err := br.Discard(n)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}
