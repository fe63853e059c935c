package csi

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// needRoot skips tests that mount and attach loop devices where they
// cannot (not root). As root, btrfs must work: CI runs as root with
// btrfs-progs installed (.ci/run), and a missing tool fails there.
func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices and mounts")
	}
	if why := btrfsUnavailable(); why != "" {
		t.Fatal("btrfs cannot run here (install btrfs-progs: apt-get install btrfs-progs): " + why)
	}
}

// testLogger writes the plugin's log to the test's log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

// testEnv is a plugin on a pool in a temporary folder, served on a unix
// socket, with clients connected to it.
type testEnv struct {
	t      testing.TB
	dir    string // the temporary folder: pool/, targets, the socket
	cfg    Config
	p      *Plugin
	sock   string
	stop   context.CancelFunc
	served chan error
	conn   *grpc.ClientConn
	ctrl   csi.ControllerClient
	node   csi.NodeClient
	ident  csi.IdentityClient
}

// newEnv makes a pool with cfg (Pool defaults to DIR/pool), starts the
// plugin and connects to it. At cleanup it stops the plugin and unmounts
// everything under DIR, which detaches the pool's loop device.
func newEnv(t testing.TB, cfg Config) *testEnv {
	t.Helper()
	dir := t.TempDir()
	t.Cleanup(func() { cleanupMounts(t, dir) })
	if cfg.Pool == "" {
		cfg.Pool = filepath.Join(dir, "pool")
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	e := &testEnv{t: t, dir: dir, cfg: cfg, sock: filepath.Join(dir, "csi.sock")}
	e.start()
	return e
}

// start starts (or restarts) the plugin on the env's pool and socket.
func (e *testEnv) start() {
	t := e.t
	t.Helper()
	p, err := New(e.cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	l, err := Listen("unix://" + e.sock)
	if err != nil {
		p.Close()
		t.Fatalf("Listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.p, e.stop, e.served = p, cancel, make(chan error, 1)
	go func() { e.served <- p.Serve(ctx, l) }()
	conn, err := grpc.NewClient("unix://"+e.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	e.conn = conn
	e.ctrl, e.node, e.ident = csi.NewControllerClient(conn), csi.NewNodeClient(conn), csi.NewIdentityClient(conn)
	t.Cleanup(e.shutdown)
}

// shutdown stops serving and closes the plugin (the pool stays mounted).
func (e *testEnv) shutdown() {
	if e.p == nil {
		return
	}
	e.conn.Close()
	e.stop()
	if err := <-e.served; err != nil {
		e.t.Errorf("Serve: %v", err)
	}
	if err := e.p.Close(); err != nil {
		e.t.Errorf("Close: %v", err)
	}
	e.p = nil
}

// restart stops the plugin and starts a new one on the same pool.
func (e *testEnv) restart() {
	e.t.Helper()
	e.shutdown()
	e.start()
}

// cleanupMounts unmounts every mount under dir, deepest first, and detaches
// the loop devices of the pool images under dir. Nothing else is touched.
func cleanupMounts(t testing.TB, dir string) {
	all, err := mounts()
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	var points []string
	for _, m := range all {
		if strings.HasPrefix(m.Point, dir+"/") {
			points = append(points, m.Point)
		}
	}
	slices.SortFunc(points, func(a, b string) int { return len(b) - len(a) })
	for _, p := range points {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			t.Errorf("cleanup: unmount %s: %v", p, err)
		}
	}
	images, _ := filepath.Glob(filepath.Join(dir, "*", poolImageName))
	for _, img := range images {
		pool := &btrfsPool{image: img}
		for i := 0; ; i++ {
			dev, err := pool.findLoop()
			if err != nil || dev == "" {
				break
			}
			if i == 100 {
				f, err := os.OpenFile(dev, os.O_RDWR, 0)
				if err == nil {
					unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0)
					f.Close()
				}
				t.Errorf("cleanup: %s was still attached to %s", dev, img)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// mountVolume is a CreateVolume request for a mounted single-writer volume.
func mountCap(mode csi.VolumeCapability_AccessMode_Mode) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
	}
}

func createReq(name string, size int64, params map[string]string) *csi.CreateVolumeRequest {
	return &csi.CreateVolumeRequest{
		Name:               name,
		CapacityRange:      &csi.CapacityRange{RequiredBytes: size},
		VolumeCapabilities: []*csi.VolumeCapability{mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)},
		Parameters:         params,
	}
}

// ctx returns a context that ends with the test, bounded so that a hang
// fails the test instead of stalling it.
func (e *testEnv) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	e.t.Cleanup(cancel)
	return ctx
}

// createVolume makes a volume owned by uid:uid.
func (e *testEnv) createVolume(name string, size int64, uid int) *csi.Volume {
	e.t.Helper()
	params := map[string]string{ParamUID: strconv.Itoa(uid), ParamGID: strconv.Itoa(uid)}
	resp, err := e.ctrl.CreateVolume(e.ctx(), createReq(name, size, params))
	if err != nil {
		e.t.Fatalf("CreateVolume %s: %v", name, err)
	}
	return resp.GetVolume()
}

// cloneVolume makes a volume from a snapshot or a volume.
func (e *testEnv) cloneVolume(name string, size int64, src *csi.VolumeContentSource) *csi.Volume {
	e.t.Helper()
	req := createReq(name, size, nil)
	req.VolumeContentSource = src
	resp, err := e.ctrl.CreateVolume(e.ctx(), req)
	if err != nil {
		e.t.Fatalf("CreateVolume %s from %v: %v", name, src, err)
	}
	return resp.GetVolume()
}

func fromSnapshot(id string) *csi.VolumeContentSource {
	return &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
		Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: id}}}
}

