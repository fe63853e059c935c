package router

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	goruntime "runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The forwarding path is a hand-written HTTP/1.1 proxy: it parses each
// request head in place, writes the head it forwards with one write on a
// pooled keep-alive connection to a backend, and writes the response head
// together with the first body bytes with one write to the client. Bodies
// are copied as they arrive (Content-Length, chunked, or until close), so
// streams are never buffered. It adds about 10 µs per request over a direct
// connection where net/http/httputil's ReverseProxy with a tuned Transport
// adds 35-50 µs and 77 allocations (BenchmarkProxy; bench/README-router.md
// compares it with nginx).
//
// Over TLS the same path runs on a *tls.Conn (the handshake happens in the
// connection's goroutine, within tlsHandshakeTimeout); only
// X-Forwarded-Proto differs, and large bodies are copied through a buffer
// instead of spliced.
//
// Writes to the client make progress or fail: each write (re-)arms a write
// deadline of Config.ClientWriteTimeout, lazily (at most once a second, so
// the cost is mostly one clock read per write), and long copies go in slices of
// writeSlice bytes, each with the deadline re-armed. Tunnels (after a 101)
// have no write deadline.
//
// Time limits, client side: the first head within Config.HeaderTimeout of
// the connection's start; a later head within idleTimeout of the previous
// response, then within HeaderTimeout of its first byte; each read of a
// request body within Config.BodyTimeout. Backend side: the response head
// within Config.ResponseHeaderTimeout of the request (with its body) going
// out, else 504. Read deadlines are re-armed lazily too (bufReader.arm).
//
// Client connection states (for graceful shutdown and the connection
// limits, see limits.go):
//
//	        head read          response done
//	idle ───────────► active ───────────────► idle (keep-alive) or closed
//	  │
//	  └─ shutdown, or evicted to admit a connection over a limit:
//	     closing (read aborted, connection closed)

const (
	clientBufSize             = 4 << 10
	idleTimeout               = 120 * time.Second // a client connection waiting for the first byte of its next request
	maxAttempts               = 8
	tlsHandshakeTimeout       = 10 * time.Second
	defaultClientWriteTimeout = 60 * time.Second
	defaultHeaderTimeout      = 60 * time.Second
	defaultBodyTimeout        = 60 * time.Second
	defaultRespHeaderTimeout  = 60 * time.Second
	defaultMaxConns           = 10000
	defaultMaxConnsPerIP      = 1000
	writeSlice                = 64 << 10 // bytes copied to the client per write deadline in long copies
	tlsCopyBufSize            = 16 << 10 // one TLS record
)

const (
	stateIdle int32 = iota // between requests, or reading a head
	stateActive
	stateClosing
)

var aLongTimeAgo = time.Unix(1, 0)

type proxy struct {
	log           *slog.Logger
	table         atomic.Pointer[routes]
	set           backendSet
	writeTimeout  time.Duration // 0: none
	writeRearm    int64         // nanoseconds: a write deadline this old is set again
	headerTimeout int64         // nanoseconds; 0: none
	bodyTimeout   int64         // nanoseconds; 0: none
	respTimeout   int64         // nanoseconds; 0: none
	maxConns      int           // 0: no cap
	maxPerIP      int           // 0: no cap
	idPrefix      []byte
	idSeq         atomic.Uint64
	bufs          sync.Pool // *[]byte of clientBufSize for client reads
	tlsBufs       sync.Pool // *[]byte of tlsCopyBufSize for long copies to TLS clients and body reads

	shutting  atomic.Bool
	cut       atomic.Bool // the grace is over: what is in flight is being cut
	mu        sync.Mutex
	all       connList                 // every client connection, oldest first
	byIP      map[netip.Addr]*connList // the same, per client address (with maxPerIP)
	limitLog  int64                    // when an over-limit client was last logged, unix nanoseconds
	rejecting chan struct{}            // bounds the goroutines answering over-limit clients
	wg        sync.WaitGroup
}

