package router

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
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
// Client connection states (for graceful shutdown):
//
//	        head read          response done
//	idle ───────────► active ───────────────► idle (keep-alive) or closed
//	  │
//	  └─ shutdown: closing (read aborted, connection closed)

const (
	clientBufSize             = 4 << 10
	idleTimeout               = 120 * time.Second // a client connection waiting for a request head
	maxAttempts               = 8
	tlsHandshakeTimeout       = 10 * time.Second
	defaultClientWriteTimeout = 60 * time.Second
	writeSlice                = 64 << 10 // bytes copied to the client per write deadline in long copies
	tlsCopyBufSize            = 16 << 10 // one TLS record
)

const (
	stateIdle int32 = iota
	stateActive
	stateClosing
)

var aLongTimeAgo = time.Unix(1, 0)

type proxy struct {
	log          *slog.Logger
	table        atomic.Pointer[routes]
	set          backendSet
	writeTimeout time.Duration // 0: none
	writeRearm   int64         // nanoseconds: a write deadline this old is set again
	idPrefix     []byte
	idSeq        atomic.Uint64
	bufs         sync.Pool // *[]byte of clientBufSize for client reads
	tlsBufs      sync.Pool // *[]byte of tlsCopyBufSize for long copies to TLS clients

	shutting atomic.Bool
	mu       sync.Mutex
	conns    map[*clientConn]struct{}
	wg       sync.WaitGroup
}

// newProxy makes the forwarding path from a Config with its defaults
// applied.
func newProxy(cfg Config) *proxy {
	var seed [6]byte
	_, _ = rand.Read(seed[:])
	p := &proxy{
		log:          cfg.Logger,
		writeTimeout: max(cfg.ClientWriteTimeout, 0),
		idPrefix:     []byte(hex.EncodeToString(seed[:]) + "-"),
		conns:        make(map[*clientConn]struct{}),
	}
	p.writeRearm = int64(min(time.Second, p.writeTimeout/4))
	p.set.dialer.Timeout = cfg.ConnectTimeout
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
		cc := &clientConn{p: p, c: tc, tcp: tc}
		if tlsConf != nil {
			cc.c, cc.tcp = tls.Server(tc, tlsConf), nil
		}
		p.mu.Lock()
		if p.shutting.Load() {
			p.mu.Unlock()
			tc.Close()
			return nil
		}
		p.conns[cc] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go cc.serve()
	}
}

// shutdown closes idle client connections, lets the active ones finish
// their exchange, and after the context ends closes what remains.
func (p *proxy) shutdown(done <-chan struct{}) {
	p.shutting.Store(true)
	p.mu.Lock()
	for cc := range p.conns {
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
		p.mu.Lock()
		for cc := range p.conns {
			cc.c.Close()
		}
		p.mu.Unlock()
		<-finished
	}
	p.set.closeAll()
}

func (p *proxy) newRequestID(dst []byte) []byte {
	dst = append(dst, p.idPrefix...)
	return strconv.AppendUint(dst, p.idSeq.Add(1), 36)
}

// clientConn is one client connection and the state reused across its
// requests.
type clientConn struct {
	p          *proxy
	c          net.Conn     // a *net.TCPConn or a *tls.Conn
	tcp        *net.TCPConn // c over plain HTTP; nil over TLS
	r          bufReader
	bufp       *[]byte
	out        []byte
	ip         []byte
	fields     []field
	state      atomic.Int32
	deadlineAt int64 // read deadline, unix nanoseconds
	wArmedAt   int64 // when the write deadline was last set, unix nanoseconds
}

// request is what the proxy keeps of a request head once it has been
// turned into the forwarded head.
type request struct {
	http10     bool
	head       bool // HEAD: the response has no body
	keepAlive  bool // the client wants the connection kept
	replayable bool // may be sent again if no response byte came back
	upgrade    bool
	chunked    bool
	length     int64 // body length unless chunked
	bodyLeft   bool  // body bytes still to copy from the client after the head write
}

func (req *request) hasBody() bool { return req.chunked || req.length > 0 }

