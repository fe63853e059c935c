package csi

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Snapshots are read-only copies of a volume at one moment: on btrfs a
// read-only snapshot of its subvolume, taken in one step whatever it holds,
// consistent as after a crash. A snapshot is independent of its volume:
// either can be deleted first.

// snapshot returns the CSI description of a snapshot.
func (r *snapshotRecord) snapshot() *csi.Snapshot {
	return &csi.Snapshot{
		SnapshotId:     r.ID,
		SourceVolumeId: r.SourceVolume,
		SizeBytes:      r.Size,
		CreationTime:   timestamppb.New(r.Created),
		ReadyToUse:     true,
	}
}

func (s *controllerServer) CreateSnapshot(ctx context.Context, req *csi.CreateSnapshotRequest) (*csi.CreateSnapshotResponse, error) {
	p := s.p
	if err := checkName("snapshot", req.GetName()); err != nil {
		return nil, err
	}
	if req.GetSourceVolumeId() == "" {
		return nil, invalid("no source volume id given")
	}
	if err := snapshotParams(req.GetParameters()); err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.snapshots {
		if r.Name != req.GetName() {
			continue
		}
		if r.SourceVolume != req.GetSourceVolumeId() {
			return nil, status.Errorf(codes.AlreadyExists, "a snapshot named %q exists, of volume %s, not %s", r.Name, r.SourceVolume, req.GetSourceVolumeId())
		}
		return &csi.CreateSnapshotResponse{Snapshot: r.snapshot()}, nil
	}
	v, err := p.lookupVolume(req.GetSourceVolumeId())
	if err != nil {
		return nil, err
	}
	r := &snapshotRecord{
		ID:           newID("snap"),
		Name:         req.GetName(),
		SourceVolume: v.ID,
		Size:         v.Capacity,
		UID:          v.UID,
		GID:          v.GID,
		Created:      time.Now().UTC(),
	}
	path := p.snapshotPath(r.ID)
	err = p.be.copy(ctx, p.volumePath(v.ID), path, true, 0)
	if err == nil {
		err = writeRecord(path+".json", r)
	}
	if err != nil {
		if rerr := p.be.remove(path); rerr != nil {
			p.log.Warn("csi cannot remove a snapshot that failed to be made", "snapshot", r.ID, "err", rerr)
		}
		return nil, toStatus(fmt.Errorf("snapshot volume %s: %w", v.describe(), err))
	}
	p.snapshots[r.ID] = r
	p.log.Info("csi snapshot created", "snapshot", r.ID, "name", r.Name, "volume", v.ID)
	return &csi.CreateSnapshotResponse{Snapshot: r.snapshot()}, nil
}

func (s *controllerServer) DeleteSnapshot(ctx context.Context, req *csi.DeleteSnapshotRequest) (*csi.DeleteSnapshotResponse, error) {
	p := s.p
	id := req.GetSnapshotId()
	if id == "" {
		return nil, invalid("no snapshot id given")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	r, ok := p.snapshots[id]
	if !ok {
		return &csi.DeleteSnapshotResponse{}, nil
	}
	path := p.snapshotPath(id)
	if err := removeRecord(path + ".json"); err != nil {
		return nil, toStatus(err)
	}
	delete(p.snapshots, id)
	if err := p.be.remove(path); err != nil {
		p.log.Warn("csi cannot remove a deleted snapshot's data", "snapshot", id, "err", err)
	}
	p.log.Info("csi snapshot deleted", "snapshot", id, "name", r.Name)
	return &csi.DeleteSnapshotResponse{}, nil
}

func (s *controllerServer) ListSnapshots(ctx context.Context, req *csi.ListSnapshotsRequest) (*csi.ListSnapshotsResponse, error) {
	p := s.p
	p.mu.Lock()
	defer p.mu.Unlock()
	var ids []string
	switch {
	case req.GetSnapshotId() != "":
		if r, ok := p.snapshots[req.GetSnapshotId()]; ok && (req.GetSourceVolumeId() == "" || r.SourceVolume == req.GetSourceVolumeId()) {
			ids = []string{r.ID}
		}
	case req.GetSourceVolumeId() != "":
		for _, r := range p.snapshots {
			if r.SourceVolume == req.GetSourceVolumeId() {
				ids = append(ids, r.ID)
			}
		}
	default:
		ids = slices.Collect(maps.Keys(p.snapshots))
	}
	ids, next, err := page(ids, req.GetStartingToken(), req.GetMaxEntries(), snapshotIDPattern.MatchString)
	if err != nil {
		return nil, err
	}
	resp := &csi.ListSnapshotsResponse{NextToken: next}
	for _, id := range ids {
		resp.Entries = append(resp.Entries, &csi.ListSnapshotsResponse_Entry{Snapshot: p.snapshots[id].snapshot()})
	}
	return resp, nil
}

func (s *controllerServer) GetSnapshot(ctx context.Context, req *csi.GetSnapshotRequest) (*csi.GetSnapshotResponse, error) {
	p := s.p
	if req.GetSnapshotId() == "" {
		return nil, invalid("no snapshot id given")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	r, ok := p.snapshots[req.GetSnapshotId()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no snapshot has the id %q", req.GetSnapshotId())
	}
	return &csi.GetSnapshotResponse{Snapshot: r.snapshot()}, nil
}
