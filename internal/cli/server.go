package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"paddock.dev/paddock/internal/client"
	"paddock.dev/paddock/internal/csi"
	"paddock.dev/paddock/internal/daemon"
	"paddock.dev/paddock/internal/manifest"
	"paddock.dev/paddock/internal/router"
	"paddock.dev/paddock/internal/runtime/process"
)

func (e *env) upCmd() *cobra.Command {
	cfg := daemon.Config{}
	var debug bool
	var pool, quota, teamQuota, rt string
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run the platform on this machine, in the foreground",
		Long: `Run the platform on this machine: the API, the router, the embedded store.
Apps and the router keep running when the server stops or crashes, and the
next start adopts them. The first start makes an admin token and writes it,
with the API address, into the CLI config (0600) of the user running it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			level := slog.LevelInfo
			if debug {
				level = slog.LevelDebug
			}
			cfg.Logger = slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level}))
			cfg.Stderr = e.stderr
			cfg.Version = Version
			var err error
			if cfg.VolumePool, err = optionalSize("--volume-pool", pool); err != nil {
				return err
			}
			if cfg.VolumeQuota, err = optionalSize("--volume-quota", quota); err != nil {
				return err
			}
			if cfg.TeamVolumeQuota, err = optionalSize("--team-volume-quota", teamQuota); err != nil {
				return err
			}
			switch rt {
			case "process":
				if cfg.Kubeconfig != "" {
					return errors.New("--kubeconfig is for --runtime kubernetes")
				}
			case "kubernetes":
				if cfg.Kubeconfig == "" {
					return errors.New("--runtime kubernetes needs --kubeconfig FILE: the cluster to run apps on")
				}
				// The password is a secret: from the environment, never
				// the command line, which every user of the machine sees.
				cfg.RegistryPassword = os.Getenv("PADDOCK_REGISTRY_PASSWORD")
			default:
				return fmt.Errorf("--runtime %q: give process (apps as processes on this machine) or kubernetes", rt)
			}
			return daemon.Run(ctx, cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Data, "data", defaultDataDir(), "data folder ($PADDOCK_DATA)")
	f.StringVar(&cfg.API, "api", "127.0.0.1:7070", "API listen address")
	f.StringVar(&cfg.HTTP, "http", ":8080", "router listen address for app traffic")
	f.StringVar(&cfg.HTTPS, "https", "", "router listen address for app traffic over TLS, e.g. :8443 (default: none)")
	f.StringVar(&cfg.HTTPSCert, "https-cert", "", "certificate file for app domains (default: one per app from the platform's CA)")
	f.StringVar(&cfg.HTTPSKey, "https-key", "", "key file of --https-cert")
	f.StringVar(&cfg.Domain, "domain", "localhost", "apps are served at APP.DOMAIN")
	f.StringVar(&cfg.BuildHome, "build-home", "", "folder of the apps' build homes, their build caches (default DATA/cache/build-home)")
	f.StringVar(&cfg.TLSCert, "tls-cert", "", "the API's certificate file (default: one from the platform's own CA)")
	f.StringVar(&cfg.TLSKey, "tls-key", "", "the API's key file")
	f.BoolVar(&cfg.InsecureHTTP, "insecure-http", false, "serve the API over plain HTTP (loopback addresses only)")
	f.BoolVar(&cfg.WeakIsolation, "weak-isolation", false, "run as root even where apps' processes cannot be held in cgroups or fenced off each other's ports")
	f.StringVar(&cfg.Metrics, "metrics", "", "serve the platform's Prometheus metrics at this address over plain HTTP without a token, e.g. 127.0.0.1:9090 (default: only GET /metrics on the API, for admins)")
	f.BoolVar(&cfg.DrainsLocal, "drains-local", false, "let log drains reach this machine's loopback and link-local addresses (a syslog on localhost)")
	f.StringVar(&cfg.CSIEndpoint, "csi-endpoint", "", "socket of the CSI plugin that keeps volumes, e.g. unix:///run/csi/csi.sock (default: Paddock's own, in DATA/volumes)")
	f.StringVar(&pool, "volume-pool", "", "size of the storage pool Paddock's own plugin makes on its first start; it grows as volumes need (default 10GiB, sparse)")
	f.StringVar(&quota, "volume-quota", "", "most volume bytes one app may have, e.g. 100GiB (default: no limit)")
	f.StringVar(&teamQuota, "team-volume-quota", "", "most volume bytes the apps granted to one team may have together (default: no limit)")
	f.StringVar(&rt, "runtime", "process", "where apps run: process (on this machine) or kubernetes (on the cluster of --kubeconfig)")
	f.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "kubeconfig file of the cluster apps run on, with --runtime kubernetes")
	f.StringVar(&cfg.NamespacePrefix, "namespace-prefix", "paddock-", "with --runtime kubernetes, each app runs in the namespace PREFIX+APP")
	f.StringVar(&cfg.StorageClass, "storage-class", "", "with --runtime kubernetes, the StorageClass of volumes' claims (default: the cluster's default)")
	f.StringVar(&cfg.SnapshotClass, "snapshot-class", "", "with --runtime kubernetes, the VolumeSnapshotClass of volumes' snapshots (default: the cluster's default)")
	f.StringVar(&cfg.Registry.Repository, "registry", "", "with --runtime kubernetes, where apps' images are pushed: REGISTRY/PATH, each app in PATH/APP (its login: --registry-username, or paddock registry login)")
	f.StringVar(&cfg.RegistryUsername, "registry-username", "", "user name for --registry, with the password in $PADDOCK_REGISTRY_PASSWORD: kept sealed from then on (or set it later with `paddock registry login`)")
	f.BoolVar(&cfg.Registry.Insecure, "registry-insecure", false, "reach --registry over plain HTTP (a registry on loopback)")
	f.StringVar(&cfg.Registry.Base, "base-image", "", "image apps' images are built on, for their shell and libraries (default: none)")
	f.BoolVar(&debug, "debug", false, "log debug messages")
	return cmd
}

// optionalSize parses a size flag; "" is 0.
func optionalSize(flag, s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	n, err := manifest.ParseSize(s)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%s %q: give a size such as 10GiB", flag, s)
	}
	return n, nil
}

// csiCmd serves Paddock's storage as a CSI plugin on its own, for another
// orchestrator (Kubernetes, Nomad) or a test; `paddock up` serves it in
// its own process.
func (e *env) csiCmd() *cobra.Command {
	var cfg csi.Config
	var endpoint, pool string
	cmd := &cobra.Command{
		Use:    "csi",
		Short:  "Serve Paddock's volume storage as a CSI plugin",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			var err error
			if cfg.PoolSize, err = optionalSize("--pool-size", pool); err != nil {
				return err
			}
			cfg.Logger = slog.New(slog.NewTextHandler(e.stderr, nil))
			cfg.Version = Version
			p, err := csi.New(cfg)
			if err != nil {
				return err
			}
			defer p.Close()
			l, err := csi.Listen(endpoint)
			if err != nil {
				return err
			}
			if ok, why := p.Enforced(); !ok {
				cfg.Logger.Warn("volume sizes are NOT enforced", "backend", p.Backend(), "why", why)
			}
			return p.Serve(ctx, l)
		},
	}
	f := cmd.Flags()
	f.StringVar(&endpoint, "endpoint", "", "unix socket to serve on, e.g. unix:///run/paddock/csi.sock")
	f.StringVar(&cfg.Pool, "pool", "", "folder of the storage pool")
	f.StringVar(&pool, "pool-size", "", "size of a new btrfs pool (default 10GiB, sparse)")
	f.StringVar(&cfg.Backend, "backend", "", "btrfs or folders (default: the pool's, else btrfs where it works)")
	f.StringVar(&cfg.NodeID, "node-id", "", "node id to report (default: the host name)")
	cmd.MarkFlagRequired("endpoint")
	cmd.MarkFlagRequired("pool")
	return cmd
}

func (e *env) downCmd() *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Stop the platform and every app on this machine",
		Args:  cobra.NoArgs,
		RunE: e.withClient(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			if err := e.confirm(yes, "stop the platform and every app", "down"); err != nil {
				return err
			}
			if err := c.Shutdown(cmd.Context(), true); err != nil {
				return err
			}
			fmt.Fprintln(e.stderr, "Paddock is stopping its apps, the router and itself.")
			return nil
		}),
	}
	cmd.Flags().BoolVar(&yes, "yes", false, "do not ask for confirmation")
	return cmd
}

// importKeyOffline restores a KEK backup into a data folder no server runs
// on.
func importKeyOffline(ctx context.Context, data string, backup, passphrase []byte) error {
	return daemon.ImportKey(ctx, data, backup, passphrase)
}

// runShim runs `paddock shim DIR` straight away: a supervisor runs beside
// every app's instances, and it skips building the command tree, whose
// garbage it would carry all its life. ok is false for any other command line.
func runShim(ctx context.Context, args []string, stderr io.Writer) (code int, ok bool) {
	if len(args) != 2 || args[0] != "shim" {
		return 0, false
	}
	if err := process.RunShim(context.WithoutCancel(ctx), args[1]); err != nil {
		fmt.Fprintf(stderr, "error: %s\n", err)
		return 1, true
	}
	return 0, true
}

// shimCmd runs the supervisor of an app's instances; the server starts it.
func (e *env) shimCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "shim DIR",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return process.RunShim(context.WithoutCancel(cmd.Context()), args[0])
		},
	}
}

// cgexecCmd starts an instance's process inside its cgroup; shims run it.
func (e *env) cgexecCmd() *cobra.Command {
	return &cobra.Command{
		Use:                "cgexec CGROUP UID GID COMMAND...",
		Hidden:             true,
		Args:               cobra.MinimumNArgs(4),
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return process.CgroupExec(args[0], args[1], args[2], args[3:])
		},
	}
}

// routerCmd runs the router process; the server starts it.
func (e *env) routerCmd() *cobra.Command {
	var cfg router.Config
	cmd := &cobra.Command{
		Use:    "router",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
			cfg.Logger = slog.New(slog.NewTextHandler(e.stderr, nil))
			return router.Run(ctx, cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.StateDir, "state", "", "state folder")
	f.StringVar(&cfg.Listen, "listen", ":8080", "listen address")
	f.StringVar(&cfg.TLSListen, "tls-listen", "", "HTTPS listen address")
	f.StringVar(&cfg.TLSCert, "tls-cert", "", "certificate file served for every host")
	f.StringVar(&cfg.TLSKey, "tls-key", "", "key file of --tls-cert")
	f.StringVar(&cfg.CADir, "ca-dir", "", "the platform CA's folder, to sign a certificate per routed host")
	f.IntVar(&cfg.UID, "uid", 0, "switch to this user once the ports are bound (0: stay as is; needs --gid)")
	f.IntVar(&cfg.GID, "gid", 0, "switch to this group once the ports are bound (0: stay as is)")
	f.DurationVar(&cfg.HeaderTimeout, "header-timeout", 0, "time to receive a request head (default 60s; negative: none)")
	f.DurationVar(&cfg.BodyTimeout, "body-timeout", 0, "time for each read of a request body (default 60s; negative: none)")
	f.DurationVar(&cfg.ResponseHeaderTimeout, "response-header-timeout", 0, "time for an app to send its response head, else 504 (default 60s; negative: none)")
	f.IntVar(&cfg.MaxConns, "max-conns", 0, "client connections in total (default 10000; negative: no cap)")
	f.IntVar(&cfg.MaxConnsPerIP, "max-conns-per-ip", 0, "client connections from one address (default 1000; negative: no cap)")
	return cmd
}
