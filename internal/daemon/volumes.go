package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	csispec "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"paddock.dev/paddock/internal/csi"
	"paddock.dev/paddock/internal/isolate"
	"paddock.dev/paddock/internal/store"
	"paddock.dev/paddock/internal/volume"
)

// volumes is the volume layer and what it talks to: Paddock's own storage
// plugin, served in this process on DATA/volumes/csi.sock, or another CSI
// plugin at cfg.CSIEndpoint.
type volumes struct {
	svc    *volume.Service
	plugin *csi.Plugin // nil with an external plugin
	conn   *grpc.ClientConn
	served chan struct{}
}

// startVolumes starts the storage plugin (unless an external one is
// given) and connects the volume layer to it.
func startVolumes(ctx context.Context, cfg Config, st store.Store, users *isolate.Range, log *slog.Logger) (*volumes, error) {
	dir := filepath.Join(cfg.Data, "volumes")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	v := &volumes{}
	endpoint := cfg.CSIEndpoint
	var enforcement func() (bool, string)
	if endpoint == "" {
		p, err := csi.New(csi.Config{Pool: filepath.Join(dir, "pool"), PoolSize: cfg.VolumePool,
			Version: cfg.Version, Logger: log.With("component", "csi")})
		if err != nil {
			return nil, fmt.Errorf("start the storage plugin: %w", err)
		}
		sock := filepath.Join(dir, "csi.sock")
		l, err := csi.Listen(sock)
		if err != nil {
			p.Close()
			return nil, err
		}
		v.plugin, v.served = p, make(chan struct{})
		go func() { defer close(v.served); p.Serve(ctx, l) }()
		endpoint, enforcement = "unix://"+sock, p.Enforced
		if ok, why := p.Enforced(); !ok {
			log.Warn("volume sizes are NOT enforced: an app can fill the disk through its volumes", "backend", p.Backend(), "why", why)
		}
	}
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		v.close()
		return nil, fmt.Errorf("connect to the storage plugin at %s: %w", endpoint, err)
	}
	v.conn = conn
	node := csispec.NewNodeClient(conn)
	info, err := node.NodeGetInfo(ctx, &csispec.NodeGetInfoRequest{})
	if err != nil {
		v.close()
		return nil, fmt.Errorf("ask the storage plugin at %s for its node: %w", endpoint, err)
	}
	vc := volume.Config{
		Store: st, Controller: csispec.NewControllerClient(conn), Node: node, NodeID: info.NodeId,
		PublishDir: filepath.Join(dir, "published"), Enforcement: enforcement,
		AppQuota: cfg.VolumeQuota, TeamQuota: cfg.TeamVolumeQuota, Logger: log,
	}
	if users != nil {
		vc.UserOf = func(a store.App) (uint32, error) { return users.App(a.ID) }
	}
	if v.svc, err = volume.New(vc); err != nil {
		v.close()
		return nil, err
	}
	return v, nil
}

// close disconnects from the plugin and stops serving it; the pool stays
// mounted, so that running apps keep their volumes.
func (v *volumes) close() {
	if v.svc != nil {
		v.svc.Close()
	}
	if v.conn != nil {
		v.conn.Close()
	}
	if v.plugin != nil {
		v.plugin.Close()
		<-v.served
	}
}
