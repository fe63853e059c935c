package volume_test

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	csispec "github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"paddock.dev/paddock/internal/csi"
	"paddock.dev/paddock/internal/store"
	"paddock.dev/paddock/internal/store/sqlite"
	"paddock.dev/paddock/internal/volume"
)

// The tests run a volume.Service the way the daemon does: connected by a
// unix socket to a CSI plugin served in this process, with the store in
// SQLite.

const (
	app    = "shop" // the app the tests' volumes belong to
	mib    = int64(1 << 20)
	uidOf0 = 0x7fff0000 // an app's user is uidOf0 + its ID: a range no one else uses
)

// plugin is a CSI plugin a Service runs against.
type plugin struct {
	name string
	// files says that publishing makes a real folder holding the volume,
	// so that the tests can check files in it.
	files bool
	start func(t *testing.T, dir, sock string) started
}

// started is a running plugin.
type started struct {
	own  *csi.Plugin // Paddock's own plugin, or nil
	mock *mockPlugin // csi-test's mock driver's volumes, or nil
}

// plugins are the plugins every contract test runs against: Paddock's own
// on both backends, and csi-test's mock driver.
func plugins() []plugin {
	return []plugin{
		{name: "btrfs", files: true, start: startOwn("btrfs")},
		{name: "folders", files: true, start: startOwn("folders")},
		mockDriver(),
	}
}

// filePlugins are the plugins whose volumes hold real files.
func filePlugins() []plugin {
	return slices.DeleteFunc(plugins(), func(p plugin) bool { return !p.files })
}

// forEach runs test as a subtest for each plugin.
func forEach(t *testing.T, ps []plugin, test func(t *testing.T, p plugin)) {
	for _, p := range ps {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			test(t, p)
		})
	}
}

// needBtrfs skips a test of the btrfs backend where it cannot run (not
// root). As root it must: CI runs as root with btrfs-progs installed
// (.ci/run), and a missing tool or loop device fails there.
func needBtrfs(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the btrfs backend needs root")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Fatal("the btrfs backend needs loop devices: /dev/loop-control is missing")
	}
	if _, err := exec.LookPath("mkfs.btrfs"); err != nil {
		if _, err := os.Stat("/usr/sbin/mkfs.btrfs"); err != nil {
			t.Fatal("the btrfs backend needs btrfs-progs: apt-get install btrfs-progs")
		}
	}
}

