// Package volume manages apps' persistent volumes above the Container
// Storage Interface: it is a CSI client, so any CSI plugin plugs in by its
// socket, Paddock's own (internal/csi) by default. What CSI leaves to its
// callers lives here: names, ownership by an app, attachment to a process
// type, quotas, snapshots' records, restore by swapping, and publishing a
// volume to each instance that uses it.
//
// The store keeps the records; the plugin keeps the data. A record is
// written after the plugin made what it names and removed before the
// plugin deletes it, so a crash leaves at worst an orphan in the plugin,
// never a record of nothing.
package volume

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"paddock.dev/paddock/internal/manifest"
	"paddock.dev/paddock/internal/store"
)

// Errors callers map to answers.
var (
	ErrInvalid = errors.New("invalid request")
	ErrInUse   = errors.New("volume in use")
	ErrQuota   = errors.New("over the app's volume quota")
)

// Limits on sizes.
const (
	MinSize = 1 << 20 // 1 MiB
	MaxSize = 1 << 50 // 1 PiB: larger is a typo
)

// Config configures a Service.
type Config struct {
	Store      store.Store // required
	Controller Controller  // required
	Node       Node        // required
	NodeID     string      // the plugin's node ID, for publishing
	PublishDir string      // required: where volumes are published for instances
	// PendingDir keeps the plugin volumes no record names yet; default
	// "pending" beside PublishDir.
	PendingDir string
	UserOf     func(app store.App) (uint32, error) // the app's user, who owns its volumes; nil: the server's
	// Parameters, when set, gives further CreateVolume parameters for a
	// volume of an app: for a controller that keeps each app's volumes
	// apart (on Kubernetes, in the app's namespace).
	Parameters func(app store.App) map[string]string
	// NoContent, when set, says why Paddock cannot read volumes' content:
	// snapshots get no checksum manifest, and verify, export, import,
	// paced restores and restore-verified backups are refused.
	NoContent string
	// Mounted, when set, reports whether something other than this
	// machine's instances mounts a volume (on Kubernetes, a pod); nil:
	// only this machine's publications count.
	Mounted func(store.Volume) bool
	// AppQuota is the most bytes of volumes one app may have; 0: no limit.
	AppQuota int64
	// TeamQuota is the most bytes of volumes the apps granted to one team
	// may have together; 0: no limit.
	TeamQuota int64
	// Enforcement says whether the plugin refuses writes past a volume's
	// size, and why not when it does not; nil: it does.
	Enforcement func() (bool, string)
	Now         func() time.Time // default time.Now
	Logger      *slog.Logger     // default: discard
}

// Controller is what the volume layer asks of a CSI controller service;
// a csi.ControllerClient is one.
type Controller interface {
	CreateVolume(context.Context, *csi.CreateVolumeRequest, ...grpc.CallOption) (*csi.CreateVolumeResponse, error)
	DeleteVolume(context.Context, *csi.DeleteVolumeRequest, ...grpc.CallOption) (*csi.DeleteVolumeResponse, error)
	ControllerExpandVolume(context.Context, *csi.ControllerExpandVolumeRequest, ...grpc.CallOption) (*csi.ControllerExpandVolumeResponse, error)
	CreateSnapshot(context.Context, *csi.CreateSnapshotRequest, ...grpc.CallOption) (*csi.CreateSnapshotResponse, error)
	DeleteSnapshot(context.Context, *csi.DeleteSnapshotRequest, ...grpc.CallOption) (*csi.DeleteSnapshotResponse, error)
}

// Node is what the volume layer asks of a CSI node service, to reach
// volumes' content on this machine; a csi.NodeClient is one.
type Node interface {
	NodePublishVolume(context.Context, *csi.NodePublishVolumeRequest, ...grpc.CallOption) (*csi.NodePublishVolumeResponse, error)
	NodeUnpublishVolume(context.Context, *csi.NodeUnpublishVolumeRequest, ...grpc.CallOption) (*csi.NodeUnpublishVolumeResponse, error)
	NodeGetVolumeStats(context.Context, *csi.NodeGetVolumeStatsRequest, ...grpc.CallOption) (*csi.NodeGetVolumeStatsResponse, error)
}

