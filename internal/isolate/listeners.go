package isolate

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// ListenerOwners returns the users that own TCP sockets listening on each
// port, on any address, IPv4 or IPv6, as the kernel lists them in
// /proc/net/tcp and /proc/net/tcp6.
func ListenerOwners() (map[int][]uint32, error) {
	out := map[int][]uint32{}
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
			i := strings.LastIndexByte(fs[1], ':')
			port, err1 := strconv.ParseUint(fs[1][i+1:], 16, 16)
			uid, err2 := strconv.ParseUint(fs[7], 10, 32)
			if i < 0 || err1 != nil || err2 != nil {
				continue
			}
			out[int(port)] = append(out[int(port)], uint32(uid))
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}