func fromVolume(id string) *csi.VolumeContentSource {
	return &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{
		Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: id}}}
}

func (e *testEnv) publish(volID, target string, readOnly bool) {
	e.t.Helper()
	_, err := e.node.NodePublishVolume(e.ctx(), &csi.NodePublishVolumeRequest{
		VolumeId:         volID,
		TargetPath:       target,
		VolumeCapability: mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER),
		Readonly:         readOnly,
	})
	if err != nil {
		e.t.Fatalf("NodePublishVolume %s at %s: %v", volID, target, err)
	}
}

func (e *testEnv) unpublish(volID, target string) {
	e.t.Helper()
	_, err := e.node.NodeUnpublishVolume(e.ctx(), &csi.NodeUnpublishVolumeRequest{VolumeId: volID, TargetPath: target})
	if err != nil {
		e.t.Fatalf("NodeUnpublishVolume %s at %s: %v", volID, target, err)
	}
}

func (e *testEnv) snapshot(volID, name string) *csi.Snapshot {
	e.t.Helper()
	resp, err := e.ctrl.CreateSnapshot(e.ctx(), &csi.CreateSnapshotRequest{SourceVolumeId: volID, Name: name})
	if err != nil {
		e.t.Fatalf("CreateSnapshot %s of %s: %v", name, volID, err)
	}
	return resp.GetSnapshot()
}

// stats returns a published volume's usage, after committing what was
// written (btrfs updates its counters when a transaction commits).
func (e *testEnv) stats(volID, target string) *csi.VolumeUsage {
	e.t.Helper()
	if f, err := os.Open(target); err == nil {
		unix.Syncfs(int(f.Fd()))
		f.Close()
	}
	resp, err := e.node.NodeGetVolumeStats(e.ctx(), &csi.NodeGetVolumeStatsRequest{VolumeId: volID, VolumePath: target})
	if err != nil {
		e.t.Fatalf("NodeGetVolumeStats %s at %s: %v", volID, target, err)
	}
	return resp.GetUsage()[0]
}

// code is the gRPC code of err.
func code(err error) codes.Code { return status.Code(err) }

type unixStat = syscall.Stat_t
