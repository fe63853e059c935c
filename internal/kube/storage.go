package kube

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// On Kubernetes, volumes' data is the cluster's storage's: Storage answers
// the CSI controller calls of Paddock's volume layer (internal/volume) with
// objects in the app's namespace, and the cluster's own provisioner,
// snapshotter and resizer do the work:
//
//	CreateVolume            PersistentVolumeClaim pdk-<volume>-<id> of the StorageClass;
//	                        from a snapshot: with the VolumeSnapshot as its dataSource
//	ControllerExpandVolume  the claim's storage request raised
//	CreateSnapshot          VolumeSnapshot of the claim, of the VolumeSnapshotClass
//	DeleteVolume/Snapshot   the object deleted (the classes' reclaim and
//	                        deletion policies say what becomes of the data)
//
// Volume and snapshot IDs are "namespace/name". Volumes' records, quotas,
// attachments and snapshots' records stay in Paddock's store, as on one
// machine. Paddock never reads a volume's content on a cluster, so what
// needs it (snapshots' checksums, used bytes, export, import, verify,
// paced restores) is refused with a reason (volume.Config.NoContent).

// Parameters of CreateVolume that name the volume's app.
const (
	ParamApp   = "paddock.dev/app"
	ParamAppID = "paddock.dev/app-id"
	// LabelVolume names the Paddock volume a claim holds.
	LabelVolume = "paddock.dev/volume"
)

// snapshotReady is how long CreateSnapshot waits for the cluster to say a
// snapshot was taken, and claimBound how long CreateVolume waits for a
// claim of a class that binds at once to be bound.
const (
	snapshotReady = 2 * time.Minute
	claimBound    = 2 * time.Minute
)

var errNoSnapshots = status.Error(codes.Unimplemented, "the cluster has no VolumeSnapshot API (snapshot.storage.k8s.io): install its CRDs and snapshot controller")

// StorageConfig is what Storage needs besides its Runtime.
type StorageConfig struct {
	Snapshots snapclient.Interface
	// Class is the StorageClass of volumes; "" the cluster's default.
	Class string
	// SnapshotClass is the VolumeSnapshotClass of snapshots; "" the
	// cluster's default for the class's driver.
	SnapshotClass string
}

// Storage keeps Paddock's volumes as PersistentVolumeClaims and their
// snapshots as VolumeSnapshots.
type Storage struct {
	r   *Runtime
	cfg StorageConfig
}

// Storage returns the runtime's storage controller.
func (r *Runtime) Storage(cfg StorageConfig) *Storage { return &Storage{r: r, cfg: cfg} }

func splitID(id string) (ns, name string, err error) {
	ns, name, ok := strings.Cut(id, "/")
	if !ok || ns == "" || name == "" {
		return "", "", status.Errorf(codes.NotFound, "%q is no ID of a claim or snapshot of Paddock's", id)
	}
	return ns, name, nil
}

// kubeError maps an API server's answer to the CSI codes the volume layer
// understands.
func kubeError(what string, err error) error {
	switch {
	case apierrors.IsNotFound(err):
		return status.Errorf(codes.NotFound, "%s: %v", what, err)
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err):
		return status.Errorf(codes.InvalidArgument, "%s: %v", what, err)
	case apierrors.IsForbidden(err) && strings.Contains(err.Error(), "exceeded quota"):
		return status.Errorf(codes.ResourceExhausted, "%s: %v", what, err)
	case apierrors.IsForbidden(err):
		// Paddock's own rights, or an admission policy.
		return status.Errorf(codes.PermissionDenied, "%s: %v", what, err)
	}
	return status.Errorf(codes.Unavailable, "%s: %v", what, err)
}

