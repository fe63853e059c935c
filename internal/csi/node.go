package csi

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// nodeServer is the CSI Node service: volumes published at target paths.
// A volume is bind-mounted at its target (read-only when asked); there is
// no staging step.
type nodeServer struct {
	csi.UnimplementedNodeServer
	p *Plugin
}

func (s *nodeServer) NodeGetInfo(ctx context.Context, req *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: s.p.cfg.NodeID}, nil
}

func (s *nodeServer) NodeGetCapabilities(ctx context.Context, req *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	var caps []*csi.NodeServiceCapability
	for _, t := range []csi.NodeServiceCapability_RPC_Type{
		csi.NodeServiceCapability_RPC_GET_VOLUME_STATS,
		csi.NodeServiceCapability_RPC_GET_VOLUME_HEALTH,
		csi.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
	} {
		caps = append(caps, &csi.NodeServiceCapability{Type: &csi.NodeServiceCapability_Rpc{
			Rpc: &csi.NodeServiceCapability_RPC{Type: t},
		}})
	}
	return &csi.NodeGetCapabilitiesResponse{Capabilities: caps}, nil
}

// giveRoot gives a new volume's root folder to its owner, mode 0700. The
// folder was just made, in a part of the pool only root can reach.
func (p *Plugin) giveRoot(path string, own owner) error {
	fd, err := openDir(path)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd)
	if p.root {
		if err := unix.Fchown(fd, own.UID, own.GID); err != nil {
			return fmt.Errorf("give the volume to %d:%d: %w", own.UID, own.GID, err)
		}
	}
	if err := unix.Fchmod(fd, 0o700); err != nil {
		return fmt.Errorf("make the volume 0700: %w", err)
	}
	return nil
}

// publishedAt reports whether the volume is at the target: mounted there,
// or linked there where the plugin cannot mount.
func (p *Plugin) publishedAt(v *volumeRecord, t *target) (bool, bool, error) {
	st, ro, err := t.state(p.volumePath(v.ID))
	if err != nil {
		return false, false, err
	}
	return st == targetMounted || st == targetLinked, ro, nil
}

// livePublications returns the volume's publications that are still in
// place, and forgets the others (a reboot unmounts everything). Callers
// hold mu.
func (p *Plugin) livePublications(v *volumeRecord) []publication {
	var live []publication
	for _, pub := range v.Publications {
		t, err := openTarget(pub.Target)
		if err != nil {
			continue
		}
		ok, _, err := p.publishedAt(v, t)
		t.close()
		if ok || err != nil {
			live = append(live, pub) // keep what cannot be checked now
		}
	}
	if len(live) != len(v.Publications) {
		next := *v
		next.Publications = live
		if err := writeRecord(p.volumePath(v.ID)+".json", &next); err == nil {
			p.volumes[v.ID] = &next
		}
	}
	return live
}

func (s *nodeServer) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	p := s.p
	switch {
	case req.GetVolumeId() == "":
		return nil, invalid("no volume id given")
	case req.GetTargetPath() == "":
		return nil, invalid("no target path given")
	case req.GetVolumeCapability() == nil:
		return nil, invalid("no volume capability given")
	}
	if err := checkCapability(req.GetVolumeCapability()); err != nil {
		return nil, err
	}
	mode := req.GetVolumeCapability().GetAccessMode().GetMode()
	readOnly := req.GetReadonly() || mode == csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY
	path := req.GetTargetPath()

	p.mu.Lock()
	defer p.mu.Unlock()
	v, err := p.lookupVolume(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	t, err := openTarget(path)
	if err != nil {
		return nil, invalid("%v", err)
	}
	defer t.close()
	live := p.livePublications(v)
	v = p.volumes[v.ID]

	// Published there already: the same call again, if it asks the same.
	if i := slices.IndexFunc(live, func(pub publication) bool { return pub.Target == path }); i >= 0 {
		if live[i].ReadOnly != readOnly {
			return nil, status.Errorf(codes.AlreadyExists, "volume %s is published at %s with read-only %v; unpublish it before publishing it with read-only %v", v.describe(), path, live[i].ReadOnly, readOnly)
		}
		return &csi.NodePublishVolumeResponse{}, nil
	}
	for _, pub := range live {
		if pub.Mode == csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER.String() || mode == csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER {
			return nil, status.Errorf(codes.FailedPrecondition, "volume %s is published at %s for a single writer; unpublish it there first", v.describe(), pub.Target)
		}
	}

	src := p.volumePath(v.ID)
	st, ro, err := t.state(src)
	if err != nil {
		return nil, toStatus(err)
	}
	switch {
	case st == targetOther && p.mounts:
		// A folder the caller made is fine; a mount of something else is not.
		var sx unix.Statx_t
		if err := unix.Statx(t.parent, t.name, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_TYPE, &sx); err == nil &&
			(sx.Mode&unix.S_IFMT != unix.S_IFDIR || sx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0) {
			return nil, status.Errorf(codes.FailedPrecondition, "the target %s holds something else (a file, a link or another mount); give a free path", path)
		}
		err = t.bind(src, readOnly)
	case st == targetOther:
		err = t.link(src)
	case st == targetMissing && p.mounts:
		err = t.bind(src, readOnly)
	case st == targetMissing:
		err = t.link(src)
	case st == targetMounted && ro != readOnly:
		// Mounted by an earlier call whose record was not written.
		return nil, status.Errorf(codes.AlreadyExists, "volume %s is mounted at %s with read-only %v; unpublish it first", v.describe(), path, ro)
	}
	if err != nil {
		return nil, toStatus(err)
	}

	next := *v
	next.Publications = append(slices.Clone(live), publication{Target: path, ReadOnly: readOnly, Mode: mode.String()})
	if err := writeRecord(src+".json", &next); err != nil {
		p.undoPublish(t, st)
		return nil, toStatus(err)
	}
	p.volumes[v.ID] = &next
	p.log.Info("csi volume published", "volume", v.ID, "name", v.Name, "target", path, "readonly", readOnly)
	return &csi.NodePublishVolumeResponse{}, nil
}

