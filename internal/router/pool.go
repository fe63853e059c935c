package router

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	backendBufSize        = 16 << 10
	maxIdlePerHost        = 512 // idle keep-alive connections kept per backend
	defaultConnectTimeout = 2 * time.Second
	downFor               = time.Second     // a backend that refused a connection is passed over this long
	downForTimeout        = 5 * time.Second // and one that let a connection attempt time out, this long
)

// A backend's health, as the forwarding path sees it:
//
//	up ──dial failed──► down ──window over──► probing ──dial succeeded──► up
//	                     ▲                       │
//	                     └───── dial failed ─────┘
//
// A refused dial makes the backend down for 1 s, a timed-out one for 5 s
// (Config.Now is the clock). When the window is over, the first request
// to pick the backend may dial it; the others pass it over until that
// probe ends or one connect timeout has passed. Passed over means pick
// prefers the other backends; when every backend of a route is down, pick
// still chooses among them. Only a dial ends a down window: an overloaded
// backend (its accept queue full, so new connections time out) still
// answers on its pooled connections, and should get fewer requests, not
// more. The control plane's health checks remain what removes an instance
// from the table.

// backend is one instance address with its pool of keep-alive connections.
// The pool is a LIFO stack, so the connections in use stay warm and the
// surplus ages out (see backendSet.sweep).
type backend struct {
	addr      string
	set       *backendSet // dialer and clock
	inflight  atomic.Int64
	downUntil atomic.Int64 // unix nanoseconds (set.now); 0 when up

	mu      sync.Mutex
	idle    []*bconn
	removed bool // no longer in the table: idle connections are closed, not kept
}

func newBackend(addr string, set *backendSet) *backend {
	return &backend{addr: addr, set: set}
}

// bconn is a connection to a backend with its read buffer.
type bconn struct {
	c      *net.TCPConn
	r      bufReader
	b      *backend
	reused bool
	idleAt int64
}

// isDown reports whether the backend recently failed a connection attempt.
// When its window is over, the first caller gets false (it may probe the
// backend) and the others true until the probe ends or one connect
// timeout has passed. now caches the clock across calls.
func (b *backend) isDown(now *int64) bool {
	d := b.downUntil.Load()
	if d == 0 {
		return false
	}
	if *now == 0 {
		*now = b.set.now()
	}
	if *now < d {
		return true
	}
	return !b.downUntil.CompareAndSwap(d, *now+int64(b.set.dialer.Timeout))
}

// markDown passes the backend over for a while after a failed dial.
func (b *backend) markDown(err error) {
	window := downFor
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		window = downForTimeout
	}
	b.downUntil.Store(b.set.now() + int64(window))
}

// get returns an idle connection or dials a new one.
func (b *backend) get() (*bconn, error) {
	b.mu.Lock()
	if n := len(b.idle); n > 0 {
		bc := b.idle[n-1]
		b.idle[n-1] = nil
		b.idle = b.idle[:n-1]
		b.mu.Unlock()
		bc.reused = true
		return bc, nil
	}
	b.mu.Unlock()
	return b.dial()
}

// dial connects within the set's connect timeout.
func (b *backend) dial() (*bconn, error) {
	c, err := b.set.dialer.Dial("tcp", b.addr)
	if err != nil {
		b.markDown(err)
		return nil, err
	}
	b.downUntil.Store(0)
	tc, ok := c.(*net.TCPConn)
	if !ok {
		c.Close()
		return nil, syscall.EINVAL
	}
	bc := &bconn{c: tc, b: b}
	bc.r = bufReader{c: tc, buf: make([]byte, backendBufSize)}
	return bc, nil
}

// put returns a connection whose last exchange completed cleanly.
func (b *backend) put(bc *bconn) {
	if len(bc.r.buffered()) != 0 {
		bc.c.Close() // the backend sent more than its response
		return
	}
	bc.idleAt = b.set.now()
	b.mu.Lock()
	if b.removed || len(b.idle) >= maxIdlePerHost {
		b.mu.Unlock()
		bc.c.Close()
		return
	}
	b.idle = append(b.idle, bc)
	b.mu.Unlock()
}

// setRemoved marks the backend as dropped from (or back in) the table.
// Dropping closes its idle connections at once, so that no later request
// goes out on a connection the stopping instance is closing.
func (b *backend) setRemoved(removed bool) {
	b.mu.Lock()
	b.removed = removed
	var idle []*bconn
	if removed {
		idle, b.idle = b.idle, nil
	}
	b.mu.Unlock()
	for _, bc := range idle {
		bc.c.Close()
	}
}

func (b *backend) isRemoved() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.removed
}

// closeIdle closes every idle connection (after one turned out dead, the
// others to the same instance are suspect too).
func (b *backend) closeIdle() {
	b.closeIdleBefore(1<<63 - 1)
}

func (b *backend) closeIdleBefore(cutoff int64) {
	b.mu.Lock()
	var dead []*bconn
	kept := b.idle[:0]
	for _, bc := range b.idle {
		if bc.idleAt < cutoff {
			dead = append(dead, bc)
		} else {
			kept = append(kept, bc)
		}
	}
	for i := len(kept); i < len(b.idle); i++ {
		b.idle[i] = nil
	}
	b.idle = kept
	b.mu.Unlock()
	for _, bc := range dead {
		bc.c.Close()
	}
}

// alive reports whether an idle connection still looks open: no EOF and no
// unexpected byte waiting. It costs one non-blocking recv, so the proxy only
// asks before sending a request it could not retry.
func (bc *bconn) alive() bool {
	rc, err := bc.c.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	var buf [1]byte
	rerr := rc.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		ok = err == syscall.EAGAIN
		return true
	})
	return rerr == nil && ok
}