// Service manages volumes.
type Service struct {
	cfg Config
	st  store.Store
	log *slog.Logger
	// slots is held while an instance picks its volumes, so that two
	// instances never take the same per-instance volume and none takes a
	// volume being restored (restoring, which slots guards).
	slots     sync.Mutex
	restoring map[string]bool
	// volumes holds a mutex for each volume, held by what changes its data
	// or its snapshots: restores, backups, deletions.
	volumes sync.Map
	// Work that goes on after its request was answered (the checksum of
	// a new snapshot) runs under bg, which Close ends.
	bg     context.Context
	stop   context.CancelFunc
	bgWork sync.WaitGroup
}

// New returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Controller == nil || cfg.Node == nil || cfg.PublishDir == "" {
		return nil, errors.New("volume: Store, Controller, Node and PublishDir are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.PendingDir == "" {
		cfg.PendingDir = filepath.Join(filepath.Dir(cfg.PublishDir), "pending")
	}
	if err := os.MkdirAll(cfg.PublishDir, 0o711); err != nil {
		return nil, fmt.Errorf("volume: %w", err)
	}
	if err := os.MkdirAll(cfg.PendingDir, 0o700); err != nil {
		return nil, fmt.Errorf("volume: %w", err)
	}
	bg, stop := context.WithCancel(context.Background())
	return &Service{cfg: cfg, st: cfg.Store, log: cfg.Logger, bg: bg, stop: stop, restoring: map[string]bool{}}, nil
}

// lockVolume holds a volume's mutex until the returned func is called.
func (s *Service) lockVolume(name string) func() {
	m, _ := s.volumes.LoadOrStore(name, &sync.Mutex{})
	mu := m.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}

// beginRestore marks a volume as being restored, so that no instance
// mounts it until the returned func is called; a volume mounted already
// is refused.
func (s *Service) beginRestore(v store.Volume, inUse func(store.Volume) bool) (func(), error) {
	s.slots.Lock()
	defer s.slots.Unlock()
	if inUse != nil && inUse(v) {
		return nil, fmt.Errorf("%w: volume %s is mounted by running instances of %s: scale %s to 0 first, or restore to a new volume with --to", ErrInUse, v.Name, v.App, cmp.Or(v.Process, "them"))
	}
	s.restoring[v.Name] = true
	return func() {
		s.slots.Lock()
		delete(s.restoring, v.Name)
		s.slots.Unlock()
	}, nil
}

// Close ends the work still going on in the background and waits for it.
func (s *Service) Close() {
	s.stop()
	s.bgWork.Wait()
}

// Wait waits for the work going on in the background.
func (s *Service) Wait() { s.bgWork.Wait() }

var volumeName = regexp.MustCompile(`^[a-z][a-z0-9-]*$`) // and at most 40 bytes

// ValidateName says what is wrong with a volume's name, if anything.
func ValidateName(name string) error {
	if len(name) > 40 || !volumeName.MatchString(name) || strings.HasSuffix(name, "-") {
		return fmt.Errorf("%w: volume name %q: use 1 to 40 lowercase letters, digits and dashes, starting with a letter", ErrInvalid, name)
	}
	return nil
}

// ParseSize parses a volume size ("1GiB", "512M") and checks its bounds.
func ParseSize(s string) (int64, error) {
	n, err := manifest.ParseSize(s)
	if err != nil {
		return 0, fmt.Errorf("%w: size %w", ErrInvalid, err)
	}
	if n < MinSize || n > MaxSize {
		return 0, fmt.Errorf("%w: size %s: a volume has between 1MiB and 1PiB", ErrInvalid, s)
	}
	return n, nil
}

// EnvName is the environment variable that tells an instance where a
// volume is: PADDOCK_VOLUME_SHOP_DATA for shop-data.
func EnvName(volume string) string {
	return "PADDOCK_VOLUME_" + strings.ToUpper(strings.ReplaceAll(volume, "-", "_"))
}

