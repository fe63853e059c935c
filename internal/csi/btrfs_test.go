package csi

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
)

// Users the tests write as: apps' uids, which no one else uses.
const (
	appUID   = 60101
	otherUID = 60102
)

// TestBtrfsEnforcesSizes: a process of the owner writing past the size
// fails with "Disk quota exceeded" after about the size, while the pool
// has room; growing the volume while it is published lets the same write
// through; the stats report what it holds; another user cannot get in.
func TestBtrfsEnforcesSizes(t *testing.T) {
	needRoot(t)
	e := newEnv(t, Config{PoolSize: 1 << 30})
	reachable(t, e.dir)
	vol := e.createVolume("data", 16<<20, appUID)
	target := filepath.Join(e.dir, "target")
	e.publish(vol.VolumeId, target, false)

	fi, err := os.Stat(target)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*unixStat); int(st.Uid) != appUID || fi.Mode().Perm() != 0o700 {
		t.Errorf("volume root: owner %d mode %v, want %d and 0700", st.Uid, fi.Mode().Perm(), appUID)
	}

	written, errno := writeAs(t, appUID, target+"/f", 32<<20)
	if errno != "EDQUOT" && errno != "ENOSPC" {
		t.Fatalf("writing 32 MiB into a 16 MiB volume: wrote %d bytes, error %q; want EDQUOT or ENOSPC", written, errno)
	}
	if written < 12<<20 || written > 16<<20 {
		t.Errorf("wrote %d bytes before %s; want about 16 MiB", written, errno)
	}
	t.Logf("a 32 MiB write into a 16 MiB volume stopped after %d bytes with %s", written, errno)

	capResp, err := e.ctrl.GetCapacity(e.ctx(), &csi.GetCapacityRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := capResp.GetAvailableCapacity(); got < 512<<20 {
		t.Errorf("GetCapacity with one 16 MiB volume in a 1 GiB pool: %d bytes, want more than 512 MiB", got)
	}
	if free, err := e.p.be.free(); err != nil || free < 512<<20 {
		t.Errorf("pool free space %d (%v), want more than 512 MiB: only the volume is full", free, err)
	}

	exp, err := e.ctrl.ControllerExpandVolume(e.ctx(), &csi.ControllerExpandVolumeRequest{
		VolumeId: vol.VolumeId, CapacityRange: &csi.CapacityRange{RequiredBytes: 64 << 20},
	})
	if err != nil {
		t.Fatalf("ControllerExpandVolume: %v", err)
	}
	if exp.CapacityBytes != 64<<20 || exp.NodeExpansionRequired {
		t.Errorf("ControllerExpandVolume: %v, want 64 MiB and no node expansion", exp)
	}
	if written, errno := writeAs(t, appUID, target+"/f", 32<<20); errno != "" || written != 32<<20 {
		t.Fatalf("after growing to 64 MiB, writing 32 MiB: wrote %d bytes, error %q", written, errno)
	}

	u := e.stats(vol.VolumeId, target)
	if u.Total != 64<<20 || u.Used < 32<<20 || u.Used > 40<<20 || u.Available != u.Total-u.Used {
		t.Errorf("stats: total %d used %d available %d; want 64 MiB, about 32 MiB, the rest", u.Total, u.Used, u.Available)
	}

	if _, errno := writeAs(t, otherUID, target+"/g", 1); errno != "EACCES" {
		t.Errorf("another user writing into the volume: error %q, want EACCES", errno)
	}
}

