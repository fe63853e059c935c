package kubetest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"paddock.dev/paddock/internal/csi"
)

// Storage is what StartStorage gives a cluster: storage as a real cluster
// has it.
type Storage struct {
	// Driver is the CSI driver's name.
	Driver string
	// Endpoint is the plugin's socket, unix:///…, for nodes that publish
	// its volumes (internal/kubetest/node's Options.CSI).
	Endpoint string
	// Class is a StorageClass of the driver: volumes made at once, deleted
	// with their claims, expandable.
	Class string
	// SnapshotClass is a VolumeSnapshotClass of the driver, its snapshots
	// deleted with their VolumeSnapshots.
	SnapshotClass string
	// Plugin is the running plugin.
	Plugin *csi.Plugin
}

// StartStorage gives the cluster storage: Paddock's own CSI plugin
// (internal/csi) served on a socket in the cluster's folder, and the
// Kubernetes CSI sidecars that drive a plugin from API objects, built by
// tools/kube/build.sh: csi-provisioner (claims to volumes), csi-resizer
// (claims' larger requests), csi-snapshotter and snapshot-controller
// (VolumeSnapshots), with the VolumeSnapshot CRDs. It makes a CSIDriver,
// the StorageClass and the VolumeSnapshotClass. Everything stops when the
// test ends, before the control plane.
func (c *Cluster) StartStorage(t testing.TB) *Storage {
	t.Helper()
	ctx := t.Context()
	s := &Storage{Driver: "local.paddock.dev", Class: "paddock-local", SnapshotClass: "paddock-local"}
	dir := filepath.Join(c.Dir, "storage")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	logFile, err := os.OpenFile(filepath.Join(dir, "plugin.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	p, err := csi.New(csi.Config{Pool: filepath.Join(dir, "pool"), PoolSize: 256 << 20, DriverName: s.Driver,
		NodeID: "kubetest", Logger: slog.New(slog.NewTextHandler(logFile, nil))})
	if err != nil {
		logFile.Close()
		t.Fatalf("start the CSI plugin: %v", err)
	}
	sock := filepath.Join(dir, "csi.sock")
	s.Endpoint, s.Plugin = "unix://"+sock, p
	l, err := csi.Listen(s.Endpoint)
	if err != nil {
		p.Close()
		logFile.Close()
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); p.Serve(context.WithoutCancel(ctx), l) }()

	var procs []*process
	t.Cleanup(func() {
		for _, pr := range procs {
			if err := pr.stop(); err != nil {
				t.Log(err)
			}
			if t.Failed() {
				t.Logf("--- %s log (%s), last %d KiB:\n%s", pr.name, pr.logPath, logTailBytes>>10, pr.logTail(logTailBytes))
			}
		}
		// The nodes stopped first (they were started later) and gave their
		// volumes back: the pool can go.
		if err := p.Unmount(); err != nil {
			t.Errorf("unmount the CSI plugin's pool: %v", err)
			p.Close()
		}
		<-served
		logFile.Close()
	})

	if err := c.installSnapshotCRDs(ctx); err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(c.Config())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.makeClasses(ctx, cs, c.Config()); err != nil {
		t.Fatal(err)
	}
	for _, sc := range []struct {
		name string
		args []string
	}{
		{"csi-provisioner", []string{"--csi-address=" + sock, "--timeout=30s"}},
		{"csi-resizer", []string{"--csi-address=" + sock, "--timeout=30s"}},
		{"csi-snapshotter", []string{"--csi-address=" + sock, "--timeout=30s"}},
		{"snapshot-controller", nil},
	} {
		args := append([]string{"--kubeconfig=" + c.Kubeconfig, "--leader-election=false", "--v=2"}, sc.args...)
		pr, err := startProcess(sc.name, filepath.Join(c.BinDir, sc.name), filepath.Join(dir, sc.name+".log"), args...)
		if err != nil {
			t.Fatal(err)
		}
		procs = append(procs, pr)
	}
	return s
}

// makeClasses makes the CSIDriver, StorageClass and VolumeSnapshotClass.
func (s *Storage) makeClasses(ctx context.Context, cs kubernetes.Interface, rc *rest.Config) error {
	no, yes := false, true
	del := corev1.PersistentVolumeReclaimDelete
	immediate := storagev1.VolumeBindingImmediate
	if _, err := cs.StorageV1().CSIDrivers().Create(ctx, &storagev1.CSIDriver{
		ObjectMeta: metav1.ObjectMeta{Name: s.Driver},
		// Nothing to attach: the plugin's volumes are on this machine.
		Spec: storagev1.CSIDriverSpec{AttachRequired: &no, PodInfoOnMount: &no},
	}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create CSIDriver: %w", err)
	}
	if _, err := cs.StorageV1().StorageClasses().Create(ctx, &storagev1.StorageClass{
		ObjectMeta:           metav1.ObjectMeta{Name: s.Class},
		Provisioner:          s.Driver,
		ReclaimPolicy:        &del,
		VolumeBindingMode:    &immediate,
		AllowVolumeExpansion: &yes,
	}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create StorageClass: %w", err)
	}
	snaps, err := snapclient.NewForConfig(rc)
	if err != nil {
		return err
	}
	if _, err := snaps.SnapshotV1().VolumeSnapshotClasses().Create(ctx, &snapv1.VolumeSnapshotClass{
		ObjectMeta:     metav1.ObjectMeta{Name: s.SnapshotClass},
		Driver:         s.Driver,
		DeletionPolicy: snapv1.VolumeSnapshotContentDelete,
	}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create VolumeSnapshotClass: %w", err)
	}
	return nil
}

// snapshotCRDs are the VolumeSnapshot API's CRDs, from the module of its
// Go client: the group snapshots' too, for whose absence snapshot-controller
// waits 30 s at its start.
var snapshotCRDs = []string{
	"snapshot.storage.k8s.io_volumesnapshotclasses.yaml",
	"snapshot.storage.k8s.io_volumesnapshotcontents.yaml",
	"snapshot.storage.k8s.io_volumesnapshots.yaml",
	"groupsnapshot.storage.k8s.io_volumegroupsnapshotclasses.yaml",
	"groupsnapshot.storage.k8s.io_volumegroupsnapshotcontents.yaml",
	"groupsnapshot.storage.k8s.io_volumegroupsnapshots.yaml",
}

// installSnapshotCRDs creates the VolumeSnapshot CRDs and waits until the
// API serves them.
func (c *Cluster) installSnapshotCRDs(ctx context.Context) error {
	out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", "github.com/kubernetes-csi/external-snapshotter/client/v8").Output()
	if err != nil {
		return fmt.Errorf("find the VolumeSnapshot CRDs (go list -m github.com/kubernetes-csi/external-snapshotter/client/v8): %w", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "config", "crd")
	dc, err := dynamic.NewForConfig(c.Config())
	if err != nil {
		return err
	}
	crds := dc.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	for _, f := range snapshotCRDs {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return fmt.Errorf("read CRD: %w", err)
		}
		var obj map[string]any
		if err := yaml.Unmarshal(b, &obj); err != nil {
			return fmt.Errorf("CRD %s: %w", f, err)
		}
		if _, err := crds.Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create CRD %s: %w", f, err)
		}
	}
	cs, err := kubernetes.NewForConfig(c.Config())
	if err != nil {
		return err
	}
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		l, err := cs.Discovery().ServerResourcesForGroupVersion(snapv1.SchemeGroupVersion.String())
		return err == nil && len(l.APIResources) >= 3, nil
	})
}