func newID(prefix string) string {
	b := make([]byte, 6)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// capability is how Paddock uses volumes: a filesystem, written by one
// node.
var capability = &csi.VolumeCapability{
	AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
	AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
}

// Create makes a volume of size bytes for app.
func (s *Service) Create(ctx context.Context, app, name string, size int64) (store.Volume, error) {
	a, err := s.checkNew(ctx, app, name, size)
	if err != nil {
		return store.Volume{}, err
	}
	return s.create(ctx, a, name, size, nil)
}

// checkNew checks a new volume's name and size, that its app exists and
// that it fits the quota, and returns the app.
func (s *Service) checkNew(ctx context.Context, app, name string, size int64) (store.App, error) {
	if err := ValidateName(name); err != nil {
		return store.App{}, err
	}
	if size < MinSize || size > MaxSize {
		return store.App{}, fmt.Errorf("%w: a volume has between 1MiB and 1PiB", ErrInvalid)
	}
	a, err := s.st.GetApp(ctx, app)
	if err != nil {
		return a, err
	}
	if _, err := s.st.GetVolume(ctx, name); err == nil {
		return a, fmt.Errorf("volume %q: %w", name, store.ErrExists)
	}
	return a, s.checkQuota(ctx, app, size, "")
}

// create asks the plugin for a volume, from source if not nil, and records
// it.
func (s *Service) create(ctx context.Context, a store.App, name string, size int64, source *csi.VolumeContentSource) (store.Volume, error) {
	// The plugin's name is unique per request, so that a retried create
	// is the same volume and a new one of an old name is another.
	vol, err := s.csiVolume(ctx, a, name, size, source)
	if err != nil {
		return store.Volume{}, err
	}
	v := store.Volume{Name: name, App: a.Name, Size: max(vol.CapacityBytes, size), CSIID: vol.VolumeId, CreatedAt: s.cfg.Now().UTC()}
	if err := s.record(ctx, v); err != nil {
		return store.Volume{}, err
	}
	return v, nil
}

// record records a volume the plugin made, unless the size it made (a
// plugin may round up) takes the app past its quota: then the plugin's
// volume is deleted again.
func (s *Service) record(ctx context.Context, v store.Volume) error {
	err := s.checkQuota(ctx, v.App, v.Size, "")
	if err == nil {
		err = s.st.CreateVolume(ctx, v)
	}
	if err != nil {
		s.cfg.Controller.DeleteVolume(context.WithoutCancel(ctx), &csi.DeleteVolumeRequest{VolumeId: v.CSIID})
	}
	return err
}

// owner returns the CreateVolume parameters that give the volume to the
// app's user.
func (s *Service) owner(a store.App) (map[string]string, error) {
	if s.cfg.UserOf == nil {
		return nil, nil
	}
	uid, err := s.cfg.UserOf(a)
	if err != nil || uid == 0 {
		return nil, err
	}
	id := strconv.FormatUint(uint64(uid), 10)
	return map[string]string{"uid": id, "gid": id}, nil
}

// quotaLeft returns the bytes app may still have beside its volumes but
// except; 0 when it has no quota.
func (s *Service) quotaLeft(ctx context.Context, app, except string) (int64, error) {
	if s.cfg.AppQuota == 0 {
		return 0, nil
	}
	vols, err := s.st.ListVolumes(ctx, app)
	if err != nil {
		return 0, err
	}
	left := s.cfg.AppQuota
	for _, v := range vols {
		if v.Name != except {
			left -= v.Size
		}
	}
	return max(left, 1), nil
}

func (s *Service) checkQuota(ctx context.Context, app string, size int64, except string) error {
	if s.cfg.AppQuota == 0 && s.cfg.TeamQuota == 0 {
		return nil
	}
	vols, err := s.st.ListVolumes(ctx, "")
	if err != nil {
		return err
	}
	byApp := map[string]int64{}
	for _, v := range vols {
		if v.Name != except {
			byApp[v.App] += v.Size
		}
	}
	if q := s.cfg.AppQuota; q > 0 && byApp[app]+size > q {
		return fmt.Errorf("%w: app %s has %s of volumes and may have %s in all: %s more does not fit", ErrQuota, app, human(byApp[app]), human(q), human(size))
	}
	if s.cfg.TeamQuota == 0 {
		return nil
	}
	acc, err := s.st.Access(ctx)
	if err != nil {
		return err
	}
	for _, g := range acc.Grants {
		if g.App != app {
			continue
		}
		var total int64
		for _, o := range acc.Grants {
			if o.Team == g.Team {
				total += byApp[o.App]
			}
		}
		if total+size > s.cfg.TeamQuota {
			return fmt.Errorf("%w: the apps of team %s have %s of volumes and may have %s in all: %s more for %s does not fit", ErrQuota, g.Team, human(total), human(s.cfg.TeamQuota), human(size), app)
		}
	}
	return nil
}

// human writes a byte count the way sizes are given.
func human(n int64) string {
	for _, u := range []struct {
		s string
		n int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.n && n%u.n == 0 {
			return strconv.FormatInt(n/u.n, 10) + u.s
		}
	}
	if n >= 1<<30 {
		return fmt.Sprintf("%.1fGiB", float64(n)/(1<<30))
	}
	if n >= 1<<20 {
		return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
	}
	return strconv.FormatInt(n, 10) + "B"
}

// Enforced reports whether writes past a volume's size are refused, and
// why not when they are not.
func (s *Service) Enforced() (bool, string) {
	if s.cfg.Enforcement == nil {
		return true, ""
	}
	return s.cfg.Enforcement()
}

// Get returns a volume.
func (s *Service) Get(ctx context.Context, name string) (store.Volume, error) {
	return s.st.GetVolume(ctx, name)
}

// List returns app's volumes, or all when app is "".
func (s *Service) List(ctx context.Context, app string) ([]store.Volume, error) {
	vols, err := s.st.ListVolumes(ctx, app)
	if vols == nil {
		vols = []store.Volume{}
	}
	return vols, err
}

// Attach attaches a volume to a process type of its app, at path in the
// instances' working folders. The change reaches instances started from
// then on: with the next rollout (a scale or a release).
func (s *Service) Attach(ctx context.Context, name, app, process, path string) (store.Volume, error) {
	return s.attach(ctx, name, app, process, path, false)
}

// AttachPerInstance is Attach for a process type whose instances each
// have a volume of their own: the first this one, the others NAME-1,
// NAME-2… of the same size, made as they are first needed and kept when
// the process is scaled down.
func (s *Service) AttachPerInstance(ctx context.Context, name, app, process, path string) (store.Volume, error) {
	return s.attach(ctx, name, app, process, path, true)
}

func (s *Service) attach(ctx context.Context, name, app, process, path string, perInstance bool) (store.Volume, error) {
	if !manifest.ValidProcessName(process) {
		return store.Volume{}, fmt.Errorf("%w: process type %q", ErrInvalid, process)
	}
	clean, err := cleanPath(path)
	if err != nil {
		return store.Volume{}, err
	}
	vols, err := s.st.ListVolumes(ctx, app)
	if err != nil {
		return store.Volume{}, err
	}
	for _, o := range vols {
		if o.Name != name && o.Process == process && (o.Path == clean || strings.HasPrefix(o.Path, clean+"/") || strings.HasPrefix(clean, o.Path+"/")) {
			return store.Volume{}, fmt.Errorf("%w: %s of %s is already at %s: give this one a path of its own", ErrInvalid, o.Name, process, o.Path)
		}
	}
	return s.st.UpdateVolume(ctx, name, func(v store.Volume) (store.Volume, error) {
		if v.App != app {
			return v, fmt.Errorf("%w: volume %s belongs to app %s, not %s", ErrInvalid, name, v.App, app)
		}
		if v.Template != "" {
			return v, fmt.Errorf("%w: volume %s is an instance's volume of %s: attach %s instead", ErrInvalid, name, v.Template, v.Template)
		}
		v.Process, v.Path, v.PerInstance = process, clean, perInstance
		return v, nil
	})
}

// Detach detaches a volume from its process type.
func (s *Service) Detach(ctx context.Context, name string) (store.Volume, error) {
	return s.st.UpdateVolume(ctx, name, func(v store.Volume) (store.Volume, error) {
		v.Process, v.Path, v.PerInstance = "", "", false
		return v, nil
	})
}

// cleanPath checks a volume's path in the working folder: relative, inside
// it, not the folder itself.
func cleanPath(p string) (string, error) {
	c := filepath.Clean(p)
	if p == "" || filepath.IsAbs(p) || c == "." || c == ".." || strings.HasPrefix(c, "../") || strings.ContainsRune(p, 0) {
		return "", fmt.Errorf("%w: path %q: give a folder relative to the instance's working folder, inside it, e.g. data", ErrInvalid, p)
	}
	return c, nil
}

// Resize grows a volume online.
func (s *Service) Resize(ctx context.Context, name string, size int64) (store.Volume, error) {
	v, err := s.st.GetVolume(ctx, name)
	if err != nil {
		return v, err
	}
	if size < v.Size {
		return v, fmt.Errorf("%w: volume %s has %s; volumes grow but never shrink", ErrInvalid, name, human(v.Size))
	}
	if size > MaxSize {
		return v, fmt.Errorf("%w: a volume has at most 1PiB", ErrInvalid)
	}
	if err := s.checkQuota(ctx, v.App, size, name); err != nil {
		return v, err
	}
	// Within the quota even where the plugin rounds up.
	limit, err := s.quotaLeft(ctx, v.App, name)
	if err != nil {
		return v, err
	}
	resp, err := s.cfg.Controller.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{
		VolumeId: v.CSIID, CapacityRange: &csi.CapacityRange{RequiredBytes: size, LimitBytes: limit}, VolumeCapability: capability,
	})
	if err != nil {
		return v, pluginError("resize volume "+name, err)
	}
	return s.st.UpdateVolume(ctx, name, func(v store.Volume) (store.Volume, error) {
		v.Size = max(resp.CapacityBytes, size)
		return v, nil
	})
}

