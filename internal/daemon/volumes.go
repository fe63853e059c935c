package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	csispec "github.com/container-storage-interface/spec/lib/go/csi"
	snapclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"paddock.dev/paddock/internal/csi"
	"paddock.dev/paddock/internal/isolate"
	"paddock.dev/paddock/internal/kube"
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
func startVolumes(ctx context.Context, cfg Config, st store.Store, users *isolate.Range, k *kube.Runtime, snaps snapclient.Interface, log *slog.Logger) (*volumes, error) {
	dir := filepath.Join(cfg.Data, "volumes")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	v := &volumes{}
	if k != nil {
		return v, v.onKube(cfg, st, k, snaps, dir, log)
	}
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

// onKube keeps volumes on the cluster of k: claims of cfg.StorageClass,
// snapshots of cfg.SnapshotClass.
func (v *volumes) onKube(cfg Config, st store.Store, k *kube.Runtime, snaps snapclient.Interface, dir string, log *slog.Logger) error {
	storage := k.Storage(kube.StorageConfig{Class: cfg.StorageClass, SnapshotClass: cfg.SnapshotClass, Snapshots: snaps})
	var err error
	v.svc, err = volume.New(volume.Config{
		Store: st, Controller: storage, Node: kube.StorageNode{},
		Mounted: func(v store.Volume) bool {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			used, err := storage.ClaimInUse(ctx, v.CSIID)
			return used || err != nil // when in doubt, in use
		},
		PublishDir: filepath.Join(dir, "published"),
		Parameters: func(a store.App) map[string]string {
			return map[string]string{kube.ParamApp: a.Name, kube.ParamAppID: strconv.FormatInt(a.ID, 10)}
		},
		NoContent:   "on Kubernetes Paddock does not read volumes' content (checksums, verify, export, import, paced restores): snapshots and restores from them work; keep copies elsewhere with the cluster's own backup tools",
		Enforcement: func() (bool, string) { return true, "" }, // the StorageClass's driver sizes claims
		AppQuota:    cfg.VolumeQuota, TeamQuota: cfg.TeamVolumeQuota, Logger: log,
	})
	return err
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
