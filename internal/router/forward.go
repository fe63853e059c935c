package router

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	goruntime "runtime"
	"strconv"
	"syscall"
	"time"
)

// This file is the backend half of the forwarding path: choosing a backend
// and retrying, writing the request, relaying the response (and a request
// body, and a tunnel after an upgrade).

// result of one exchange with a backend.
type result int

const (
	resDone        result = iota // the response went to the client
	resRetry                     // failed before any response byte; may go to another backend
	resFailed                    // failed before any byte reached the client; answer 502
	resTimeout                   // no response head within the response header timeout; answer 504
	resClientFault               // the client's request body was malformed, too slow or cut short
	resAborted                   // failed after bytes reached the client: close it
	resUnfit                     // an idle connection was found closed or holding stray bytes; nothing was sent
)

// errCut is the error of an exchange that starts after the shutdown grace.
var errCut = errors.New("shutting down")

// clientError wraps an error of reading the request body from the client.
type clientError struct{ err error }

func (e *clientError) Error() string { return "request body: " + e.err.Error() }
func (e *clientError) Unwrap() error { return e.err }

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// forward sends the request in c.out to a backend of rt, retrying on
// another connection or backend when that is safe, and relays the response.
func (c *clientConn) forward(rt *route, req *request, keepOnError bool) bool {
	var skipBuf [maxAttempts]*backend
	skip := skipBuf[:0]
	var lastErr error
	var last *backend
	for attempt := 0; attempt < maxAttempts; attempt++ {
		b := rt.pick(skip)
		if b == nil {
			break
		}
		last = b
		// A request without a body has its connection checked as it is
		// sent (see exchange).
		bc, err := b.get(req.bodyLeft)
		if err != nil {
			// Nothing was sent: any request may go elsewhere.
			lastErr = err
			skip = append(skip, b)
			continue
		}
		b.inflight.Add(1)
		res, keep, err := c.exchange(bc, req)
		b.inflight.Add(-1)
		if c.gone.Load() {
			c.p.log.Debug("client went away while its request was at the backend", "app", rt.app, "backend", b.addr, "remote", string(c.ip))
			return false
		}
		switch res {
		case resDone:
			return keep
		case resUnfit:
			// As in backend.get: the next idle connection, or a new one.
			// The idle ones are finite, so this ends.
			attempt--
			continue
		case resRetry:
			lastErr = err
			if bc.reused {
				// A keep-alive connection the backend closed: its other idle
				// connections are suspect too; try again on a fresh one.
				b.closeIdle()
			} else {
				skip = append(skip, b)
			}
			continue
		case resTimeout:
			c.p.log.Warn("backend did not answer in time", "app", rt.app, "backend", b.addr, "timeout", time.Duration(c.p.respTimeout))
			return c.writeError(504, rt.msg504, keepOnError && !req.bodyLeft)
		case resClientFault:
			return c.clientFault(rt, err)
		case resFailed:
			c.p.log.Warn("backend failed", "app", rt.app, "backend", b.addr, "err", err)
			return c.writeError(502, rt.msg502bad, keepOnError && !req.bodyLeft)
		default:
			if err != errCut {
				c.p.log.Warn("response aborted", "app", rt.app, "backend", b.addr, "err", err)
			}
			return false
		}
	}
	addr := ""
	if last != nil {
		addr = last.addr
	}
	c.p.log.Warn("no backend answered", "app", rt.app, "backend", addr, "err", lastErr)
	return c.writeError(502, rt.msg502, keepOnError && !req.bodyLeft)
}

// clientFault answers a request whose body the client failed to send: 400
// for a malformed body, 408 for one too slow, nothing to a client that
// went away. It is logged as the client's doing, not the app's.
func (c *clientConn) clientFault(rt *route, err error) bool {
	switch {
	case isTimeout(err):
		c.p.log.Info("request body not received in time", "app", rt.app, "remote", string(c.ip), "timeout", time.Duration(c.p.bodyTimeout))
		c.writeError(408, "request body not received in time\n", false)
	case errors.Is(err, errMalformed) || errors.Is(err, errChunkLineTooBig):
		c.p.log.Info("malformed request body from the client", "app", rt.app, "remote", string(c.ip), "err", err)
		c.writeError(400, "malformed request body\n", false)
	default:
		c.p.log.Debug("client went away while sending its request body", "app", rt.app, "remote", string(c.ip), "err", err)
	}
	return false
}

