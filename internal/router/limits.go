package router

import (
	"io"
	"net"
	"net/netip"
	"strconv"
	"time"
)

// Connection limits: Config.MaxConns client connections in total and
// Config.MaxConnsPerIP from one address. A connection over a limit first
// makes room, as nginx does when it runs out of connections: the oldest
// idle connection (waiting for a request head, or still in its TLS
// handshake) of that address, or of all addresses for the total limit, is
// closed. Only when none is idle is the new client turned away: with a 503
// and a close on plain HTTP, with a close over TLS. So idle connections,
// however many a client opens, cannot keep anyone out, and the router's
// file descriptors and memory stay bounded by the limits.
//
// Every connection is on two lists, oldest first: all of them, and those
// of its address. Both are guarded by proxy.mu, like admission.

// The lists a client connection is on.
const (
	allList = iota
	ipList
)

// evictScan bounds how many of the oldest connections are looked at for
// an idle one, so that a flood of new connections costs bounded work.
const evictScan = 256

type connLinks struct{ prev, next *clientConn }

// connList is an intrusive list of client connections, oldest first.
type connList struct {
	head, tail *clientConn
	n          int
}

func (l *connList) pushBack(c *clientConn, which int) {
	c.links[which] = connLinks{prev: l.tail}
	if l.tail != nil {
		l.tail.links[which].next = c
	} else {
		l.head = c
	}
	l.tail = c
	l.n++
}

func (l *connList) remove(c *clientConn, which int) {
	lk := &c.links[which]
	if lk.prev != nil {
		lk.prev.links[which].next = lk.next
	} else {
		l.head = lk.next
	}
	if lk.next != nil {
		lk.next.links[which].prev = lk.prev
	} else {
		l.tail = lk.prev
	}
	*lk = connLinks{}
	l.n--
}

// conns returns the number of client connections.
func (p *proxy) conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.all.n
}

// admitLocked lists c if the limits allow it, after evicting an idle
// connection if one is needed and can be found.
func (p *proxy) admitLocked(c *clientConn) bool {
	var ips *connList
	if p.maxPerIP > 0 {
		ips = p.byIP[c.addr]
		if ips != nil && ips.n >= p.maxPerIP && !p.evictLocked(ips, ipList) {
			return false
		}
	}
	if p.maxConns > 0 && p.all.n >= p.maxConns && !p.evictLocked(&p.all, allList) {
		return false
	}
	p.all.pushBack(c, allList)
	if p.maxPerIP > 0 {
		if ips == nil {
			ips = &connList{}
			p.byIP[c.addr] = ips
		}
		ips.pushBack(c, ipList)
		c.ipList = ips
	}
	c.listed = true
	return true
}

// evictLocked closes the oldest idle connection of l, if any.
func (p *proxy) evictLocked(l *connList, which int) bool {
	n := 0
	for c := l.head; c != nil && n < evictScan; c = c.links[which].next {
		if c.state.CompareAndSwap(stateIdle, stateClosing) {
			p.unlistLocked(c)
			// Closing the TCP connection ends its goroutine's read (or
			// TLS handshake); that goroutine sees it is closing and stops.
			c.raw.Close()
			return true
		}
		n++
	}
	return false
}

// unlistLocked takes c off the lists (idempotent).
func (p *proxy) unlistLocked(c *clientConn) {
	if !c.listed {
		return
	}
	c.listed = false
	p.all.remove(c, allList)
	if ips := c.ipList; ips != nil {
		ips.remove(c, ipList)
		if ips.n == 0 {
			delete(p.byIP, c.addr)
		}
		c.ipList = nil
	}
}

const overLimitBody = "too many connections; try again later\n"

var overLimitResponse = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: 5\r\nConnection: close\r\nContent-Length: " +
	strconv.Itoa(len(overLimitBody)) + "\r\n\r\n" + overLimitBody

// rejectLocked turns away a connection over a limit: on plain HTTP a 503
// is written and the connection closed once the client has read it (in a
// goroutine, at most a second, at most 64 at once); over TLS, or beyond
// those 64, the connection is just closed.
func (p *proxy) rejectLocked(tc *net.TCPConn, addr netip.Addr, isTLS bool) {
	now := time.Now().UnixNano()
	if now-p.limitLog >= int64(time.Minute) {
		p.limitLog = now
		p.log.Warn("connection limit reached; turning clients away (logged once a minute)",
			"remote", addr.String(), "connections", p.all.n, "max", p.maxConns, "max_per_ip", p.maxPerIP)
	}
	if isTLS {
		tc.Close()
		return
	}
	select {
	case p.rejecting <- struct{}{}:
	default:
		tc.Close()
		return
	}
	p.wg.Add(1)
	go func() {
		defer func() { <-p.rejecting; p.wg.Done() }()
		tc.SetDeadline(time.Now().Add(time.Second))
		if _, err := io.WriteString(tc, overLimitResponse); err == nil {
			// Closing with the request unread would reset the connection
			// and may discard the answer: read what the client sent first.
			tc.CloseWrite()
			io.Copy(io.Discard, io.LimitReader(tc, 64<<10))
		}
		tc.Close()
	}()
}