func (s *Storage) CreateVolume(ctx context.Context, req *csi.CreateVolumeRequest, _ ...grpc.CallOption) (*csi.CreateVolumeResponse, error) {
	app := req.Parameters[ParamApp]
	id, _ := strconv.ParseInt(req.Parameters[ParamAppID], 10, 64)
	if app == "" || id == 0 {
		return nil, status.Errorf(codes.InvalidArgument, "a volume on Kubernetes needs the %s and %s parameters", ParamApp, ParamAppID)
	}
	a := &App{Name: app, ID: id}
	ns := s.r.namespace(app)
	if _, err := s.r.prepare(ctx, a, ns); err != nil {
		return nil, err
	}
	size := req.GetCapacityRange().GetRequiredBytes()
	labels := appLabels(a)
	labels[LabelVolume] = volumeOf(req.Name)
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: req.Name, Namespace: ns, Labels: labels},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceStorage: *resource.NewQuantity(size, resource.BinarySI),
			}},
		},
	}
	if s.cfg.Class != "" {
		pvc.Spec.StorageClassName = &s.cfg.Class
	}
	if snap := req.GetVolumeContentSource().GetSnapshot(); snap != nil {
		sns, name, err := splitID(snap.SnapshotId)
		if err != nil {
			return nil, err
		}
		if sns != ns {
			return nil, status.Errorf(codes.InvalidArgument, "a volume of %s cannot be made from a snapshot of another app's volume", app)
		}
		if s.cfg.Snapshots == nil {
			return nil, errNoSnapshots
		}
		vs, err := s.cfg.Snapshots.SnapshotV1().VolumeSnapshots(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, kubeError("snapshot "+snap.SnapshotId, err)
		}
		if vs.Labels[LabelManagedBy] != ManagedBy {
			return nil, status.Errorf(codes.NotFound, "snapshot %s is not Paddock's", snap.SnapshotId)
		}
		if vs.Status == nil || vs.Status.ReadyToUse == nil || !*vs.Status.ReadyToUse {
			return nil, status.Errorf(codes.FailedPrecondition, "snapshot %s is not ready to use", snap.SnapshotId)
		}
		// A driver may have rounded the snapshot's source up: a claim
		// smaller than the snapshot is refused by the provisioner.
		if rs := vs.Status.RestoreSize; rs != nil && rs.Value() > size {
			size = rs.Value()
			pvc.Spec.Resources.Requests[corev1.ResourceStorage] = *resource.NewQuantity(size, resource.BinarySI)
		}
		group := snapv1.GroupName
		pvc.Spec.DataSourceRef = &corev1.TypedObjectReference{APIGroup: &group, Kind: "VolumeSnapshot", Name: name}
	}
	claims := s.r.cs.CoreV1().PersistentVolumeClaims(ns)
	if _, err := claims.Create(ctx, pvc, metav1.CreateOptions{FieldManager: FieldManager}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, kubeError("create claim "+ns+"/"+req.Name, err)
	}
	// A claim binds when its StorageClass says: at once, or when its first
	// pod is scheduled. At once, the answer waits for it, so that a claim
	// the cluster cannot make (no room, a snapshot it cannot restore) is an
	// error here, not a volume that never mounts; a restore swaps in only
	// a bound claim.
	if !s.bindsAtOnce(ctx, pvc.Spec.StorageClassName) {
		return &csi.CreateVolumeResponse{Volume: &csi.Volume{VolumeId: ns + "/" + req.Name, CapacityBytes: size}}, nil
	}
	var got *corev1.PersistentVolumeClaim
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, claimBound, true, func(ctx context.Context) (bool, error) {
		var err error
		got, err = claims.Get(ctx, req.Name, metav1.GetOptions{})
		return err == nil && got.Status.Phase == corev1.ClaimBound, err
	})
	if err != nil {
		deleteOwned[*corev1.PersistentVolumeClaim](context.WithoutCancel(ctx), claims, req.Name)
		return nil, status.Errorf(codes.Unavailable, "claim %s/%s was not bound within %s (its events say why): %v", ns, req.Name, claimBound, err)
	}
	if c, ok := got.Status.Capacity[corev1.ResourceStorage]; ok && c.Value() > size {
		size = c.Value()
	}
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{VolumeId: ns + "/" + req.Name, CapacityBytes: size}}, nil
}

