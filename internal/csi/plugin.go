package csi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
)

// Config configures a Plugin.
type Config struct {
	// Pool is the folder of the storage pool, e.g. DATA/volumes. Required.
	// It holds a btrfs image and its mount point, or plain folders.
	Pool string
	// PoolSize is the size of the btrfs pool image made on the first start
	// (sparse: it takes disk space only as volumes fill). Zero means 10 GiB;
	// at least 128 MiB.
	PoolSize int64
	// MaxPoolSize caps how large the image may grow when volumes need room.
	// Zero means as large as the disk under Pool allows, keeping 5% of it
	// (at most 2 GiB) free for everything else.
	MaxPoolSize int64
	// Backend is "btrfs", "folders", or "" to choose: the backend the pool
	// was made with, else btrfs where it works (root, loop devices,
	// mkfs.btrfs), else folders, whose sizes are not enforced.
	Backend string
	// DriverName is the plugin's CSI name; zero means "local.paddock.dev".
	DriverName string
	// NodeID is the node id NodeGetInfo reports; zero means the host name.
	NodeID string
	// DefaultVolumeSize is the size of a volume created without a capacity
	// range; zero means 1 GiB.
	DefaultVolumeSize int64
	// Version is the vendor version GetPluginInfo reports; zero means "dev".
	Version string
	// Logger receives the plugin's log; nil discards it.
	Logger *slog.Logger
}

// Defaults.
const (
	DefaultDriverName = "local.paddock.dev"
	DefaultPoolSize   = 10 << 30
	DefaultVolumeSize = 1 << 30
)

// Plugin is Paddock's local storage served as a CSI plugin: the Identity,
// Controller and Node services of one node, over gRPC.
//
// Every change of volumes, snapshots and publications holds mu, so that
// the checks CSI's idempotency needs (is there a volume of that name?) and
// the change they lead to happen as one step.
type Plugin struct {
	cfg    Config
	log    *slog.Logger
	be     backend
	mounts bool // bind mounts work here (root); else targets are symbolic links
	root   bool // running as root: volumes can be given to other users

	mu        sync.Mutex
	volumes   map[string]*volumeRecord
	snapshots map[string]*snapshotRecord

	srvMu   sync.Mutex
	servers map[*grpc.Server]bool
	closed  bool
}

// ErrClosed is returned by Serve once the plugin is closed.
var ErrClosed = errors.New("the CSI plugin is closed")

// New opens (or makes) the pool and loads its volumes and snapshots. A
// pool survives restarts of the plugin and of the machine: New adopts the
// pool's mount or loop device when they are still there, attaches and
// mounts the image again when they are not, and formats only an empty
// image.
func New(cfg Config) (*Plugin, error) {
	if cfg.Pool == "" {
		return nil, errors.New("csi: no pool folder given")
	}
	pool, err := filepath.Abs(cfg.Pool)
	if err != nil {
		return nil, fmt.Errorf("csi: pool folder: %w", err)
	}
	cfg.Pool = pool
	if cfg.PoolSize == 0 {
		cfg.PoolSize = DefaultPoolSize
	}
	if cfg.PoolSize < minPoolSize {
		return nil, fmt.Errorf("csi: a pool of %s is too small; give at least %s", formatBytes(cfg.PoolSize), formatBytes(minPoolSize))
	}
	if cfg.MaxPoolSize != 0 && cfg.MaxPoolSize < cfg.PoolSize {
		return nil, fmt.Errorf("csi: the largest pool size (%s) is below the pool size (%s)", formatBytes(cfg.MaxPoolSize), formatBytes(cfg.PoolSize))
	}
	if cfg.DriverName == "" {
		cfg.DriverName = DefaultDriverName
	}
	if cfg.NodeID == "" {
		if cfg.NodeID, err = os.Hostname(); err != nil {
			return nil, fmt.Errorf("csi: node id: %w", err)
		}
	}
	if cfg.DefaultVolumeSize == 0 {
		cfg.DefaultVolumeSize = DefaultVolumeSize
	}
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	p := &Plugin{
		cfg:     cfg,
		log:     cfg.Logger,
		root:    os.Geteuid() == 0,
		servers: map[*grpc.Server]bool{},
	}
	p.mounts = p.root
	ctx := context.Background()
	if p.be, err = openBackend(ctx, cfg, p.log); err != nil {
		return nil, fmt.Errorf("csi: %w", err)
	}
	if err := p.load(); err != nil {
		p.be.close()
		return nil, fmt.Errorf("csi: %w", err)
	}
	enforced, reason := p.be.enforced()
	p.log.Info("csi plugin ready", "backend", p.be.kind(), "pool", cfg.Pool,
		"volumes", len(p.volumes), "snapshots", len(p.snapshots), "sizes_enforced", enforced)
	if !enforced {
		p.log.Warn("csi volume sizes are not enforced", "reason", reason)
	}
	return p, nil
}

