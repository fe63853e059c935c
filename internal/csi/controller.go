package csi

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// controllerServer is the CSI Controller service: volumes and snapshots.
type controllerServer struct {
	csi.UnimplementedControllerServer
	p *Plugin
}

func (s *controllerServer) ControllerGetCapabilities(ctx context.Context, req *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	var caps []*csi.ControllerServiceCapability
	for _, t := range []csi.ControllerServiceCapability_RPC_Type{
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT,
		csi.ControllerServiceCapability_RPC_LIST_SNAPSHOTS,
		csi.ControllerServiceCapability_RPC_GET_SNAPSHOT,
		csi.ControllerServiceCapability_RPC_CLONE_VOLUME,
		csi.ControllerServiceCapability_RPC_EXPAND_VOLUME,
		csi.ControllerServiceCapability_RPC_LIST_VOLUMES,
		csi.ControllerServiceCapability_RPC_GET_VOLUME,
		csi.ControllerServiceCapability_RPC_GET_CAPACITY,
		csi.ControllerServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
	} {
		caps = append(caps, &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{
			Rpc: &csi.ControllerServiceCapability_RPC{Type: t},
		}})
	}
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: caps}, nil
}

// volume returns the CSI description of a volume.
func (v *volumeRecord) volume() *csi.Volume {
	out := &csi.Volume{VolumeId: v.ID, CapacityBytes: v.Capacity}
	switch {
	case v.FromSnapshot != "":
		out.ContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
			Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: v.FromSnapshot},
		}}
	case v.FromVolume != "":
		out.ContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{
			Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: v.FromVolume},
		}}
	}
	return out
}

// volumeByName returns the volume with the name, or nil. Callers hold mu.
func (p *Plugin) volumeByName(name string) *volumeRecord {
	for _, v := range p.volumes {
		if v.Name == name {
			return v
		}
	}
	return nil
}

// lookupVolume returns a volume by id, or NOT_FOUND. Callers hold mu.
func (p *Plugin) lookupVolume(id string) (*volumeRecord, error) {
	if v, ok := p.volumes[id]; ok {
		return v, nil
	}
	return nil, status.Errorf(codes.NotFound, "no volume has the id %q", id)
}

// allocated adds up the sizes of all volumes. Callers hold mu.
func (p *Plugin) allocated() int64 {
	var n int64
	for _, v := range p.volumes {
		n += v.Capacity
	}
	return n
}