// startOwn starts Paddock's plugin with backend on a pool in dir. At
// cleanup it stops the plugin and unmounts the pool, which detaches its
// loop device.
func startOwn(backend string) func(t *testing.T, dir, sock string) started {
	return func(t *testing.T, dir, sock string) started {
		t.Helper()
		if backend == "btrfs" {
			needBtrfs(t)
		}
		p, err := csi.New(csi.Config{
			Pool: filepath.Join(dir, "pool"), Backend: backend, PoolSize: 1 << 30,
			NodeID: "test-node", Logger: testLogger(t),
		})
		if err != nil {
			t.Fatalf("start the %s plugin: %v", backend, err)
		}
		if got := p.Backend(); got != backend {
			p.Unmount()
			t.Fatalf("the plugin runs the %s backend, want %s", got, backend)
		}
		l, err := csi.Listen("unix://" + sock)
		if err != nil {
			p.Unmount()
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() { served <- p.Serve(ctx, l) }()
		t.Cleanup(func() {
			if err := p.Unmount(); err != nil {
				t.Errorf("unmount the pool: %v", err)
				p.Close()
			}
			cancel()
			if err := <-served; err != nil && !errors.Is(err, csi.ErrClosed) {
				t.Errorf("serve: %v", err)
			}
		})
		return started{own: p}
	}
}

// env is a Service connected to a plugin.
type env struct {
	t       *testing.T
	ctx     context.Context
	dir     string // holds the pool, the store and PublishDir
	publish string // the Service's PublishDir
	st      store.Store
	svc     *volume.Service
	ctrl    csispec.ControllerClient
	node    csispec.NodeClient
	plugin  started
}

// newEnv starts p, connects a Service to it by its socket, with the app
// "shop" in the store, and cfg changed by opts. At cleanup it takes back
// every publication, stops the plugin and fails the test if anything under
// its folder is still mounted or attached to a loop device.
func newEnv(t *testing.T, p plugin, opts ...func(*volume.Config)) *env {
	t.Helper()
	dir := t.TempDir()
	t.Cleanup(func() { checkReleased(t, dir) })
	// A unix socket's path has at most 107 bytes: keep it short.
	sockDir, err := os.MkdirTemp("", "pdk-csi-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "csi.sock")

	e := &env{t: t, dir: dir, publish: filepath.Join(dir, "published")}
	e.plugin = p.start(t, dir, sock)

	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("connect to the plugin: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	e.ctrl, e.node = csispec.NewControllerClient(conn), csispec.NewNodeClient(conn)

	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Second)
	t.Cleanup(cancel)
	e.ctx = ctx
	st, err := sqlite.Open(ctx, filepath.Join(dir, "paddock.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.CreateApp(ctx, store.App{Name: app}); err != nil {
		t.Fatal(err)
	}
	e.st = st

	cfg := volume.Config{
		Store: st, Controller: e.ctrl, Node: e.node, NodeID: "test-node",
		PublishDir: e.publish, Logger: testLogger(t),
	}
	if e.plugin.own != nil {
		cfg.Enforcement = e.plugin.own.Enforced
	}
	for _, o := range opts {
		o(&cfg)
	}
	if e.svc, err = volume.New(cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		e.svc.Unpublished(ctx, nil)
	})
	return e
}

// withUsers gives each app's volumes to its own user, uidOf0 + its ID.
func withUsers(cfg *volume.Config) {
	cfg.UserOf = func(a store.App) (uint32, error) { return uidOf0 + uint32(a.ID), nil }
}

// withQuota limits each app's volumes to n bytes.
func withQuota(n int64) func(*volume.Config) {
	return func(cfg *volume.Config) { cfg.AppQuota = n }
}

// uid is the user of the app "shop" under withUsers.
func (e *env) uid() uint32 {
	e.t.Helper()
	a, err := e.st.GetApp(e.ctx, app)
	if err != nil {
		e.t.Fatal(err)
	}
	return uidOf0 + uint32(a.ID)
}

// create makes a volume of the app "shop", failing the test if it cannot.
func (e *env) create(name string, size int64) store.Volume {
	e.t.Helper()
	v, err := e.svc.Create(e.ctx, app, name, size)
	if err != nil {
		e.t.Fatalf("create %s: %v", name, err)
	}
	return v
}

// attach attaches a volume to the process type web at the path data.
func (e *env) attach(name string) store.Volume {
	e.t.Helper()
	v, err := e.svc.Attach(e.ctx, name, app, "web", "data")
	if err != nil {
		e.t.Fatalf("attach %s: %v", name, err)
	}
	return v
}

// mount publishes web's volumes for instance and returns the folder of
// the one at path data.
func (e *env) mount(instance string) string {
	e.t.Helper()
	ms, err := e.svc.Mounts(e.ctx, app, "web", instance)
	if err != nil {
		e.t.Fatalf("mounts of %s: %v", instance, err)
	}
	for _, m := range ms {
		if m.Target == "data" {
			return m.Source
		}
	}
	e.t.Fatalf("mounts of %s: %+v, none at data", instance, ms)
	return ""
}

func (e *env) unpublish(instance string) {
	e.t.Helper()
	if err := e.svc.Unpublish(e.ctx, instance); err != nil {
		e.t.Fatalf("unpublish %s: %v", instance, err)
	}
}

func (e *env) snapshot(volume, label string) store.Snapshot {
	e.t.Helper()
	sn, err := e.svc.Snapshot(e.ctx, volume, label)
	if err != nil {
		e.t.Fatalf("snapshot %s: %v", volume, err)
	}
	e.svc.Wait() // its checksum, made in the background
	return sn
}

// pluginVolumes returns the plugin's volumes by ID, as ListVolumes tells.
func (e *env) pluginVolumes() map[string]*csispec.Volume {
	e.t.Helper()
	out := map[string]*csispec.Volume{}
	token := ""
	for {
		resp, err := e.ctrl.ListVolumes(e.ctx, &csispec.ListVolumesRequest{StartingToken: token})
		if err != nil {
			e.t.Fatalf("ListVolumes: %v", err)
		}
		for _, en := range resp.Entries {
			out[en.Volume.VolumeId] = en.Volume
		}
		if token = resp.NextToken; token == "" {
			return out
		}
	}
}

// pluginSnapshots returns the IDs of the plugin's snapshots.
func (e *env) pluginSnapshots() []string {
	e.t.Helper()
	var out []string
	token := ""
	for {
		resp, err := e.ctrl.ListSnapshots(e.ctx, &csispec.ListSnapshotsRequest{StartingToken: token})
		if err != nil {
			e.t.Fatalf("ListSnapshots: %v", err)
		}
		for _, en := range resp.Entries {
			out = append(out, en.Snapshot.SnapshotId)
		}
		if token = resp.NextToken; token == "" {
			slices.Sort(out)
			return out
		}
	}
}

// testLogger writes a log to the test's log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, nil))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

// checkReleased fails the test if anything under dir is still mounted or
// backs a loop device, and then releases it, so that one failure does not
// leave the machine with mounts and loop devices.
func checkReleased(t *testing.T, dir string) {
	points := mountsUnder(t, dir)
	slices.SortFunc(points, func(a, b string) int { return len(b) - len(a) })
	for _, p := range points {
		t.Errorf("still mounted after the test: %s", p)
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", p, err)
		}
	}
	// An autoclear loop device goes once its filesystem is unmounted,
	// which a lazy unmount may delay a little.
	for i := 0; ; i++ {
		devs := loopsUnder(dir)
		if len(devs) == 0 {
			return
		}
		if i < 100 {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		for _, dev := range devs {
			t.Errorf("still attached after the test: %s", dev)
			if f, err := os.OpenFile(dev, os.O_RDWR, 0); err == nil {
				unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0)
				f.Close()
			}
		}
		return
	}
}

// mountsUnder returns the mount points under dir.
func mountsUnder(t *testing.T, dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Errorf("read the mounts: %v", err)
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		point := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(fields[4])
		if strings.HasPrefix(point, dir+"/") {
			out = append(out, point)
		}
	}
	return out
}

// loopsUnder returns the loop devices backed by files under dir.
func loopsUnder(dir string) []string {
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil && strings.HasPrefix(string(b), dir+"/") {
			out = append(out, "/dev/"+filepath.Base(filepath.Dir(filepath.Dir(f))))
		}
	}
	return out
}
