package volume

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"paddock.dev/paddock/internal/store"
)

// A plugin volume that no record names yet (a restore's or an import's
// copy while it is filled, a scratch copy of a snapshot) is written down
// in PendingDir from its creation until a record names it or it is
// deleted. Orphans deletes those a crash left. Nothing else is ever
// deleted for want of a record: a store restored from an older copy, or
// lost, must not take the volumes with it.

type pending struct {
	VolumeID string `json:"volume_id"`
	Why      string `json:"why"`
}

func (s *Service) pendingPath(id string) string {
	return filepath.Join(s.cfg.PendingDir, hex.EncodeToString([]byte(id))+".json")
}

// pendingVolume asks the plugin for a volume that no record names yet, and
// writes it down.
func (s *Service) pendingVolume(ctx context.Context, a store.App, name string, size int64, source *csi.VolumeContentSource, why string) (*csi.Volume, error) {
	vol, err := s.csiVolume(ctx, a, name, size, source)
	if err != nil {
		return nil, err
	}
	if err := s.pend(vol.VolumeId, why); err != nil {
		s.deleteVolume(ctx, vol.VolumeId)
		return nil, err
	}
	return vol, nil
}

func (s *Service) pend(id, why string) error {
	b, err := json.Marshal(pending{VolumeID: id, Why: why})
	if err != nil {
		return err
	}
	return os.WriteFile(s.pendingPath(id), b, 0o600)
}

// settle forgets a pending volume: a record names it now, or it is gone.
func (s *Service) settle(id string) { os.Remove(s.pendingPath(id)) }

// deleteVolume deletes a plugin volume and forgets it.
func (s *Service) deleteVolume(ctx context.Context, id string) {
	_, err := s.cfg.Controller.DeleteVolume(context.WithoutCancel(ctx), &csi.DeleteVolumeRequest{VolumeId: id})
	if err != nil && status.Code(err) != codes.NotFound {
		s.log.Warn("delete a volume of the storage plugin", "csi_id", id, "err", err)
		return // still pending: Orphans tries again at the next start
	}
	s.settle(id)
}

// Orphans deletes the pending volumes a crash left that no record names,
// and forgets those a record does. Run it at start, before any work, after
// Unpublished.
func (s *Service) Orphans(ctx context.Context) error {
	files, err := filepath.Glob(filepath.Join(s.cfg.PendingDir, "*.json"))
	if err != nil || len(files) == 0 {
		return err
	}
	named := map[string]bool{}
	vols, err := s.st.ListVolumes(ctx, "")
	if err != nil {
		return err
	}
	for _, v := range vols {
		named[v.CSIID] = true
	}
	var errs []error
	for _, f := range files {
		var p pending
		b, err := os.ReadFile(f)
		if err == nil {
			err = json.Unmarshal(b, &p)
		}
		if err != nil || p.VolumeID == "" {
			errs = append(errs, err)
			continue
		}
		if named[p.VolumeID] {
			s.settle(p.VolumeID)
			continue
		}
		s.log.Info("deleting a volume a crash left half made", "csi_id", p.VolumeID, "was", p.Why)
		s.deleteVolume(ctx, p.VolumeID)
	}
	return errors.Join(errs...)
}