// hashFile returns the SHA-256 of a file's content.
func hashFile(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// TestBtrfsSnapshotsAndClones: a snapshot keeps the content it was taken
// with and is read-only; a clone of it is writable, owned like its source
// and independent of it; volumes and snapshots can be deleted in any order.
func TestBtrfsSnapshotsAndClones(t *testing.T) {
	needRoot(t)
	testSnapshotsAndClones(t, newEnv(t, Config{PoolSize: 1 << 30}))
}

func testSnapshotsAndClones(t *testing.T, e *testEnv) {
	reachable(t, e.dir)
	vol := e.createVolume("data", 16<<20, appUID)
	target := filepath.Join(e.dir, "target")
	e.publish(vol.VolumeId, target, false)
	writeAs(t, appUID, target+"/a", 1<<20)
	v1 := hashFile(t, target+"/a")

	snap := e.snapshot(vol.VolumeId, "before")
	if !snap.ReadyToUse || snap.SizeBytes != 16<<20 || snap.SourceVolumeId != vol.VolumeId {
		t.Errorf("snapshot: %v", snap)
	}
	writeAs(t, appUID, target+"/a", 1<<20)
	v2 := hashFile(t, target+"/a")
	if v1 == v2 {
		t.Fatal("the rewrite did not change the file")
	}
	snapDir := e.p.snapshotPath(snap.SnapshotId)
	if got := hashFile(t, snapDir+"/a"); got != v1 {
		t.Error("the snapshot lost the content it was taken with")
	}
	if e.p.Backend() == "btrfs" {
		err := os.WriteFile(snapDir+"/b", []byte("x"), 0o600)
		if !errors.Is(err, unix.EROFS) {
			t.Errorf("writing into a snapshot as root: %v, want EROFS", err)
		}
	}

	clone := e.cloneVolume("restored", 16<<20, fromSnapshot(snap.SnapshotId))
	if clone.GetContentSource().GetSnapshot().GetSnapshotId() != snap.SnapshotId {
		t.Errorf("clone content source: %v", clone.GetContentSource())
	}
	target2 := filepath.Join(e.dir, "target2")
	e.publish(clone.VolumeId, target2, false)
	fi, err := os.Stat(target2)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*unixStat); int(st.Uid) != appUID || fi.Mode().Perm() != 0o700 {
		t.Errorf("clone root: owner %d mode %v, want %d and 0700", st.Uid, fi.Mode().Perm(), appUID)
	}
	if got := hashFile(t, target2+"/a"); got != v1 {
		t.Error("the clone does not hold the snapshot's content")
	}
	if _, errno := writeAs(t, appUID, target2+"/a", 1<<20); errno != "" {
		t.Fatalf("writing into the clone: %s", errno)
	}
	if got := hashFile(t, target+"/a"); got != v2 {
		t.Error("writing into the clone changed the source volume")
	}
	if got := hashFile(t, snapDir+"/a"); got != v1 {
		t.Error("writing into the clone changed the snapshot")
	}

	copyVol := e.cloneVolume("copy", 32<<20, fromVolume(vol.VolumeId))
	if copyVol.CapacityBytes != 32<<20 {
		t.Errorf("copy of a volume: %d bytes, want 32 MiB", copyVol.CapacityBytes)
	}
	target3 := filepath.Join(e.dir, "target3")
	e.publish(copyVol.VolumeId, target3, true)
	if got := hashFile(t, target3+"/a"); got != v2 {
		t.Error("the copy of a volume does not hold its content")
	}
	if _, errno := writeAs(t, appUID, target3+"/b", 1); errno != "EROFS" {
		t.Errorf("writing into a read-only publication: %q, want EROFS", errno)
	}

	// A published volume cannot be deleted; once unpublished it can, and
	// its snapshot and clones live on.
	_, err = e.ctrl.DeleteVolume(e.ctx(), &csi.DeleteVolumeRequest{VolumeId: vol.VolumeId})
	if code(err) != codes.FailedPrecondition {
		t.Errorf("deleting a published volume: %v, want FailedPrecondition", err)
	}
	e.unpublish(vol.VolumeId, target)
	if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the target is still there after unpublishing: %v", err)
	}
	if _, err := e.ctrl.DeleteVolume(e.ctx(), &csi.DeleteVolumeRequest{VolumeId: vol.VolumeId}); err != nil {
		t.Fatalf("DeleteVolume with a snapshot: %v", err)
	}
	if got := hashFile(t, snapDir+"/a"); got != v1 {
		t.Error("deleting the volume changed its snapshot")
	}
	if _, err := e.ctrl.DeleteSnapshot(e.ctx(), &csi.DeleteSnapshotRequest{SnapshotId: snap.SnapshotId}); err != nil {
		t.Fatalf("DeleteSnapshot: %v", err)
	}
	if _, errno := writeAs(t, appUID, target2+"/c", 1<<20); errno != "" {
		t.Errorf("writing into the clone after its snapshot was deleted: %s", errno)
	}
}

