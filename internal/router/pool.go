package router

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

const (
	backendBufSize        = 16 << 10
	maxIdlePerHost        = 512 // idle keep-alive connections kept per backend
	defaultConnectTimeout = 2 * time.Second
	downFor               = time.Second     // a backend that refused a connection is passed over this long
	downForTimeout        = 5 * time.Second // and one that let a connection attempt time out, this long
	downForImpostor       = 5 * time.Second // and one whose port another user holds, this long
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
	addr       string
	uid        uint32      // the user that must own the server side of its connections
	checkOwner bool        // check it (unless the table entry is from an older router)
	app        string      // for logs
	set        *backendSet // dialer and clock
	inflight   atomic.Int64
	downUntil  atomic.Int64 // unix nanoseconds (set.now); 0 when up
	impostor   atomic.Int64 // the owner found on the port when it was not uid; -1: none
	warnedAt   atomic.Int64 // when an impostor was last logged (set.now)
	strayAt    atomic.Int64 // when stray bytes on an idle connection were last logged (set.now)

	mu      sync.Mutex
	idle    []*bconn
	removed bool // no longer in the table: idle connections are closed, not kept
}

func newBackend(addr string, set *backendSet) *backend {
	b := &backend{addr: addr, set: set}
	b.impostor.Store(-1)
	return b
}

// bconn is a connection to a backend with its read buffer.
type bconn struct {
	c      *net.TCPConn
	fd     int    // c's descriptor, for the idle check; valid while c is open
	raw    *rawIO // raw reads and writes of c (see rawio.go)
	r      bufReader
	b      *backend
	reused bool
	idleAt int64

	// Whether the response head of the exchange in progress came in, when
	// a request body is sent meanwhile (see sendBody).
	headMu sync.Mutex
	headIn bool
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

// get returns an idle connection or dials a new one. An idle connection is
// used only if nothing waits to be read on it: bytes there are no answer
// to the request about to be sent (a stray second response, the late body
// of a HEAD response) and would reach the wrong client, so such a
// connection is closed, as is one the backend closed. With check false
// the caller makes that check itself, as part of sending (see
// rawIO.sendWait).
func (b *backend) get(check bool) (*bconn, error) {
	for {
		b.mu.Lock()
		n := len(b.idle)
		if n == 0 {
			b.mu.Unlock()
			return b.dial()
		}
		bc := b.idle[n-1]
		b.idle[n-1] = nil
		b.idle = b.idle[:n-1]
		b.mu.Unlock()
		if !check && bc.raw != nil {
			bc.reused = true
			return bc, nil
		}
		pr := bc.peek()
		if pr == peekEmpty {
			bc.reused = true
			return bc, nil
		}
		if pr == peekStray {
			b.noteStray()
		}
		bc.c.Close()
	}
}

// noteStray logs, at most once a minute, that an idle connection held
// bytes no request asked for (and was closed).
func (b *backend) noteStray() {
	now := b.set.now()
	if last := b.strayAt.Load(); (last == 0 || now-last >= int64(time.Minute)) && b.strayAt.CompareAndSwap(last, now) {
		b.set.log.Warn("backend sent bytes no request asked for on an idle connection; closed it",
			"app", b.app, "backend", b.addr)
	}
}

// dial connects within the set's connect timeout, and checks that the
// listener that accepted the connection belongs to the backend's user.
func (b *backend) dial() (*bconn, error) {
	c, err := b.set.dialer.Dial("tcp", b.addr)
	if err != nil {
		b.markDown(err)
		return nil, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		c.Close()
		return nil, syscall.EINVAL
	}
	if b.checkOwner {
		if err := b.verifyOwner(tc); err != nil {
			tc.Close()
			return nil, err
		}
	}
	b.downUntil.Store(0)
	bc := &bconn{c: tc, b: b, fd: -1, raw: newRawIO(tc)}
	bc.r = bufReader{c: tc, buf: make([]byte, backendBufSize), raw: bc.raw}
	if rc, err := tc.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { bc.fd = int(fd) })
	}
	return bc, nil
}

// verifyOwner asks the kernel who owns the server side of tc. Another
// user's listener on the port (an app squatting it while the instance
// restarts) makes the backend down for downForImpostor; the impostor is
// logged at most once a minute per backend and reported in Status.
func (b *backend) verifyOwner(tc *net.TCPConn) error {
	local, lok := tc.LocalAddr().(*net.TCPAddr)
	remote, rok := tc.RemoteAddr().(*net.TCPAddr)
	if !lok || !rok {
		return syscall.EINVAL
	}
	uid, err := b.set.owners.owner(local.AddrPort(), remote.AddrPort())
	if err != nil {
		b.downUntil.Store(b.set.now() + int64(downFor))
		return fmt.Errorf("check who owns %s: %w", b.addr, err)
	}
	if uid == b.uid {
		b.impostor.Store(-1)
		return nil
	}
	now := b.set.now()
	b.downUntil.Store(now + int64(downForImpostor))
	b.impostor.Store(int64(uid))
	if last := b.warnedAt.Load(); (last == 0 || now-last >= int64(time.Minute)) && b.warnedAt.CompareAndSwap(last, now) {
		b.set.log.Warn("backend port held by another user; not sending it traffic",
			"app", b.app, "backend", b.addr, "want_uid", b.uid, "owner_uid", uid)
	}
	return fmt.Errorf("%s: %w (uid %d, want %d)", b.addr, errImpostor, uid, b.uid)
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

type peekResult int

const (
	peekEmpty  peekResult = iota // nothing to read: usable
	peekStray                    // bytes no request asked for
	peekClosed                   // EOF or an error: the backend closed it
)

// peek looks at an idle connection without blocking and without the
// poller: one non-blocking MSG_PEEK recv on its descriptor. The caller
// owns bc (it is out of the pool), so the descriptor is open.
func (bc *bconn) peek() peekResult {
	if bc.fd < 0 {
		return peekClosed
	}
	return peekFD(uintptr(bc.fd))
}

// peekFD is peek on an open descriptor.
func peekFD(fd uintptr) peekResult {
	var buf [1]byte
	n, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&buf[0])), 1,
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	switch {
	case errno == syscall.EAGAIN:
		return peekEmpty
	case errno != 0 || n == 0:
		return peekClosed
	}
	return peekStray
}

// write writes b to the backend.
func (bc *bconn) write(b []byte) (int, error) {
	if bc.raw != nil {
		return bc.raw.write(b)
	}
	return bc.c.Write(b)
}