// exchange writes the request to bc and relays the response to the client.
// It owns bc: it returns it to the pool or closes it.
func (c *clientConn) exchange(bc *bconn, req *request) (res result, keepClient bool, err error) {
	reuse := false
	c.cur.Store(bc)
	defer func() {
		c.stopWatch()
		c.cur.Store(nil)
		if reuse {
			bc.b.put(bc)
		} else {
			bc.c.Close()
		}
	}()
	if c.p.cut.Load() {
		return resAborted, false, errCut
	}
	bc.r.nread = 0
	now := time.Now().UnixNano()
	rht := c.p.respTimeout
	if rht != 0 {
		if req.bodyLeft {
			// The wait starts once the body is sent (see sendBody).
			bc.r.disarm()
		} else {
			bc.r.arm(now, rht)
		}
	}
	// A request without a body to follow is written and then waited on in
	// one step (see rawIO.sendWait); one with a body is written, and its
	// body sent beside the wait for the answer.
	oneStep := bc.raw != nil && !req.bodyLeft
	waited := false
	var werr error
	if oneStep {
		c.startWaiting(now)
		n, stale, err := bc.raw.sendWait(c.out, bc.reused)
		if stale != peekEmpty {
			if stale == peekStray {
				bc.b.noteStray()
			}
			return resUnfit, false, nil // closed on the way out
		}
		werr = err
		if errors.Is(werr, syscall.EAGAIN) {
			_, werr = bc.write(c.out[n:])
		} else {
			waited = werr == nil
		}
	} else {
		_, werr = bc.write(c.out)
	}
	if werr != nil {
		if req.replayable {
			return resRetry, false, werr
		}
		return resFailed, false, werr
	}
	var bodyDone chan error
	if req.bodyLeft {
		bc.headIn = false
		bodyDone = make(chan error, 1)
		go c.sendBody(bc, *req, bodyDone)
	} else if !oneStep {
		c.startWaiting(now)
	}
	// waitBody settles the request body before the exchange ends.
	waitBody := func(answered bool) error {
		if bodyDone == nil {
			return nil
		}
		select {
		case err := <-bodyDone:
			bodyDone = nil
			return err
		default:
		}
		if answered {
			// Give the sender a moment to report the end of a body the
			// backend has read; a backend that answered without reading
			// the whole body gets the rest cut off.
			t := time.NewTimer(100 * time.Millisecond)
			select {
			case err := <-bodyDone:
				t.Stop()
				bodyDone = nil
				return err
			case <-t.C:
			}
		}
		// Stop the sender: its reads of the client, its writes to the
		// backend.
		c.bodyAbort.Store(true)
		c.c.SetReadDeadline(aLongTimeAgo)
		bc.c.Close()
		err := <-bodyDone
		bodyDone = nil
		c.bodyAbort.Store(false)
		c.r.rdl = deadlinePast
		if err == nil {
			err = errors.New("request body not fully sent")
		}
		return err
	}

	var ri connInfo
	var status []byte
	var code int
	if !waited {
		// As before reading the client's next request (see serve): the
		// answer is more often there when this goroutine reads.
		goruntime.Gosched()
	}
	for {
		head, err := bc.r.readHead()
		if err != nil {
			c.stopWatch()
			berr := waitBody(false)
			if _, ok := errors.AsType[*clientError](berr); ok {
				return resClientFault, false, berr
			}
			if isTimeout(err) {
				return resTimeout, false, err
			}
			if bc.r.nread == 0 && req.replayable {
				return resRetry, false, err
			}
			if berr != nil && !errors.Is(berr, net.ErrClosed) {
				err = berr
			}
			return resFailed, false, err
		}
		nl := bytes.IndexByte(head, '\n')
		status = head[:nl]
		if n := len(status); n > 0 && status[n-1] == '\r' {
			status = status[:n-1]
		}
		var ok bool
		if code, ok = parseStatusLine(status); !ok {
			waitBody(false)
			return resFailed, false, errMalformed
		}
		c.status = code
		fields, err := parseFields(head[nl+1:], c.h.fields[:0])
		c.h.fields = fields[:0]
		if err != nil {
			waitBody(false)
			return resFailed, false, err
		}
		ri = connInfo{}
		if err := ri.scan(fields); err != nil {
			waitBody(false)
			return resFailed, false, err
		}
		if code >= 200 || code == 101 {
			c.out = appendResponseHead(c.out[:0], status, fields, &ri)
			break
		}
		// 1xx (100 Continue, 103 Early Hints): relay, then read on.
		if !req.http10 {
			out := appendResponseHead(c.out[:0], status, fields, &ri)
			out = append(out, "\r\n"...)
			c.out = out
			if _, err := c.Write(out); err != nil {
				waitBody(false)
				return resAborted, false, err
			}
		}
	}
	c.stopWatch()
	if req.bodyLeft {
		bc.headMu.Lock()
		bc.headIn = true
		bc.headMu.Unlock()
	}

	if code == 101 {
		if !req.upgrade {
			waitBody(false)
			return resFailed, false, errors.New("backend switched protocols unasked")
		}
		if err := waitBody(false); err != nil {
			return resFailed, false, err
		}
		c.out = append(c.out, "Connection: Upgrade\r\nUpgrade: "...)
		c.out = append(c.out, ri.upgradeValue...)
		c.out = append(c.out, "\r\n\r\n"...)
		return resDone, false, c.tunnel(bc)
	}

	// Framing of the response body.
	const (
		bodyNone = iota
		bodyLength
		bodyChunked
		bodyUntilEOF
	)
	mode := bodyUntilEOF
	switch {
	case req.head || code == 204 || code == 304:
		mode = bodyNone
	case ri.chunked:
		mode = bodyChunked
	case ri.hasLength:
		mode = bodyLength
	}
	respVersion11 := len(status) >= 8 && status[7] == '1'
	reuse = mode != bodyUntilEOF && !ri.close && (respVersion11 || ri.keepAlive)
	keepClient = req.keepAlive && mode != bodyUntilEOF && !(req.http10 && mode == bodyChunked) && !c.p.shutting.Load()
	if mode != bodyNone && !(mode == bodyLength && int64(len(bc.r.buffered())) >= ri.length) {
		// The body may stream for any time: only the head had a deadline.
		bc.r.disarm()
	}

	out := c.out
	if mode == bodyChunked && !req.http10 {
		out = append(out, "Transfer-Encoding: chunked\r\n"...)
	}
	if ri.hasLength && code != 204 {
		out = append(out, "Content-Length: "...)
		out = strconv.AppendInt(out, ri.length, 10)
		out = append(out, "\r\n"...)
	}
	if !keepClient {
		out = append(out, "Connection: close\r\n"...)
	} else if req.http10 {
		out = append(out, "Connection: keep-alive\r\n"...)
	}
	out = append(out, "\r\n"...)

	cp := bodyCopier{dst: c, src: &bc.r, out: out}
	switch mode {
	case bodyNone:
		err = cp.flush()
	case bodyLength:
		err = cp.copyLength(ri.length)
	case bodyChunked:
		err = cp.copyChunked(req.http10)
	case bodyUntilEOF:
		err = cp.copyUntilEOF()
	}
	c.out = cp.out
	if err != nil {
		reuse = false
		waitBody(true)
		return resAborted, false, err
	}
	if berr := waitBody(true); berr != nil {
		reuse = false
		keepClient = false
	}
	return resDone, keepClient, nil
}