// bindsAtOnce reports whether claims of a StorageClass (nil: the
// cluster's default) are bound as soon as they are made, rather than when
// their first pod is scheduled; false when it cannot tell.
func (s *Storage) bindsAtOnce(ctx context.Context, class *string) bool {
	classes, err := s.r.cs.StorageV1().StorageClasses().List(ctx, metav1.ListOptions{})
	if err != nil {
		return false
	}
	for _, c := range classes.Items {
		if class != nil && c.Name == *class || class == nil && c.Annotations["storageclass.kubernetes.io/is-default-class"] == "true" {
			return c.VolumeBindingMode == nil || *c.VolumeBindingMode == storagev1.VolumeBindingImmediate
		}
	}
	return false
}

// bound returns a volume's claim, refused with a reason unless it is
// bound: one whose StorageClass binds at the first pod cannot be
// snapshotted or resized before that.
func (s *Storage) bound(ctx context.Context, ns, claim string) (*corev1.PersistentVolumeClaim, error) {
	pvc, err := s.r.cs.CoreV1().PersistentVolumeClaims(ns).Get(ctx, claim, metav1.GetOptions{})
	if err != nil {
		return nil, kubeError("claim "+ns+"/"+claim, err)
	}
	if pvc.Status.Phase != corev1.ClaimBound {
		return nil, status.Errorf(codes.FailedPrecondition, "the volume's claim %s/%s is %s, not bound yet (its StorageClass binds it when a pod first mounts it): attach the volume and deploy first", ns, claim, pvc.Status.Phase)
	}
	return pvc, nil
}

// volumeOf is the Paddock volume's name in a claim's name,
// pdk-<volume>-<id>.
func volumeOf(claim string) string {
	v := strings.TrimPrefix(claim, "pdk-")
	if i := strings.LastIndexByte(v, '-'); i > 0 {
		v = v[:i]
	}
	return v
}

func (s *Storage) DeleteVolume(ctx context.Context, req *csi.DeleteVolumeRequest, _ ...grpc.CallOption) (*csi.DeleteVolumeResponse, error) {
	ns, name, err := splitID(req.VolumeId)
	if err != nil {
		return &csi.DeleteVolumeResponse{}, nil // no such claim: deleted
	}
	if err := deleteOwned[*corev1.PersistentVolumeClaim](ctx, s.r.cs.CoreV1().PersistentVolumeClaims(ns), name); err != nil {
		return nil, kubeError("delete claim "+req.VolumeId, err)
	}
	return &csi.DeleteVolumeResponse{}, nil
}

func (s *Storage) ControllerExpandVolume(ctx context.Context, req *csi.ControllerExpandVolumeRequest, _ ...grpc.CallOption) (*csi.ControllerExpandVolumeResponse, error) {
	ns, name, err := splitID(req.VolumeId)
	if err != nil {
		return nil, err
	}
	if _, err := s.bound(ctx, ns, name); err != nil {
		return nil, err
	}
	size := req.GetCapacityRange().GetRequiredBytes()
	patch := fmt.Sprintf(`{"spec":{"resources":{"requests":{"storage":%q}}}}`, resource.NewQuantity(size, resource.BinarySI).String())
	if _, err := s.r.cs.CoreV1().PersistentVolumeClaims(ns).Patch(ctx, name, "application/merge-patch+json", []byte(patch), metav1.PatchOptions{FieldManager: FieldManager}); err != nil {
		return nil, kubeError("resize claim "+req.VolumeId, err)
	}
	// The cluster's resizer grows the volume, online where its driver can.
	return &csi.ControllerExpandVolumeResponse{CapacityBytes: size}, nil
}