// TestBtrfsRestart: a new plugin on the same pool has the same volumes and
// snapshots and can unpublish what the old one published; after the pool
// was unmounted and its loop device detached (as by a reboot), the next
// start attaches and mounts it again.
func TestBtrfsRestart(t *testing.T) {
	needRoot(t)
	e := newEnv(t, Config{PoolSize: 1 << 30})
	reachable(t, e.dir)
	vol := e.createVolume("data", 16<<20, appUID)
	target := filepath.Join(e.dir, "target")
	e.publish(vol.VolumeId, target, false)
	writeAs(t, appUID, target+"/a", 1<<20)
	sum := hashFile(t, target+"/a")
	snap := e.snapshot(vol.VolumeId, "snap")
	dev := e.p.be.(*btrfsBackend).pool.dev

	e.restart()
	if got := e.p.be.(*btrfsBackend).pool.dev; got != dev {
		t.Errorf("after a restart the pool is on %s, was on %s", got, dev)
	}
	list, err := e.ctrl.ListVolumes(e.ctx(), &csi.ListVolumesRequest{})
	if err != nil || len(list.Entries) != 1 || list.Entries[0].Volume.VolumeId != vol.VolumeId || list.Entries[0].Volume.CapacityBytes != 16<<20 {
		t.Fatalf("ListVolumes after a restart: %v, %v", list, err)
	}
	if got := list.Entries[0].GetStatus().GetPublishedNodeIds(); len(got) != 1 {
		t.Errorf("after a restart the volume is published on %v, want one node", got)
	}
	snaps, err := e.ctrl.ListSnapshots(e.ctx(), &csi.ListSnapshotsRequest{})
	if err != nil || len(snaps.Entries) != 1 || snaps.Entries[0].Snapshot.SnapshotId != snap.SnapshotId {
		t.Fatalf("ListSnapshots after a restart: %v, %v", snaps, err)
	}
	if _, errno := writeAs(t, appUID, target+"/b", 1<<20); errno != "" {
		t.Errorf("writing into the volume across a restart: %s", errno)
	}
	e.unpublish(vol.VolumeId, target)
	e.publish(vol.VolumeId, target, false)

	// As after a reboot: nothing mounted, no loop device.
	e.shutdown()
	cleanupMounts(t, e.dir)
	e.start()
	if got := hashFile(t, e.p.volumePath(vol.VolumeId)+"/a"); got != sum {
		t.Error("the volume lost its content across a remount")
	}
	got, err := e.ctrl.ControllerGetVolume(e.ctx(), &csi.ControllerGetVolumeRequest{VolumeId: vol.VolumeId})
	if err != nil {
		t.Fatal(err)
	}
	if ids := got.GetStatus().GetPublishedNodeIds(); len(ids) != 0 {
		t.Errorf("after the pool was unmounted the volume is still published on %v", ids)
	}
	e.publish(vol.VolumeId, target, false)
	if got := hashFile(t, target+"/a"); got != sum {
		t.Error("the volume published again lost its content")
	}
	// The size is still enforced.
	if _, errno := writeAs(t, appUID, target+"/c", 32<<20); errno != "EDQUOT" && errno != "ENOSPC" {
		t.Errorf("writing past the size after a remount: %q", errno)
	}
	e.unpublish(vol.VolumeId, target)
	if err := e.p.Unmount(); err != nil {
		t.Fatalf("Unmount: %v", err)
	}
	if ok, _ := e.p.be.(*btrfsBackend).pool.backs(dev); ok {
		t.Errorf("%s is still attached after Unmount", dev)
	}
}

// TestBtrfsPoolFull: in a pool that may not grow, filling it gives apps
// "No space left on device" and the controller clear errors, not a hang.
func TestBtrfsPoolFull(t *testing.T) {
	needRoot(t)
	e := newEnv(t, Config{PoolSize: 256 << 20, MaxPoolSize: 256 << 20})
	reachable(t, e.dir)
	vol := e.createVolume("data", 140<<20, appUID)
	target := filepath.Join(e.dir, "target")
	e.publish(vol.VolumeId, target, false)
	if _, errno := writeAs(t, appUID, target+"/a", 120<<20); errno != "" {
		t.Fatalf("filling the volume: %s", errno)
	}
	e.snapshot(vol.VolumeId, "keep")
	// The snapshot keeps the old data: rewriting it needs as much again.
	written, errno := writeAs(t, appUID, target+"/a", 120<<20)
	if errno != "ENOSPC" {
		t.Fatalf("rewriting 120 MiB beside a snapshot of it in a 256 MiB pool: wrote %d, error %q; want ENOSPC", written, errno)
	}
	t.Logf("the rewrite stopped after %d bytes with %s", written, errno)

	_, err := e.ctrl.CreateVolume(e.ctx(), createReq("more", 8<<20, nil))
	if code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "the pool is full") {
		t.Errorf("CreateVolume in a full pool: %v, want ResourceExhausted saying the pool is full", err)
	}
	_, err = e.ctrl.CreateVolume(e.ctx(), createReq("huge", 1<<30, nil))
	if code(err) != codes.OutOfRange {
		t.Errorf("CreateVolume of 1 GiB in a pool of at most 256 MiB: %v, want OutOfRange", err)
	}
	_, err = e.ctrl.CreateSnapshot(e.ctx(), &csi.CreateSnapshotRequest{SourceVolumeId: vol.VolumeId, Name: "another"})
	if err != nil && code(err) != codes.ResourceExhausted {
		t.Errorf("CreateSnapshot in a full pool: %v, want success or ResourceExhausted", err)
	}
	_, err = e.ctrl.ControllerExpandVolume(e.ctx(), &csi.ControllerExpandVolumeRequest{
		VolumeId: vol.VolumeId, CapacityRange: &csi.CapacityRange{RequiredBytes: 150 << 20},
	})
	if code(err) != codes.ResourceExhausted {
		t.Errorf("growing a volume in a full pool: %v, want ResourceExhausted", err)
	}
}

