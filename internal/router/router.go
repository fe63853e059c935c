// Package router is Paddock's built-in HTTP router: a long-lived process
// that sends each request to a healthy web instance of the app its Host
// names.
//
// The control-plane server pushes the full routing table over a unix socket
// (Client.Push); the router persists it and keeps serving with the last
// table it was given while the server is down, and reloads it from disk
// when it restarts. The hot path reads the table through an atomic pointer
// and forwards HTTP/1.1 by hand over pooled keep-alive connections (see
// proxy.go), on plain HTTP and, with Config.TLSListen, over TLS with
// certificates from files or signed by the platform CA (see tls.go). Only
// the CLI's hidden "paddock router" command runs Run; the server uses
// Client.
//
// Every client and every app is assumed hostile. The router parses
// strictly (http1.go, request.go; differentially fuzzed against net/http),
// bounds time and connections per client (proxy.go, limits.go, watch.go),
// sends an app's traffic only to a listener its user owns (owner.go),
// drops root once its ports are bound (privileges.go), and never touches
// the state of a newer router on the same folder (state.go).
package router

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Config configures Run.
type Config struct {
	// Listen is the address for app traffic; default ":8080";
	// "127.0.0.1:0" picks a free port (see router.json for the one chosen).
	Listen string
	// TLSListen is the address for HTTPS app traffic; "" (the default)
	// serves no HTTPS. It speaks HTTP/1.1 only (ALPN "http/1.1") over TLS
	// 1.2 or later, and requests take the same path as on Listen, with
	// X-Forwarded-Proto: https. It needs TLSCert and TLSKey, or CADir.
	TLSListen string
	// TLSCert and TLSKey are the PEM files of one certificate (with its
	// chain) and its key, served for every host, for example a wildcard
	// certificate; both or neither. They are read once, when Run starts.
	// They win over CADir.
	TLSCert, TLSKey string
	// CADir is the folder of the platform CA (package tlsca), which must
	// already hold ca.crt and ca.key: without TLSCert, each routed host
	// gets a certificate signed by it on first use, kept in memory and
	// renewed within 30 days of its expiry. A server name that the table
	// does not route gets no certificate (the handshake fails), so the
	// router cannot be used to mint certificates for arbitrary names.
	CADir string
	// ConnectTimeout bounds each connection attempt to a backend; default
	// 2s. A backend that lets it pass is passed over for 5 s (one that
	// refuses, for 1 s) and the request goes to another backend; when none
	// answers, the client gets 502.
	ConnectTimeout time.Duration
	// ClientWriteTimeout is how long a write to a client may block (a
	// client that does not read) before the connection is closed; default
	// 60s (nginx's send_timeout); negative: no limit. Tunnels after a
	// protocol upgrade have none.
	ClientWriteTimeout time.Duration
	// HeaderTimeout bounds the time to receive a request head: the first
	// one from the connection's start, later ones from their first byte
	// (between requests, a connection may idle for 120s); default 60s
	// (nginx's client_header_timeout); negative: no limit. A client over
	// it gets 408 and the connection is closed.
	HeaderTimeout time.Duration
	// BodyTimeout bounds each read of a request body from the client (the
	// time between two reads, not the whole transfer); default 60s
	// (nginx's client_body_timeout); negative: no limit. A client over it
	// gets 408 and the connection is closed, as is the backend's.
	BodyTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for a backend's response head
	// once the request and its body are sent; default 60s (nginx's
	// proxy_read_timeout); negative: no limit (for long polls that send
	// no head until they have news). Over it, the client gets 504 and the
	// backend connection is closed. A response body, once it started, may
	// stream for any time.
	ResponseHeaderTimeout time.Duration
	// MaxConns caps the client connections on both listeners; default
	// 10,000 (lowered to fit the open-file limit, two descriptors per
	// connection); negative: no cap. A connection over the cap closes
	// the oldest idle one, or, when none is idle, gets a 503 and is
	// closed (see limits.go).
	MaxConns int
	// MaxConnsPerIP caps the client connections from one address, in the
	// same way; default 1,000; negative: no cap. Apps on this machine and
	// clients behind one proxy share an address: keep it well above the
	// concurrency of one such source.
	MaxConnsPerIP int
	// UID and GID, when not 0, are the user and group the router switches
	// to once its listeners and admin socket are bound, its TLS material
	// is loaded and its state folder and files are given to them; 0 keeps
	// the id it starts with. Switching needs the router to start as root,
	// and UID needs GID. The user must not be one an app runs as.
	UID, GID int
	// Now is the clock of backend down windows, idle connection ages and
	// certificate renewal; default time.Now. Socket deadlines use the
	// real clock.
	Now func() time.Time
	// StateDir is required. It holds routes.json (the last table, written
	// atomically), admin.sock (the control socket, mode 0600), router.json
	// (pid, instance id, actual listen addresses, start time; written
	// atomically once listening, and rewritten with pid 0 on a clean stop
	// if it still names this router) and router.lock (held while the
	// router runs, see state.go). It is created with mode 0700 if missing.
	StateDir string
	// Logger receives the router's logs; default: discard.
	Logger *slog.Logger
}

