package router

import (
	"io"
	"net"
	"syscall"
	"unsafe"
)

// rawIO reads and writes a plain TCP connection with raw system calls
// inside the connection's own RawConn callbacks. It is what net.Conn's
// Read and Write do, less the scheduler's bookkeeping around a blocking
// system call: the sockets are non-blocking, so read and write return at
// once, and telling the scheduler (entersyscall/exitsyscall) only costs
// time, and makes its monitor thread wake up every 20 µs to hand off the
// processors it sees in system calls. A profile of the router under load
// spent about a tenth of its time there.
//
// Going through the RawConn keeps net.Conn's guarantees: the descriptor
// stays open while it is in use (a concurrent Close waits), deadlines
// apply, and EAGAIN parks the goroutine in the poller. The callbacks are
// made once per connection, so a call allocates nothing.
type rawIO struct {
	rc syscall.RawConn
	r  rawOp // the read in progress
	w  rawOp // the write in progress (may run beside a read)
	s  rawOp // the sendWait in progress (instead of a read)
}

// rawOp is the state of one read or write and its callback.
type rawOp struct {
	buf   []byte
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) bool
	// sendWait's: check the connection first; what the check found; all
	// of buf is written.
	check bool
	stale peekResult
	sent  bool
}

// newRawIO returns the raw I/O of c, or nil if c offers none.
func newRawIO(c *net.TCPConn) *rawIO {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	x := &rawIO{rc: rc}
	r, w := &x.r, &x.w
	r.fn = func(fd uintptr) bool {
		for {
			n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(unsafe.SliceData(r.buf))), uintptr(len(r.buf)))
			switch e {
			case syscall.EAGAIN:
				return false // wait until readable
			case syscall.EINTR:
				continue
			}
			r.n, r.errno = int(n), e
			return true
		}
	}
	sw := &x.s
	sw.fn = func(fd uintptr) bool {
		if sw.sent {
			return true // readable, or woken for nothing: the read that follows tells
		}
		if sw.check {
			// After the poller forgot the old readiness: whatever the
			// backend sends from now on (a FIN too) wakes the wait.
			sw.check = false
			if sw.stale = peekFD(fd); sw.stale != peekEmpty {
				return true
			}
		}
		if e := sw.writeAll(fd); e != 0 {
			sw.errno = e // EAGAIN too: the caller writes the rest the usual way
			return true
		}
		sw.sent = true
		return false // wait until readable
	}
	w.fn = func(fd uintptr) bool {
		e := w.writeAll(fd)
		if e == syscall.EAGAIN {
			return false // wait until writable
		}
		w.errno = e
		return true
	}
	return x
}

// writeAll writes op.buf to fd until it is all written (0) or a write
// fails (EAGAIN included), counting in op.n what went.
func (op *rawOp) writeAll(fd uintptr) syscall.Errno {
	for len(op.buf) > 0 {
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(unsafe.SliceData(op.buf))), uintptr(len(op.buf)))
		switch e {
		case 0:
			op.n += int(n)
			op.buf = op.buf[n:]
		case syscall.EINTR:
		default:
			return e
		}
	}
	return 0
}

// read reads into b as net.Conn's Read does (io.EOF at the end).
func (x *rawIO) read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	r := &x.r
	r.buf, r.n, r.errno = b, 0, 0
	err := x.rc.Read(r.fn)
	r.buf = nil
	if err != nil {
		return 0, err // closed, or a deadline
	}
	if r.errno != 0 {
		return 0, &net.OpError{Op: "read", Net: "tcp", Err: r.errno}
	}
	if r.n == 0 {
		return 0, io.EOF
	}
	return r.n, nil
}

// write writes all of b as net.Conn's Write does.
func (x *rawIO) write(b []byte) (int, error) {
	w := &x.w
	w.buf, w.n, w.errno = b, 0, 0
	err := x.rc.Write(w.fn)
	w.buf = nil
	if err != nil {
		return w.n, err
	}
	if w.errno != 0 {
		return w.n, &net.OpError{Op: "write", Net: "tcp", Err: w.errno}
	}
	return w.n, nil
}

// sendWait writes b, a request that has no body to follow, and waits until
// the connection is readable, which is when its answer has begun to
// arrive. It saves the read that finds nothing which a read right after
// the write would mostly make (a system call, then the same wait): the
// poller forgets a connection's readiness when a read starts, so a read
// must try before it waits, but the readiness sendWait waits for comes
// after its write, which comes after the poller forgot.
//
// With check, it first peeks, as backend.get does for an idle connection,
// but after the poller forgot: something that arrived before (a FIN, stray
// bytes) is found by the peek, and whatever arrives after wakes the wait.
// If the peek finds something, sendWait writes nothing and returns what
// it found.
//
// It returns how much of b it wrote. If that is less than len(b) (the
// socket's buffer is full, or an error, or the connection was closed or
// its read deadline had passed before the call), err says why; on EAGAIN
// the caller writes the rest the usual way. A wait that fails after the
// write (a deadline, the connection closed) is not reported: the read that
// follows meets it.
func (x *rawIO) sendWait(b []byte, check bool) (int, peekResult, error) {
	s := &x.s
	s.buf, s.n, s.errno, s.sent, s.check, s.stale = b, 0, 0, false, check, peekEmpty
	err := x.rc.Read(s.fn)
	s.buf = nil
	switch {
	case s.stale != peekEmpty:
		return 0, s.stale, nil
	case s.sent:
		return s.n, peekEmpty, nil
	case s.errno != 0:
		return s.n, peekEmpty, &net.OpError{Op: "write", Net: "tcp", Err: s.errno}
	case err != nil:
		return s.n, peekEmpty, err
	}
	return s.n, peekEmpty, io.ErrShortWrite
}
