package router

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Table is the full routing table the control plane pushes. A higher
// Version replaces a lower one; an older one is ignored.
type Table struct {
	Version uint64  `json:"version"`
	Routes  []Route `json:"routes"`
}

// Route sends the requests for one host name to an app's web instances.
type Route struct {
	Host     string    `json:"host"`     // lowercase host name without port, e.g. "hello.localhost" or a custom domain
	App      string    `json:"app"`      // app name, shown in the 503 page
	Backends []Backend `json:"backends"` // the healthy web instances; empty means the app has no healthy instance
}

// Backend is one web instance: where it listens and who must own the
// listener. The router sends it traffic only over connections whose
// server side the kernel says belongs to UID (see owner.go), so another
// app that binds the port while the instance restarts gets nothing.
type Backend struct {
	Addr string `json:"addr"` // "127.0.0.1:PORT"
	UID  uint32 `json:"uid"`  // the user that runs the instance and owns its listening socket
	// Pod marks a pod of a Kubernetes cluster, at an address of its own
	// that the cluster's network keeps to it: no other app can bind it,
	// and its listener's owner is not on this machine to check.
	Pod bool `json:"pod,omitempty"`

	// unchecked marks an entry of a routes.json written by an older router
	// (a bare address, no uid): its owner is not checked until the server
	// pushes a table. Pushed tables never set it.
	unchecked bool
}

// UnmarshalJSON reads a backend object, or a bare "ADDR" string as older
// routers wrote them (unchecked).
func (b *Backend) UnmarshalJSON(data []byte) error {
	if len(data) > 0 && data[0] == '"' {
		*b = Backend{unchecked: true}
		return json.Unmarshal(data, &b.Addr)
	}
	type plain Backend
	var p plain
	if err := json.Unmarshal(data, &p); err != nil {
		return err
	}
	*b = Backend(p)
	return nil
}

// routes is the compiled, immutable form of a Table that the hot path reads
// through an atomic pointer.
type routes struct {
	version uint64
	byHost  map[string]*route
}

type route struct {
	host, app string
	stats     *appStats
	backends  []*backend
	next      atomic.Uint32 // round-robin cursor
	msg503    string        // the body of the 503 answer when there is no backend
	msg502    string        // the body of the 502 answer when no backend could be reached
	msg502bad string        // the body of the 502 answer when a backend failed to answer
	msg504    string        // the body of the 504 answer when a backend did not answer in time
}

// pick chooses a backend: the two next ones in round-robin order, and of
// those the one with fewer requests in flight (power of two choices over a
// rotating start, so idle backends are visited in strict turn). Backends in
// skip and, unless all are, backends marked down are passed over.
func (rt *route) pick(skip []*backend) *backend {
	n := len(rt.backends)
	if n == 0 {
		return nil
	}
	start := int(rt.next.Add(1) - 1)
	var cand [2]*backend
	k := 0
	var now int64
	for pass := 0; pass < 2 && k == 0; pass++ {
		for i := 0; i < n && k < 2; i++ {
			b := rt.backends[(start+i)%n]
			if contains(skip, b) || pass == 0 && b.isDown(&now) {
				continue
			}
			cand[k] = b
			k++
		}
	}
	if k == 2 && cand[1].inflight.Load() < cand[0].inflight.Load() {
		return cand[1]
	}
	return cand[0]
}

func contains(s []*backend, b *backend) bool {
	for _, x := range s {
		if x == b {
			return true
		}
	}
	return false
}

// validate checks a pushed table and returns it in canonical form.
func (t Table) validate() (Table, error) {
	out := Table{Version: t.Version, Routes: make([]Route, 0, len(t.Routes))}
	seen := make(map[string]bool, len(t.Routes))
	for _, r := range t.Routes {
		h := strings.TrimSuffix(strings.ToLower(r.Host), ".")
		if h == "" || strings.ContainsAny(h, " /:\t\r\n") {
			return Table{}, fmt.Errorf("route %q: invalid host", r.Host)
		}
		if seen[h] {
			return Table{}, fmt.Errorf("route %q: duplicate host", r.Host)
		}
		seen[h] = true
		bs := make([]Backend, 0, len(r.Backends))
		for _, b := range r.Backends {
			ap, err := netip.ParseAddrPort(b.Addr)
			if err != nil {
				return Table{}, fmt.Errorf("route %q: backend %q: want IP:PORT: %w", r.Host, b.Addr, err)
			}
			if ap.Port() == 0 {
				return Table{}, fmt.Errorf("route %q: backend %q: port 0", r.Host, b.Addr)
			}
			b.Addr = ap.String()
			bs = append(bs, b)
		}
		out.Routes = append(out.Routes, Route{Host: h, App: r.App, Backends: bs})
	}
	return out, nil
}