// Snapshot takes a snapshot of a volume.
func (s *Service) Snapshot(ctx context.Context, name, label string) (store.Snapshot, error) {
	if label != "" {
		if err := ValidateName(label); err != nil {
			return store.Snapshot{}, fmt.Errorf("%w: snapshot name %q: use lowercase letters, digits and dashes", ErrInvalid, label)
		}
		if strings.HasPrefix(label, "snap-") {
			return store.Snapshot{}, fmt.Errorf("%w: snapshot name %q: names starting with snap- are snapshots' IDs; choose another", ErrInvalid, label)
		}
	}
	v, err := s.st.GetVolume(ctx, name)
	if err != nil {
		return store.Snapshot{}, err
	}
	return s.snapshotOf(ctx, v, label, false)
}

// snapshotOf takes a snapshot of v and records it with the checksum of
// its content.
func (s *Service) snapshotOf(ctx context.Context, v store.Volume, label string, backup bool) (store.Snapshot, error) {
	a, err := s.st.GetApp(ctx, v.App)
	if err != nil {
		return store.Snapshot{}, err
	}
	id := newID("snap-")
	resp, err := s.cfg.Controller.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{SourceVolumeId: v.CSIID, Name: "pdk-" + id})
	if err != nil {
		return store.Snapshot{}, pluginError("snapshot volume "+v.Name, err)
	}
	sn := store.Snapshot{ID: id, Volume: v.Name, Name: label, CSIID: resp.Snapshot.SnapshotId, Size: resp.Snapshot.SizeBytes, CreatedAt: s.cfg.Now().UTC(), Backup: backup}
	if err := s.st.AddSnapshot(ctx, sn); err != nil {
		s.cfg.Controller.DeleteSnapshot(context.WithoutCancel(ctx), &csi.DeleteSnapshotRequest{SnapshotId: sn.CSIID})
		return store.Snapshot{}, err
	}
	if backup {
		return s.sum(ctx, a, v, sn), nil
	}
	// The snapshot itself is instant; reading it for its checksum takes
	// a while for each GiB, so it goes on after the answer.
	s.bgWork.Add(1)
	go func() {
		defer s.bgWork.Done()
		s.sum(s.bg, a, v, sn)
	}()
	return sn, nil
}

