package router

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// This file answers one question about a connection the router just
// opened to a backend: which user owns the socket at the other end? Apps
// share the host's loopback, so any app may bind the port of another app's
// instance while that instance restarts; the table says which user each
// instance runs as (Backend.UID), and the router sends traffic only over
// connections accepted by a listener of that user.
//
// The kernel knows: an accepted socket is a copy of the listener that
// accepted it, owner included, so the owner of the server side of this
// exact connection (its 4-tuple) is the owner of the listener that took
// it. There is no race with a port changing hands: the connection exists,
// and so does its owner. The answer comes from sock_diag (NETLINK_SOCK_DIAG,
// an exact lookup by 4-tuple, what ss(8) uses), or, where sock_diag is not
// available, from /proc/net/tcp and /proc/net/tcp6.
//
// Only new connections are checked: they are pooled, so this costs a few
// system calls per connection, not per request.

// errOwnerUnknown is returned when the kernel has no full socket for the
// server side of the connection (it closed already, or is still a
// half-open request): the connection is not used.
var errOwnerUnknown = errors.New("the kernel reports no owner for the server side of the connection")

// errImpostor wraps the error of a connection accepted by a listener of
// another user than the backend's.
var errImpostor = errors.New("the port is held by another user")

// ownerLookup finds the owner of the server side of a TCP connection. It
// is safe for concurrent use; lookups are serialized on one netlink socket.
type ownerLookup struct {
	mu      sync.Mutex
	fd      int  // the NETLINK_SOCK_DIAG socket; -1 until opened
	checked bool // sock_diag was tried on a connection of our own
	proc    bool // sock_diag is not available: read /proc/net/tcp{,6}
	seq     uint32
	buf     []byte
}

func newOwnerLookup() *ownerLookup { return &ownerLookup{fd: -1} }

// forceProc makes the lookup read /proc/net/tcp{,6} (for tests of the
// fallback).
func (o *ownerLookup) forceProc() {
	o.mu.Lock()
	o.checked, o.proc = true, true
	o.mu.Unlock()
}

// close releases the netlink socket.
func (o *ownerLookup) close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.fd >= 0 {
		unix.Close(o.fd)
		o.fd = -1
	}
}

// TCP states as the kernel numbers them (include/net/tcp_states.h).
const (
	tcpSynRecv    = 3
	tcpTimeWait   = 6
	tcpListen     = 10
	tcpNewSynRecv = 12
)

// owner returns the uid that owns the server side of the connection from
// local (this process's end) to remote.
func (o *ownerLookup) owner(local, remote netip.AddrPort) (uint32, error) {
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.checked {
		o.checked = true
		// Our own end of the connection must be found, owned by us: if
		// it is not, sock_diag does not work here (a kernel without
		// inet_diag answers ENOENT to everything).
		uid, _, err := o.diag(remote, local)
		if err != nil || uid != uint32(os.Geteuid()) {
			o.proc = true
		}
	}
	if o.proc {
		return procOwner(remote, local)
	}
	// After connect returns, the server side may still be a request
	// socket for a moment (the last ACK of the handshake not yet
	// processed), which sock_diag reports without an owner: ask again.
	for try := 0; ; try++ {
		uid, state, err := o.diag(local, remote)
		if err != nil {
			return 0, err
		}
		switch state {
		case tcpSynRecv, tcpNewSynRecv:
			if try < 20 {
				time.Sleep(500 * time.Microsecond)
				continue
			}
			return 0, errOwnerUnknown
		case tcpTimeWait, tcpListen:
			return 0, errOwnerUnknown
		}
		return uid, nil
	}
}

// sizes of the sock_diag messages (linux/inet_diag.h)
const (
	nlmsgHdrLen   = 16
	diagSockIDLen = 48
	diagReqLen    = 8 + diagSockIDLen      // struct inet_diag_req_v2
	diagMsgLen    = 4 + diagSockIDLen + 20 // struct inet_diag_msg
)

// diag asks sock_diag for the socket whose local end is server and whose
// remote end is client, and returns its owner and state.
func (o *ownerLookup) diag(client, server netip.AddrPort) (uint32, uint8, error) {
	if o.fd < 0 {
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
		if err != nil {
			return 0, 0, fmt.Errorf("open sock_diag: %w", err)
		}
		// A reply always comes; the timeout only guards against a kernel
		// that never answers.
		tv := unix.Timeval{Sec: 2}
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			unix.Close(fd)
			return 0, 0, fmt.Errorf("open sock_diag: %w", err)
		}
		o.fd = fd
		o.buf = make([]byte, 8192)
	}
	o.seq++
	req := diagRequest(o.seq, client, server)
	if err := unix.Sendto(o.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		o.resetLocked()
		return 0, 0, fmt.Errorf("sock_diag request: %w", err)
	}
	for {
		n, _, err := unix.Recvfrom(o.fd, o.buf, 0)
		if err != nil {
			o.resetLocked()
			return 0, 0, fmt.Errorf("sock_diag reply: %w", err)
		}
		uid, state, done, err := parseDiagReply(o.buf[:n], o.seq)
		if done || err != nil {
			return uid, state, err
		}
		// A late reply to an earlier request: read on.
	}
}

// resetLocked drops a netlink socket in an unknown state.
func (o *ownerLookup) resetLocked() {
	if o.fd >= 0 {
		unix.Close(o.fd)
		o.fd = -1
	}
}