// File names inside Config.StateDir.
const (
	routesFile = "routes.json"
	socketFile = "admin.sock"
	infoFile   = "router.json"
)

// shutdownGrace is how long a stopping router lets requests in flight
// finish before it cuts them.
const shutdownGrace = 10 * time.Second

// ErrAlreadyRunning is returned by Run when another router runs on the
// state folder.
var ErrAlreadyRunning = errors.New("a router is already running on this state folder")

// Status describes a running router.
type Status struct {
	PID       int            `json:"pid"`
	Instance  string         `json:"instance,omitempty"`   // random id of this router process, set at start
	Listen    string         `json:"listen"`               // actual address, e.g. "127.0.0.1:40123"
	TLSListen string         `json:"tls_listen,omitempty"` // actual HTTPS address; "" when not serving HTTPS
	Version   uint64         `json:"version"`              // version of the table in use
	Started   time.Time      `json:"started"`              //
	Inflight  map[string]int `json:"inflight"`             // backend address -> requests in flight right now
	// Connections is the number of client connections open now.
	Connections int `json:"connections"`
	// Impostors lists the backends whose port another user holds: address
	// -> the uid that owns the listener there. The router sends them no
	// traffic; the server should move the instance to another port.
	Impostors map[string]uint32 `json:"impostors,omitempty"`
}

