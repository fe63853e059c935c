package isolate

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"os"
	"strconv"
	"strings"
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
// IPv6, as the kernel lists them in /proc/net/tcp and /proc/net/tcp6.
func ListenerOwners() (map[int][]Listener, error) {
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
