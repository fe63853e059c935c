package volume

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"paddock.dev/paddock/internal/runtime"
	"paddock.dev/paddock/internal/store"
)

// A volume reaches an instance in two steps: the plugin publishes it at
// PublishDir/INSTANCE/VOLUME (a folder only root reaches), and the runtime
// binds that into the instance's working folder at the volume's path.
// Beside each target, VOLUME.json records the plugin's volume ID, so that
// it is unpublished right even after a restore changed the record.

type published struct {
	VolumeID string `json:"volume_id"`
}

// Mounts publishes the volumes attached to process of app for instance
// and returns what the runtime binds, with the environment variable each
// is named in.
func (s *Service) Mounts(ctx context.Context, app, process, instance string) ([]runtime.Mount, error) {
	if err := checkInstance(instance); err != nil {
		return nil, err
	}
	vols, err := s.st.ListVolumes(ctx, app)
	if err != nil {
		return nil, err
	}
	s.slots.Lock()
	defer s.slots.Unlock()
	var out []runtime.Mount
	for _, v := range vols {
		if v.Process != process {
			continue
		}
		env, path := EnvName(v.Name), v.Path
		if s.restoring[v.Name] {
			s.Unpublish(context.WithoutCancel(ctx), instance)
			return nil, fmt.Errorf("%w: volume %s is being restored: its instances start once the restore ends", ErrInUse, v.Name)
		}
		if !v.PerInstance && slices.ContainsFunc(s.holders(v.Name), func(h string) bool { return h != instance }) {
			s.Unpublish(context.WithoutCancel(ctx), instance)
			return nil, fmt.Errorf("%w: volume %s is mounted by another instance of %s and has one writer: scale %s to 1, or attach the volume --per-instance", ErrInUse, v.Name, process, process)
		}
		if v.PerInstance {
			if v, err = s.slot(ctx, v, vols, instance); err != nil {
				s.Unpublish(context.WithoutCancel(ctx), instance)
				return nil, err
			}
		}
		source, err := s.publish(ctx, v, instance)
		if err != nil {
			s.Unpublish(context.WithoutCancel(ctx), instance)
			return nil, err
		}
		out = append(out, runtime.Mount{Source: source, Target: path, Env: env})
	}
	return out, nil
}

// checkInstance refuses an instance name that is not one folder's name.
func checkInstance(instance string) error {
	if strings.ContainsAny(instance, "/\x00") || instance == "" || instance == "." || instance == ".." {
		return fmt.Errorf("%w: instance %q", ErrInvalid, instance)
	}
	return nil
}

// slot returns the volume of a per-instance template that no instance
// has: the template itself, else NAME-1, NAME-2…, made when missing. The
// caller holds s.slots.
func (s *Service) slot(ctx context.Context, tmpl store.Volume, vols []store.Volume, instance string) (store.Volume, error) {
	byName := map[string]store.Volume{}
	for _, v := range vols {
		byName[v.Name] = v
	}
	// The volume the instance has already, if it has one.
	for _, v := range vols {
		if (v.Name == tmpl.Name || v.Template == tmpl.Name) && slices.Contains(s.holders(v.Name), instance) {
			return v, nil
		}
	}
	for k := 0; k <= 100; k++ {
		v, err := s.slotVolume(ctx, tmpl, byName, k)
		if err != nil {
			return v, err
		}
		if s.InUse(v) {
			continue
		}
		if s.restoring[v.Name] {
			return v, fmt.Errorf("%w: volume %s is being restored: the instance starts once the restore ends", ErrInUse, v.Name)
		}
		return v, nil
	}
	return tmpl, fmt.Errorf("%w: every volume of %s is in use", ErrInUse, tmpl.Name)
}

// instanceVolume makes and records name, a volume like tmpl for another
// instance.
func (s *Service) instanceVolume(ctx context.Context, tmpl store.Volume, name string) (store.Volume, error) {
	a, err := s.st.GetApp(ctx, tmpl.App)
	if err != nil {
		return store.Volume{}, err
	}
	if err := s.checkQuota(ctx, tmpl.App, tmpl.Size, ""); err != nil {
		return store.Volume{}, err
	}
	vol, err := s.csiVolume(ctx, a, name, tmpl.Size, nil)
	if err != nil {
		return store.Volume{}, err
	}
	v := store.Volume{Name: name, App: tmpl.App, Size: max(vol.CapacityBytes, tmpl.Size), CSIID: vol.VolumeId, Template: tmpl.Name, CreatedAt: s.cfg.Now().UTC()}
	if err := s.record(ctx, v); err != nil {
		return v, err
	}
	s.log.Info("made a volume for another instance", "volume", name, "template", tmpl.Name, "app", tmpl.App)
	return v, nil
}

