package volume_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	csispec "github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-test/v5/driver"
	"go.uber.org/mock/gomock"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"paddock.dev/paddock/internal/store"
	"paddock.dev/paddock/internal/volume"
)

// csi-test v5 has no mock plugin with behaviour of its own (the one it
// had was removed in v4.3.0); its mock driver, driver.MockCSIDriver, is a
// gRPC server on a socket of our choosing whose CSI services are gomock
// mocks that answer what a test programs. mockPlugin programs it as a
// plugin that keeps volumes, snapshots and publications in memory, checks
// requests as the CSI spec asks, and remembers every request: the tests
// check both what the Service asks of a plugin it knows only by its
// socket and what it makes of the answers. Publishing makes the target
// folder, as csi-test's old mock plugin did, but mounts nothing.

// mockPlugin is the state behind the mock driver.
type mockPlugin struct {
	mu        sync.Mutex
	n         int
	volumes   map[string]*csispec.Volume   // by ID
	names     map[string]string            // CreateVolume name -> volume ID
	snapshots map[string]*csispec.Snapshot // by ID
	snapNames map[string]string            // CreateSnapshot name -> snapshot ID
	published map[string]string            // target path -> volume ID
	requests  []proto.Message              // every request, in order
	// roundUp, if not 0, rounds each volume's size up to a multiple of it,
	// as many cloud plugins do.
	roundUp int64
	// fail holds the error the next call of a method answers, by method.
	fail map[string]error
}

// startMock serves csi-test's mock driver on sock.
func startMock(t *testing.T, _, sock string) started {
	t.Helper()
	m := &mockPlugin{
		volumes: map[string]*csispec.Volume{}, names: map[string]string{},
		snapshots: map[string]*csispec.Snapshot{}, snapNames: map[string]string{},
		published: map[string]string{}, fail: map[string]error{},
	}
	mc := gomock.NewController(t)
	cs := driver.NewMockControllerServer(mc)
	cs.EXPECT().CreateVolume(gomock.Any(), gomock.Any()).DoAndReturn(m.createVolume).AnyTimes()
	cs.EXPECT().DeleteVolume(gomock.Any(), gomock.Any()).DoAndReturn(m.deleteVolume).AnyTimes()
	cs.EXPECT().ListVolumes(gomock.Any(), gomock.Any()).DoAndReturn(m.listVolumes).AnyTimes()
	cs.EXPECT().ControllerExpandVolume(gomock.Any(), gomock.Any()).DoAndReturn(m.expandVolume).AnyTimes()
	cs.EXPECT().CreateSnapshot(gomock.Any(), gomock.Any()).DoAndReturn(m.createSnapshot).AnyTimes()
	cs.EXPECT().DeleteSnapshot(gomock.Any(), gomock.Any()).DoAndReturn(m.deleteSnapshot).AnyTimes()
	cs.EXPECT().ListSnapshots(gomock.Any(), gomock.Any()).DoAndReturn(m.listSnapshots).AnyTimes()
	ns := driver.NewMockNodeServer(mc)
	ns.EXPECT().NodePublishVolume(gomock.Any(), gomock.Any()).DoAndReturn(m.publish).AnyTimes()
	ns.EXPECT().NodeUnpublishVolume(gomock.Any(), gomock.Any()).DoAndReturn(m.unpublish).AnyTimes()

	d := driver.NewMockCSIDriver(&driver.MockCSIDriverServers{
		Controller: cs, Node: ns,
		Identity:         driver.NewMockIdentityServer(mc),
		SnapshotMetadata: driver.NewMockSnapshotMetadataServer(mc),
	})
	if err := d.StartOnAddress("unix", sock); err != nil {
		t.Fatalf("start the mock driver: %v", err)
	}
	t.Cleanup(d.Stop)
	return started{mock: m}
}

// setRoundUp makes the plugin round sizes up to multiples of n.
func (m *mockPlugin) setRoundUp(n int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.roundUp = n
}

// failNext makes the next call of method answer err.
func (m *mockPlugin) failNext(method string, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fail[method] = err
}

// begin records a request and returns the error it is to fail with.
// Callers hold mu.
func (m *mockPlugin) begin(method string, req proto.Message) error {
	m.requests = append(m.requests, proto.Clone(req))
	err := m.fail[method]
	delete(m.fail, method)
	return err
}

// sent returns the requests of type T received so far.
func sent[T proto.Message](m *mockPlugin) []T {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []T
	for _, r := range m.requests {
		if r, ok := r.(T); ok {
			out = append(out, r)
		}
	}
	return out
}

