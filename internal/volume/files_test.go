package volume_test

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"paddock.dev/paddock/internal/store"
	"paddock.dev/paddock/internal/volume"
)

// What an app sees of its volumes, in the files of the folder the runtime
// binds into its instances: with Paddock's own plugin, whose volumes hold
// real files.

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// checkFile fails the test unless path holds want.
func checkFile(t *testing.T, what, path, want string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil || string(b) != want {
		t.Errorf("%s: %q, %v; want %q", what, b, err, want)
	}
}

// TestDataOutlivesInstances: what one instance wrote is there for the
// next, after the first is gone, and two volumes do not share files.
func TestDataOutlivesInstances(t *testing.T) {
	forEach(t, filePlugins(), func(t *testing.T, p plugin) {
		e := newEnv(t, p)
		e.create("data", 16*mib)
		e.create("other", 16*mib)
		e.attach("data")
		if _, err := e.svc.Attach(e.ctx, "other", app, "web", "other"); err != nil {
			t.Fatal(err)
		}
		first := e.mount("web.1")
		writeFile(t, filepath.Join(first, "orders.db"), "order 1")
		if err := os.Mkdir(filepath.Join(first, "sub"), 0o700); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(first, "sub", "x"), "x")
		e.unpublish("web.1")
		if _, err := os.Stat(first); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("web.1's volume folder after unpublishing: %v, want it gone", err)
		}

		second := e.mount("web.2")
		checkFile(t, "orders.db in web.2", filepath.Join(second, "orders.db"), "order 1")
		checkFile(t, "sub/x in web.2", filepath.Join(second, "sub", "x"), "x")
		ms, err := e.svc.Mounts(e.ctx, app, "web", "web.2")
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			if m.Target != "other" {
				continue
			}
			if _, err := os.Stat(filepath.Join(m.Source, "orders.db")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the other volume has data's file: %v", err)
			}
		}
	})
}

// TestSnapshotRestoreCloneData: a restore brings back the snapshot's
// files (and is refused, changing nothing, while an instance has the
// volume); a clone has the snapshot's files while the original keeps its
// own.
func TestSnapshotRestoreCloneData(t *testing.T) {
	forEach(t, filePlugins(), func(t *testing.T, p plugin) {
		e := newEnv(t, p)
		e.create("data", 16*mib)
		e.attach("data")
		dir := e.mount("web.1")
		writeFile(t, filepath.Join(dir, "f"), "v1")
		writeFile(t, filepath.Join(dir, "only-before"), "gone later")
		syncfs(t, dir)
		sn := e.snapshot("data", "v1")
		writeFile(t, filepath.Join(dir, "f"), "v2")
		if err := os.Remove(filepath.Join(dir, "only-before")); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, "only-after"), "new")

		if _, err := e.svc.Restore(e.ctx, "data", sn.ID, func(store.Volume) bool { return true }); !errors.Is(err, volume.ErrInUse) {
			t.Errorf("restore while in use: %v, want ErrInUse", err)
		}
		checkFile(t, "f after a refused restore", filepath.Join(dir, "f"), "v2")

		if _, err := e.svc.Clone(e.ctx, "data", "v1", "copy"); err != nil {
			t.Fatalf("clone: %v", err)
		}
		// Another process type: data has one writer, web.1.
		if _, err := e.svc.Attach(e.ctx, "copy", app, "worker", "copy"); err != nil {
			t.Fatal(err)
		}
		ms, err := e.svc.Mounts(e.ctx, app, "worker", "worker.1")
		if err != nil {
			t.Fatal(err)
		}
		mounts := map[string]string{}
		for _, m := range ms {
			mounts[m.Target] = m.Source
		}
		checkFile(t, "f in the clone", filepath.Join(mounts["copy"], "f"), "v1")
		checkFile(t, "only-before in the clone", filepath.Join(mounts["copy"], "only-before"), "gone later")
		checkFile(t, "f in the original", filepath.Join(dir, "f"), "v2")
		writeFile(t, filepath.Join(mounts["copy"], "f"), "clone's own")
		checkFile(t, "f in the original after writing the clone", filepath.Join(dir, "f"), "v2")
		e.unpublish("web.1")
		e.unpublish("worker.1")

		if _, err := e.svc.Restore(e.ctx, "data", "v1", func(store.Volume) bool { return false }); err != nil {
			t.Fatalf("restore: %v", err)
		}
		dir = e.mount("web.3")
		checkFile(t, "f after the restore", filepath.Join(dir, "f"), "v1")
		checkFile(t, "only-before after the restore", filepath.Join(dir, "only-before"), "gone later")
		if _, err := os.Stat(filepath.Join(dir, "only-after")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a file written after the snapshot is still there after the restore: %v", err)
		}
		ms, err = e.svc.Mounts(e.ctx, app, "worker", "worker.2")
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			if m.Target == "copy" {
				checkFile(t, "f in the clone after the restore", filepath.Join(m.Source, "f"), "clone's own")
			}
		}
	})
}

