package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// publication is a persistent volume published into a pod's folder.
type publication struct {
	node     csi.NodeClient
	conn     *grpc.ClientConn
	volumeID string
	target   string
}

// publishClaim publishes the persistent volume bound to a pod's claim into
// dir, as a kubelet does: claim, then its volume, then the CSI driver's
// NodePublishVolume.
func (pd *pod) publishClaim(ctx context.Context, v corev1.Volume, dir string) (*publication, error) {
	ns := pd.spec.Namespace
	claim := v.PersistentVolumeClaim.ClaimName
	pvc, err := pd.prov.cfg.client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, claim, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("claim %s: %w", claim, err)
	}
	if pvc.Status.Phase != corev1.ClaimBound || pvc.Spec.VolumeName == "" {
		return nil, fmt.Errorf("claim %s is %s, not bound", claim, pvc.Status.Phase)
	}
	pv, err := pd.prov.cfg.client.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("volume of claim %s: %w", claim, err)
	}
	src := pv.Spec.CSI
	if src == nil {
		return nil, fmt.Errorf("volume %s of claim %s is not a CSI volume: this node publishes only those", pv.Name, claim)
	}
	endpoint, ok := pd.prov.cfg.csi[src.Driver]
	if !ok {
		return nil, fmt.Errorf("volume %s of claim %s is of the CSI driver %s, which this node does not have", pv.Name, claim, src.Driver)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	p := &publication{node: csi.NewNodeClient(conn), conn: conn, volumeID: src.VolumeHandle, target: filepath.Join(dir, "mount")}
	readOnly := v.PersistentVolumeClaim.ReadOnly || src.ReadOnly
	mode := csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER
	if readOnly {
		mode = csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY
	}
	if _, err := p.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{
		VolumeId: src.VolumeHandle, TargetPath: p.target, Readonly: readOnly, VolumeContext: src.VolumeAttributes,
		VolumeCapability: &csi.VolumeCapability{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: src.FSType}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
		},
	}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("MountVolume.SetUp failed for volume %q: %w", v.Name, err)
	}
	return p, nil
}

// unpublish takes the volume back from the pod.
func (p *publication) unpublish(ctx context.Context) error {
	defer p.conn.Close()
	_, err := p.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: p.volumeID, TargetPath: p.target})
	return err
}