func (m *mockPlugin) id(prefix string) string {
	m.n++
	return fmt.Sprintf("%s-%d", prefix, m.n)
}

func checkCapability(c *csispec.VolumeCapability) error {
	if c.GetMount() == nil || c.GetAccessMode().GetMode() == csispec.VolumeCapability_AccessMode_UNKNOWN {
		return status.Errorf(codes.InvalidArgument, "capability %v: want a mounted volume with an access mode", c)
	}
	return nil
}

func (m *mockPlugin) createVolume(_ context.Context, req *csispec.CreateVolumeRequest) (*csispec.CreateVolumeResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.begin("CreateVolume", req); err != nil {
		return nil, err
	}
	if req.Name == "" || len(req.VolumeCapabilities) == 0 {
		return nil, status.Error(codes.InvalidArgument, "a volume needs a name and capabilities")
	}
	for _, c := range req.VolumeCapabilities {
		if err := checkCapability(c); err != nil {
			return nil, err
		}
	}
	if id, ok := m.names[req.Name]; ok {
		return &csispec.CreateVolumeResponse{Volume: proto.CloneOf(m.volumes[id])}, nil
	}
	size := req.GetCapacityRange().GetRequiredBytes()
	if m.roundUp > 0 {
		size = (size + m.roundUp - 1) / m.roundUp * m.roundUp
	}
	if src := req.GetVolumeContentSource(); src != nil {
		sn, ok := m.snapshots[src.GetSnapshot().GetSnapshotId()]
		if !ok {
			return nil, status.Errorf(codes.NotFound, "no snapshot %v", src)
		}
		size = max(size, sn.SizeBytes)
	}
	v := &csispec.Volume{VolumeId: m.id("vol"), CapacityBytes: size, ContentSource: proto.CloneOf(req.GetVolumeContentSource())}
	m.volumes[v.VolumeId], m.names[req.Name] = v, v.VolumeId
	return &csispec.CreateVolumeResponse{Volume: proto.CloneOf(v)}, nil
}

func (m *mockPlugin) deleteVolume(_ context.Context, req *csispec.DeleteVolumeRequest) (*csispec.DeleteVolumeResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.begin("DeleteVolume", req); err != nil {
		return nil, err
	}
	for target, id := range m.published {
		if id == req.VolumeId {
			return nil, status.Errorf(codes.FailedPrecondition, "volume %s is published at %s", id, target)
		}
	}
	delete(m.volumes, req.VolumeId)
	maps.DeleteFunc(m.names, func(_, id string) bool { return id == req.VolumeId })
	return &csispec.DeleteVolumeResponse{}, nil
}

func (m *mockPlugin) listVolumes(_ context.Context, req *csispec.ListVolumesRequest) (*csispec.ListVolumesResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	resp := &csispec.ListVolumesResponse{}
	for _, id := range slices.Sorted(maps.Keys(m.volumes)) {
		resp.Entries = append(resp.Entries, &csispec.ListVolumesResponse_Entry{Volume: proto.CloneOf(m.volumes[id])})
	}
	return resp, nil
}

func (m *mockPlugin) expandVolume(_ context.Context, req *csispec.ControllerExpandVolumeRequest) (*csispec.ControllerExpandVolumeResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.begin("ControllerExpandVolume", req); err != nil {
		return nil, err
	}
	v, ok := m.volumes[req.VolumeId]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no volume %s", req.VolumeId)
	}
	v.CapacityBytes = max(v.CapacityBytes, req.GetCapacityRange().GetRequiredBytes())
	return &csispec.ControllerExpandVolumeResponse{CapacityBytes: v.CapacityBytes}, nil
}

func (m *mockPlugin) createSnapshot(_ context.Context, req *csispec.CreateSnapshotRequest) (*csispec.CreateSnapshotResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.begin("CreateSnapshot", req); err != nil {
		return nil, err
	}
	if req.Name == "" {
		return nil, status.Error(codes.InvalidArgument, "a snapshot needs a name")
	}
	if id, ok := m.snapNames[req.Name]; ok {
		return &csispec.CreateSnapshotResponse{Snapshot: proto.CloneOf(m.snapshots[id])}, nil
	}
	v, ok := m.volumes[req.SourceVolumeId]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no volume %s", req.SourceVolumeId)
	}
	sn := &csispec.Snapshot{SnapshotId: m.id("snap"), SourceVolumeId: v.VolumeId, SizeBytes: v.CapacityBytes, ReadyToUse: true}
	m.snapshots[sn.SnapshotId], m.snapNames[req.Name] = sn, sn.SnapshotId
	return &csispec.CreateSnapshotResponse{Snapshot: proto.CloneOf(sn)}, nil
}