// openBackend opens the pool with the backend it was made with, or makes
// a new pool.
func openBackend(ctx context.Context, cfg Config, log *slog.Logger) (backend, error) {
	image := filepath.Join(cfg.Pool, poolImageName)
	folders := &foldersBackend{dir: cfg.Pool, log: log}
	switch cfg.Backend {
	case "", "btrfs", "folders":
	default:
		return nil, fmt.Errorf("unknown backend %q: use btrfs or folders", cfg.Backend)
	}
	if _, err := os.Stat(image); err == nil {
		if cfg.Backend == "folders" {
			return nil, fmt.Errorf("the pool %s holds a btrfs image; it cannot be opened as folders", cfg.Pool)
		}
		if why := btrfsUnavailable(); why != "" {
			return nil, fmt.Errorf("the pool %s is a btrfs image, but %s", cfg.Pool, why)
		}
		pool, err := openBtrfsPool(ctx, cfg.Pool, cfg.PoolSize, log)
		if err != nil {
			return nil, err
		}
		return &btrfsBackend{pool: pool, maxPool: cfg.MaxPoolSize, log: log}, nil
	}
	if fi, err := os.Stat(filepath.Join(cfg.Pool, volumesDir)); err == nil && fi.IsDir() {
		if cfg.Backend == "btrfs" {
			return nil, fmt.Errorf("the pool %s holds plain folders; it cannot be opened as btrfs (give a new pool folder for btrfs volumes)", cfg.Pool)
		}
		folders.reason = "this pool was made of plain folders, which do not limit sizes; volumes made in a new pool folder on a machine with root and loop devices get btrfs, which does"
		return folders, folders.prepare()
	}
	// A new pool.
	why := "the folders backend was asked for"
	if cfg.Backend != "folders" {
		why = btrfsUnavailable()
		if why == "" {
			pool, err := openBtrfsPool(ctx, cfg.Pool, cfg.PoolSize, log)
			if err == nil {
				return &btrfsBackend{pool: pool, maxPool: cfg.MaxPoolSize, log: log}, nil
			}
			if cfg.Backend == "btrfs" {
				return nil, err
			}
			// Undo the attempt: nothing was stored in it.
			os.Remove(image)
			os.Remove(filepath.Join(cfg.Pool, poolMountName))
			why = err.Error()
		}
		if cfg.Backend == "btrfs" {
			return nil, fmt.Errorf("the btrfs backend cannot run here: %s", why)
		}
	}
	folders.reason = "plain folders do not limit sizes: " + why
	return folders, folders.prepare()
}

// btrfsUnavailable says why the btrfs backend cannot run here, or "".
func btrfsUnavailable() string {
	if os.Geteuid() != 0 {
		return "the plugin does not run as root, which loop devices and mounts need"
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		return "this machine has no loop devices (/dev/loop-control)"
	}
	if _, err := findTool("mkfs.btrfs"); err != nil {
		return err.Error()
	}
	b, err := os.ReadFile("/proc/filesystems")
	if err == nil && !strings.Contains(string(b), "\tbtrfs\n") {
		// The module may still load on the first mount; say so if it fails.
		if _, err := os.Stat("/sys/fs/btrfs"); err != nil {
			return "the kernel has no btrfs filesystem loaded"
		}
	}
	return ""
}

// load reads the records and removes what a crash left without one.
func (p *Plugin) load() error {
	root := p.be.root()
	vols, volOrphans, err := loadRecords[volumeRecord](filepath.Join(root, volumesDir), volumeIDPattern)
	if err != nil {
		return err
	}
	snaps, snapOrphans, err := loadRecords[snapshotRecord](filepath.Join(root, snapshotsDir), snapshotIDPattern)
	if err != nil {
		return err
	}
	for _, id := range volOrphans {
		p.log.Warn("csi removing the leftover of an unfinished create or delete", "volume", id)
		if err := p.be.remove(p.volumePath(id)); err != nil {
			p.log.Warn("csi cannot remove the leftover", "volume", id, "err", err)
		}
	}
	for _, id := range snapOrphans {
		p.log.Warn("csi removing the leftover of an unfinished create or delete", "snapshot", id)
		if err := p.be.remove(p.snapshotPath(id)); err != nil {
			p.log.Warn("csi cannot remove the leftover", "snapshot", id, "err", err)
		}
	}
	p.volumes, p.snapshots = vols, snaps
	return nil
}