func (c *clientConn) serve() {
	p := c.p
	defer func() {
		c.c.Close()
		if c.bufp != nil && len(c.r.buf) == clientBufSize {
			p.bufs.Put(c.bufp)
		}
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
		p.wg.Done()
	}()
	if a, ok := c.c.RemoteAddr().(*net.TCPAddr); ok {
		c.ip = []byte(a.AddrPort().Addr().Unmap().String())
	}
	if tc, ok := c.c.(*tls.Conn); ok && !c.handshake(tc) {
		return
	}
	c.bufp = p.bufs.Get().(*[]byte)
	c.r = bufReader{c: c.c, buf: *c.bufp}
	c.out = make([]byte, 0, 1024)
	c.fields = make([]field, 0, 32)
	for {
		if len(c.r.buffered()) == 0 {
			c.state.Store(stateIdle)
			if p.shutting.Load() {
				return
			}
		}
		if now := time.Now().UnixNano(); now > c.deadlineAt-int64(idleTimeout)+int64(time.Second) {
			c.deadlineAt = now + int64(idleTimeout)
			c.c.SetReadDeadline(time.Unix(0, c.deadlineAt))
		}
		head, err := c.r.readHead()
		if c.state.Load() != stateActive && !c.state.CompareAndSwap(stateIdle, stateActive) {
			return // shutting down
		}
		if err != nil {
			switch err {
			case errHeadTooLarge:
				c.writeError(431, "request header fields too large\n", false)
			case errUnexpectedEOF:
				c.writeError(400, "malformed request\n", false)
			}
			return
		}
		if !c.handle(head) || p.shutting.Load() {
			return
		}
		if cap(c.out) > 16<<10 {
			c.out = make([]byte, 0, 1024) // a large response passed: do not keep its buffer
		}
	}
}

// handle serves one request and reports whether the connection stays open.
func (c *clientConn) handle(head []byte) bool {
	// Request line.
	nl := bytes.IndexByte(head, '\n')
	line := head[:nl]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return c.writeError(400, "malformed request line\n", false)
	}
	method := line[:sp1]
	rest := line[sp1+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 <= 0 {
		return c.writeError(400, "malformed request line\n", false)
	}
	target, version := rest[:sp2], rest[sp2+1:]
	var req request
	switch string(version) {
	case "HTTP/1.1":
	case "HTTP/1.0":
		req.http10 = true
	default:
		if len(version) == 8 && bytes.HasPrefix(version, []byte("HTTP/")) {
			return c.writeError(505, "HTTP version not supported\n", false)
		}
		return c.writeError(400, "malformed request line\n", false)
	}
	if !isToken(method) || !validTarget(target) {
		return c.writeError(400, "malformed request line\n", false)
	}
	fields, err := parseFields(head[nl+1:], c.fields[:0])
	c.fields = fields[:0]
	if err == errTooManyHeaders {
		return c.writeError(431, "too many header fields\n", false)
	}
	if err != nil {
		return c.writeError(400, "malformed header field\n", false)
	}
	var ci connInfo
	if err := ci.scan(fields); err != nil || req.http10 && ci.chunked {
		return c.writeError(400, "invalid message framing\n", false)
	}
	req.head = string(method) == "HEAD"
	req.chunked, req.length = ci.chunked, ci.length
	req.keepAlive = !ci.close && (!req.http10 || ci.keepAlive)
	req.upgrade = ci.upgrade && !req.http10
	switch string(method) {
	case "GET", "HEAD", "OPTIONS", "TRACE":
		req.replayable = !req.hasBody()
	case "CONNECT":
		return c.writeError(405, "CONNECT is not supported\n", false)
	}
	// Keep the connection after an error answer only if no body is unread.
	keepOnError := req.keepAlive && !req.hasBody()

	// Host: the authority of an absolute-form target wins over the field.
	var host []byte
	nhost := 0
	for i := range fields {
		if len(fields[i].name) == 4 && eqFold(fields[i].name, "host") {
			host = fields[i].value
			nhost++
		}
	}
	if nhost > 1 || nhost == 0 && !req.http10 {
		return c.writeError(400, "missing or repeated Host field\n", false)
	}
	if auth, ok := absoluteAuthority(target); ok {
		host = auth
	}
	var keyBuf [256]byte
	key, ok := hostKey(keyBuf[:0], host)
	if !ok {
		return c.writeError(400, "invalid Host\n", false)
	}
	rt := c.p.table.Load().byHost[string(key)]
	if rt == nil {
		return c.writeError(404, "no app is routed at host "+strconv.Quote(string(key))+"\n", keepOnError)
	}
	if len(rt.backends) == 0 {
		return c.writeErrorHeader(503, rt.msg503, "Retry-After: 5\r\nCache-Control: no-store\r\n", keepOnError)
	}

	// The forwarded head.
	out := c.out[:0]
	out = append(out, line[:sp1+1+sp2+1]...)
	if req.http10 {
		out = append(out, "HTTP/1.0\r\n"...)
	} else {
		out = append(out, "HTTP/1.1\r\n"...)
	}
	var reqID []byte
	nxff := 0
	for i := range fields {
		f := &fields[i]
		if ci.hopByHop(f.name) {
			continue
		}
		switch len(f.name) {
		case 12:
			if eqFold(f.name, "x-request-id") {
				if validRequestID(f.value) {
					reqID = f.value
				}
				continue
			}
		case 15:
			if eqFold(f.name, "x-forwarded-for") {
				nxff++
				continue
			}
		case 16:
			if eqFold(f.name, "x-forwarded-host") {
				continue
			}
		case 17:
			if eqFold(f.name, "x-forwarded-proto") {
				continue
			}
		}
		out = append(out, f.name...)
		out = append(out, ": "...)
		out = append(out, f.value...)
		out = append(out, "\r\n"...)
	}
	if req.chunked {
		out = append(out, "Transfer-Encoding: chunked\r\n"...)
	} else if ci.hasLength {
		out = append(out, "Content-Length: "...)
		out = strconv.AppendInt(out, ci.length, 10)
		out = append(out, "\r\n"...)
	}
	if req.upgrade {
		out = append(out, "Connection: Upgrade\r\nUpgrade: "...)
		out = append(out, ci.upgradeValue...)
		out = append(out, "\r\n"...)
	} else if req.http10 && req.keepAlive {
		out = append(out, "Connection: keep-alive\r\n"...)
	}
	out = append(out, "X-Forwarded-For: "...)
	if nxff > 0 {
		for i := range fields {
			if len(fields[i].name) == 15 && eqFold(fields[i].name, "x-forwarded-for") && len(fields[i].value) > 0 {
				out = append(out, fields[i].value...)
				out = append(out, ", "...)
			}
		}
	}
	out = append(out, c.ip...)
	if c.tcp != nil {
		out = append(out, "\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: "...)
	} else {
		out = append(out, "\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: "...)
	}
	out = append(out, host...)
	out = append(out, "\r\nX-Request-Id: "...)
	if reqID != nil {
		out = append(out, reqID...)
	} else {
		out = c.p.newRequestID(out)
	}
	out = append(out, "\r\n\r\n"...)

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
	if req.bodyLeft || req.upgrade {
		// Reads of a body or a tunnel may take any time.
		c.c.SetReadDeadline(time.Time{})
		c.deadlineAt = 0
	}
	return c.forward(rt, &req, keepOnError)
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
	if _, err := c.Write(out); err != nil {
		return false
	}
	return keep
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
	return c.c.Write(b)
}