// TestOwnership: a volume's root folder belongs to its app's user, mode
// 0700, and so do its clones and restores.
func TestOwnership(t *testing.T) {
	forEach(t, filePlugins(), func(t *testing.T, p plugin) {
		e := newEnv(t, p, withUsers)
		uid := e.uid()
		e.create("data", 16*mib)
		e.attach("data")
		checkOwner(t, "the volume", e.mount("web.1"), uid)
		sn := e.snapshot("data", "")
		if _, err := e.svc.Clone(e.ctx, "data", sn.ID, "copy"); err != nil {
			t.Fatalf("clone: %v", err)
		}
		if _, err := e.svc.Attach(e.ctx, "copy", app, "worker", "data"); err != nil {
			t.Fatal(err)
		}
		ms, err := e.svc.Mounts(e.ctx, app, "worker", "worker.1")
		if err != nil || len(ms) != 1 {
			t.Fatalf("mounts of worker: %v, %v", ms, err)
		}
		checkOwner(t, "the clone", ms[0].Source, uid)
		e.unpublish("web.1")
		if _, err := e.svc.Restore(e.ctx, "data", sn.ID, e.svc.InUse); err != nil {
			t.Fatalf("restore: %v", err)
		}
		checkOwner(t, "the restored volume", e.mount("web.2"), uid)
	})
}

func checkOwner(t *testing.T, what, dir string, uid uint32) {
	t.Helper()
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != uid || st.Gid != uid || fi.Mode().Perm() != 0o700 || !fi.IsDir() {
		t.Errorf("%s at %s: owner %d:%d, mode %v; want %d:%d and a 0700 folder", what, dir, st.Uid, st.Gid, fi.Mode(), uid, uid)
	}
}

// TestSizeEnforced: on btrfs a process of the app cannot write past its
// volume's size, and can once the volume grew; the folders backend says
// that it does not enforce sizes.
func TestSizeEnforced(t *testing.T) {
	forEach(t, filePlugins(), func(t *testing.T, p plugin) {
		e := newEnv(t, p, withUsers)
		ok, why := e.svc.Enforced()
		if p.name == "folders" {
			if ok || why == "" {
				t.Errorf("folders: enforced %v (%q), want false with a reason", ok, why)
			}
			return
		}
		if !ok {
			t.Fatalf("btrfs: sizes not enforced: %s", why)
		}
		uid := e.uid()
		v := e.create("data", 16*mib)
		e.attach("data")
		dir := e.mount("web.1")
		if _, ok := e.svc.Used(e.ctx, v); !ok {
			t.Error("Used of a published volume: not known")
		}
		// The runtime binds the volume into the instance; here the app's
		// user reaches it through the publish folders.
		reachable(t, filepath.Dir(dir))

		written, errno := writeAs(t, uid, filepath.Join(dir, "big"), 32*mib)
		if errno != "EDQUOT" && errno != "ENOSPC" {
			t.Fatalf("writing 32 MiB into a 16 MiB volume: wrote %d bytes, error %q; want EDQUOT or ENOSPC", written, errno)
		}
		if written > 16*mib {
			t.Errorf("wrote %d bytes into a 16 MiB volume", written)
		}

		if _, err := e.svc.Resize(e.ctx, "data", 64*mib); err != nil {
			t.Fatalf("resize: %v", err)
		}
		if written, errno := writeAs(t, uid, filepath.Join(dir, "big"), 32*mib); errno != "" || written != 32*mib {
			t.Fatalf("after growing to 64 MiB, writing 32 MiB: wrote %d bytes, error %q", written, errno)
		}
		syncfs(t, dir)
		if used, ok := e.svc.Used(e.ctx, v); !ok || used < 32*mib || used > 40*mib {
			t.Errorf("Used: %d bytes (known %v), want about 32 MiB", used, ok)
		}
		e.unpublish("web.1")
		if _, ok := e.svc.Used(e.ctx, v); ok {
			t.Error("Used of a volume no instance has: known")
		}
	})
}

// reachable lets every user through the folders from dir up to /, as the
// runtime's bind mount would let the app's user reach its volume.
func reachable(t *testing.T, dir string) {
	t.Helper()
	for d := dir; d != "/" && d != "."; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(d, fi.Mode().Perm()|0o011); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// syncfs commits what was written to the filesystem of path (btrfs counts
// a volume's bytes when it commits).
func syncfs(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		t.Fatal(err)
	}
}