// sendBody copies the rest of the request body to the backend, each read
// from the client within the body timeout. Once the body is sent, the
// response header timeout starts, unless the response head came first.
func (c *clientConn) sendBody(bc *bconn, req request, done chan<- error) {
	p := c.p
	bp := p.bufs.Get().(*[]byte)
	cp := bodyCopier{dst: bc.c, src: &c.r, out: (*bp)[:0], dropUnderscores: true}
	var sp *[]byte
	c.r.abort = &c.bodyAbort
	defer func() { c.r.abort = nil }()
	if p.bodyTimeout != 0 {
		c.r.bodyTimeout = p.bodyTimeout
		if !req.chunked {
			sp = p.tlsBufs.Get().(*[]byte)
			cp.scratch = *sp
		}
	}
	var err error
	if req.chunked {
		err = cp.copyChunked(false)
	} else {
		err = cp.copyLength(req.length)
	}
	c.r.bodyTimeout = 0
	if sp != nil {
		p.tlsBufs.Put(sp)
	}
	if cap(cp.out) == clientBufSize {
		*bp = cp.out[:clientBufSize]
		p.bufs.Put(bp)
	}
	if err != nil {
		// Who failed: with a body timeout (or chunks), every write went
		// through the copier, which keeps its write error; without, only
		// the framing errors are surely the client's. A copy the exchange
		// stopped (the backend answered or failed) is not the client's
		// doing. Decided before the close below, which the exchange sees.
		stopped := c.bodyAbort.Load() || errors.Is(err, errBodyAborted)
		if !stopped && cp.werr == nil && (p.bodyTimeout != 0 || req.chunked ||
			errors.Is(err, errMalformed) || errors.Is(err, errUnexpectedEOF) || errors.Is(err, errChunkLineTooBig)) {
			err = &clientError{err}
		}
		// The exchange cannot complete: unblock the response read.
		bc.c.Close()
	} else if p.respTimeout != 0 {
		bc.headMu.Lock()
		if !bc.headIn {
			bc.r.arm(time.Now().UnixNano(), p.respTimeout)
		}
		bc.headMu.Unlock()
	}
	done <- err
}