func (s *controllerServer) CreateVolume(ctx context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	p := s.p
	if err := checkName("volume", req.GetName()); err != nil {
		return nil, err
	}
	if err := checkCapabilities(req.GetVolumeCapabilities()); err != nil {
		return nil, err
	}
	if len(req.GetMutableParameters()) > 0 {
		return nil, invalid("mutable parameters are not supported")
	}
	size, err := volumeSize(req.GetCapacityRange(), p.cfg.DefaultVolumeSize)
	if err != nil {
		return nil, err
	}
	own, err := volumeParams(req.GetParameters())
	if err != nil {
		return nil, err
	}
	if !p.root {
		// Not root: every volume belongs to the plugin's own user.
		own = owner{UID: os.Getuid(), GID: os.Getgid(), Set: true}
	}
	var fromSnapshot, fromVolume string
	switch src := req.GetVolumeContentSource().GetType().(type) {
	case nil:
	case *csi.VolumeContentSource_Snapshot:
		if fromSnapshot = src.Snapshot.GetSnapshotId(); fromSnapshot == "" {
			return nil, invalid("the source snapshot has no id")
		}
	case *csi.VolumeContentSource_Volume:
		if fromVolume = src.Volume.GetVolumeId(); fromVolume == "" {
			return nil, invalid("the source volume has no id")
		}
	default:
		return nil, invalid("unknown kind of volume content source")
	}

	p.mu.Lock()
	defer p.mu.Unlock()

	// Idempotency: the same name again is the same volume, if it matches.
	if v := p.volumeByName(req.GetName()); v != nil {
		switch {
		case !fits(v.Capacity, req.GetCapacityRange()):
			return nil, status.Errorf(codes.AlreadyExists, "a volume named %q exists with a size of %d bytes, outside the range asked for", v.Name, v.Capacity)
		case v.FromSnapshot != fromSnapshot || v.FromVolume != fromVolume:
			return nil, status.Errorf(codes.AlreadyExists, "a volume named %q exists, made from %s, not %s", v.Name, fmtSource(v.FromSnapshot, v.FromVolume), fmtSource(fromSnapshot, fromVolume))
		case own.Set && (own.UID != v.UID || own.GID != v.GID):
			return nil, status.Errorf(codes.AlreadyExists, "a volume named %q exists, owned by %d:%d, not %d:%d", v.Name, v.UID, v.GID, own.UID, own.GID)
		}
		return &csi.CreateVolumeResponse{Volume: v.volume()}, nil
	}

	// The source, if any: its path, size and owner.
	var srcPath string
	var srcSize int64
	switch {
	case fromSnapshot != "":
		snap, ok := p.snapshots[fromSnapshot]
		if !ok {
			return nil, status.Errorf(codes.NotFound, "no snapshot has the id %q", fromSnapshot)
		}
		srcPath, srcSize = p.snapshotPath(snap.ID), snap.Size
		own, err = sourceOwner(own, snap.UID, snap.GID, "snapshot "+snap.ID, p.root)
	case fromVolume != "":
		src, ok := p.volumes[fromVolume]
		if !ok {
			return nil, status.Errorf(codes.NotFound, "no volume has the id %q", fromVolume)
		}
		srcPath, srcSize = p.volumePath(src.ID), src.Capacity
		own, err = sourceOwner(own, src.UID, src.GID, "volume "+src.ID, p.root)
	}
	if err != nil {
		return nil, err
	}
	if size < srcSize {
		// A copy holds its source's bytes: it is at least its size.
		if req.GetCapacityRange().GetRequiredBytes() != 0 || (req.GetCapacityRange().GetLimitBytes() != 0 && req.GetCapacityRange().GetLimitBytes() < srcSize) {
			return nil, status.Errorf(codes.OutOfRange, "a volume made from %s is at least its size, %d bytes; %d bytes were asked for", fmtSource(fromSnapshot, fromVolume), srcSize, size)
		}
		size = srcSize
	}
	if err := p.be.reserve(ctx, p.allocated()+size, size); err != nil {
		return nil, toStatus(err)
	}
	v := &volumeRecord{
		ID:           newID("vol"),
		Name:         req.GetName(),
		Capacity:     size,
		UID:          own.UID,
		GID:          own.GID,
		Created:      time.Now().UTC(),
		FromSnapshot: fromSnapshot,
		FromVolume:   fromVolume,
	}
	path := p.volumePath(v.ID)
	if srcPath == "" {
		err = p.be.create(ctx, path, size)
		if err == nil {
			err = p.giveRoot(path, own)
		}
	} else {
		// A copy keeps its source's owners, inside and at the top.
		err = p.be.copy(ctx, srcPath, path, false, size)
	}
	if err == nil {
		err = writeRecord(path+".json", v)
	}
	if err != nil {
		if rerr := p.be.remove(path); rerr != nil {
			p.log.Warn("csi cannot remove a volume that failed to be made", "volume", v.ID, "err", rerr)
		}
		return nil, toStatus(fmt.Errorf("make volume %q: %w", v.Name, err))
	}
	p.volumes[v.ID] = v
	p.log.Info("csi volume created", "volume", v.ID, "name", v.Name, "size", size, "source", fmtSource(fromSnapshot, fromVolume))
	return &csi.CreateVolumeResponse{Volume: v.volume()}, nil
}

// sourceOwner is the owner of a volume made from a source owned by uid and
// gid: the same, as its files belong to them; asking for another is an
// error (re-owning an app's files would mean walking them as root).
func sourceOwner(asked owner, uid, gid int, what string, root bool) (owner, error) {
	if root && asked.Set && (asked.UID != uid || asked.GID != gid) {
		return owner{}, invalid("a volume made from %s keeps its owner %d:%d; %d:%d was asked for", what, uid, gid, asked.UID, asked.GID)
	}
	return owner{UID: uid, GID: gid, Set: true}, nil
}

