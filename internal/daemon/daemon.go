// Package daemon is the composition root of `paddock up`: it builds every
// subsystem from one Config and runs them until the context ends. Only the
// CLI imports it.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"paddock.dev/paddock/internal/api"
	"paddock.dev/paddock/internal/auth"
	"paddock.dev/paddock/internal/build"
	"paddock.dev/paddock/internal/client"
	"paddock.dev/paddock/internal/deploy"
	"paddock.dev/paddock/internal/router"
	"paddock.dev/paddock/internal/runtime/process"
	"paddock.dev/paddock/internal/store/sqlite"
)

// Config configures the platform on this machine.
type Config struct {
	Data   string // required: the data folder
	API    string // API listen address; default "127.0.0.1:7070"
	HTTP   string // router listen address; default ":8080"
	Domain string // apps are served at APP.Domain; default "localhost"
	// Binary runs shims and the router; default: this executable.
	Binary  string
	Version string
	Logger  *slog.Logger // default: text to Stderr
	Stderr  io.Writer    // where the start-up summary goes; default os.Stderr
}

// Run starts the platform and serves until ctx ends. Apps and the router
// keep running after it returns, unless a shutdown through the API asked
// for them to stop.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Data == "" {
		return errors.New("no data folder given")
	}
	if cfg.API == "" {
		cfg.API = "127.0.0.1:7070"
	}
	if cfg.HTTP == "" {
		cfg.HTTP = ":8080"
	}
	if cfg.Domain == "" {
		cfg.Domain = "localhost"
	}
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(cfg.Stderr, nil))
	}
	if cfg.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find own executable: %w", err)
		}
		cfg.Binary = exe
	}
	log := cfg.Logger
	if err := os.MkdirAll(cfg.Data, 0o700); err != nil {
		return fmt.Errorf("create data folder: %w", err)
	}
	unlock, err := lockData(cfg.Data)
	if err != nil {
		return err
	}
	defer unlock()

	st, err := sqlite.Open(ctx, filepath.Join(cfg.Data, "paddock.db"))
	if err != nil {
		return err
	}
	defer st.Close()
	tokens := &auth.Tokens{Store: st}

	ln, err := net.Listen("tcp", cfg.API)
	if err != nil {
		return fmt.Errorf("listen for the API on %s: %w (another paddock running? choose another with --api)", cfg.API, err)
	}
	defer ln.Close()
	apiURL := "http://" + ln.Addr().String()
	if err := writeCLIConfig(ctx, st, tokens, apiURL, log); err != nil {
		return err
	}

	rtr := &routerProcess{
		client: router.Client{StateDir: filepath.Join(cfg.Data, "router")},
		binary: cfg.Binary, listen: cfg.HTTP, log: log,
	}
	if err := rtr.ensure(ctx); err != nil {
		return err
	}
	info, err := rtr.client.Status(ctx)
	if err != nil {
		return err
	}
	_, httpPort, _ := net.SplitHostPort(info.Listen)
	artifacts := &build.Artifacts{Dir: filepath.Join(cfg.Data, "artifacts")}
	rt, err := process.New(process.Config{
		Dir: filepath.Join(cfg.Data, "instances"), Logs: filepath.Join(cfg.Data, "logs"),
		Binary: cfg.Binary, Extract: artifacts.Extract, Logger: log,
	})
	if err != nil {
		return err
	}
	svc, err := deploy.New(deploy.Config{
		Store: st, Runtime: rt, Router: &rtr.client, Artifacts: artifacts,
		BuildDir:  filepath.Join(cfg.Data, "builds"),
		BuildHome: filepath.Join(cfg.Data, "cache", "build-home"),
		Logs:      filepath.Join(cfg.Data, "logs"),
		Domain:    cfg.Domain, URLPort: httpPort, BuildEnv: buildEnv(), Logger: log,
	})
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var stopApps bool
	var mu sync.Mutex
	handler, err := api.New(api.Config{
		Deploy: svc, Auth: tokens, Version: cfg.Version, Logger: log,
		Shutdown: func(apps bool) {
			mu.Lock()
			stopApps = apps
			mu.Unlock()
			cancel()
		},
	})
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 64 << 10,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}

	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); svc.Run(ctx) }()
	go func() { defer wg.Done(); rtr.supervise(ctx) }()
	serveErr := make(chan error, 1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			serveErr <- err
		}
	}()
	port := ""
	if httpPort != "80" {
		port = ":" + httpPort
	}
	fmt.Fprintf(cfg.Stderr, "Paddock %s is up.\n  API:    %s\n  apps:   http://APP.%s%s\n  data:   %s\n",
		cfg.Version, apiURL, cfg.Domain, port, cfg.Data)

	select {
	case <-ctx.Done():
	case err = <-serveErr:
		cancel()
	}
	shutdownCtx, done := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer done()
	srv.Shutdown(shutdownCtx)
	wg.Wait()
	mu.Lock()
	all := stopApps
	mu.Unlock()
	if all {
		log.Info("stopping every app and the router")
		stopAll(shutdownCtx, rt, log)
		rtr.stop()
	}
	log.Info("paddock stopped")
	return err
}