// newProxy makes the forwarding path from a Config with its defaults
// applied.
func newProxy(cfg Config) *proxy {
	var seed [6]byte
	_, _ = rand.Read(seed[:])
	p := &proxy{
		log:           cfg.Logger,
		writeTimeout:  max(cfg.ClientWriteTimeout, 0),
		headerTimeout: int64(max(cfg.HeaderTimeout, 0)),
		bodyTimeout:   int64(max(cfg.BodyTimeout, 0)),
		respTimeout:   int64(max(cfg.ResponseHeaderTimeout, 0)),
		maxConns:      max(cfg.MaxConns, 0),
		maxPerIP:      max(cfg.MaxConnsPerIP, 0),
		idPrefix:      []byte(hex.EncodeToString(seed[:]) + "-"),
		byIP:          make(map[netip.Addr]*connList),
		rejecting:     make(chan struct{}, 64),
	}
	p.writeRearm = int64(min(time.Second, p.writeTimeout/4))
	p.set.dialer.Timeout = cfg.ConnectTimeout
	p.set.log = cfg.Logger
	p.set.owners = newOwnerLookup()
	now := cfg.Now
	p.set.now = func() int64 { return now().UnixNano() }
	p.bufs.New = func() any { b := make([]byte, clientBufSize); return &b }
	p.tlsBufs.New = func() any { b := make([]byte, tlsCopyBufSize); return &b }
	p.table.Store(&routes{byHost: map[string]*route{}})
	return p
}

// serve accepts client connections until ln is closed; with tlsConf, it
// serves HTTPS.
func (p *proxy) serve(ln net.Listener, tlsConf *tls.Config) error {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if p.shutting.Load() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of file descriptors and the like: back off, as net/http does.
			if delay == 0 {
				delay = 5 * time.Millisecond
			} else if delay *= 2; delay > time.Second {
				delay = time.Second
			}
			p.log.Warn("accept failed", "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		tc, ok := c.(*net.TCPConn)
		if !ok {
			c.Close()
			continue
		}
		var addr netip.Addr
		if a, ok := tc.RemoteAddr().(*net.TCPAddr); ok {
			addr = a.AddrPort().Addr().Unmap()
		}
		cc := &clientConn{p: p, c: tc, tcp: tc, raw: tc, addr: addr}
		if tlsConf != nil {
			cc.c, cc.tcp = tls.Server(tc, tlsConf), nil
		}
		p.mu.Lock()
		if p.shutting.Load() {
			p.mu.Unlock()
			tc.Close()
			return nil
		}
		if !p.admitLocked(cc) {
			p.rejectLocked(tc, addr, tlsConf != nil)
			p.mu.Unlock()
			continue
		}
		p.wg.Add(1)
		p.mu.Unlock()
		go cc.serve()
	}
}

// shutdown closes idle client connections, lets the active ones finish
// their exchange, and once done is closed cuts what remains: client
// connections and the backend connections of their requests.
func (p *proxy) shutdown(done <-chan struct{}) {
	p.shutting.Store(true)
	p.mu.Lock()
	for cc := p.all.head; cc != nil; cc = cc.links[allList].next {
		if cc.state.CompareAndSwap(stateIdle, stateClosing) {
			cc.c.SetReadDeadline(aLongTimeAgo)
		}
	}
	p.mu.Unlock()
	finished := make(chan struct{})
	go func() { p.wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-done:
		// An exchange that starts after this flag is set gives up by
		// itself (see exchange); one in progress is cut here.
		p.cut.Store(true)
		p.mu.Lock()
		n := 0
		for cc := p.all.head; cc != nil; cc = cc.links[allList].next {
			cc.raw.Close() // not the TLS close: it would wait to send close_notify
			if bc := cc.cur.Load(); bc != nil {
				bc.c.Close()
			}
			n++
		}
		p.mu.Unlock()
		p.log.Warn("grace period over; cut the requests still in flight", "connections", n)
		<-finished
	}
	p.set.closeAll()
	if p.set.owners != nil {
		p.set.owners.close()
	}
}

func (p *proxy) newRequestID(dst []byte) []byte {
	dst = append(dst, p.idPrefix...)
	return strconv.AppendUint(dst, p.idSeq.Add(1), 36)
}