func (s *controllerServer) DeleteVolume(ctx context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	p := s.p
	id := req.GetVolumeId()
	if id == "" {
		return nil, invalid("no volume id given")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	v, ok := p.volumes[id]
	if !ok {
		return &csi.DeleteVolumeResponse{}, nil // deleted already, or never was
	}
	if live := p.livePublications(v); len(live) > 0 {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s is published at %s; unpublish it first", v.describe(), live[0].Target)
	}
	path := p.volumePath(id)
	if err := removeRecord(path + ".json"); err != nil {
		return nil, toStatus(err)
	}
	delete(p.volumes, id)
	if err := p.be.remove(path); err != nil {
		// The record is gone, so is the volume; the next start removes
		// what is left of its data.
		p.log.Warn("csi cannot remove a deleted volume's data", "volume", id, "err", err)
	}
	p.log.Info("csi volume deleted", "volume", id, "name", v.Name)
	return &csi.DeleteVolumeResponse{}, nil
}

func (s *controllerServer) ControllerExpandVolume(ctx context.Context, req *csi.ControllerExpandVolumeRequest) (*csi.ControllerExpandVolumeResponse, error) {
	p := s.p
	if req.GetVolumeId() == "" {
		return nil, invalid("no volume id given")
	}
	r := req.GetCapacityRange()
	if r == nil || (r.GetRequiredBytes() == 0 && r.GetLimitBytes() == 0) {
		return nil, invalid("no capacity range given")
	}
	if req.GetVolumeCapability() != nil {
		if err := checkCapability(req.GetVolumeCapability()); err != nil {
			return nil, err
		}
	}
	size, err := volumeSize(r, r.GetLimitBytes())
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	v, err := p.lookupVolume(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	if r.GetLimitBytes() > 0 && r.GetLimitBytes() < v.Capacity {
		return nil, status.Errorf(codes.OutOfRange, "volume %s is %d bytes; it cannot shrink to %d", v.describe(), v.Capacity, r.GetLimitBytes())
	}
	if size <= v.Capacity {
		return &csi.ControllerExpandVolumeResponse{CapacityBytes: v.Capacity}, nil
	}
	if err := p.be.reserve(ctx, p.allocated()-v.Capacity+size, size); err != nil {
		return nil, toStatus(err)
	}
	path := p.volumePath(v.ID)
	if err := p.be.resize(path, size); err != nil {
		return nil, toStatus(fmt.Errorf("grow volume %s: %w", v.describe(), err))
	}
	grown := *v
	grown.Capacity = size
	if err := writeRecord(path+".json", &grown); err != nil {
		// Put the old limit back so that the record tells the truth.
		p.be.resize(path, v.Capacity)
		return nil, toStatus(err)
	}
	p.volumes[v.ID] = &grown
	p.log.Info("csi volume expanded", "volume", v.ID, "name", v.Name, "from", v.Capacity, "to", size)
	return &csi.ControllerExpandVolumeResponse{CapacityBytes: size, NodeExpansionRequired: false}, nil
}

func (s *controllerServer) ValidateVolumeCapabilities(ctx context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, invalid("no volume id given")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, invalid("no volume capabilities given")
	}
	s.p.mu.Lock()
	_, err := s.p.lookupVolume(req.GetVolumeId())
	s.p.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if err := checkCapabilities(req.GetVolumeCapabilities()); err != nil {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: status.Convert(err).Message()}, nil
	}
	if _, err := volumeParams(req.GetParameters()); err != nil {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: status.Convert(err).Message()}, nil
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext:      req.GetVolumeContext(),
		VolumeCapabilities: req.GetVolumeCapabilities(),
		Parameters:         req.GetParameters(),
	}}, nil
}

func (s *controllerServer) ListVolumes(ctx context.Context, req *csi.ListVolumesRequest) (*csi.ListVolumesResponse, error) {
	p := s.p
	p.mu.Lock()
	defer p.mu.Unlock()
	ids, next, err := page(slices.Collect(maps.Keys(p.volumes)), req.GetStartingToken(), req.GetMaxEntries(), volumeIDPattern.MatchString)
	if err != nil {
		return nil, err
	}
	resp := &csi.ListVolumesResponse{NextToken: next}
	for _, id := range ids {
		v := p.volumes[id]
		resp.Entries = append(resp.Entries, &csi.ListVolumesResponse_Entry{
			Volume: v.volume(),
			Status: p.volumeStatus(v),
		})
	}
	return resp, nil
}

func (s *controllerServer) ControllerGetVolume(ctx context.Context, req *csi.ControllerGetVolumeRequest) (*csi.ControllerGetVolumeResponse, error) {
	p := s.p
	if req.GetVolumeId() == "" {
		return nil, invalid("no volume id given")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	v, err := p.lookupVolume(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	st := p.volumeStatus(v)
	return &csi.ControllerGetVolumeResponse{
		Volume: v.volume(),
		Status: &csi.ControllerGetVolumeResponse_VolumeStatus{PublishedNodeIds: st.GetPublishedNodeIds()},
	}, nil
}

// volumeStatus reports the node a volume is published on, if it is.
func (p *Plugin) volumeStatus(v *volumeRecord) *csi.ListVolumesResponse_VolumeStatus {
	st := &csi.ListVolumesResponse_VolumeStatus{}
	if len(p.livePublications(v)) > 0 {
		st.PublishedNodeIds = []string{p.cfg.NodeID}
	}
	return st
}

func (s *controllerServer) GetCapacity(ctx context.Context, req *csi.GetCapacityRequest) (*csi.GetCapacityResponse, error) {
	p := s.p
	for _, c := range req.GetVolumeCapabilities() {
		if checkCapability(c) != nil {
			return &csi.GetCapacityResponse{AvailableCapacity: 0}, nil
		}
	}
	if _, err := volumeParams(req.GetParameters()); err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	avail, err := p.be.available(ctx, p.allocated())
	if err != nil {
		return nil, toStatus(err)
	}
	return &csi.GetCapacityResponse{AvailableCapacity: avail}, nil
}