func (m *mockPlugin) deleteSnapshot(_ context.Context, req *csispec.DeleteSnapshotRequest) (*csispec.DeleteSnapshotResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.begin("DeleteSnapshot", req); err != nil {
		return nil, err
	}
	delete(m.snapshots, req.SnapshotId)
	maps.DeleteFunc(m.snapNames, func(_, id string) bool { return id == req.SnapshotId })
	return &csispec.DeleteSnapshotResponse{}, nil
}

func (m *mockPlugin) listSnapshots(_ context.Context, req *csispec.ListSnapshotsRequest) (*csispec.ListSnapshotsResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	resp := &csispec.ListSnapshotsResponse{}
	for _, id := range slices.Sorted(maps.Keys(m.snapshots)) {
		resp.Entries = append(resp.Entries, &csispec.ListSnapshotsResponse_Entry{Snapshot: proto.CloneOf(m.snapshots[id])})
	}
	return resp, nil
}

func (m *mockPlugin) publish(_ context.Context, req *csispec.NodePublishVolumeRequest) (*csispec.NodePublishVolumeResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.begin("NodePublishVolume", req); err != nil {
		return nil, err
	}
	if err := checkCapability(req.VolumeCapability); err != nil {
		return nil, err
	}
	if _, ok := m.volumes[req.VolumeId]; !ok {
		return nil, status.Errorf(codes.NotFound, "no volume %s", req.VolumeId)
	}
	if id, ok := m.published[req.TargetPath]; ok && id != req.VolumeId {
		return nil, status.Errorf(codes.FailedPrecondition, "%s has volume %s published", req.TargetPath, id)
	}
	if err := os.MkdirAll(req.TargetPath, 0o700); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	m.published[req.TargetPath] = req.VolumeId
	return &csispec.NodePublishVolumeResponse{}, nil
}

func (m *mockPlugin) unpublish(_ context.Context, req *csispec.NodeUnpublishVolumeRequest) (*csispec.NodeUnpublishVolumeResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.begin("NodeUnpublishVolume", req); err != nil {
		return nil, err
	}
	if id, ok := m.published[req.TargetPath]; ok && id != req.VolumeId {
		return nil, status.Errorf(codes.InvalidArgument, "%s has volume %s published, not %s", req.TargetPath, id, req.VolumeId)
	}
	if err := os.Remove(req.TargetPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, status.Error(codes.Internal, err.Error())
	}
	delete(m.published, req.TargetPath)
	return &csispec.NodeUnpublishVolumeResponse{}, nil
}

// publishedAt returns the volume published at target, or "".
func (m *mockPlugin) publishedAt(target string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.published[target]
}

// mockDriver is csi-test's mock driver as a plugin to test against.
func mockDriver() plugin { return plugin{name: "mock", start: startMock} }