// tunnel relays bytes both ways after a 101 Switching Protocols, until
// either side closes.
func (c *clientConn) tunnel(bc *bconn) error {
	cp := bodyCopier{dst: c, src: &bc.r, out: c.out}
	if _, err := cp.take(int64(len(bc.r.buffered()))); err != nil {
		return err
	}
	if err := cp.flush(); err != nil {
		return err
	}
	c.out = cp.out
	c.c.SetDeadline(time.Time{})
	c.r.rdl = 0
	bc.r.disarm()
	up := make(chan error, 1)
	go func() {
		var err error
		if buf := c.r.buffered(); len(buf) > 0 {
			_, err = bc.c.Write(buf)
			c.r.discard(len(buf))
		}
		if err == nil {
			_, err = io.Copy(bc.c, c.c)
		}
		bc.c.Close()
		c.c.Close()
		up <- err
	}()
	_, err := io.Copy(c.c, bc.c)
	bc.c.Close()
	c.c.Close()
	<-up
	return err
}

// appendResponseHead appends the status line (as HTTP/1.1) and the
// end-to-end fields of a response, without the final blank line and
// without framing fields.
func appendResponseHead(out, status []byte, fields []field, ci *connInfo) []byte {
	out = append(out, "HTTP/1.1"...)
	out = append(out, status[8:]...)
	out = append(out, "\r\n"...)
	for i := range fields {
		f := &fields[i]
		if ci.hopByHop(f.name, fields) {
			continue
		}
		out = append(out, f.name...)
		out = append(out, ": "...)
		out = append(out, f.value...)
		out = append(out, "\r\n"...)
	}
	return out
}

// parseStatusLine checks "HTTP/1.x NNN[ reason]" and returns the code.
func parseStatusLine(s []byte) (int, bool) {
	if len(s) < 12 || string(s[:7]) != "HTTP/1." || (s[7] != '0' && s[7] != '1') || s[8] != ' ' {
		return 0, false
	}
	code := 0
	for _, d := range s[9:12] {
		if d < '0' || d > '9' {
			return 0, false
		}
		code = code*10 + int(d-'0')
	}
	if code < 100 || len(s) > 12 && s[12] != ' ' {
		return 0, false
	}
	for _, c := range s[12:] {
		if c < ' ' && c != '\t' || c == 0x7f {
			return 0, false
		}
	}
	return code, true
}