func (s *Storage) CreateSnapshot(ctx context.Context, req *csi.CreateSnapshotRequest, _ ...grpc.CallOption) (*csi.CreateSnapshotResponse, error) {
	if s.cfg.Snapshots == nil {
		return nil, errNoSnapshots
	}
	ns, claim, err := splitID(req.SourceVolumeId)
	if err != nil {
		return nil, err
	}
	pvc, err := s.bound(ctx, ns, claim)
	if err != nil {
		return nil, err
	}
	labels := map[string]string{}
	for _, k := range []string{LabelManagedBy, LabelApp, LabelAppID, LabelVolume} {
		labels[k] = pvc.Labels[k]
	}
	vs := &snapv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{Name: req.Name, Namespace: ns, Labels: labels},
		Spec:       snapv1.VolumeSnapshotSpec{Source: snapv1.VolumeSnapshotSource{PersistentVolumeClaimName: &claim}},
	}
	if s.cfg.SnapshotClass != "" {
		vs.Spec.VolumeSnapshotClassName = &s.cfg.SnapshotClass
	}
	snaps := s.cfg.Snapshots.SnapshotV1().VolumeSnapshots(ns)
	if _, err := snaps.Create(ctx, vs, metav1.CreateOptions{FieldManager: FieldManager}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, kubeError("create snapshot "+ns+"/"+req.Name, err)
	}
	// Like Paddock's own plugin, answer once the snapshot is taken: a
	// restore from it may follow at once.
	var got *snapv1.VolumeSnapshot
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, snapshotReady, true, func(ctx context.Context) (bool, error) {
		if got, err = snaps.Get(ctx, req.Name, metav1.GetOptions{}); err != nil {
			return false, err
		}
		st := got.Status
		if st != nil && st.Error != nil && st.Error.Message != nil {
			return false, status.Errorf(codes.Internal, "the cluster could not take the snapshot: %s", *st.Error.Message)
		}
		return st != nil && st.ReadyToUse != nil && *st.ReadyToUse, nil
	})
	if err != nil {
		deleteOwned[*snapv1.VolumeSnapshot](context.WithoutCancel(ctx), snaps, req.Name)
		if _, ok := status.FromError(err); ok && status.Code(err) != codes.Unknown {
			return nil, err
		}
		return nil, status.Errorf(codes.Unavailable, "snapshot %s/%s of the claim %s: not taken: %v", ns, req.Name, claim, err)
	}
	size := pvc.Spec.Resources.Requests.Storage().Value()
	if got.Status.RestoreSize != nil {
		size = got.Status.RestoreSize.Value()
	}
	return &csi.CreateSnapshotResponse{Snapshot: &csi.Snapshot{
		SnapshotId: ns + "/" + req.Name, SourceVolumeId: req.SourceVolumeId, SizeBytes: size, ReadyToUse: true,
	}}, nil
}

func (s *Storage) DeleteSnapshot(ctx context.Context, req *csi.DeleteSnapshotRequest, _ ...grpc.CallOption) (*csi.DeleteSnapshotResponse, error) {
	ns, name, err := splitID(req.SnapshotId)
	if err != nil || s.cfg.Snapshots == nil {
		return &csi.DeleteSnapshotResponse{}, nil
	}
	if err := deleteOwned[*snapv1.VolumeSnapshot](ctx, s.cfg.Snapshots.SnapshotV1().VolumeSnapshots(ns), name); err != nil {
		return nil, kubeError("delete snapshot "+req.SnapshotId, err)
	}
	return &csi.DeleteSnapshotResponse{}, nil
}

// ClaimInUse reports whether a pod that has not ended mounts the claim of
// a volume ID.
func (s *Storage) ClaimInUse(ctx context.Context, id string) (bool, error) {
	ns, claim, err := splitID(id)
	if err != nil {
		return false, nil
	}
	pods, err := s.r.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return false, err
	}
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		for _, v := range p.Spec.Volumes {
			if v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == claim {
				return true, nil
			}
		}
	}
	return false, nil
}

// StorageNode stands for the node service of a cluster's storage, which
// Paddock does not reach: no volume is ever published on Paddock's
// machine. Give the volume layer NoContent with it.
type StorageNode struct{}

var errNoContent = status.Error(codes.Unimplemented, "Paddock does not read volumes' content on Kubernetes")

func (StorageNode) NodePublishVolume(context.Context, *csi.NodePublishVolumeRequest, ...grpc.CallOption) (*csi.NodePublishVolumeResponse, error) {
	return nil, errNoContent
}

func (StorageNode) NodeUnpublishVolume(context.Context, *csi.NodeUnpublishVolumeRequest, ...grpc.CallOption) (*csi.NodeUnpublishVolumeResponse, error) {
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

func (StorageNode) NodeGetVolumeStats(context.Context, *csi.NodeGetVolumeStatsRequest, ...grpc.CallOption) (*csi.NodeGetVolumeStatsResponse, error) {
	return nil, errNoContent
}