// TestMockRequests checks what the Service asks of a plugin it knows only
// by its socket: a mounted single-writer volume of the size asked for,
// given to the app's user, under a new CSI name each time (so that a name
// used again after a delete is a new volume); clones and restores made
// from the snapshot's plugin ID; publishing and growing the volume by its
// plugin ID.
func TestMockRequests(t *testing.T) {
	e := newEnv(t, mockDriver(), withUsers)
	m := e.plugin.mock
	uid := fmt.Sprint(e.uid())

	v := e.create("data", 16*mib)
	e.attach("data")
	target := e.mount("web.1")
	sn := e.snapshot("data", "")
	if _, err := e.svc.Clone(e.ctx, "data", sn.ID, "copy"); err != nil {
		t.Fatalf("clone: %v", err)
	}
	if _, err := e.svc.Resize(e.ctx, "data", 32*mib); err != nil {
		t.Fatalf("resize: %v", err)
	}
	e.unpublish("web.1")
	if _, err := e.svc.Restore(e.ctx, "data", sn.ID, e.svc.InUse); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if err := e.svc.Delete(e.ctx, "copy", false, e.svc.InUse); err != nil {
		t.Fatalf("delete copy: %v", err)
	}
	e.create("copy", 16*mib)

	// Taking the snapshot read its content for a checksum, from a scratch
	// volume made from it, published, unpublished and deleted.
	all := sent[*csispec.CreateVolumeRequest](m)
	var creates []*csispec.CreateVolumeRequest
	scratch := map[string]bool{}
	for _, req := range all {
		if strings.HasPrefix(req.Name, "pdk-data-scratch-") {
			if got := req.GetVolumeContentSource().GetSnapshot().GetSnapshotId(); got != sn.CSIID {
				t.Errorf("a scratch volume made from %q, want the snapshot %q", got, sn.CSIID)
			}
			scratch[req.Name] = true
			continue
		}
		creates = append(creates, req)
	}
	if len(scratch) != 1 {
		t.Errorf("%d scratch volumes, want 1 (the snapshot's checksum)", len(scratch))
	}
	notScratch := func(target string) bool { return !strings.Contains(target, "/scratch-") }
	if len(creates) != 4 {
		t.Fatalf("CreateVolume called %d times, want 4 (data, copy, the restore, copy again)", len(creates))
	}
	names := map[string]bool{}
	for i, req := range creates {
		names[req.Name] = true
		if c := req.VolumeCapabilities; len(c) != 1 || c[0].GetMount() == nil ||
			c[0].GetAccessMode().GetMode() != csispec.VolumeCapability_AccessMode_SINGLE_NODE_WRITER {
			t.Errorf("CreateVolume %d capabilities: %v, want one mounted SINGLE_NODE_WRITER", i, c)
		}
		if got := req.Parameters; got["uid"] != uid || got["gid"] != uid {
			t.Errorf("CreateVolume %d parameters: %v, want uid and gid %s", i, got, uid)
		}
	}
	if len(names) != 4 {
		t.Errorf("CreateVolume names %v: want 4 different ones", slices.Collect(maps.Keys(names)))
	}
	for i, want := range []struct {
		prefix string
		size   int64
		source string
	}{{"pdk-data-", 16 * mib, ""}, {"pdk-copy-", 16 * mib, sn.CSIID}, {"pdk-data-", 32 * mib, sn.CSIID}, {"pdk-copy-", 16 * mib, ""}} {
		req := creates[i]
		if !strings.HasPrefix(req.Name, want.prefix) {
			t.Errorf("CreateVolume %d name %q, want the prefix %q", i, req.Name, want.prefix)
		}
		if got := req.GetCapacityRange().GetRequiredBytes(); got != want.size {
			t.Errorf("CreateVolume %d required bytes %d, want %d", i, got, want.size)
		}
		if got := req.GetVolumeContentSource().GetSnapshot().GetSnapshotId(); got != want.source {
			t.Errorf("CreateVolume %d from snapshot %q, want %q", i, got, want.source)
		}
	}

	pubs := slices.DeleteFunc(sent[*csispec.NodePublishVolumeRequest](m), func(r *csispec.NodePublishVolumeRequest) bool { return !notScratch(r.TargetPath) })
	if len(pubs) != 1 || pubs[0].VolumeId != v.CSIID || pubs[0].TargetPath != target || checkCapability(pubs[0].VolumeCapability) != nil || pubs[0].Readonly {
		t.Errorf("NodePublishVolume requests %v, want one of %s at %s, writable", pubs, v.CSIID, target)
	}
	unpubs := slices.DeleteFunc(sent[*csispec.NodeUnpublishVolumeRequest](m), func(r *csispec.NodeUnpublishVolumeRequest) bool { return !notScratch(r.TargetPath) })
	if len(unpubs) != 1 || unpubs[0].VolumeId != v.CSIID || unpubs[0].TargetPath != target {
		t.Errorf("NodeUnpublishVolume requests %v, want one of %s at %s", unpubs, v.CSIID, target)
	}
	exps := sent[*csispec.ControllerExpandVolumeRequest](m)
	if len(exps) != 1 || exps[0].VolumeId != v.CSIID || exps[0].GetCapacityRange().GetRequiredBytes() != 32*mib {
		t.Errorf("ControllerExpandVolume requests %v, want one of %s to 32 MiB", exps, v.CSIID)
	}
	dels := sent[*csispec.DeleteVolumeRequest](m)
	if len(dels) != 3 || dels[1].VolumeId != v.CSIID {
		t.Errorf("DeleteVolume requests %v, want the snapshot's scratch volume, the data the restore replaced (%s), then copy", dels, v.CSIID)
	}
}