// Run serves until ctx is done, then shuts down: it stops accepting and
// releases the state folder (a new router may start on it), closes idle
// connections, lets in-flight requests finish for up to 10s, then cuts
// what remains and returns.
func Run(ctx context.Context, cfg Config) error {
	if cfg.StateDir == "" {
		return errors.New("router: StateDir is required")
	}
	if err := checkIdentity(cfg.UID, cfg.GID); err != nil {
		return fmt.Errorf("router: %w", err)
	}
	if cfg.Listen == "" {
		cfg.Listen = ":8080"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = defaultConnectTimeout
	}
	cfg.ClientWriteTimeout = orDefault(cfg.ClientWriteTimeout, defaultClientWriteTimeout)
	cfg.HeaderTimeout = orDefault(cfg.HeaderTimeout, defaultHeaderTimeout)
	cfg.BodyTimeout = orDefault(cfg.BodyTimeout, defaultBodyTimeout)
	cfg.ResponseHeaderTimeout = orDefault(cfg.ResponseHeaderTimeout, defaultRespHeaderTimeout)
	if cfg.MaxConns == 0 {
		cfg.MaxConns = defaultMaxConns
		var lim syscall.Rlimit
		if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Cur < uint64(2*cfg.MaxConns+128) {
			cfg.MaxConns = max(int(lim.Cur)/2-64, 64)
		}
	}
	if cfg.MaxConnsPerIP == 0 {
		cfg.MaxConnsPerIP = defaultMaxConnsPerIP
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger

	st, err := openState(cfg.StateDir)
	if err != nil {
		return fmt.Errorf("router: %w", err)
	}
	defer st.close()
	sock := filepath.Join(cfg.StateDir, socketFile)
	if ok, err := st.tryLock(); err != nil {
		return fmt.Errorf("router: %w", err)
	} else if !ok {
		return fmt.Errorf("router: %s: %w", cfg.StateDir, ErrAlreadyRunning)
	}
	locked := true
	defer func() {
		if locked {
			st.unlock()
		}
	}()
	// A router of an older version takes no lock: it may still answer.
	if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("router: %s: %w", sock, ErrAlreadyRunning)
	}

	s := &server{st: st, log: log, p: newProxy(cfg), started: cfg.Now().UTC().Truncate(time.Millisecond)}
	s.instance = newInstanceID()
	var tlsConf *tls.Config
	if cfg.TLSListen != "" {
		if tlsConf, err = tlsConfig(cfg, &s.p.table); err != nil {
			return fmt.Errorf("router: https: %w", err)
		}
	}
	if err := s.loadTable(); err != nil {
		log.Error("routes file unreadable; starting with an empty table", "err", err)
	}

	if err := st.root.Remove(socketFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("router: remove stale socket: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("router: listen: %w", err)
	}
	defer ln.Close()
	var tln net.Listener
	if tlsConf != nil {
		if tln, err = net.Listen("tcp", cfg.TLSListen); err != nil {
			return fmt.Errorf("router: listen https: %w", err)
		}
		defer tln.Close()
		s.tlsListen = tln.Addr().String()
	}
	al, err := net.Listen("unix", sock)
	if err != nil {
		return fmt.Errorf("router: admin socket: %w", err)
	}
	// The socket file is removed at exit only if it is still this one
	// (see releaseState), never by closing the listener.
	al.(*net.UnixListener).SetUnlinkOnClose(false)
	defer al.Close()
	if err := st.root.Chmod(socketFile, 0o600); err != nil {
		return fmt.Errorf("router: admin socket: %w", err)
	}
	if s.sockID, err = st.identity(socketFile); err != nil {
		return fmt.Errorf("router: admin socket: %w", err)
	}
	s.listen = ln.Addr().String()
	info, _ := json.Marshal(Status{PID: os.Getpid(), Instance: s.instance, Listen: s.listen, TLSListen: s.tlsListen, Started: s.started})
	if err := st.writeAtomic(infoFile, info); err != nil {
		return fmt.Errorf("router: %w", err)
	}
	if cfg.UID != 0 || cfg.GID != 0 {
		if os.Geteuid() == 0 {
			if err := st.chown(cfg.UID, cfg.GID); err != nil {
				s.releaseState()
				return fmt.Errorf("router: %w", err)
			}
		}
		if err := dropPrivileges(cfg.UID, cfg.GID); err != nil {
			s.releaseState()
			return fmt.Errorf("router: %w", err)
		}
	}
	log.Info("router listening", "addr", s.listen, "https_addr", s.tlsListen, "version", s.p.table.Load().version,
		"pid", os.Getpid(), "instance", s.instance, "uid", os.Geteuid(), "gid", os.Getegid())

	admin := &http.Server{Handler: s.adminHandler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	var wg sync.WaitGroup
	serveErr := make(chan error, 3)
	stopMaintain := make(chan struct{})
	wg.Add(3)
	go func() { defer wg.Done(); serveErr <- s.p.serve(ln, nil) }()
	if tln != nil {
		wg.Add(1)
		go func() { defer wg.Done(); serveErr <- s.p.serve(tln, tlsConf) }()
	}
	go func() {
		defer wg.Done()
		if err := admin.Serve(al); err != nil && !errors.Is(err, http.ErrServerClosed) {
			serveErr <- err
		}
	}()
	go func() { defer wg.Done(); s.p.maintain(stopMaintain) }()

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		if err != nil {
			runErr = fmt.Errorf("router: serve: %w", err)
		}
	}
	log.Info("router shutting down", "grace", shutdownGrace)
	s.p.shutting.Store(true)
	ln.Close()
	if tln != nil {
		tln.Close()
	}
	al.Close()
	// From here on a new router may take the folder over.
	st.unlock()
	locked = false
	close(stopMaintain)
	graceCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	adminDone := make(chan struct{})
	go func() { _ = admin.Shutdown(graceCtx); admin.Close(); close(adminDone) }()
	s.p.shutdown(graceCtx.Done())
	<-adminDone
	wg.Wait()
	s.releaseState()
	log.Info("router stopped")
	return runErr
}

// orDefault returns d for 0, and v otherwise (a negative v means "no limit").
func orDefault(v, d time.Duration) time.Duration {
	if v == 0 {
		return d
	}
	return v
}

func newInstanceID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// server holds the state behind the admin socket.
type server struct {
	st        *stateDir
	log       *slog.Logger
	p         *proxy
	instance  string
	sockID    fileID
	started   time.Time
	listen    string
	tlsListen string
	mu        sync.Mutex // serializes pushes
}

func (s *server) loadTable() error {
	data, err := s.st.root.ReadFile(routesFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var t Table
	if err := json.Unmarshal(data, &t); err != nil {
		return fmt.Errorf("%s: %w", routesFile, err)
	}
	if t, err = t.validate(); err != nil {
		return fmt.Errorf("%s: %w", routesFile, err)
	}
	s.apply(t)
	for _, r := range t.Routes {
		for _, b := range r.Backends {
			if b.unchecked {
				s.log.Warn("routes.json comes from an older router: instance owners are not checked until the server pushes a table")
				return nil
			}
		}
	}
	return nil
}

// releaseState clears what this router leaves in the state folder when it
// stops: only if no newer router holds the folder, the admin socket if it
// is still the one this router made, and the pid in router.json if the
// file still names this router (the address stays, a restart may want it
// back; the pid goes, so that nobody signals a recycled one).
func (s *server) releaseState() {
	ok, err := s.st.tryLock()
	if err != nil || !ok {
		s.log.Info("a newer router runs on the state folder; leaving its files alone")
		return
	}
	defer s.st.unlock()
	if id, err := s.st.identity(socketFile); err == nil && id == s.sockID {
		if err := s.st.root.Remove(socketFile); err != nil {
			s.log.Warn("remove the admin socket", "err", err)
		}
	}
	if info, err := s.st.readInfo(); err == nil && info.Instance == s.instance {
		data, _ := json.Marshal(Status{Instance: s.instance, Listen: s.listen, TLSListen: s.tlsListen, Started: s.started})
		if err := s.st.writeAtomic(infoFile, data); err != nil {
			s.log.Warn("clear the pid in router.json", "err", err)
		}
	}
}

// push persists t and makes it the table in use, unless it is older than
// the one in use. It returns the version in use afterwards.
func (s *server) push(t Table) (uint64, error) {
	t, err := t.validate()
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur := s.p.table.Load().version; t.Version < cur {
		s.log.Info("older table ignored", "version", t.Version, "in_use", cur)
		return cur, nil
	}
	data, err := json.MarshalIndent(t, "", "  ")
	if err != nil {
		return 0, err
	}
	if err := s.st.writeAtomic(routesFile, data); err != nil {
		return 0, err
	}
	s.apply(t)
	s.log.Info("table in use", "version", t.Version, "routes", len(t.Routes))
	return t.Version, nil
}

func (s *server) apply(t Table) {
	rs, removed := s.p.set.compile(t)
	s.p.table.Store(rs)
	for _, b := range removed {
		b.setRemoved(true)
	}
}

func (s *server) status() Status {
	return Status{
		PID:       os.Getpid(),
		Listen:    s.listen,
		TLSListen: s.tlsListen,
		Version:   s.p.table.Load().version,
		Started:   s.started,
		Instance:  s.instance,
		Inflight:  s.p.set.inflight(),
		Impostors: s.p.set.impostors(),

		Connections: s.p.conns(),
	}
}

// adminHandler serves the control socket:
//
//	PUT /v1/table   body: Table   -> 200 {"version": N} (the version in use)
//	GET /v1/status                -> 200 Status
//	GET /v1/stats                 -> 200 {"APP": AppStats}
func (s *server) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /v1/table", func(w http.ResponseWriter, r *http.Request) {
		var t Table
		dec := json.NewDecoder(io.LimitReader(r.Body, 64<<20))
		if err := dec.Decode(&t); err != nil {
			http.Error(w, "invalid table: "+err.Error(), http.StatusBadRequest)
			return
		}
		v, err := s.push(t)
		if err != nil {
			s.log.Error("push failed", "err", err)
			http.Error(w, "push: "+err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]uint64{"version": v})
	})
	mux.HandleFunc("GET /v1/stats", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s.p.set.appStats())
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s.status())
	})
	return mux
}