// clientConn is one client connection and the state reused across its
// requests.
type clientConn struct {
	p         *proxy
	c         net.Conn     // a *net.TCPConn or a *tls.Conn
	tcp       *net.TCPConn // c over plain HTTP; nil over TLS
	raw       *net.TCPConn // the TCP connection under c
	rawio     *rawIO       // raw reads and writes of c over plain HTTP; nil over TLS
	addr      netip.Addr   // the client's address
	r         bufReader
	bufp      *[]byte
	out       []byte
	ip        []byte // addr as text, for X-Forwarded-For
	h         reqHead
	state     atomic.Int32
	wArmedAt  int64 // when the write deadline was last set, unix nanoseconds
	headTimed bool  // the header timeout runs for the head being read

	// Where the connection is listed (p.mu), for the connection limits.
	links  [2]connLinks
	ipList *connList
	listed bool

	// The request at a backend, for the client-abort watch and the cut
	// at shutdown (see watch.go).
	cur       atomic.Pointer[bconn]
	watch     atomic.Int32
	waitSince atomic.Int64
	watchDone chan struct{}
	gone      atomic.Bool // the client went away while its request was at a backend
	bodyAbort atomic.Bool // the exchange stops the copy of the request body (see sendBody)

	// What the client was answered, for the app's counters.
	status  int
	written int64
}

func (c *clientConn) serve() {
	p := c.p
	defer func() {
		c.c.Close()
		if c.bufp != nil && len(c.r.buf) == clientBufSize {
			p.bufs.Put(c.bufp)
		}
		p.mu.Lock()
		p.unlistLocked(c)
		p.mu.Unlock()
		p.wg.Done()
	}()
	c.ip = []byte(c.addr.String())
	if tc, ok := c.c.(*tls.Conn); ok && !c.handshake(tc) {
		return
	}
	c.bufp = p.bufs.Get().(*[]byte)
	c.r = bufReader{c: c.c, buf: *c.bufp}
	if c.tcp != nil {
		c.rawio = newRawIO(c.tcp)
		c.r.raw = c.rawio
	}
	if p.headerTimeout != 0 {
		c.r.partial = c.headPartial
	}
	// The first head must arrive within the header timeout of the
	// connection's start (nginx's client_header_timeout); later ones
	// within the idle timeout, then the header timeout from their first
	// byte.
	now := time.Now().UnixNano()
	if p.headerTimeout != 0 {
		c.headTimed = true
		c.r.arm(now, min(p.headerTimeout, int64(idleTimeout)))
	} else {
		c.r.arm(now, int64(idleTimeout))
	}
	first := true
	for {
		if len(c.r.buffered()) == 0 {
			c.state.Store(stateIdle)
			if p.shutting.Load() {
				return
			}
		}
		if !first {
			c.headTimed = false
			if len(c.r.buffered()) == 0 || c.r.rdl == deadlinePast {
				c.r.arm(time.Now().UnixNano(), int64(idleTimeout))
			}
		}
		if !first && len(c.r.buffered()) == 0 {
			// Let the goroutines that are ready run first: a busy router
			// then more often finds the client's next request already
			// there, and saves the read that finds nothing (a system
			// call, then a park and a wake-up). nginx gets the same from
			// epoll's readiness. Idle, the yield costs next to nothing.
			goruntime.Gosched()
		}
		first = false
		head, err := c.r.readHead()
		if c.state.Load() != stateActive && !c.state.CompareAndSwap(stateIdle, stateActive) {
			return // shutting down, or evicted
		}
		if err != nil {
			switch {
			case err == errHeadTooLarge:
				c.writeError(431, "request header fields too large\n", false)
			case err == errUnexpectedEOF:
				c.writeError(400, "malformed request\n", false)
			case errors.Is(err, os.ErrDeadlineExceeded) && len(c.r.buffered()) > 0:
				p.log.Info("request head not received in time", "remote", string(c.ip))
				c.writeError(408, "request head not received in time\n", false)
			}
			return
		}
		if c.out == nil {
			// Allocated at the first request, not while a connection idles.
			c.out = make([]byte, 0, 1024)
			c.h.fields = make([]field, 0, 32)
			c.watchDone = make(chan struct{}, 1)
		}
		if !c.handle(head) || p.shutting.Load() {
			return
		}
		if cap(c.out) > 16<<10 {
			c.out = make([]byte, 0, 1024) // a large response passed: do not keep its buffer
		}
	}
}

