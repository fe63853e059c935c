// Package daemon is the composition root of `paddock up`: it builds every
// subsystem from one Config and runs them until the context ends. Only the
// CLI imports it.
package daemon

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"paddock.dev/paddock/internal/alerts"
	"paddock.dev/paddock/internal/api"
	"paddock.dev/paddock/internal/audit"
	"paddock.dev/paddock/internal/auth"
	"paddock.dev/paddock/internal/build"
	"paddock.dev/paddock/internal/client"
	"paddock.dev/paddock/internal/dashboard"
	"paddock.dev/paddock/internal/deploy"
	"paddock.dev/paddock/internal/drains"
	"paddock.dev/paddock/internal/image"
	"paddock.dev/paddock/internal/isolate"
	"paddock.dev/paddock/internal/kube"
	"paddock.dev/paddock/internal/metrics"
	"paddock.dev/paddock/internal/router"
	"paddock.dev/paddock/internal/runtime"
	"paddock.dev/paddock/internal/runtime/process"
	"paddock.dev/paddock/internal/secrets"
	"paddock.dev/paddock/internal/store"
	"paddock.dev/paddock/internal/store/sqlite"
	"paddock.dev/paddock/internal/tlsca"
	"paddock.dev/paddock/internal/wire"
)

// Config configures the platform on this machine.
type Config struct {
	Data string // required: the data folder
	API  string // API listen address; default "127.0.0.1:7070"
	HTTP string // router listen address; default ":8080"
	// HTTPS is the router's listen address for app traffic over TLS; ""
	// serves none. Certificates come from HTTPSCert and HTTPSKey, else
	// from the platform CA, one per routed host.
	HTTPS               string
	HTTPSCert, HTTPSKey string
	// BuildHome holds one home folder per app for its build commands, the
	// build tools' caches between builds; default DATA/cache/build-home.
	BuildHome string
	Domain    string // apps are served at APP.Domain; default "localhost"
	// TLSCert and TLSKey are the API's certificate and key files; empty:
	// a certificate from the platform's own CA, made on first start.
	TLSCert, TLSKey string
	// InsecureHTTP serves the API over plain HTTP; allowed on loopback only.
	InsecureHTTP bool
	// WeakIsolation lets the server run as root where it cannot track an
	// app's processes in cgroups or fence apps off each other's ports.
	WeakIsolation bool
	// UIDRegistry is the machine-wide folder where platforms claim their
	// blocks of app users; default isolate.DefaultRegistry. Used as root.
	UIDRegistry string
	// CSIEndpoint is the socket of the CSI plugin that keeps volumes, e.g.
	// unix:///run/csi/csi.sock; "": Paddock's own, in this process.
	CSIEndpoint string
	// DrainsLocal lets log drains reach this machine's loopback and
	// link-local addresses; off, a developer's drain cannot make the
	// server talk to local services or a cloud's metadata endpoint.
	DrainsLocal bool
	// VolumePool is the size of the pool Paddock's own plugin makes on its
	// first start; 0: 10 GiB (sparse, it grows as needed).
	VolumePool int64
	// VolumeQuota is the most bytes of volumes one app may have, and
	// TeamVolumeQuota the apps granted to one team together; 0: no limit.
	VolumeQuota, TeamVolumeQuota int64
	// Metrics, when set, serves the platform's metrics in the Prometheus
	// exposition format over plain HTTP at this address, without a token
	// (keep it private); GET /metrics on the API serves them to admins.
	Metrics string
	// Kubeconfig, when set, runs apps on the Kubernetes cluster it names
	// (its current context) instead of as local processes: each app in a
	// namespace NamespacePrefix+NAME, its images pushed to Registry.
	Kubeconfig      string
	NamespacePrefix string
	Registry        image.Registry
	// RegistryUsername and RegistryPassword, when set, are the registry's
	// push login, kept sealed in the store from then on (see registry).
	RegistryUsername, RegistryPassword string
	// StorageClass is the StorageClass of volumes' claims on Kubernetes,
	// and SnapshotClass the VolumeSnapshotClass of their snapshots; "":
	// the cluster's defaults.
	StorageClass, SnapshotClass string
	// Binary runs shims and the router; default: this executable.
	Binary  string
	Version string
	Logger  *slog.Logger // default: text to Stderr
	Stderr  io.Writer    // where the start-up summary goes; default os.Stderr
}