// Snapshots lists a volume's snapshots, oldest first.
func (s *Service) Snapshots(ctx context.Context, name string) ([]store.Snapshot, error) {
	if _, err := s.st.GetVolume(ctx, name); err != nil {
		return nil, err
	}
	list, err := s.st.ListSnapshots(ctx, name)
	if list == nil {
		list = []store.Snapshot{}
	}
	return list, err
}

// snapshot finds a snapshot of volume by ID or name.
// An ID wins over a name; a name names the newest of that name.
func (s *Service) snapshot(ctx context.Context, volume, ref string) (store.Snapshot, error) {
	if ref == "" {
		return store.Snapshot{}, fmt.Errorf("%w: give a snapshot's ID or name", ErrInvalid)
	}
	list, err := s.st.ListSnapshots(ctx, volume)
	if err != nil {
		return store.Snapshot{}, err
	}
	for _, sn := range list {
		if sn.ID == ref {
			return sn, nil
		}
	}
	for i := len(list) - 1; i >= 0; i-- {
		if list[i].Name == ref {
			return list[i], nil
		}
	}
	return store.Snapshot{}, fmt.Errorf("snapshot %s of volume %s: %w", ref, volume, store.ErrNotFound)
}

// DeleteSnapshot deletes a snapshot of a volume.
func (s *Service) DeleteSnapshot(ctx context.Context, volume, ref string) error {
	defer s.lockVolume(volume)()
	return s.deleteSnapshot(ctx, volume, ref)
}

func (s *Service) deleteSnapshot(ctx context.Context, volume, ref string) error {
	sn, err := s.snapshot(ctx, volume, ref)
	if err != nil {
		return err
	}
	if err := s.st.DeleteSnapshot(ctx, sn.ID); err != nil {
		return err
	}
	if _, err := s.cfg.Controller.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: sn.CSIID}); err != nil {
		return pluginError("delete snapshot "+sn.ID, err)
	}
	return nil
}