// TestMockRoundsUp: a plugin may make a volume larger than asked; the
// record holds the size the plugin made, and the quota counts it.
func TestMockRoundsUp(t *testing.T) {
	e := newEnv(t, mockDriver(), withQuota(1<<30))
	e.plugin.mock.setRoundUp(512 * mib)
	v := e.create("data", 16*mib)
	if v.Size != 512*mib {
		t.Errorf("a 16 MiB volume the plugin made 512 MiB is recorded with %d bytes, want 512 MiB", v.Size)
	}
	if got, err := e.svc.Get(e.ctx, "data"); err != nil || got.Size != 512*mib {
		t.Errorf("get: %+v, %v; want 512 MiB", got, err)
	}
	v2 := e.create("logs", 512*mib)
	if v2.Size != 512*mib {
		t.Errorf("logs: %d bytes, want 512 MiB", v2.Size)
	}
	_, err := e.svc.Create(e.ctx, app, "more", 1*mib)
	if !errors.Is(err, volume.ErrQuota) {
		t.Errorf("a third volume with 1 GiB of 1 GiB recorded: %v, want ErrQuota", err)
	}
}

// TestMockRoundUpStaysInQuota: a plugin that makes volumes larger than
// asked does not take an app past its quota.
func TestMockRoundUpStaysInQuota(t *testing.T) {
	e := newEnv(t, mockDriver(), withQuota(768*mib))
	e.plugin.mock.setRoundUp(512 * mib)
	e.create("data", 16*mib) // 512 MiB in the plugin
	_, err := e.svc.Create(e.ctx, app, "logs", 16*mib)
	vols, _ := e.svc.List(e.ctx, app)
	var total int64
	for _, v := range vols {
		total += v.Size
	}
	if total > 768*mib {
		t.Errorf("the app has %d MiB of volumes under a 768 MiB quota (second create: %v)", total/mib, err)
	}
	if got := len(e.pluginVolumes()); got != len(vols) {
		t.Errorf("the plugin has %d volumes, the records %d", got, len(vols))
	}
}

// TestMockErrors: what a plugin refuses reaches the caller as the
// Service's errors, and leaves no record behind.
func TestMockErrors(t *testing.T) {
	e := newEnv(t, mockDriver())
	m := e.plugin.mock

	m.failNext("CreateVolume", status.Error(codes.ResourceExhausted, "the disk is full"))
	_, err := e.svc.Create(e.ctx, app, "data", 16*mib)
	if !errors.Is(err, volume.ErrInvalid) || !strings.Contains(err.Error(), "the disk is full") {
		t.Errorf("create on a full disk: %v, want ErrInvalid saying the plugin's words", err)
	}
	if _, err := e.svc.Get(e.ctx, "data"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a failed create left a record: %v", err)
	}

	m.failNext("CreateVolume", status.Error(codes.Unavailable, "try later"))
	_, err = e.svc.Create(e.ctx, app, "data", 16*mib)
	if err == nil || errors.Is(err, volume.ErrInvalid) || !strings.Contains(err.Error(), "Unavailable") {
		t.Errorf("create while the plugin is unavailable: %v, want an error naming the code, not ErrInvalid", err)
	}

	e.create("data", 16*mib)
	m.failNext("ControllerExpandVolume", status.Error(codes.NotFound, "no such volume"))
	_, err = e.svc.Resize(e.ctx, "data", 32*mib)
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("resize of a volume the plugin lost: %v, want ErrNotFound", err)
	}
	if v, _ := e.svc.Get(e.ctx, "data"); v.Size != 16*mib {
		t.Errorf("a failed resize changed the record to %d bytes", v.Size)
	}

	m.failNext("CreateSnapshot", status.Error(codes.Internal, "broken"))
	if _, err := e.svc.Snapshot(e.ctx, "data", ""); err == nil {
		t.Error("a snapshot the plugin failed to take succeeded")
	}
	if list, err := e.svc.Snapshots(e.ctx, "data"); err != nil || len(list) != 0 {
		t.Errorf("snapshots after a failed one: %v, %v; want none", list, err)
	}

	e.attach("data")
	m.failNext("NodePublishVolume", status.Error(codes.Internal, "cannot mount"))
	if _, err := e.svc.Mounts(e.ctx, app, "web", "web.1"); err == nil {
		t.Error("mounts succeeded where the plugin failed to publish")
	}
	if e.svc.InUse(store.Volume{Name: "data"}) {
		t.Error("a volume whose publishing failed is in use")
	}
	if _, err := os.Stat(e.publish + "/web.1"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed publish left its instance's folder: %v", err)
	}
}