// startKube connects to the cluster of cfg.Kubeconfig and watches the apps
// Paddock runs there.
func startKube(ctx context.Context, cfg Config, log *slog.Logger) (*kube.Runtime, snapclient.Interface, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	if err != nil {
		return nil, nil, fmt.Errorf("--kubeconfig %s: %w", cfg.Kubeconfig, err)
	}
	// A reconcile pass applies several objects per changed app; client-go's
	// default of 5 requests a second would make a deploy of many apps wait
	// on the client, not on the cluster.
	rc.QPS, rc.Burst = 100, 200
	rc.UserAgent = "paddock/" + cfg.Version
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, nil, fmt.Errorf("--kubeconfig %s: %w", cfg.Kubeconfig, err)
	}
	snaps, err := kubeSnapshots(rc, cs)
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes cluster of %s: %w", cfg.Kubeconfig, err)
	}
	if snaps == nil {
		log.Warn("the cluster has no VolumeSnapshot API (snapshot.storage.k8s.io/v1): volumes cannot be snapshotted until its CRDs and snapshot controller are installed")
	}
	prefix := cfg.NamespacePrefix
	if prefix == "" {
		prefix = "paddock-"
	}
	id, err := installationID(cfg.Data)
	if err != nil {
		return nil, nil, err
	}
	kc := kube.Config{Client: cs, NamespacePrefix: prefix, Logs: filepath.Join(cfg.Data, "logs"), Log: log, Installation: id}
	k := kube.New(kc)
	if err := k.Resume(ctx); err != nil {
		return nil, nil, fmt.Errorf("kubernetes cluster of %s: %w", cfg.Kubeconfig, err)
	}
	return k, snaps, nil
}

// kubeSnapshots returns a client of the cluster's VolumeSnapshots, or nil
// if the cluster has no such API.
func kubeSnapshots(rc *rest.Config, cs kubernetes.Interface) (snapclient.Interface, error) {
	_, err := cs.Discovery().ServerResourcesForGroupVersion(snapv1.SchemeGroupVersion.String())
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return snapclient.NewForConfig(rc)
}