// Slots returns the volumes of process of app's per-instance attachments
// for each of its first n instances: instance 0 has the attached volume
// itself, instance k its NAME-k, made as needed and kept when the process
// is scaled down. It is for a runtime whose instances have fixed places,
// as on Kubernetes, where each is a Deployment of its own, and whose one
// reconciler calls it: no instance takes a volume here, so it holds no
// lock while the storage makes one. When slot k's volumes cannot all be
// had (a quota, a name taken), it returns the k slots before it, whole,
// with the error.
func (s *Service) Slots(ctx context.Context, app, process string, n int) ([][]store.Volume, error) {
	vols, err := s.st.ListVolumes(ctx, app)
	if err != nil {
		return nil, err
	}
	byName := map[string]store.Volume{}
	var tmpls []store.Volume
	for _, v := range vols {
		byName[v.Name] = v
		if v.Process == process && v.PerInstance {
			tmpls = append(tmpls, v)
		}
	}
	out := make([][]store.Volume, 0, n)
	for k := range n {
		var slot []store.Volume
		for _, tmpl := range tmpls {
			v, err := s.slotVolume(ctx, tmpl, byName, k)
			if err != nil {
				return out, err
			}
			slot = append(slot, v)
		}
		out = append(out, slot)
	}
	return out, nil
}

// slotVolume returns the volume of instance k for a per-instance template,
// making it when missing.
func (s *Service) slotVolume(ctx context.Context, tmpl store.Volume, byName map[string]store.Volume, k int) (store.Volume, error) {
	if k == 0 {
		return tmpl, nil
	}
	name := fmt.Sprintf("%s-%d", tmpl.Name, k)
	if v, ok := byName[name]; ok {
		if v.Template != tmpl.Name {
			return v, fmt.Errorf("%w: instance %d of %s would have volume %s, which is another volume: rename it", ErrInUse, k, tmpl.Process, name)
		}
		return v, nil
	}
	// Volume names are the platform's, not the app's.
	if other, err := s.st.GetVolume(ctx, name); err == nil {
		return tmpl, fmt.Errorf("%w: instance %d of %s would have volume %s, which is a volume of %s: rename one", ErrInUse, k, tmpl.Process, name, other.App)
	}
	return s.instanceVolume(ctx, tmpl, name)
}

func (s *Service) publish(ctx context.Context, v store.Volume, instance string) (string, error) {
	dir := filepath.Join(s.cfg.PublishDir, instance)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	b, err := json.Marshal(published{VolumeID: v.CSIID})
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, v.Name+".json"), b, 0o600); err != nil {
		return "", err
	}
	target := filepath.Join(dir, v.Name)
	_, err = s.cfg.Node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{
		VolumeId: v.CSIID, TargetPath: target, VolumeCapability: capability,
	})
	if err != nil {
		return "", pluginError("publish volume "+v.Name, err)
	}
	return target, nil
}

// Unpublish takes back every volume published for instance.
func (s *Service) Unpublish(ctx context.Context, instance string) error {
	if err := checkInstance(instance); err != nil {
		return err
	}
	dir := filepath.Join(s.cfg.PublishDir, instance)
	recs, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return err
	}
	var errs []error
	for _, rec := range recs {
		var p published
		b, err := os.ReadFile(rec)
		if err == nil {
			err = json.Unmarshal(b, &p)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("unpublish %s: %w", rec, err))
			continue
		}
		target := strings.TrimSuffix(rec, ".json")
		if _, err := s.cfg.Node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: p.VolumeID, TargetPath: target}); err != nil {
			errs = append(errs, pluginError("unpublish "+filepath.Base(target), err))
			continue
		}
		os.Remove(rec)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	// Only empty folders go: never a recursive removal where a volume
	// might still be mounted.
	os.Remove(dir)
	return nil
}

// Unpublished removes the publish folders of instances that no longer
// exist (a crash between a stop and its unpublish); live names those that
// do.
func (s *Service) Unpublished(ctx context.Context, live map[string]bool) {
	ents, _ := os.ReadDir(s.cfg.PublishDir)
	for _, e := range ents {
		if e.IsDir() && !live[e.Name()] {
			if err := s.Unpublish(ctx, e.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
				s.log.Warn("unpublish the volumes of a gone instance", "instance", e.Name(), "err", err)
			}
		}
	}
}

// Restoring reports whether a volume is being restored: its instances
// start once the restore ends.
func (s *Service) Restoring(volume string) bool {
	s.slots.Lock()
	defer s.slots.Unlock()
	return s.restoring[volume]
}

// Used returns the bytes a volume holds, from where it is published for
// an instance; ok is false when no instance has it.
func (s *Service) Used(ctx context.Context, v store.Volume) (used int64, ok bool) {
	matches, _ := filepath.Glob(filepath.Join(s.cfg.PublishDir, "*", v.Name))
	for _, target := range matches {
		resp, err := s.cfg.Node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: v.CSIID, VolumePath: target})
		if err != nil {
			continue
		}
		for _, u := range resp.Usage {
			if u.Unit == csi.VolumeUsage_BYTES {
				return u.Used, true
			}
		}
	}
	return 0, false
}

// InUse reports whether an instance has the volume published, or
// Config.Mounted says something else mounts it.
func (s *Service) InUse(v store.Volume) bool {
	return len(s.holders(v.Name)) > 0 || (s.cfg.Mounted != nil && s.cfg.Mounted(v))
}

// holders returns the instances that have the volume published.
func (s *Service) holders(volume string) []string {
	matches, _ := filepath.Glob(filepath.Join(s.cfg.PublishDir, "*", volume+".json"))
	for i, m := range matches {
		matches[i] = filepath.Base(filepath.Dir(m))
	}
	return matches
}