// deadlinePast marks bufReader.rdl after a read was interrupted by a
// deadline in the past: the next arm sets a real one.
const deadlinePast = 1

// headPartial arms the header timeout once the first bytes of a head
// (after the first) have arrived.
func (c *clientConn) headPartial() error {
	if c.headTimed {
		return nil
	}
	c.headTimed = true
	c.r.arm(time.Now().UnixNano(), c.p.headerTimeout)
	// Shutdown marks an idle connection closing, then aborts its read
	// with a deadline in the past: do not undo that.
	if c.state.Load() == stateClosing {
		return net.ErrClosed
	}
	return nil
}

// handle serves one request and reports whether the connection stays open.
func (c *clientConn) handle(head []byte) bool {
	h := &c.h
	if code, msg := parseRequestHead(head, h); code != 0 {
		return c.writeError(code, msg, false)
	}
	req := &h.req
	// Keep the connection after an error answer only if no body is unread.
	keepOnError := req.keepAlive && !req.hasBody()
	var keyBuf [256]byte
	key, ok := hostKey(keyBuf[:0], h.host)
	if !ok {
		return c.writeError(400, "invalid Host\n", false)
	}
	rt := c.p.table.Load().byHost[string(key)]
	if rt == nil {
		return c.writeError(404, "no app is routed at host "+strconv.Quote(string(key))+"\n", keepOnError)
	}
	start, written := time.Now().UnixNano(), c.written
	c.status = 0
	rt.stats.inflight.Add(1)
	defer func() { rt.stats.done(c.status, time.Now().UnixNano()-start, c.written-written) }()
	if len(rt.backends) == 0 {
		return c.writeErrorHeader(503, rt.msg503, "Retry-After: 5\r\nCache-Control: no-store\r\n", keepOnError)
	}
	out := appendForwardHead(c.out[:0], h, forwardInfo{ip: c.ip, https: c.tcp == nil}, c.p.newRequestID)

	// A small body already read with the head goes out in the same write.
	if req.length > 0 {
		if buf := c.r.buffered(); int64(len(buf)) >= req.length && len(out)+int(req.length) <= maxPendingOut {
			out = append(out, buf[:req.length]...)
			c.r.discard(int(req.length))
		} else {
			req.bodyLeft = true
		}
	} else if req.chunked {
		req.bodyLeft = true
	}
	c.out = out
	return c.forward(rt, req, keepOnError)
}

// writeError answers the client with a short plain-text response and
// reports whether the connection stays open.
func (c *clientConn) writeError(code int, msg string, keep bool) bool {
	return c.writeErrorHeader(code, msg, "", keep)
}

// writeErrorHeader is writeError with extra header lines (each ending in CRLF).
func (c *clientConn) writeErrorHeader(code int, msg, header string, keep bool) bool {
	out := append(c.out[:0], "HTTP/1.1 "...)
	out = strconv.AppendInt(out, int64(code), 10)
	out = append(out, ' ')
	out = append(out, statusText(code)...)
	out = append(out, "\r\nContent-Type: text/plain; charset=utf-8\r\n"...)
	out = append(out, header...)
	out = append(out, "Content-Length: "...)
	out = strconv.AppendInt(out, int64(len(msg)), 10)
	if !keep {
		out = append(out, "\r\nConnection: close"...)
	}
	out = append(out, "\r\n\r\n"...)
	out = append(out, msg...)
	c.out = out
	c.status = code
	if _, err := c.Write(out); err != nil {
		return false
	}
	if !keep {
		c.lingerClose()
	}
	return keep
}

