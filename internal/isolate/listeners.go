package isolate

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Listener is a listening TCP socket and the user that owns it.
type Listener struct {
	Addr netip.Addr
	UID  uint32
}

// Takes reports whether a connection to 127.0.0.1 on the listener's port
// reaches the listener: it listens on 127.0.0.1 or on every address.
func (l Listener) Takes() bool {
	a := l.Addr.Unmap()
	return a == netip.AddrFrom4([4]byte{127, 0, 0, 1}) || a.IsUnspecified()
}

// ListenerOwners returns the TCP sockets listening on each port, IPv4 and
// IPv6. It asks the kernel for listening sockets alone (sock_diag), which
// costs the same however many connections there are; /proc/net/tcp, read
// where sock_diag is missing, lists every connection, thousands in
// TIME_WAIT on a busy machine.
func ListenerOwners() (map[int][]Listener, error) {
	if out, err := diagListeners(); err == nil {
		return out, nil
	}
	return procListeners()
}

// diagListeners lists the listening TCP sockets through NETLINK_SOCK_DIAG.
func diagListeners() (map[int][]Listener, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, err
	}
	out := map[int][]Listener{}
	buf := make([]byte, 64<<10)
	for seq, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		// struct nlmsghdr, then struct inet_diag_req_v2: family,
		// protocol, extensions, padding, the states wanted, and a socket
		// id of zeros (any).
		req := make([]byte, unix.NLMSG_HDRLEN+56)
		binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
		binary.NativeEndian.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
		binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
		binary.NativeEndian.PutUint32(req[8:], uint32(seq+1))
		req[16], req[17] = family, unix.IPPROTO_TCP
		binary.NativeEndian.PutUint32(req[20:], 1<<tcpListen)
		if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return nil, err
		}
	recv:
		for {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				return nil, err
			}
			msgs, err := syscall.ParseNetlinkMessage(buf[:n])
			if err != nil {
				return nil, err
			}
			for _, m := range msgs {
				switch m.Header.Type {
				case unix.NLMSG_DONE:
					break recv
				case unix.NLMSG_ERROR:
					if len(m.Data) >= 4 {
						if errno := int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
							return nil, syscall.Errno(-errno)
						}
					}
					return nil, errors.New("sock_diag: error")
				case unix.SOCK_DIAG_BY_FAMILY:
				default:
					continue
				}
				// struct inet_diag_msg: family, state, timer, retransmits,
				// then the socket id (source port at 4, big-endian; source
				// address at 8), and the uid at 64.
				d := m.Data
				if len(d) < 72 || d[1] != tcpListen {
					continue
				}
				port := int(binary.BigEndian.Uint16(d[4:]))
				var ip netip.Addr
				if d[0] == unix.AF_INET {
					ip = netip.AddrFrom4([4]byte(d[8:12]))
				} else {
					ip = netip.AddrFrom16([16]byte(d[8:24]))
				}
				out[port] = append(out[port], Listener{Addr: ip, UID: binary.NativeEndian.Uint32(d[64:])})
			}
		}
	}
	return out, nil
}

// tcpListen is TCP_LISTEN, the kernel's number of the listening state.
const tcpListen = 10

// procListeners lists the listening TCP sockets from /proc/net/tcp and
// /proc/net/tcp6.
func procListeners() (map[int][]Listener, error) {
	out := map[int][]Listener{}
	for _, name := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(name)
		if err != nil {
			if name == "/proc/net/tcp6" && os.IsNotExist(err) {
				continue // no IPv6
			}
			return nil, err
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // the header
		for sc.Scan() {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid ...
			fs := strings.Fields(sc.Text())
			if len(fs) < 8 || fs[3] != "0A" { // TCP_LISTEN
				continue
			}
			addr, port, ok := strings.Cut(fs[1], ":")
			if !ok {
				continue
			}
			p, err1 := strconv.ParseUint(port, 16, 16)
			uid, err2 := strconv.ParseUint(fs[7], 10, 32)
			ip, ok := procAddr(addr)
			if err1 != nil || err2 != nil || !ok {
				continue
			}
			out[int(p)] = append(out[int(p)], Listener{Addr: ip, UID: uint32(uid)})
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// procAddr parses an address of /proc/net/tcp{,6}: 32-bit words in hex,
// each in the machine's byte order (little-endian on every platform
// Paddock builds for).
func procAddr(s string) (netip.Addr, bool) {
	raw, err := hex.DecodeString(s)
	if err != nil || len(raw)%4 != 0 {
		return netip.Addr{}, false
	}
	b := make([]byte, len(raw))
	for i := 0; i < len(raw); i += 4 {
		binary.LittleEndian.PutUint32(b[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	return netip.AddrFromSlice(b)
}
