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
package router

import (
	"context"
	"crypto/tls"
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
	// 60s (nginx's send_timeout); negative: no limit. Waiting for a
	// backend's answer has no time limit (long polls), nor have tunnels
	// after a protocol upgrade.
	ClientWriteTimeout time.Duration
	// Now is the clock of backend down windows, idle connection ages and
	// certificate renewal; default time.Now. Socket deadlines use the
	// real clock.
	Now func() time.Time
	// StateDir is required. It holds routes.json (the last table, written
	// atomically), admin.sock (the control socket, mode 0600) and
	// router.json (pid, actual listen addresses, start time; written
	// atomically once listening, and rewritten with pid 0 on a clean stop).
	// It is created with mode 0700 if missing.
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

const shutdownGrace = 10 * time.Second

// ErrAlreadyRunning is returned by Run when another router answers on the
// state folder's socket.
var ErrAlreadyRunning = errors.New("a router is already running on this state folder")

// Status describes a running router.
type Status struct {
	PID       int            `json:"pid"`
	Listen    string         `json:"listen"`               // actual address, e.g. "127.0.0.1:40123"
	TLSListen string         `json:"tls_listen,omitempty"` // actual HTTPS address; "" when not serving HTTPS
	Version   uint64         `json:"version"`              // version of the table in use
	Started   time.Time      `json:"started"`              //
	Inflight  map[string]int `json:"inflight"`             // backend address -> requests in flight right now
}

// Run serves until ctx is done, then shuts down gracefully: it stops
// accepting, closes idle connections, lets in-flight requests finish for up
// to 10s and then closes what remains.
func Run(ctx context.Context, cfg Config) error {
	if cfg.StateDir == "" {
		return errors.New("router: StateDir is required")
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
	if cfg.ClientWriteTimeout == 0 {
		cfg.ClientWriteTimeout = defaultClientWriteTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("router: create state folder: %w", err)
	}
	s := &server{dir: cfg.StateDir, log: log, p: newProxy(cfg), started: cfg.Now().UTC().Truncate(time.Millisecond)}
	var tlsConf *tls.Config
	if cfg.TLSListen != "" {
		var err error
		if tlsConf, err = tlsConfig(cfg, &s.p.table); err != nil {
			return fmt.Errorf("router: https: %w", err)
		}
	}
	if err := s.loadTable(); err != nil {
		log.Error("routes file unreadable; starting with an empty table", "err", err)
	}

	sock := filepath.Join(cfg.StateDir, socketFile)
	if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("router: %s: %w", sock, ErrAlreadyRunning)
	}
	if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
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
	defer al.Close()
	if err := os.Chmod(sock, 0o600); err != nil {
		return fmt.Errorf("router: admin socket: %w", err)
	}
	s.listen = ln.Addr().String()
	infoPath := filepath.Join(cfg.StateDir, infoFile)
	info, _ := json.Marshal(Status{PID: os.Getpid(), Listen: s.listen, TLSListen: s.tlsListen, Started: s.started})
	if err := writeFileAtomic(infoPath, info); err != nil {
		return fmt.Errorf("router: %w", err)
	}
	defer func() {
		// A clean stop keeps the address (a restart may want it back) but
		// clears the PID, so that nobody signals a recycled one.
		info, _ := json.Marshal(Status{Listen: s.listen, TLSListen: s.tlsListen, Started: s.started})
		if err := writeFileAtomic(infoPath, info); err != nil {
			log.Warn("clear the pid in router.json", "err", err)
		}
	}()
	defer os.Remove(sock)
	log.Info("router listening", "addr", s.listen, "https_addr", s.tlsListen, "version", s.p.table.Load().version)

	admin := &http.Server{Handler: s.adminHandler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	var wg sync.WaitGroup
	serveErr := make(chan error, 3)
	stopSweep := make(chan struct{})
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
	go func() {
		defer wg.Done()
		t := time.NewTicker(30 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				s.p.set.sweep(90 * time.Second)
			case <-stopSweep:
				return
			}
		}
	}()

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		if err != nil {
			runErr = fmt.Errorf("router: serve: %w", err)
		}
	}
	log.Info("router shutting down")
	s.p.shutting.Store(true)
	ln.Close()
	if tln != nil {
		tln.Close()
	}
	close(stopSweep)
	graceCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	_ = admin.Shutdown(graceCtx)
	s.p.shutdown(graceCtx.Done())
	wg.Wait()
	return runErr
}

// server holds the state behind the admin socket.
type server struct {
	dir       string
	log       *slog.Logger
	p         *proxy
	started   time.Time
	listen    string
	tlsListen string
	mu        sync.Mutex // serializes pushes
}

func (s *server) loadTable() error {
	data, err := os.ReadFile(filepath.Join(s.dir, routesFile))
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
	return nil
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
	if err := writeFileAtomic(filepath.Join(s.dir, routesFile), data); err != nil {
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
		Inflight:  s.p.set.inflight(),
	}
}

// adminHandler serves the control socket:
//
//	PUT /v1/table   body: Table   -> 200 {"version": N} (the version in use)
//	GET /v1/status                -> 200 Status
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
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s.status())
	})
	return mux
}

// writeFileAtomic writes data to path through a temporary file in the same
// folder: write, fsync, rename, fsync the folder.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