func (p *Plugin) volumePath(id string) string {
	return filepath.Join(p.be.root(), volumesDir, id)
}

func (p *Plugin) snapshotPath(id string) string {
	return filepath.Join(p.be.root(), snapshotsDir, id)
}

// Enforced reports whether volume sizes are enforced (the btrfs backend),
// and if not, why, in a sentence to show to people.
func (p *Plugin) Enforced() (bool, string) { return p.be.enforced() }

// Backend is the backend in use: "btrfs" or "folders".
func (p *Plugin) Backend() string { return p.be.kind() }

// Serve answers CSI calls on l until ctx ends or the plugin is closed; it
// then stops taking calls, lets running ones finish (for up to 10 s), and
// returns nil. It may run on several listeners at once.
func (p *Plugin) Serve(ctx context.Context, l net.Listener) error {
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(p.logCalls))
	csi.RegisterIdentityServer(srv, &identityServer{p: p})
	csi.RegisterControllerServer(srv, &controllerServer{p: p})
	csi.RegisterNodeServer(srv, &nodeServer{p: p})

	p.srvMu.Lock()
	if p.closed {
		p.srvMu.Unlock()
		l.Close()
		return ErrClosed
	}
	p.servers[srv] = true
	p.srvMu.Unlock()

	served := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case <-ctx.Done():
		case <-served:
		}
		gracefulStop(srv, 10*time.Second)
	}()
	err := srv.Serve(l)
	close(served)
	<-stopped

	p.srvMu.Lock()
	delete(p.servers, srv)
	p.srvMu.Unlock()
	if errors.Is(err, grpc.ErrServerStopped) {
		err = nil
	}
	return err
}

// gracefulStop stops srv, waiting for running calls at most wait.
func gracefulStop(srv *grpc.Server, wait time.Duration) {
	done := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(done)
	}()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		srv.Stop()
		<-done
	}
}

// Close stops serving and lets go of the pool, which stays mounted: the
// volumes published to apps keep working, and the next New adopts it.
// Close is idempotent.
func (p *Plugin) Close() error {
	p.srvMu.Lock()
	if p.closed {
		p.srvMu.Unlock()
		return nil
	}
	p.closed = true
	servers := make([]*grpc.Server, 0, len(p.servers))
	for s := range p.servers {
		servers = append(servers, s)
	}
	p.srvMu.Unlock()
	for _, s := range servers {
		s.Stop()
	}
	return p.be.close()
}

// ErrPublished is returned by Unmount while a volume is published.
var ErrPublished = errors.New("a volume is still published")

// Unmount closes the plugin and unmounts the pool, which detaches its loop
// device: for a machine going down, and for tests. It refuses while any
// volume is still published somewhere.
func (p *Plugin) Unmount() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, v := range p.volumes {
		if live := p.livePublications(v); len(live) > 0 {
			return fmt.Errorf("unmount the pool: volume %s (%s) is published at %s: %w", v.ID, v.Name, live[0].Target, ErrPublished)
		}
	}
	if err := p.Close(); err != nil {
		return err
	}
	return p.be.detach()
}

// Listen listens on a CSI endpoint: "unix:///path/to/csi.sock",
// "unix:/path" or a plain path. A socket file left by an earlier run is
// replaced; the new one is readable and writable by its owner only.
func Listen(endpoint string) (net.Listener, error) {
	path := endpoint
	if rest, ok := strings.CutPrefix(endpoint, "unix://"); ok {
		path = rest
	} else if rest, ok := strings.CutPrefix(endpoint, "unix:"); ok {
		path = rest
	}
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("csi endpoint %q: give an absolute unix socket path, e.g. unix:///run/paddock/csi.sock", endpoint)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&fs.ModeSocket == 0 {
			return nil, fmt.Errorf("csi endpoint %s: a file that is not a socket is there; remove it or choose another path", path)
		}
		os.Remove(path)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("csi endpoint: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("csi endpoint: %w", err)
	}
	return l, nil
}