// undoPublish takes back a mount or link just made, when its record could
// not be written.
func (p *Plugin) undoPublish(t *target, before targetState) {
	if before == targetMounted || before == targetLinked {
		return // it was there before this call
	}
	if p.mounts {
		t.unmount()
		t.removeDir()
	} else {
		t.unlink()
	}
}

func (s *nodeServer) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	p := s.p
	switch {
	case req.GetVolumeId() == "":
		return nil, invalid("no volume id given")
	case req.GetTargetPath() == "":
		return nil, invalid("no target path given")
	}
	path := req.GetTargetPath()
	p.mu.Lock()
	defer p.mu.Unlock()
	v, err := p.lookupVolume(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	t, err := openTarget(path)
	if errors.Is(err, errNoTarget) {
		return &csi.NodeUnpublishVolumeResponse{}, p.forget(v, path)
	}
	if err != nil {
		return nil, invalid("%v", err)
	}
	defer t.close()
	src := p.volumePath(v.ID)
	// Unmount as often as the volume is mounted there (a retried publish
	// may have stacked two mounts); leave anything else alone.
	for range 8 {
		st, _, err := t.state(src)
		if err != nil {
			return nil, toStatus(err)
		}
		if st == targetLinked {
			if err := t.unlink(); err != nil {
				return nil, toStatus(err)
			}
			continue
		}
		if st != targetMounted {
			if st == targetOther {
				t.removeDir() // the empty folder publishing made
			}
			break
		}
		if err := t.unmount(); err != nil {
			return nil, status.Errorf(codes.Internal, "%v (is a process still using it?)", err)
		}
	}
	if err := p.forget(v, path); err != nil {
		return nil, err
	}
	p.log.Info("csi volume unpublished", "volume", v.ID, "name", v.Name, "target", path)
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// forget drops the publication at path from the volume's record. Callers
// hold mu.
func (p *Plugin) forget(v *volumeRecord, path string) error {
	i := slices.IndexFunc(v.Publications, func(pub publication) bool { return pub.Target == path })
	if i < 0 {
		return nil
	}
	next := *v
	next.Publications = slices.Delete(slices.Clone(v.Publications), i, i+1)
	if err := writeRecord(p.volumePath(v.ID)+".json", &next); err != nil {
		return toStatus(err)
	}
	p.volumes[v.ID] = &next
	return nil
}

func (s *nodeServer) NodeGetVolumeStats(ctx context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	p := s.p
	switch {
	case req.GetVolumeId() == "":
		return nil, invalid("no volume id given")
	case req.GetVolumePath() == "":
		return nil, invalid("no volume path given")
	}
	p.mu.Lock()
	v, err := p.lookupVolume(req.GetVolumeId())
	if err != nil {
		p.mu.Unlock()
		return nil, err
	}
	// The path must be where the volume is published.
	path := filepath.Clean(req.GetVolumePath())
	t, err := openTarget(path)
	if err != nil {
		p.mu.Unlock()
		return nil, status.Errorf(codes.NotFound, "volume %s is not published at %s: %v", v.describe(), req.GetVolumePath(), err)
	}
	ok, _, err := p.publishedAt(v, t)
	t.close()
	capacity, src := v.Capacity, p.volumePath(v.ID)
	p.mu.Unlock()
	if err != nil {
		return nil, toStatus(err)
	}
	if !ok {
		return nil, status.Errorf(codes.NotFound, "volume %s is not published at %s", v.describe(), req.GetVolumePath())
	}

	used, warning, err := p.be.usage(ctx, src)
	if err != nil {
		return nil, toStatus(err)
	}
	free, err := p.be.free()
	if err != nil {
		return nil, toStatus(err)
	}
	// What the volume may still take: its room under its size, or less
	// when the pool itself has less.
	avail := min(max(capacity-used, 0), free)
	resp := &csi.NodeGetVolumeStatsResponse{
		Usage: []*csi.VolumeUsage{{
			Unit:      csi.VolumeUsage_BYTES,
			Total:     capacity,
			Used:      used,
			Available: avail,
		}},
	}
	if warning != "" {
		p.log.Warn("csi volume escapes its size", "volume", v.ID, "name", v.Name, "detail", warning)
	}
	return resp, nil
}

// NodeGetVolumeHealth reports a volume as degraded when something in it
// escapes its size (subvolumes an app made inside it).
func (s *nodeServer) NodeGetVolumeHealth(ctx context.Context, req *csi.NodeGetVolumeHealthRequest) (*csi.NodeGetVolumeHealthResponse, error) {
	p := s.p
	if req.GetVolumeId() == "" {
		return nil, invalid("no volume id given")
	}
	p.mu.Lock()
	v, err := p.lookupVolume(req.GetVolumeId())
	p.mu.Unlock()
	if err != nil {
		return nil, err
	}
	_, warning, err := p.be.usage(ctx, p.volumePath(v.ID))
	if err != nil {
		return nil, toStatus(err)
	}
	h := &csi.VolumeHealth{VolumeId: v.ID}
	if warning != "" {
		h.HealthStatuses = []*csi.VolumeHealth_VolumeHealthEntry{{
			Status:  csi.VolumeHealthErrorType_DEGRADED,
			Reason:  "NestedSubvolumes",
			Message: warning,
		}}
	}
	return &csi.NodeGetVolumeHealthResponse{VolumeHealth: h}, nil
}