// installationID names this platform on a cluster, among others that may
// share it: made at the first start on Kubernetes, kept in the data folder.
func installationID(data string) (string, error) {
	path := filepath.Join(data, "kubernetes-installation")
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	id := strings.ToLower(rand.Text())[:16]
	// Written whole or not at all: a torn ID would orphan every namespace.
	tmp, err := os.CreateTemp(data, ".kubernetes-installation-*")
	if err == nil {
		_, err = tmp.WriteString(id + "\n")
		if serr := tmp.Sync(); err == nil {
			err = serr
		}
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(tmp.Name(), path)
		}
		os.Remove(tmp.Name())
	}
	if err != nil {
		return "", fmt.Errorf("keep the installation's ID: %w", err)
	}
	return id, nil
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
	if cfg.BuildHome == "" {
		cfg.BuildHome = filepath.Join(cfg.Data, "cache", "build-home")
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
	isolated := os.Geteuid() == 0
	if isolated {
		// Everything the server writes is its own unless said otherwise:
		// apps and builds run as other users and must not read it.
		syscall.Umask(0o077)
	} else {
		log.Warn("not running as root: apps and builds run as this user and can read the platform's data")
	}
	if err := os.MkdirAll(cfg.Data, 0o700); err != nil {
		return fmt.Errorf("create data folder: %w", err)
	}
	if isolated {
		if err := openPaths(cfg.Data, cfg.BuildHome); err != nil {
			return err
		}
	}
	unlock, err := lockData(cfg.Data)
	if err != nil {
		return err
	}
	defer unlock()
	var users *isolate.Range
	var tracker *isolate.Tracker
	if isolated {
		if cfg.UIDRegistry == "" {
			cfg.UIDRegistry = isolate.DefaultRegistry
		}
		r, err := isolate.Claim(cfg.UIDRegistry, cfg.Data)
		if err != nil {
			return err
		}
		users = &r
		if tracker, err = isolate.NewTracker(r.Cgroup()); err != nil {
			if !cfg.WeakIsolation {
				return fmt.Errorf("%w: without a cgroup v2 hierarchy with cgroup.kill (Linux 5.14 or later; mount one with `mount -t cgroup2 none /sys/fs/cgroup/unified`), a process an app starts in a session of its own survives its stop and destruction; start with --weak-isolation to run anyway", err)
			}
			log.Warn("processes are tracked by process group only: one that starts a session of its own survives its app's stop and destruction", "err", err)
			tracker = nil
		}
	}

	st, err := sqlite.Open(ctx, filepath.Join(cfg.Data, "paddock.db"))
	if err != nil {
		return err
	}
	defer st.Close()
	// Never a new key over secrets sealed with another: OpenLocal makes
	// one only for a store without data keys, and says what is missing.
	kr, created, err := secrets.OpenLocal(ctx, keysDir(cfg.Data), kekEnv, secrets.Config{Store: keyStore{st}})
	if err != nil {
		return err
	}
	// No process started from here on inherits the KEK.
	os.Unsetenv(kekEnv)
	if created {
		log.Warn("made a new key-encryption key for secrets: losing it loses every secret; back it up with `paddock keys export`", "file", filepath.Join(keysDir(cfg.Data), secrets.KEKFile))
	}
	// Config vars are settings, not secrets, but the store keeps them
	// sealed too; those of a store from before are sealed now.
	st.SetCipher(keyring{kr})
	if n, err := st.SealConfigs(ctx); err != nil {
		return fmt.Errorf("seal the stored config vars: %w", err)
	} else if n > 0 {
		log.Info("sealed the config vars the store kept as text", "releases", n)
	}
	tokens := &auth.Tokens{Store: st}
	authz := &auth.Authorizer{Store: st}
	auditDir := filepath.Join(cfg.Data, "audit")
	auditLog, err := audit.Open(ctx, audit.Config{Dir: auditDir, Logger: log})
	if err != nil {
		return fmt.Errorf("open the audit log: %w", err)
	}
	defer auditLog.Close()

	ln, err := net.Listen("tcp", cfg.API)
	if err != nil {
		return fmt.Errorf("listen for the API on %s: %w (another paddock running? choose another with --api)", cfg.API, err)
	}
	defer ln.Close()
	apiURL, caPEM, apiHosts, ln, err := secure(cfg, ln)
	if err != nil {
		return err
	}
	if err := bootstrap(ctx, st, apiURL, caPEM, log); err != nil {
		return err
	}
	if err := authz.Reload(ctx); err != nil {
		return err
	}

	rtr := &routerProcess{
		client: router.Client{StateDir: filepath.Join(cfg.Data, "router")},
		binary: cfg.Binary, listen: cfg.HTTP, log: log,
	}
	if cfg.HTTPS != "" {
		rtr.args = []string{"--tls-listen", cfg.HTTPS}
		if cfg.HTTPSCert != "" || cfg.HTTPSKey != "" {
			rtr.args = append(rtr.args, "--tls-cert", cfg.HTTPSCert, "--tls-key", cfg.HTTPSKey)
		} else {
			// App domains get certificates from a CA of their own: the CA
			// the CLI pins for the API signs nothing the router serves.
			caDir := filepath.Join(cfg.Data, "router-ca")
			if _, err := tlsca.EnsureCA(caDir, tlsca.AppsCAName, time.Now()); err != nil {
				return fmt.Errorf("make the apps' CA: %w", err)
			}
			rtr.args = append(rtr.args, "--ca-dir", caDir)
		}
	}
	if users != nil {
		// The router binds its ports as root, then runs as a user of its
		// own, no app's.
		uid := strconv.FormatUint(uint64(users.Router()), 10)
		rtr.args = append(rtr.args, "--uid", uid, "--gid", uid)
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
		Binary: cfg.Binary, Extract: artifacts.Extract, Tracker: tracker, Logger: log,
	})
	if err != nil {
		return err
	}
	if tracker != nil {
		if err := fence(ctx, tracker, rt); err != nil {
			if !cfg.WeakIsolation {
				return fmt.Errorf("%w: apps could take each other's ports and reach each other's instances but through the router; the kernel needs CONFIG_CGROUP_BPF (and no exclusive eBPF program on a cgroup above); start with --weak-isolation to run anyway", err)
			}
			log.Warn("apps can take each other's ports and reach each other's instances directly", "err", err)
		}
	}
	var kubeRT *kube.Runtime
	var snaps snapclient.Interface
	var images *image.Registry
	if cfg.Kubeconfig != "" {
		if kubeRT, snaps, err = startKube(ctx, cfg, log); err != nil {
			return err
		}
		defer kubeRT.Close()
	}
	var reg *registry
	if kubeRT != nil && cfg.Registry.Repository != "" {
		images = &cfg.Registry
		if reg, err = startRegistry(ctx, cfg, st, keyring{kr}, images, kubeRT, log); err != nil {
			return err
		}
	}
	vols, err := startVolumes(ctx, cfg, st, users, kubeRT, snaps, log)
	if err != nil {
		return err
	}
	defer vols.close()
	if live, err := rt.List(ctx); err == nil {
		ids := map[string]bool{}
		for _, in := range live {
			ids[in.ID] = true
		}
		vols.svc.Unpublished(ctx, ids)
		if err := vols.svc.Orphans(ctx); err != nil {
			log.Warn("delete the volumes a crash left half made", "err", err)
		}
	}
	mets := metrics.New()
	svc, err := deploy.New(deploy.Config{
		Kube: kubeRT, Images: images,
		Store: st, Runtime: rt, Volumes: vols.svc, Metrics: mets, Router: &rtr.client, Artifacts: artifacts,
		BuildDir:  filepath.Join(cfg.Data, "builds"),
		BuildHome: cfg.BuildHome,
		Logs:      filepath.Join(cfg.Data, "logs"),
		Users:     users, Tracker: tracker, Keyring: keyring{kr},
		// No app may route a name of the API's: its requests would reach
		// the app.
		ReservedHosts: apiHosts,
		Domain:        cfg.Domain, URLPort: httpPort, BuildEnv: buildEnv(isolated), Logger: log,
	})
	if err != nil {
		return err
	}

	svc.CleanBuilds()
	var registryAPI api.Registry
	if reg != nil {
		reg.reapply = svc.Reapply
		registryAPI = reg
	}
	instances := func(ctx context.Context) ([]metrics.Instance, error) {
		insts, err := svc.AllInstances(ctx)
		out := make([]metrics.Instance, 0, len(insts))
		for _, in := range insts {
			out = append(out, metrics.Instance{App: in.App, Process: in.Process, ID: in.ID, State: string(in.State),
				PID: in.PID, Restarts: in.Restarts, StartedAt: in.StartedAt, MemoryUsed: in.MemoryUsed, Cgroup: in.Cgroup, Healthy: in.Healthy})
		}
		return out, err
	}
	mets.WatchInstances(instances)
	traffic := func(ctx context.Context) (map[string]metrics.Traffic, error) {
		all, err := rtr.client.Stats(ctx)
		out := make(map[string]metrics.Traffic, len(all))
		for app, st := range all {
			out[app] = metrics.Traffic{Requests: st.Requests, Bounds: router.DurationBounds[:], Durations: st.Durations,
				Seconds: st.Seconds, BytesOut: st.BytesOut, InFlight: st.InFlight}
		}
		return out, err
	}
	mets.WatchRouter(traffic)
	history, err := metrics.NewHistory(filepath.Join(cfg.Data, "metrics", "history.json.gz"))
	if err != nil {
		return fmt.Errorf("open the metrics history: %w", err)
	}
	sampler := &metrics.Sampler{History: history, Traffic: traffic, Instances: instances, Logger: log,
		Apps: func(ctx context.Context) (map[string]bool, error) {
			apps, err := st.ListApps(ctx)
			known := make(map[string]bool, len(apps))
			for _, a := range apps {
				known[a.Name] = true
			}
			return known, err
		}}
	drainer := drainAPI{st: st, kr: keyring{kr}, logs: filepath.Join(cfg.Data, "logs"), fwd: &drains.Forwarder{Logger: log, AllowLocal: cfg.DrainsLocal}}
	drainer.fwd.Drains, drainer.fwd.LogDir = drainer.all, drainer.logDir
	if host, err := os.Hostname(); err == nil {
		drainer.fwd.Hostname = host
	}
	hooks := alertHooks{st: st, kr: keyring{kr}}
	hooks.m = alerts.New(alerts.Config{
		Conditions: conditions(watched{svc: svc, vols: vols.svc, traffic: rtr.client.Stats, st: st, history: history, certs: servedCerts(cfg)}),
		Webhooks:   hooks.Webhooks,
		Event: func(app, msg string) {
			if app == "" { // the platform's own: its log only
				log.Warn(msg)
				return
			}
			if err := st.AddEvent(context.WithoutCancel(ctx), store.Event{App: app, Time: time.Now().UTC(), Message: msg}); err != nil {
				log.Warn("record event", "app", app, "err", err)
			}
			log.Info(msg, "app", app)
		},
		Logger: log,
	})
	var metricsLn net.Listener
	if cfg.Metrics != "" {
		if metricsLn, err = net.Listen("tcp", cfg.Metrics); err != nil {
			return fmt.Errorf("listen for metrics on %s: %w", cfg.Metrics, err)
		}
		defer metricsLn.Close()
		if addr, ok := metricsLn.Addr().(*net.TCPAddr); ok && !addr.IP.IsLoopback() {
			log.Warn("the metrics listener answers anyone who reaches it, without a token: keep it on a private network", "listen", cfg.Metrics)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var stopApps bool
	var mu sync.Mutex
	handler, err := api.New(api.Config{
		Deploy: svc, Store: st, Volumes: vols.svc, Alerts: hooks, Registry: registryAPI, History: history, Drains: drainer, Auth: tokens, Authz: authz, Audit: auditor{auditLog, auditDir, mets}, Metrics: mets,
		Keys: keys{kr: kr, st: st, dir: keysDir(cfg.Data), fromEnv: os.Getenv(kekEnv) != ""},
		CA:   caPEM, Version: cfg.Version, Logger: log,
		Health:      func(ctx context.Context) wire.PlatformHealth { return platformHealth(ctx, st, rt, cfg.Data) },
		InstanceCPU: sampler.CPU,
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
	dash, err := dashboard.New(dashboard.Config{API: handler, Logger: log})
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: apiAndDashboard(handler, dash), MaxHeaderBytes: 64 << 10,
		// A request's head (and the TLS handshake before it) must arrive
		// within ReadHeaderTimeout and a kept-alive connection may idle for
		// IdleTimeout. There is no ReadTimeout: it would cut uploads on slow
		// links; the API bounds each body itself, and cuts the body of any
		// request it refuses (internal/api/body.go).
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		// Requests end with the server: a follower of logs or a deploy
		// waiting for its rollout does not hold the shutdown up.
		BaseContext: func(net.Listener) context.Context { return ctx }}

	var wg sync.WaitGroup
	if metricsLn != nil {
		msrv := &http.Server{Handler: mets.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
		wg.Add(1)
		go func() { defer wg.Done(); msrv.Serve(metricsLn) }()
		go func() { <-ctx.Done(); msrv.Close() }()
	}
	wg.Add(7)
	go func() { defer wg.Done(); drainer.fwd.Run(ctx, 500*time.Millisecond) }()
	go func() { defer wg.Done(); sampler.Run(ctx) }()
	go func() { defer wg.Done(); svc.Run(ctx) }()
	go func() { defer wg.Done(); hooks.m.Run(ctx, 5*time.Second) }()
	go func() {
		defer wg.Done()
		vols.svc.RunBackups(ctx, time.Minute, func(app, msg string) {
			e := store.Event{App: app, Time: time.Now().UTC(), Message: msg}
			if err := st.AddEvent(context.WithoutCancel(ctx), e); err != nil {
				log.Warn("record event", "app", app, "err", err)
			}
			log.Info(msg, "app", app)
		})
	}()
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
	fmt.Fprintf(cfg.Stderr, "Paddock %s is up.\n  API:    %s\n  apps:   http://APP.%s%s\n",
		cfg.Version, apiURL, cfg.Domain, port)
	if info.TLSListen != "" {
		_, tlsPort, _ := net.SplitHostPort(info.TLSListen)
		fmt.Fprintf(cfg.Stderr, "          https://APP.%s:%s\n", cfg.Domain, tlsPort)
		if cfg.HTTPSCert == "" {
			fmt.Fprintf(cfg.Stderr, "  apps CA: %s (for HTTPS clients of the apps; the CLI does not trust it)\n", filepath.Join(cfg.Data, "router-ca", "ca.crt"))
		}
	}
	fmt.Fprintf(cfg.Stderr, "  data:   %s\n", cfg.Data)
	if metricsLn != nil {
		fmt.Fprintf(cfg.Stderr, "  metrics: http://%s/metrics\n", metricsLn.Addr())
	}
	if len(caPEM) > 0 {
		fp, _ := tlsca.Fingerprint(caPEM)
		fmt.Fprintf(cfg.Stderr, "  CA:     %s (elsewhere: paddock login %s --ca-fingerprint %s)\n", fp, apiURL, fp)
	}

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
		// Each stop waits for its instance's own stop timeout.
		stopAll(context.WithoutCancel(ctx), rt, log)
		vols.svc.Unpublished(context.WithoutCancel(ctx), nil)
		rtr.stop()
	}
	log.Info("paddock stopped")
	return err
}

// fence fences apps off each other's ports, the instances running now
// keeping theirs.
func fence(ctx context.Context, tracker *isolate.Tracker, rt *process.Runtime) error {
	insts, err := rt.List(ctx)
	if err != nil {
		return err
	}
	ports := map[int]uint32{}
	for _, in := range insts {
		if in.UID != 0 {
			ports[in.Port] = in.UID
		}
	}
	return tracker.Fence(ports)
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

// openPaths lets apps and builds, running as users of their own, pass
// through the data folder and into the build home, and no further: the
// folders between are 0711, and every folder above must let others pass.
func openPaths(data, buildHome string) error {
	if err := os.Chmod(data, 0o711); err != nil {
		return err
	}
	if err := searchable(data); err != nil {
		return err
	}
	if err := os.MkdirAll(buildHome, 0o700); err != nil {
		return err
	}
	for d := buildHome; d != data && d != filepath.Dir(d); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o711); err != nil {
			return err
		}
		if !strings.HasPrefix(d, data+string(filepath.Separator)) {
			break // outside the data folder: only the home itself
		}
	}
	return searchable(buildHome)
}

// searchable checks that other users can pass through every folder above
// dir, as apps and builds running as their own users must to reach theirs.
func searchable(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for d := filepath.Dir(abs); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("apps and builds run as users of their own and must pass through %s to reach the data folder %s, but others may not enter it: choose a --data elsewhere (the default for root is /var/lib/paddock) or run chmod o+x %s", d, abs, d)
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// buildEnv passes the Go toolchain's settings on to build commands. Run as
// this user, builds share its Go build cache (content-addressed); run as
// their app's user, they keep theirs in the app's build home.
func buildEnv(isolate bool) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "GO") || strings.HasPrefix(kv, "CGO_") {
			env = append(env, kv)
		}
	}
	if isolate {
		return env
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

// apiAndDashboard serves the API's paths (/v1/…, with its JSON 404 for
// unknown routes, /healthz and /metrics) to the API and every other path
// to the dashboard, on the one listener.
func apiAndDashboard(api, dash http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/v1/", api)
	mux.Handle("/v1", api)
	mux.Handle("/healthz", api)
	mux.Handle("/metrics", api)
	mux.Handle("/", dash)
	return mux
}

// secure wraps the API listener in TLS unless plain HTTP was asked for (on
// loopback only), and returns the API's URL, the PEM of the CA to pin and
// the host names and addresses the API answers to.
func secure(cfg Config, ln net.Listener) (string, []byte, []string, net.Listener, error) {
	addr := ln.Addr().(*net.TCPAddr)
	hosts := []string{"127.0.0.1", "::1", "localhost"}
	if h, err := os.Hostname(); err == nil {
		hosts = append(hosts, h)
	}
	if !addr.IP.IsUnspecified() && !addr.IP.IsLoopback() {
		hosts = append(hosts, addr.IP.String())
	}
	if cfg.InsecureHTTP {
		if !addr.IP.IsLoopback() {
			return "", nil, nil, nil, fmt.Errorf("--insecure-http serves tokens in clear text: it is allowed on a loopback address only, not %s", addr)
		}
		return "http://" + addr.String(), nil, hosts, ln, nil
	}
	var cert tls.Certificate
	var caPEM []byte
	if cfg.TLSCert != "" || cfg.TLSKey != "" {
		var err error
		if cert, err = tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey); err != nil {
			return "", nil, nil, nil, fmt.Errorf("load --tls-cert/--tls-key: %w", err)
		}
		hosts = append(hosts, cert.Leaf.DNSNames...)
	} else {
		ca, err := tlsca.Ensure(filepath.Join(cfg.Data, "tls"), hosts, time.Now())
		if err != nil {
			return "", nil, nil, nil, fmt.Errorf("make the API's certificate: %w", err)
		}
		cert, caPEM = ca.Server, ca.CertPEM
	}
	host := addr.String()
	if addr.IP.IsUnspecified() {
		host = net.JoinHostPort("127.0.0.1", strconv.Itoa(addr.Port))
	}
	tl := tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	return "https://" + host, caPEM, hosts, tl, nil
}

