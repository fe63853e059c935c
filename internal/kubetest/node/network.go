package node

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
)

// ipAttempts is how many random pod addresses a pod tries before its
// creation fails: an address is dropped when one of the pod's ports is
// already bound on it (by a pod of another node, in this test process or
// another).
const ipAttempts = 32

// PodCIDR is where pod IPs come from: the benchmarking range of RFC 2544,
// which no real network uses, routed to the loopback interface of this
// machine by a local route (ensureLocalRoute). Loopback addresses
// (127.0.0.0/8) will not do: the API server refuses them in EndpointSlices.
const PodCIDR = "198.18.0.0/15"

func podRange() netip.Prefix { return netip.MustParsePrefix(PodCIDR) }

// ipPool hands out pod IPs: random addresses of PodCIDR, so that nodes
// in one or several test processes rarely pick the same.
type ipPool struct {
	mu   sync.Mutex
	used map[netip.Addr]bool
}

func newIPPool() *ipPool { return &ipPool{used: make(map[netip.Addr]bool)} }

func (p *ipPool) next() netip.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	base := podRange().Addr().As4()
	for {
		// 198.18.0.0/15: the second byte is 18 or 19.
		a := netip.AddrFrom4([4]byte{base[0], base[1] + byte(rand.IntN(2)), byte(rand.IntN(256)), byte(1 + rand.IntN(254))})
		if !p.used[a] {
			p.used[a] = true
			return a
		}
	}
}

func (p *ipPool) release(a netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.used, a)
}

// freePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// proxy forwards TCP connections from a pod's address to its process's
// port on 127.0.0.1, with half-close in both directions.
type proxy struct {
	ln     net.Listener
	target string
	log    *slog.Logger

	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	done  bool
}

// listenProxy listens on addr:port and forwards to 127.0.0.1:target. An
// address in use is reported with syscall.EADDRINUSE.
func listenProxy(addr netip.Addr, port, target int, log *slog.Logger) (*proxy, error) {
	ln, err := net.Listen("tcp", netip.AddrPortFrom(addr, uint16(port)).String())
	if err != nil {
		return nil, err
	}
	p := &proxy{ln: ln, target: net.JoinHostPort("127.0.0.1", strconv.Itoa(target)), log: log, conns: make(map[net.Conn]struct{})}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

func (p *proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				p.log.Warn("proxy accept", "addr", p.ln.Addr(), "err", err)
			}
			return
		}
		if !p.track(c) {
			c.Close()
			return
		}
		p.wg.Add(1)
		go p.forward(c)
	}
}

func (p *proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *proxy) untrack(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, c)
}

func (p *proxy) forward(client net.Conn) {
	defer p.wg.Done()
	defer p.untrack(client)
	defer client.Close()
	backend, err := net.Dial("tcp", p.target)
	if err != nil {
		// Nothing listens yet (or any more): reset, as a closed port would.
		if tc, ok := client.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		return
	}
	if !p.track(backend) {
		backend.Close()
		return
	}
	defer p.untrack(backend)
	defer backend.Close()
	var wg sync.WaitGroup
	wg.Add(2)
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}
	go pipe(backend, client)
	go pipe(client, backend)
	wg.Wait()
}

// close stops accepting, closes every connection and waits for the
// forwarding goroutines.
func (p *proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	p.done = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func isAddrInUse(err error) bool { return errors.Is(err, syscall.EADDRINUSE) }