// backendSet keeps one *backend per address and owner, shared by every
// route that names it, and remembers removed ones while requests to them
// drain.
type backendSet struct {
	dialer net.Dialer   // Timeout is the connect timeout
	now    func() int64 // the clock of down windows and idle ages, unix nanoseconds
	owners *ownerLookup // who owns the server side of a new connection; nil: not checked
	log    *slog.Logger

	mu    sync.Mutex
	m     map[Backend]*backend
	stats map[string]*appStats // by app, kept across tables
}

// compile builds the routes of t, reusing known backends, and returns the
// backends t no longer names. The caller stores the routes first and then
// marks those as removed (which closes their idle connections).
func (s *backendSet) compile(t Table) (*routes, []*backend) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[Backend]*backend)
	}
	used := make(map[*backend]bool)
	rs := &routes{version: t.Version, byHost: make(map[string]*route, len(t.Routes))}
	for _, r := range t.Routes {
		rt := &route{host: r.Host, app: r.App, stats: s.statsFor(r.App)}
		for _, key := range r.Backends {
			b := s.m[key]
			if b == nil {
				b = newBackend(key.Addr, s)
				b.uid, b.checkOwner = key.UID, !key.unchecked && !key.Pod && s.owners != nil
				b.app = r.App
				s.m[key] = b
			}
			if !used[b] {
				b.setRemoved(false)
				used[b] = true
			}
			rt.backends = append(rt.backends, b)
		}
		rt.msg503 = fmt.Sprintf("app %s has no healthy instance; check `paddock ps %s` and `paddock logs %s`\n", r.App, r.App, r.App)
		rt.msg502 = fmt.Sprintf("bad gateway: no instance of app %s could be reached (connections refused, timed out or closed); check `paddock ps %s` and `paddock logs %s`\n", r.App, r.App, r.App)
		rt.msg502bad = fmt.Sprintf("bad gateway: an instance of app %s closed the connection or sent an invalid response; check `paddock logs %s`\n", r.App, r.App)
		rt.msg504 = fmt.Sprintf("gateway timeout: an instance of app %s did not answer in time; check `paddock logs %s`\n", r.App, r.App)
		rs.byHost[r.Host] = rt
	}
	// The counters of an app no longer routed go: a new app of its name
	// starts from nothing.
	routed := make(map[string]bool, len(t.Routes))
	for _, r := range t.Routes {
		routed[r.App] = true
	}
	for app := range s.stats {
		if !routed[app] {
			delete(s.stats, app)
		}
	}
	var removed []*backend
	for key, b := range s.m {
		if !used[b] {
			removed = append(removed, b)
			if b.inflight.Load() == 0 {
				delete(s.m, key)
			}
		}
	}
	return rs, removed
}

// inflight reports the requests in flight per backend address: every
// backend in use, and removed ones that still have requests in flight.
func (s *backendSet) inflight() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.m))
	for key, b := range s.m {
		n := int(b.inflight.Load())
		if b.isRemoved() && n == 0 {
			delete(s.m, key)
			continue
		}
		out[b.addr] += n
	}
	return out
}

// impostors reports the backends in the table whose last new connection
// was accepted by a listener of another user: address -> that user.
func (s *backendSet) impostors() map[string]uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out map[string]uint32
	for _, b := range s.m {
		if u := b.impostor.Load(); u >= 0 && !b.isRemoved() {
			if out == nil {
				out = make(map[string]uint32)
			}
			out[b.addr] = uint32(u)
		}
	}
	return out
}

// sweep closes idle connections older than maxIdle.
func (s *backendSet) sweep(maxIdle time.Duration) {
	s.mu.Lock()
	bs := make([]*backend, 0, len(s.m))
	for _, b := range s.m {
		bs = append(bs, b)
	}
	s.mu.Unlock()
	cutoff := s.now() - int64(maxIdle)
	for _, b := range bs {
		b.closeIdleBefore(cutoff)
	}
}

// closeAll closes every idle backend connection (at shutdown).
func (s *backendSet) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range s.m {
		b.setRemoved(true)
	}
}