// ReadFrom copies r to the client until EOF (or the limit, when r is an
// *io.LimitedReader) in slices of writeSlice bytes, each within the write
// timeout. Over plain HTTP each slice is spliced in the kernel when r is a
// TCP connection.
func (c *clientConn) ReadFrom(r io.Reader) (n int64, err error) {
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
	case 431:
		return "Request Header Fields Too Large"
	case 502:
		return "Bad Gateway"
	case 503:
		return "Service Unavailable"
	case 505:
		return "HTTP Version Not Supported"
	}
	return "Error"
}

// validTarget checks a request target: visible ASCII and obs-text only.
func validTarget(t []byte) bool {
	if len(t) == 0 {
		return false
	}
	for _, c := range t {
		if c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// absoluteAuthority returns the authority of an absolute-form target.
func absoluteAuthority(t []byte) ([]byte, bool) {
	var rest []byte
	switch {
	case len(t) > 7 && eqFold(t[:7], "http://"):
		rest = t[7:]
	case len(t) > 8 && eqFold(t[:8], "https://"):
		rest = t[8:]
	default:
		return nil, false
	}
	if i := bytes.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i]
	}
	if i := bytes.LastIndexByte(rest, '@'); i >= 0 {
		rest = rest[i+1:]
	}
	return rest, true
}

// hostKey turns a Host value into the table key: port stripped, lower
// case, no trailing dot.
func hostKey(dst, host []byte) ([]byte, bool) {
	if len(host) > 0 && host[0] == '[' {
		end := bytes.IndexByte(host, ']')
		if end < 0 {
			return nil, false
		}
		host = host[:end+1]
	} else if i := bytes.LastIndexByte(host, ':'); i >= 0 {
		for _, d := range host[i+1:] {
			if d < '0' || d > '9' {
				return nil, false
			}
		}
		host = host[:i]
	}
	if n := len(host); n > 0 && host[n-1] == '.' {
		host = host[:n-1]
	}
	for _, ch := range host {
		if ch <= ' ' || ch == 0x7f || ch == '/' || ch == '\\' || ch == '@' {
			return nil, false
		}
		dst = append(dst, lower(ch))
	}
	return dst, true
}

// validRequestID accepts 1 to 200 characters of letters, digits and -_.:+/=@.
func validRequestID(v []byte) bool {
	if len(v) == 0 || len(v) > 200 {
		return false
	}
	for _, c := range v {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-' || c == '_' || c == '.' || c == ':' || c == '+' || c == '/' || c == '=' || c == '@':
		default:
			return false
		}
	}
	return true
}