// Clone makes a new volume of the same app from a snapshot.
func (s *Service) Clone(ctx context.Context, volume, ref, name string) (store.Volume, error) {
	if err := ValidateName(name); err != nil {
		return store.Volume{}, err
	}
	v, err := s.st.GetVolume(ctx, volume)
	if err != nil {
		return store.Volume{}, err
	}
	sn, err := s.snapshot(ctx, volume, ref)
	if err != nil {
		return store.Volume{}, err
	}
	a, err := s.st.GetApp(ctx, v.App)
	if err != nil {
		return store.Volume{}, err
	}
	if _, err := s.st.GetVolume(ctx, name); err == nil {
		return store.Volume{}, fmt.Errorf("volume %q: %w", name, store.ErrExists)
	}
	if err := s.checkQuota(ctx, v.App, v.Size, ""); err != nil {
		return store.Volume{}, err
	}
	return s.create(ctx, a, name, v.Size, snapshotSource(sn))
}

func snapshotSource(sn store.Snapshot) *csi.VolumeContentSource {
	return &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: sn.CSIID}}}
}

// Restore brings a volume back to a snapshot. The snapshot's content goes
// to a new volume of the plugin first; only when that is complete does the
// record point at it, and the old data is deleted after: a crash at any
// point leaves the old data, or the restored data, never neither. A volume
// in use by instances is refused: stop them first (scale to 0).
func (s *Service) Restore(ctx context.Context, volume, ref string, inUse func(store.Volume) bool) (store.Volume, error) {
	defer s.lockVolume(volume)()
	v, a, sn, err := s.volumeOf(ctx, volume, ref)
	if err != nil {
		return v, err
	}
	done, err := s.beginRestore(v, inUse)
	if err != nil {
		return v, err
	}
	defer done()
	vol, err := s.pendingVolume(ctx, a, volume, v.Size, snapshotSource(sn), "a restore of "+volume)
	if err != nil {
		return v, err
	}
	return s.swap(ctx, volume, vol.VolumeId)
}

// Delete deletes a volume and its data. An attached volume, or one with
// snapshots, is refused unless force, which deletes its snapshots too.
func (s *Service) Delete(ctx context.Context, name string, force bool, inUse func(store.Volume) bool) error {
	defer s.lockVolume(name)()
	v, err := s.st.GetVolume(ctx, name)
	if err != nil {
		return err
	}
	if inUse != nil && inUse(v) {
		return fmt.Errorf("%w: volume %s is mounted by running instances of %s: scale %s to 0 first", ErrInUse, name, v.App, v.Process)
	}
	snaps, err := s.st.ListSnapshots(ctx, name)
	if err != nil {
		return err
	}
	switch {
	case v.Process != "" && !force:
		return fmt.Errorf("%w: volume %s is attached to %s of %s: detach it, or delete with --force", ErrInUse, name, v.Process, v.App)
	case len(snaps) > 0 && !force:
		return fmt.Errorf("%w: volume %s has %d snapshots: delete them, or delete with --force (which deletes them too)", ErrInUse, name, len(snaps))
	}
	for _, sn := range snaps {
		if err := s.deleteSnapshot(ctx, name, sn.ID); err != nil {
			return err
		}
	}
	if err := s.st.DeleteVolume(ctx, name); err != nil {
		return err
	}
	if _, err := s.cfg.Controller.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: v.CSIID}); err != nil {
		return pluginError("delete volume "+name, err)
	}
	return nil
}

// pluginError says what the plugin refused, in the terms of the request.
func pluginError(what string, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s: %w", what, err)
	}
	switch st.Code() {
	case codes.OutOfRange, codes.ResourceExhausted:
		return fmt.Errorf("%w: %s: the storage has no room: %s", ErrInvalid, what, st.Message())
	case codes.InvalidArgument:
		return fmt.Errorf("%w: %s: %s", ErrInvalid, what, st.Message())
	case codes.NotFound:
		return fmt.Errorf("%s: %s: %w", what, st.Message(), store.ErrNotFound)
	case codes.Unimplemented, codes.FailedPrecondition:
		return fmt.Errorf("%w: %s: %s", ErrInvalid, what, st.Message())
	}
	return fmt.Errorf("%s: the storage plugin answered %s: %s", what, st.Code(), st.Message())
}