// diagRequest builds an exact-match SOCK_DIAG_BY_FAMILY request for the
// TCP socket whose local end is server and whose remote end is client.
func diagRequest(seq uint32, client, server netip.AddrPort) []byte {
	b := make([]byte, nlmsgHdrLen+diagReqLen)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(b[6:], unix.NLM_F_REQUEST)
	ne.PutUint32(b[8:], seq)
	r := b[nlmsgHdrLen:]
	family := byte(unix.AF_INET)
	if !server.Addr().Is4() || !client.Addr().Is4() {
		family = unix.AF_INET6
	}
	r[0], r[1] = family, unix.IPPROTO_TCP
	ne.PutUint32(r[4:], 0xffffffff) // every state
	id := r[8:]
	binary.BigEndian.PutUint16(id[0:], server.Port())
	binary.BigEndian.PutUint16(id[2:], client.Port())
	putDiagAddr(id[4:20], server.Addr(), family)
	putDiagAddr(id[20:36], client.Addr(), family)
	// id[36:40] is the interface (any); the cookie says "no cookie".
	ne.PutUint32(id[40:], 0xffffffff)
	ne.PutUint32(id[44:], 0xffffffff)
	return b
}

func putDiagAddr(dst []byte, a netip.Addr, family byte) {
	if family == unix.AF_INET {
		a4 := a.As4()
		copy(dst, a4[:])
		return
	}
	a16 := a.As16() // an IPv4 address becomes ::ffff:a.b.c.d
	copy(dst, a16[:])
}

// parseDiagReply reads the messages of one netlink datagram. done is true
// once the reply to seq was seen (a diag message or an error).
func parseDiagReply(b []byte, seq uint32) (uid uint32, state uint8, done bool, err error) {
	ne := binary.NativeEndian
	for len(b) >= nlmsgHdrLen {
		l := int(ne.Uint32(b[0:]))
		if l < nlmsgHdrLen || l > len(b) {
			return 0, 0, true, errors.New("sock_diag: truncated reply")
		}
		typ, mseq := ne.Uint16(b[4:]), ne.Uint32(b[8:])
		body := b[nlmsgHdrLen:l]
		b = b[(l+3)&^3:]
		if mseq != seq {
			continue
		}
		switch typ {
		case unix.NLMSG_ERROR:
			if len(body) < 4 {
				return 0, 0, true, errors.New("sock_diag: truncated error")
			}
			errno := -int32(ne.Uint32(body))
			if errno == 0 {
				continue // an acknowledgement
			}
			if unix.Errno(errno) == unix.ENOENT {
				return 0, 0, true, errOwnerUnknown
			}
			return 0, 0, true, fmt.Errorf("sock_diag: %w", unix.Errno(errno))
		case unix.SOCK_DIAG_BY_FAMILY:
			if len(body) < diagMsgLen {
				return 0, 0, true, errors.New("sock_diag: truncated message")
			}
			return ne.Uint32(body[4+diagSockIDLen+12:]), body[1], true, nil
		case unix.NLMSG_DONE:
			return 0, 0, true, errOwnerUnknown
		}
	}
	return 0, 0, false, nil
}

// procOwner finds the owner of the socket whose local end is server and
// whose remote end is client in /proc/net/tcp, or /proc/net/tcp6 (IPv6,
// and IPv4 connections accepted by dual-stack listeners). A socket still
// waiting for the end of its handshake is listed with its listener's owner.
func procOwner(server, client netip.AddrPort) (uint32, error) {
	files := []string{"/proc/net/tcp6"}
	if server.Addr().Is4() && client.Addr().Is4() {
		files = []string{"/proc/net/tcp", "/proc/net/tcp6"}
	}
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return 0, fmt.Errorf("read socket owners: %w", err)
		}
		uid, found, err := scanProcNet(f, procAddr(server, name != "/proc/net/tcp"), procAddr(client, name != "/proc/net/tcp"))
		f.Close()
		if err != nil {
			return 0, fmt.Errorf("read socket owners from %s: %w", name, err)
		}
		if found {
			return uid, nil
		}
	}
	return 0, errOwnerUnknown
}

// scanProcNet looks for the line of a /proc/net/tcp{,6} table with the
// given local and remote addresses (in the table's notation) and returns
// its uid. TIME_WAIT lines carry no owner and do not count.
func scanProcNet(f *os.File, local, remote string) (uint32, bool, error) {
	sc := bufio.NewScanner(f)
	sc.Scan() // the heading
	for sc.Scan() {
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid ...
		fields := bytes.Fields(sc.Bytes())
		if len(fields) < 8 || string(fields[1]) != local || string(fields[2]) != remote {
			continue
		}
		if st, err := strconv.ParseUint(string(fields[3]), 16, 8); err != nil || st == tcpTimeWait {
			continue
		}
		uid, err := strconv.ParseUint(string(fields[7]), 10, 32)
		if err != nil {
			return 0, false, fmt.Errorf("bad uid %q", fields[7])
		}
		return uint32(uid), true, nil
	}
	return 0, false, sc.Err()
}

// procAddr writes an address as /proc/net/tcp{,6} do: each 32-bit word of
// the address in network order, printed as a host-order hex number, then
// the port in hex.
func procAddr(ap netip.AddrPort, v6 bool) string {
	var raw []byte
	if v6 {
		a := ap.Addr().As16()
		raw = a[:]
	} else {
		a := ap.Addr().As4()
		raw = a[:]
	}
	word := make([]byte, 4)
	var out []byte
	for i := 0; i < len(raw); i += 4 {
		binary.BigEndian.PutUint32(word, binary.NativeEndian.Uint32(raw[i:i+4]))
		out = hex.AppendEncode(out, word)
	}
	return fmt.Sprintf("%s:%04X", bytes.ToUpper(out), ap.Port())
}