// stopAll stops every instance, in parallel.
func stopAll(ctx context.Context, rt *process.Runtime, log *slog.Logger) {
	insts, err := rt.List(ctx)
	if err != nil {
		log.Warn("list instances", "err", err)
		return
	}
	var wg sync.WaitGroup
	for _, in := range insts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := rt.Stop(ctx, in.ID); err != nil {
				log.Warn("stop instance", "instance", in.ID, "err", err)
			}
		}()
	}
	wg.Wait()
}

// buildEnv passes the Go toolchain's settings on to build commands, and
// points them at this user's Go build cache, which is content-addressed and
// safe to share.
func buildEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "GO") || strings.HasPrefix(kv, "CGO_") {
			env = append(env, kv)
		}
	}
	if os.Getenv("GOCACHE") == "" {
		if dir, err := os.UserCacheDir(); err == nil {
			env = append(env, "GOCACHE="+filepath.Join(dir, "go-build"))
		}
	}
	if os.Getenv("GOMODCACHE") == "" && os.Getenv("GOPATH") == "" {
		if home, err := os.UserHomeDir(); err == nil {
			env = append(env, "GOPATH="+filepath.Join(home, "go"))
		}
	}
	return env
}

// lockData keeps a second server off the same data folder.
func lockData(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, "paddock.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("data folder %s is in use by another paddock server: stop it first, or choose another with --data", dir)
	}
	return func() { f.Close() }, nil
}

// writeCLIConfig makes the first admin token on a new store, and points the
// CLI config of the user running the server at this server.
func writeCLIConfig(ctx context.Context, st *sqlite.DB, tokens *auth.Tokens, apiURL string, log *slog.Logger) error {
	n, err := st.CountTokens(ctx)
	if err != nil {
		return err
	}
	path, err := client.ConfigPath()
	if err != nil {
		return err
	}
	if n == 0 {
		tok, err := tokens.Create(ctx, "admin", "admin", time.Now())
		if err != nil {
			return err
		}
		if err := client.SaveConfig(client.Config{Server: apiURL, Token: tok}); err != nil {
			return fmt.Errorf("write CLI config %s: %w", path, err)
		}
		log.Info("created the admin token; the CLI config has it", "config", path)
		return nil
	}
	// Keep the token the config has if it belongs to this server.
	c, _ := client.LoadConfig()
	if c.Token == "" {
		log.Warn("the CLI config has no token for this server: set PADDOCK_TOKEN", "config", path)
		return nil
	}
	if _, err := tokens.Authenticate(ctx, c.Token); err != nil {
		log.Warn("the CLI config's token is not one of this server's: set PADDOCK_TOKEN", "config", path)
		return nil
	}
	return client.SaveConfig(client.Config{Server: apiURL, Token: c.Token})
}

// routerProcess keeps the router running as a process of its own, detached
// from the server so that it outlives a server crash or restart.
type routerProcess struct {
	client router.Client
	binary string
	listen string
	log    *slog.Logger
}

// ensure adopts a running router or starts one, and waits until it answers.
func (r *routerProcess) ensure(ctx context.Context) error {
	if st, err := r.client.Status(ctx); err == nil {
		r.log.Info("adopted the running router", "pid", st.PID, "listen", st.Listen)
		return nil
	}
	if err := os.MkdirAll(r.client.StateDir, 0o700); err != nil {
		return err
	}
	out, err := os.OpenFile(filepath.Join(r.client.StateDir, "router.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	listen := r.listen
	if prev, err := router.ReadInfo(r.client.StateDir); err == nil && strings.HasSuffix(listen, ":0") && prev.Listen != "" {
		// A port the kernel picked last time is the port clients know.
		listen = prev.Listen
	}
	cmd := exec.Command(r.binary, "router", "--state", r.client.StateDir, "--listen", listen)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the router: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(10 * time.Second)
	for {
		if st, err := r.client.Status(ctx); err == nil {
			r.log.Info("started the router", "pid", st.PID, "listen", st.Listen)
			return nil
		}
		select {
		case err := <-exited:
			return fmt.Errorf("the router exited at start (%v): see %s", err, filepath.Join(r.client.StateDir, "router.log"))
		case <-deadline:
			return fmt.Errorf("the router did not answer within 10s: see %s", filepath.Join(r.client.StateDir, "router.log"))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// supervise restarts the router if it dies.
func (r *routerProcess) supervise(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := r.client.Status(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("the router is not answering; starting it again", "err", err)
			if err := r.ensure(ctx); err != nil {
				r.log.Error("restart the router", "err", err)
			}
		}
	}
}

// stop stops the router and waits for it to exit.
func (r *routerProcess) stop() {
	info, err := router.ReadInfo(r.client.StateDir)
	if err != nil || info.PID <= 0 {
		return
	}
	if syscall.Kill(info.PID, syscall.SIGTERM) != nil {
		return
	}
	for i := 0; i < 200 && syscall.Kill(info.PID, 0) == nil; i++ {
		time.Sleep(50 * time.Millisecond)
	}
}