// lingerClose ends the sending side of a connection the router gives up
// on, then reads what the client is still sending for half a second at
// most before the connection is closed. Closed at once with unread input,
// a connection answers the client with a reset, which may drop the error
// response it has not read yet.
func (c *clientConn) lingerClose() {
	if c.raw == nil {
		return
	}
	if c.tcp == nil {
		c.c.(*tls.Conn).CloseWrite()
	}
	c.raw.CloseWrite()
	c.raw.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	io.CopyN(io.Discard, c.raw, 64<<10)
}

// handshake runs the TLS handshake within tlsHandshakeTimeout and reports
// whether the connection may serve requests.
func (c *clientConn) handshake(tc *tls.Conn) bool {
	c.c.SetDeadline(time.Now().Add(tlsHandshakeTimeout))
	// Shutdown sets the flag before it aborts idle connections' reads, so
	// after this check it cannot miss this one.
	if c.p.shutting.Load() {
		return false
	}
	if err := tc.Handshake(); err != nil {
		// Unknown names, scanners, plain HTTP on the HTTPS port: common
		// and not actionable.
		c.p.log.Debug("tls handshake failed", "remote", string(c.ip), "err", err)
		return false
	}
	c.c.SetDeadline(time.Time{})
	return c.state.Load() == stateIdle && !c.p.shutting.Load()
}

// armWrite sets the write deadline of the next write, unless it was set
// less than a second (or a quarter of the timeout) ago: a write gets at
// least that much less than the timeout.
func (c *clientConn) armWrite() {
	if c.p.writeTimeout == 0 {
		return
	}
	if now := time.Now().UnixNano(); now > c.wArmedAt+c.p.writeRearm {
		c.wArmedAt = now
		c.c.SetWriteDeadline(time.Unix(0, now+int64(c.p.writeTimeout)))
	}
}

// Write writes to the client within the write timeout.
func (c *clientConn) Write(b []byte) (int, error) {
	c.armWrite()
	var n int
	var err error
	if c.rawio != nil {
		n, err = c.rawio.write(b)
	} else {
		n, err = c.c.Write(b)
	}
	c.written += int64(n)
	return n, err
}

// ReadFrom copies r to the client until EOF (or the limit, when r is an
// *io.LimitedReader) in slices of writeSlice bytes, each within the write
// timeout. Over plain HTTP each slice is spliced in the kernel when r is a
// TCP connection.
func (c *clientConn) ReadFrom(r io.Reader) (n int64, err error) {
	defer func() { c.written += n }()
	limit := int64(1<<63 - 1)
	if lr, ok := r.(*io.LimitedReader); ok {
		r, limit = lr.R, lr.N
	}
	if c.tcp == nil {
		return c.copyTLS(r, limit)
	}
	if c.p.writeTimeout == 0 {
		return c.tcp.ReadFrom(&io.LimitedReader{R: r, N: limit})
	}
	slice := &io.LimitedReader{R: r}
	for n < limit {
		slice.N = min(writeSlice, limit-n)
		want := slice.N
		c.armWrite()
		k, err := c.tcp.ReadFrom(slice)
		n += k
		if err != nil || k < want {
			return n, err
		}
	}
	return n, nil
}

// copyTLS is ReadFrom for a TLS client: through a buffer of one record.
func (c *clientConn) copyTLS(r io.Reader, limit int64) (n int64, err error) {
	bp := c.p.tlsBufs.Get().(*[]byte)
	defer c.p.tlsBufs.Put(bp)
	buf := *bp
	for n < limit {
		k, rerr := r.Read(buf[:min(int64(len(buf)), limit-n)])
		if k > 0 {
			if _, err := c.Write(buf[:k]); err != nil {
				return n, err
			}
			n += int64(k)
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
	return n, nil
}

func statusText(code int) string {
	switch code {
	case 400:
		return "Bad Request"
	case 404:
		return "Not Found"
	case 405:
		return "Method Not Allowed"
	case 408:
		return "Request Timeout"
	case 431:
		return "Request Header Fields Too Large"
	case 502:
		return "Bad Gateway"
	case 503:
		return "Service Unavailable"
	case 504:
		return "Gateway Timeout"
	case 505:
		return "HTTP Version Not Supported"
	}
	return "Error"
}