// TestBtrfsPoolGrows: a volume larger than the pool grows the image and the
// filesystem in it; beyond the largest pool size, the size is out of range.
func TestBtrfsPoolGrows(t *testing.T) {
	needRoot(t)
	e := newEnv(t, Config{PoolSize: 128 << 20, MaxPoolSize: 1 << 30})
	reachable(t, e.dir)
	vol := e.createVolume("big", 256<<20, appUID)
	pool := e.p.be.(*btrfsBackend).pool
	size, err := pool.size()
	if err != nil || size < poolNeed(256<<20) {
		t.Errorf("pool image after a 256 MiB volume: %d bytes (%v), want at least %d", size, err, poolNeed(256<<20))
	}
	var sf unix.Statfs_t
	if err := unix.Statfs(pool.mnt, &sf); err != nil || int64(sf.Blocks)*sf.Bsize < 256<<20 {
		t.Errorf("pool filesystem after growing: %d bytes (%v)", int64(sf.Blocks)*sf.Bsize, err)
	}
	target := filepath.Join(e.dir, "target")
	e.publish(vol.VolumeId, target, false)
	if written, errno := writeAs(t, appUID, target+"/a", 200<<20); errno != "" {
		t.Errorf("writing 200 MiB into the grown pool: wrote %d, %s", written, errno)
	}
	_, err = e.ctrl.CreateVolume(e.ctx(), createReq("huge", 2<<30, nil))
	if code(err) != codes.OutOfRange {
		t.Errorf("CreateVolume of 2 GiB in a pool of at most 1 GiB: %v, want OutOfRange", err)
	}
}

// TestBtrfsNestedSubvolumes: an app can make btrfs subvolumes inside its
// volume, which the volume's limit does not cover. The plugin reports the
// volume degraded and counts them in its usage, and deleting the volume
// deletes them too.
func TestBtrfsNestedSubvolumes(t *testing.T) {
	needRoot(t)
	e := newEnv(t, Config{PoolSize: 1 << 30})
	reachable(t, e.dir)
	vol := e.createVolume("data", 16<<20, appUID)
	target := filepath.Join(e.dir, "target")
	e.publish(vol.VolumeId, target, false)
	if out := asUser(t, appUID, "subvol", target, "inner"); out != "ok" {
		t.Skipf("an unprivileged user cannot make subvolumes here: %s", out)
	}
	written, errno := writeAs(t, appUID, target+"/inner/f", 24<<20)
	t.Logf("a subvolume inside a 16 MiB volume took %d bytes (error %q)", written, errno)

	h, err := e.node.NodeGetVolumeHealth(e.ctx(), &csi.NodeGetVolumeHealthRequest{VolumeId: vol.VolumeId})
	if err != nil {
		t.Fatal(err)
	}
	st := h.GetVolumeHealth().GetHealthStatuses()
	if len(st) != 1 || st[0].Status != csi.VolumeHealthErrorType_DEGRADED {
		t.Errorf("health of a volume with a subvolume inside: %v, want DEGRADED", st)
	}
	if u := e.stats(vol.VolumeId, target); u.Used < written {
		t.Errorf("usage %d does not count the %d bytes in the subvolume", u.Used, written)
	}
	e.unpublish(vol.VolumeId, target)
	if _, err := e.ctrl.DeleteVolume(e.ctx(), &csi.DeleteVolumeRequest{VolumeId: vol.VolumeId}); err != nil {
		t.Fatalf("DeleteVolume with a subvolume inside: %v", err)
	}
	if _, err := os.Lstat(e.p.volumePath(vol.VolumeId)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the volume is still there: %v", err)
	}
}

// TestBtrfsKeepsForeignImage: an image holding anything but a btrfs
// filesystem is never formatted.
func TestBtrfsKeepsForeignImage(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	t.Cleanup(func() { cleanupMounts(t, dir) })
	pool := filepath.Join(dir, "pool")
	os.Mkdir(pool, 0o700)
	junk := bytes.Repeat([]byte("someone's data "), 1<<16)
	image := filepath.Join(pool, poolImageName)
	if err := os.WriteFile(image, junk, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Truncate(image, 256<<20)
	_, err := New(Config{Pool: pool, Logger: testLogger(t)})
	if err == nil || !strings.Contains(err.Error(), "not a btrfs filesystem") {
		t.Fatalf("New on an image with data: %v, want a refusal", err)
	}
	got, _ := os.ReadFile(image)
	if !bytes.Equal(got[:len(junk)], junk) {
		t.Error("the image's data changed")
	}
}