// platformHealth reads how the store, the runtime and the data folder's
// disk are doing.
func platformHealth(ctx context.Context, st *sqlite.DB, rt runtime.Runtime, data string) wire.PlatformHealth {
	var h wire.PlatformHealth
	start := time.Now()
	err := st.Ping(ctx)
	h.Store = wire.StoreHealth{OK: err == nil, LatencyMS: float64(time.Since(start).Microseconds()) / 1000}
	if err != nil {
		h.Store.Error = err.Error()
	}
	h.Runtime.States = map[string]int{}
	if insts, err := rt.List(ctx); err != nil {
		h.Runtime.Error = err.Error()
	} else {
		h.Runtime.Instances = len(insts)
		for _, in := range insts {
			h.Runtime.States[string(in.State)]++
		}
		h.Runtime.OK = h.Runtime.States[string(runtime.StateLost)] == 0
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(data, &fs); err != nil {
		h.Disk.Error = err.Error()
	} else {
		h.Disk.FreeBytes, h.Disk.TotalBytes = fs.Bavail*uint64(fs.Bsize), fs.Blocks*uint64(fs.Bsize)
		h.Disk.OK = h.Disk.FreeBytes >= h.Disk.TotalBytes/10
	}
	return h
}

// servedCerts lists the certificates the platform serves that do not renew
// on their own while it runs, for the certificate_expiring alert.
func servedCerts(cfg Config) []certFile {
	var out []certFile
	switch {
	case cfg.InsecureHTTP:
	case cfg.TLSCert != "":
		out = append(out, certFile{"API's certificate", cfg.TLSCert, "replace it (--tls-cert) and restart the server"})
	default:
		tls := filepath.Join(cfg.Data, "tls")
		out = append(out, certFile{"API's certificate", filepath.Join(tls, "server.crt"), "restart the server, which makes a new one"},
			certFile{"platform's CA", filepath.Join(tls, "ca.crt"), "make a new one (move the tls folder away and restart the server), then log every CLI in again"})
	}
	switch {
	case cfg.HTTPS == "":
	case cfg.HTTPSCert != "":
		out = append(out, certFile{"apps' HTTPS certificate", cfg.HTTPSCert, "replace it (--https-cert) and restart the server"})
	default:
		out = append(out, certFile{"apps' CA", filepath.Join(cfg.Data, "router-ca", "ca.crt"), "make a new one (move the router-ca folder away and restart the server)"})
	}
	return out
}

// bootstrap makes the admin user and its first token on a new store, and
// points the CLI config of the user running the server at this server.
func bootstrap(ctx context.Context, st *sqlite.DB, apiURL string, caPEM []byte, log *slog.Logger) error {
	path, err := client.ConfigPath()
	if err != nil {
		return err
	}
	users, err := st.ListUsers(ctx)
	if err != nil {
		return err
	}
	if len(users) == 0 {
		// The config first: a crash before the store has the token leaves
		// an empty store, and the next start bootstraps again.
		now := time.Now().UTC()
		value, id, hash := auth.NewToken()
		if err := client.SaveConfig(client.Config{Server: apiURL, CA: string(caPEM), Token: value}); err != nil {
			return fmt.Errorf("write CLI config %s: %w", path, err)
		}
		if err := st.Bootstrap(ctx, store.User{Name: "admin", Role: "admin", CreatedAt: now},
			store.Token{ID: id, Name: "admin-bootstrap", User: "admin", Hash: hash, CreatedAt: now}); err != nil {
			return err
		}
		log.Info("created the admin user and token; the CLI config has them", "config", path)
		return nil
	}
	// Keep the token the config has if it belongs to this server.
	c, _ := client.LoadConfig()
	tokens := &auth.Tokens{Store: st}
	if c.Token == "" {
		log.Warn("the CLI config has no token for this server: run `paddock login` or set PADDOCK_TOKEN", "config", path)
		return nil
	}
	if _, err := tokens.Authenticate(ctx, c.Token); err != nil {
		log.Warn("the CLI config's token is not valid on this server: run `paddock login` or set PADDOCK_TOKEN", "config", path)
		return nil
	}
	return client.SaveConfig(client.Config{Server: apiURL, CA: string(caPEM), Token: c.Token})
}

// auditor gives the API the audit log with its verification.
type auditor struct {
	*audit.Log
	dir     string
	metrics *metrics.Metrics
}

// Append appends an event and times it.
func (a auditor) Append(ctx context.Context, e audit.Event) (audit.Event, error) {
	start := time.Now()
	e, err := a.Log.Append(ctx, e)
	a.metrics.AuditAppend(time.Since(start))
	return e, err
}

func (a auditor) Verify(ctx context.Context) audit.Report {
	return audit.Verify(ctx, a.dir, a.PublicKey())
}

// routerProcess keeps the router running as a process of its own, detached
// from the server so that it outlives a server crash or restart.
type routerProcess struct {
	client router.Client
	binary string
	listen string
	args   []string // more flags for `paddock router`
	log    *slog.Logger
}

// routerStopWait is how long a router may take to stop: its 10 s of grace
// for requests in flight, then the cut, then its exit.
const routerStopWait = 15 * time.Second

// argv is the command line a new router starts with: with the addresses
// the kernel picked for the last one when asked for port 0, unless raw.
func (r *routerProcess) argv(raw bool) []string {
	listen, args := r.listen, slices.Clone(r.args)
	if prev, err := router.ReadInfo(r.client.StateDir); err == nil && !raw {
		// A port the kernel picked last time is the port clients know.
		if strings.HasSuffix(listen, ":0") && prev.Listen != "" {
			listen = prev.Listen
		}
		for i, a := range args {
			if a == "--tls-listen" && strings.HasSuffix(args[i+1], ":0") && prev.TLSListen != "" {
				args[i+1] = prev.TLSListen
			}
		}
	}
	return append([]string{r.binary, "router", "--state", r.client.StateDir, "--listen", listen}, args...)
}

// ensure adopts a running router or starts one, and waits until it answers.
// A running router of an older version, or with other settings, is stopped
// and started again; one that holds the state folder without answering is
// killed.
func (r *routerProcess) ensure(ctx context.Context) error {
	if st, err := r.client.Status(ctx); err == nil {
		got := cmdline(st.PID)
		same := func(want []string) bool { return len(got) > 0 && slices.Equal(got[1:], want[1:]) }
		switch {
		case st.Instance == "":
			r.log.Warn("restarting the router: it is of an older version", "pid", st.PID)
		case !same(r.argv(false)) && !same(r.argv(true)):
			r.log.Warn("restarting the router: its settings changed", "pid", st.PID, "was", strings.Join(got, " "))
		default:
			r.log.Info("adopted the running router", "pid", st.PID, "listen", st.Listen)
			return nil
		}
		r.stopPID(st.PID)
	} else if router.Held(r.client.StateDir) {
		info, _ := router.ReadInfo(r.client.StateDir)
		r.log.Warn("the router holds its folder but does not answer; killing it", "pid", info.PID, "err", err)
		if r.ours(info.PID) {
			syscall.Kill(info.PID, syscall.SIGKILL)
			waitExit(info.PID, 5*time.Second)
		}
	}
	if err := os.MkdirAll(r.client.StateDir, 0o700); err != nil {
		return err
	}
	out, err := os.OpenFile(filepath.Join(r.client.StateDir, "router.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	argv := r.argv(false)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	// Only what it needs: the router faces strangers' traffic, and the
	// server's environment may hold the KEK.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the router: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(10 * time.Second)
	for {
		if st, err := r.client.Status(ctx); err == nil && st.PID == cmd.Process.Pid {
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

// stop stops the router running on the state folder and waits for it.
func (r *routerProcess) stop() {
	if info, err := router.ReadInfo(r.client.StateDir); err == nil {
		r.stopPID(info.PID)
	}
}

// stopPID stops the router pid, if it is one of this state folder: SIGTERM,
// then SIGKILL if it has not exited in time.
func (r *routerProcess) stopPID(pid int) {
	if !r.ours(pid) || syscall.Kill(pid, syscall.SIGTERM) != nil {
		return
	}
	if !waitExit(pid, routerStopWait) {
		r.log.Warn("the router did not stop in time; killing it", "pid", pid)
		syscall.Kill(pid, syscall.SIGKILL)
		waitExit(pid, 5*time.Second)
	}
}

// ours reports whether pid is a router of this state folder: a pid alone
// may have passed to another process since it was written down.
func (r *routerProcess) ours(pid int) bool {
	args := cmdline(pid)
	return pid > 0 && len(args) > 3 && args[1] == "router" && slices.Contains(args, r.client.StateDir)
}

// cmdline returns a process's command line; nil if it is gone.
func cmdline(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
}

// waitExit waits up to d for pid to be gone, or a zombie; it reports
// whether it is.
func waitExit(pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if i := strings.LastIndexByte(string(b), ')'); err != nil || i > 0 && i+2 < len(b) && b[i+2] == 'Z' {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
