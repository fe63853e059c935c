package csi

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
)

// backends runs a test against each backend that can run here.
func backends(t *testing.T, test func(t *testing.T, e *testEnv)) {
	for _, b := range []string{"btrfs", "folders"} {
		t.Run(b, func(t *testing.T) {
			if b == "btrfs" {
				needRoot(t)
			}
			test(t, newEnv(t, Config{Backend: b, PoolSize: 1 << 30}))
		})
	}
}

func TestSnapshotsAndClones(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("writes as another user")
	}
	// The btrfs run is TestBtrfsSnapshotsAndClones.
	testSnapshotsAndClones(t, newEnv(t, Config{Backend: "folders"}))
}

// TestTargetLinks: a target path reached through a symbolic link, or that
// is one, is refused, so that an app that can write the target's folder
// cannot steer a mount, an unmount or a removal elsewhere.
func TestTargetLinks(t *testing.T) {
	backends(t, func(t *testing.T, e *testEnv) {
		vol := e.createVolume("data", 16<<20, appUID)
		elsewhere := filepath.Join(e.dir, "elsewhere")
		os.Mkdir(elsewhere, 0o755)
		os.WriteFile(filepath.Join(elsewhere, "precious"), []byte("x"), 0o600)

		// The parent folder is a link.
		link := filepath.Join(e.dir, "link")
		os.Symlink(elsewhere, link)
		_, err := e.node.NodePublishVolume(e.ctx(), &csi.NodePublishVolumeRequest{
			VolumeId: vol.VolumeId, TargetPath: filepath.Join(link, "target"),
			VolumeCapability: mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER),
		})
		if code(err) != codes.InvalidArgument {
			t.Errorf("publishing through a linked folder: %v, want InvalidArgument", err)
		}
		if _, err := os.Lstat(filepath.Join(elsewhere, "target")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("publishing through a linked folder made something at its destination: %v", err)
		}

		// The target itself is a link to a folder.
		target := filepath.Join(e.dir, "target")
		os.Symlink(elsewhere, target)
		_, err = e.node.NodePublishVolume(e.ctx(), &csi.NodePublishVolumeRequest{
			VolumeId: vol.VolumeId, TargetPath: target,
			VolumeCapability: mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER),
		})
		if code(err) != codes.FailedPrecondition {
			t.Errorf("publishing at a link: %v, want FailedPrecondition", err)
		}
		if _, err := os.Stat(filepath.Join(elsewhere, "precious")); err != nil {
			t.Errorf("the link's destination changed: %v", err)
		}
		os.Remove(target)

		// Unpublishing through a linked folder leaves the real mount alone.
		e.publish(vol.VolumeId, target, false)
		os.Remove(link)
		os.Symlink(e.dir, link)
		_, err = e.node.NodeUnpublishVolume(e.ctx(), &csi.NodeUnpublishVolumeRequest{
			VolumeId: vol.VolumeId, TargetPath: filepath.Join(link, "target"),
		})
		if code(err) != codes.InvalidArgument {
			t.Errorf("unpublishing through a linked folder: %v, want InvalidArgument", err)
		}
		if st, _, err := mustTarget(t, target).state(e.p.volumePath(vol.VolumeId)); err != nil || st != targetMounted {
			t.Errorf("after unpublishing through a link, the real target is %v (%v), want still mounted", st, err)
		}
		e.unpublish(vol.VolumeId, target)
	})
}

func mustTarget(t *testing.T, path string) *target {
	t.Helper()
	tg, err := openTarget(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tg.close)
	return tg
}

// TestFoldersCopyLinks: the folders backend copies a link an app planted
// in its volume as a link, never what it points to.
func TestFoldersCopyLinks(t *testing.T) {
	e := newEnv(t, Config{Backend: "folders"})
	if ok, reason := e.p.Enforced(); ok || reason == "" {
		t.Errorf("Enforced() = %v, %q; want false and a reason", ok, reason)
	}
	vol := e.createVolume("data", 16<<20, os.Getuid())
	dir := e.p.volumePath(vol.VolumeId)
	secret := filepath.Join(e.dir, "secret")
	os.WriteFile(secret, []byte("not the app's"), 0o600)
	os.Symlink(secret, filepath.Join(dir, "link"))
	os.MkdirAll(filepath.Join(dir, "sub", "deeper"), 0o700)
	os.WriteFile(filepath.Join(dir, "sub", "deeper", "file"), []byte("the app's"), 0o640)

	snap := e.snapshot(vol.VolumeId, "snap")
	sdir := e.p.snapshotPath(snap.SnapshotId)
	if fi, err := os.Lstat(filepath.Join(sdir, "link")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the snapshot's link: %v, %v; want a symbolic link", fi, err)
	}
	if got, err := os.ReadFile(filepath.Join(sdir, "sub", "deeper", "file")); err != nil || string(got) != "the app's" {
		t.Errorf("the snapshot's file: %q, %v", got, err)
	}
	if fi, err := os.Stat(filepath.Join(sdir, "sub", "deeper", "file")); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("the snapshot's file mode: %v, %v; want 0640", fi, err)
	}

	target := filepath.Join(e.dir, "target")
	e.publish(vol.VolumeId, target, false)
	u := e.stats(vol.VolumeId, target)
	if u.Used <= 0 || u.Total != 16<<20 {
		t.Errorf("stats of a folder volume: %v", u)
	}
}
