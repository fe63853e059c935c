package volume_test

import (
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	csispec "github.com/container-storage-interface/spec/lib/go/csi"

	"paddock.dev/paddock/internal/store"
	"paddock.dev/paddock/internal/store/sqlite"
	"paddock.dev/paddock/internal/volume"
)

// The contract: what the Service does with any plugin, checked in its
// records and in what the plugin's controller lists.

// TestCreateRefusesBadRequests: a bad name or size, an unknown app or a
// taken name is refused before the plugin makes anything.
func TestCreateRefusesBadRequests(t *testing.T) {
	forEach(t, plugins(), func(t *testing.T, p plugin) {
		e := newEnv(t, p)
		for _, c := range []struct {
			name, vol string
			size      int64
		}{
			{"empty name", "", mib},
			{"upper case", "Data", mib},
			{"leading digit", "1data", mib},
			{"leading dash", "-data", mib},
			{"trailing dash", "data-", mib},
			{"underscore", "shop_data", mib},
			{"slash", "shop/data", mib},
			{"dot dot", "..", mib},
			{"41 bytes", "a" + strings.Repeat("b", 40), mib},
			{"zero size", "data", 0},
			{"negative size", "data", -mib},
			{"below 1 MiB", "data", volume.MinSize - 1},
			{"above 1 PiB", "data", volume.MaxSize + 1},
		} {
			_, err := e.svc.Create(e.ctx, app, c.vol, c.size)
			if !errors.Is(err, volume.ErrInvalid) {
				t.Errorf("%s: create %q of %d bytes: %v, want ErrInvalid", c.name, c.vol, c.size, err)
			}
		}
		if _, err := e.svc.Create(e.ctx, "nope", "data", mib); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("create for an unknown app: %v, want ErrNotFound", err)
		}
		if got := e.pluginVolumes(); len(got) != 0 {
			t.Fatalf("refused creates left %d volumes in the plugin", len(got))
		}
		if got, err := e.svc.List(e.ctx, ""); err != nil || len(got) != 0 {
			t.Fatalf("refused creates left records: %v, %v", got, err)
		}

		// The bounds themselves are fine.
		long := "a" + strings.Repeat("b", 39)
		v := e.create(long, volume.MinSize)
		if v.Name != long || v.App != app || v.Size != volume.MinSize || v.CSIID == "" {
			t.Errorf("created %+v, want %s of shop with 1 MiB and a plugin ID", v, long)
		}
		if _, err := e.svc.Create(e.ctx, app, long, 2*mib); !errors.Is(err, store.ErrExists) {
			t.Errorf("create of a taken name: %v, want ErrExists", err)
		}
		got := e.pluginVolumes()
		if len(got) != 1 || got[v.CSIID] == nil || got[v.CSIID].CapacityBytes != volume.MinSize {
			t.Errorf("the plugin has %v, want only %s of 1 MiB", got, v.CSIID)
		}
	})
}

// TestQuota: an app's volumes, clones and growth stop at AppQuota, with a
// message that says how much it has, may have and asked for; other apps
// have their own.
func TestQuota(t *testing.T) {
	forEach(t, plugins(), func(t *testing.T, p plugin) {
		e := newEnv(t, p, withQuota(48*mib))
		e.create("data", 24*mib)

		_, err := e.svc.Create(e.ctx, app, "logs", 32*mib)
		if !errors.Is(err, volume.ErrQuota) {
			t.Fatalf("create 32 MiB next to 24 MiB under a 48 MiB quota: %v, want ErrQuota", err)
		}
		for _, want := range []string{"shop", "24MiB", "48MiB", "32MiB"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("quota message %q does not say %q", err, want)
			}
		}
		if got := e.pluginVolumes(); len(got) != 1 {
			t.Errorf("a create over the quota left %d volumes in the plugin, want 1", len(got))
		}

		logs := e.create("logs", 24*mib) // exactly the quota
		if _, err := e.svc.Resize(e.ctx, "data", 25*mib); !errors.Is(err, volume.ErrQuota) {
			t.Errorf("grow past the quota: %v, want ErrQuota", err)
		}
		if v, _ := e.svc.Get(e.ctx, "data"); v.Size != 24*mib {
			t.Errorf("a refused resize changed the record to %d bytes", v.Size)
		}
		sn := e.snapshot("data", "")
		if _, err := e.svc.Clone(e.ctx, "data", sn.ID, "copy"); !errors.Is(err, volume.ErrQuota) {
			t.Errorf("clone past the quota: %v, want ErrQuota", err)
		}
		if got := e.pluginVolumes(); len(got) != 2 {
			t.Errorf("the plugin has %d volumes after refused growth and clone, want 2", len(got))
		}

		if err := e.svc.Delete(e.ctx, "logs", false, e.svc.InUse); err != nil {
			t.Fatalf("delete logs: %v", err)
		}
		if _, ok := e.pluginVolumes()[logs.CSIID]; ok {
			t.Errorf("the plugin still has deleted logs (%s)", logs.CSIID)
		}
		if _, err := e.svc.Clone(e.ctx, "data", sn.ID, "copy"); err != nil {
			t.Errorf("clone with room freed: %v", err)
		}

		if _, err := e.st.CreateApp(e.ctx, store.App{Name: "blog"}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.svc.Create(e.ctx, "blog", "posts", 48*mib); err != nil {
			t.Errorf("another app's first volume: %v", err)
		}
	})
}

// TestResize: a volume grows in the record and in the plugin, and never
// shrinks.
func TestResize(t *testing.T) {
	forEach(t, plugins(), func(t *testing.T, p plugin) {
		e := newEnv(t, p)
		v := e.create("data", 16*mib)
		for _, size := range []int64{8 * mib, 16*mib - 1, volume.MaxSize + 1} {
			if _, err := e.svc.Resize(e.ctx, "data", size); !errors.Is(err, volume.ErrInvalid) {
				t.Errorf("resize to %d bytes: %v, want ErrInvalid", size, err)
			}
		}
		if _, err := e.svc.Resize(e.ctx, "nope", 32*mib); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("resize of an unknown volume: %v, want ErrNotFound", err)
		}
		got, err := e.svc.Resize(e.ctx, "data", 32*mib)
		if err != nil {
			t.Fatalf("resize: %v", err)
		}
		if got.Size != 32*mib || got.CSIID != v.CSIID {
			t.Errorf("resized to %+v, want 32 MiB of the same plugin volume", got)
		}
		if pv := e.pluginVolumes()[v.CSIID]; pv == nil || pv.CapacityBytes != 32*mib {
			t.Errorf("the plugin has %v, want 32 MiB", pv)
		}
	})
}

// TestSnapshotCloneRestoreRecords: a clone is a new volume made from the
// snapshot; a restore is refused while the volume is in use, and then
// swaps the volume's data for a new plugin volume made from the snapshot,
// deleting the old one, while the snapshots stay.
func TestSnapshotCloneRestoreRecords(t *testing.T) {
	forEach(t, plugins(), func(t *testing.T, p plugin) {
		e := newEnv(t, p)
		v := e.create("data", 16*mib)
		e.attach("data")
		if _, err := e.svc.Snapshot(e.ctx, "data", "Bad Label"); !errors.Is(err, volume.ErrInvalid) {
			t.Errorf("snapshot with a bad label: %v, want ErrInvalid", err)
		}
		if got := e.pluginSnapshots(); len(got) != 0 {
			t.Errorf("a refused snapshot left %v in the plugin", got)
		}
		sn := e.snapshot("data", "before")
		if sn.Volume != "data" || sn.Name != "before" || sn.CSIID == "" {
			t.Errorf("snapshot %+v", sn)
		}
		if got := e.pluginSnapshots(); len(got) != 1 || got[0] != sn.CSIID {
			t.Errorf("the plugin has snapshots %v, want [%s]", got, sn.CSIID)
		}

		clone, err := e.svc.Clone(e.ctx, "data", "before", "copy")
		if err != nil {
			t.Fatalf("clone: %v", err)
		}
		if clone.App != app || clone.Size != v.Size || clone.CSIID == v.CSIID || clone.Process != "" {
			t.Errorf("clone %+v: want a detached volume of shop, 16 MiB, with its own plugin volume", clone)
		}
		if pv := e.pluginVolumes()[clone.CSIID]; pv.GetContentSource().GetSnapshot().GetSnapshotId() != sn.CSIID {
			t.Errorf("the clone in the plugin is %v, want one made from %s", pv, sn.CSIID)
		}
		if _, err := e.svc.Clone(e.ctx, "data", "nope", "other"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("clone of an unknown snapshot: %v, want ErrNotFound", err)
		}
		if _, err := e.svc.Clone(e.ctx, "data", "before", "copy"); !errors.Is(err, store.ErrExists) {
			t.Errorf("clone into a taken name: %v, want ErrExists", err)
		}

		e.mount("web.1")
		_, err = e.svc.Restore(e.ctx, "data", sn.ID, e.svc.InUse)
		if !errors.Is(err, volume.ErrInUse) {
			t.Errorf("restore while web.1 has it: %v, want ErrInUse", err)
		}
		e.unpublish("web.1")
		if got, _ := e.svc.Get(e.ctx, "data"); got.CSIID != v.CSIID {
			t.Errorf("a refused restore changed the plugin volume to %s", got.CSIID)
		}
		if _, err := e.svc.Restore(e.ctx, "data", "nope", e.svc.InUse); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("restore to an unknown snapshot: %v, want ErrNotFound", err)
		}
		if got := e.pluginVolumes(); len(got) != 2 {
			t.Errorf("refused restores left %d plugin volumes, want 2", len(got))
		}

		restored, err := e.svc.Restore(e.ctx, "data", "before", e.svc.InUse)
		if err != nil {
			t.Fatalf("restore: %v", err)
		}
		if restored.CSIID == v.CSIID || restored.Size != v.Size || restored.Process != "web" || restored.Path != "data" {
			t.Errorf("restored %+v: want a new plugin volume, the same size and attachment", restored)
		}
		pvs := e.pluginVolumes()
		if _, ok := pvs[v.CSIID]; ok {
			t.Errorf("the plugin still has the data the restore replaced (%s)", v.CSIID)
		}
		if pv := pvs[restored.CSIID]; pv.GetContentSource().GetSnapshot().GetSnapshotId() != sn.CSIID {
			t.Errorf("the restored volume in the plugin is %v, want one made from %s", pv, sn.CSIID)
		}
		if list, err := e.svc.Snapshots(e.ctx, "data"); err != nil || len(list) != 1 || list[0].ID != sn.ID {
			t.Errorf("snapshots after the restore: %v, %v; want the one taken", list, err)
		}
		if got := e.pluginSnapshots(); len(got) != 1 || got[0] != sn.CSIID {
			t.Errorf("the plugin's snapshots after the restore: %v, want [%s]", got, sn.CSIID)
		}
	})
}

// TestDelete: a volume in use, attached or with snapshots stays; force
// deletes an attached one and its snapshots, but not one in use; the
// plugin then has neither.
func TestDelete(t *testing.T) {
	forEach(t, plugins(), func(t *testing.T, p plugin) {
		e := newEnv(t, p)
		v := e.create("data", 16*mib)
		e.attach("data")
		sn1, sn2 := e.snapshot("data", "one"), e.snapshot("data", "two")

		err := e.svc.Delete(e.ctx, "data", false, e.svc.InUse)
		if !errors.Is(err, volume.ErrInUse) || !strings.Contains(err.Error(), "attached") {
			t.Errorf("delete while attached: %v, want ErrInUse saying it is attached", err)
		}
		if _, err := e.svc.Detach(e.ctx, "data"); err != nil {
			t.Fatal(err)
		}
		err = e.svc.Delete(e.ctx, "data", false, e.svc.InUse)
		if !errors.Is(err, volume.ErrInUse) || !strings.Contains(err.Error(), "2 snapshots") {
			t.Errorf("delete with 2 snapshots: %v, want ErrInUse saying so", err)
		}
		e.attach("data")
		e.mount("web.1")
		if err := e.svc.Delete(e.ctx, "data", true, e.svc.InUse); !errors.Is(err, volume.ErrInUse) {
			t.Errorf("forced delete while web.1 has it: %v, want ErrInUse", err)
		}
		if _, err := e.svc.Get(e.ctx, "data"); err != nil {
			t.Fatalf("refused deletes lost the record: %v", err)
		}
		if _, ok := e.pluginVolumes()[v.CSIID]; !ok {
			t.Fatal("refused deletes deleted the plugin's volume")
		}
		if got := e.pluginSnapshots(); len(got) != 2 {
			t.Fatalf("refused deletes left the plugin %d snapshots, want 2", len(got))
		}

		e.unpublish("web.1")
		if err := e.svc.Delete(e.ctx, "data", true, e.svc.InUse); err != nil {
			t.Fatalf("forced delete: %v", err)
		}
		if _, err := e.svc.Get(e.ctx, "data"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("get after delete: %v, want ErrNotFound", err)
		}
		if _, err := e.st.GetSnapshot(e.ctx, sn1.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("snapshot record after delete: %v, want ErrNotFound", err)
		}
		if _, ok := e.pluginVolumes()[v.CSIID]; ok {
			t.Errorf("the plugin still lists the deleted volume %s", v.CSIID)
		}
		if got := e.pluginSnapshots(); len(got) != 0 {
			t.Errorf("the plugin still lists snapshots %v (had %s and %s)", got, sn1.CSIID, sn2.CSIID)
		}
		if err := e.svc.Delete(e.ctx, "data", true, e.svc.InUse); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("delete again: %v, want ErrNotFound", err)
		}
	})
}

// TestMounts: an instance gets the volumes attached to its process type,
// each at its path with its environment variable, in a folder that exists
// while it is published and goes with Unpublish.
func TestMounts(t *testing.T) {
	forEach(t, plugins(), func(t *testing.T, p plugin) {
		e := newEnv(t, p)
		e.create("shop-data", 16*mib)
		e.create("cache", 16*mib)
		e.create("spare", 16*mib)
		if _, err := e.svc.Attach(e.ctx, "shop-data", app, "web", "var/data"); err != nil {
			t.Fatal(err)
		}
		if _, err := e.svc.Attach(e.ctx, "cache", app, "worker", "cache"); err != nil {
			t.Fatal(err)
		}
		ms, err := e.svc.Mounts(e.ctx, app, "web", "web.1")
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) != 1 || ms[0].Target != "var/data" || ms[0].Env != "PADDOCK_VOLUME_SHOP_DATA" {
			t.Fatalf("mounts of web: %+v, want shop-data at var/data in PADDOCK_VOLUME_SHOP_DATA", ms)
		}
		if fi, err := os.Stat(ms[0].Source); err != nil || !fi.IsDir() {
			t.Errorf("the published volume at %s: %v, want a folder", ms[0].Source, err)
		}
		if rel, err := filepath.Rel(e.publish, ms[0].Source); err != nil || strings.HasPrefix(rel, "..") {
			t.Errorf("published at %s, outside PublishDir %s", ms[0].Source, e.publish)
		}
		for _, name := range []string{"shop-data", "cache", "spare"} {
			v, _ := e.svc.Get(e.ctx, name)
			if got, want := e.svc.InUse(v), name == "shop-data"; got != want {
				t.Errorf("%s in use: %v, want %v", name, got, want)
			}
		}
		e.unpublish("web.1")
		if _, err := os.Stat(filepath.Join(e.publish, "web.1")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("web.1's folder after unpublishing: %v, want it gone", err)
		}
		if v, _ := e.svc.Get(e.ctx, "shop-data"); e.svc.InUse(v) {
			t.Error("shop-data in use after unpublishing")
		}
		for _, instance := range []string{"", ".", "..", "a/b"} {
			if _, err := e.svc.Mounts(e.ctx, app, "web", instance); err == nil {
				t.Errorf("mounts for instance %q succeeded", instance)
			}
		}
		if ms, err := e.svc.Mounts(e.ctx, app, "db", "db.1"); err != nil || len(ms) != 0 {
			t.Errorf("mounts of a process type without volumes: %v, %v", ms, err)
		}
	})
}

// TestBadInstanceKeepsPublishDir: a Mounts refused for a bad instance name
// leaves PublishDir alone.
func TestBadInstanceKeepsPublishDir(t *testing.T) {
	forEach(t, plugins(), func(t *testing.T, p plugin) {
		e := newEnv(t, p)
		e.create("data", 16*mib)
		e.attach("data")
		for _, instance := range []string{"", ".", ".."} {
			if _, err := e.svc.Mounts(e.ctx, app, "web", instance); err == nil {
				t.Errorf("mounts for instance %q succeeded", instance)
			}
			if fi, err := os.Stat(e.publish); err != nil || fi.Mode().Perm() != 0o711 {
				t.Fatalf("PublishDir after mounts for instance %q: %v, %v; want it there, 0711", instance, fi, err)
			}
		}
	})
}

// TestSlotsOverQuota: the slots of a process with a volume per instance
// are given up to the first whose volume the quota refuses, whole, with
// the refusal; the slots kept when scaled down come back as they were.
func TestSlotsOverQuota(t *testing.T) {
	e := newEnv(t, mockDriver(), withQuota(40*mib))
	e.create("scratch", 16*mib)
	logs := e.create("logs", 4*mib)
	for _, v := range []store.Volume{{Name: "scratch"}, logs} {
		if _, err := e.svc.AttachPerInstance(e.ctx, v.Name, app, "worker", v.Name); err != nil {
			t.Fatal(err)
		}
	}
	// 20 MiB a slot: the second fits in 40, the third does not.
	slots, err := e.svc.Slots(e.ctx, app, "worker", 3)
	if !errors.Is(err, volume.ErrQuota) {
		t.Fatalf("three slots of 20 MiB under a 40 MiB quota: %v, want ErrQuota", err)
	}
	names := func(slots [][]store.Volume) string {
		var out []string
		for _, slot := range slots {
			var vs []string
			for _, v := range slot {
				vs = append(vs, v.Name)
			}
			slices.Sort(vs)
			out = append(out, strings.Join(vs, "+"))
		}
		return strings.Join(out, " ")
	}
	if got := names(slots); got != "logs+scratch logs-1+scratch-1" {
		t.Errorf("slots over the quota = %q, want the first two whole", got)
	}
	if slots, err := e.svc.Slots(e.ctx, app, "worker", 2); err != nil || names(slots) != "logs+scratch logs-1+scratch-1" {
		t.Errorf("two slots: %q, %v; want the two made before", names(slots), err)
	}
	if vols, _ := e.svc.List(e.ctx, app); len(vols) != 4 {
		t.Errorf("%d volumes after the refusal, want 4: none made for the third slot", len(vols))
	}
}

// TestUnpublished: the instances not named live lose their publications
// and folders, a folder a crash left empty too; the live ones keep theirs.
func TestUnpublished(t *testing.T) {
	forEach(t, plugins(), func(t *testing.T, p plugin) {
		e := newEnv(t, p)
		e.create("data", 16*mib)
		// A volume of its own for each instance: data, data-1, data-2.
		if _, err := e.svc.AttachPerInstance(e.ctx, "data", app, "web", "data"); err != nil {
			t.Fatal(err)
		}
		targets := map[string]string{}
		for _, instance := range []string{"web.1", "web.2", "web.3"} {
			targets[instance] = e.mount(instance)
		}
		if err := os.Mkdir(filepath.Join(e.publish, "web.9"), 0o700); err != nil {
			t.Fatal(err)
		}
		if p.files {
			if err := os.WriteFile(filepath.Join(targets["web.2"], "f"), []byte("web.2"), 0o600); err != nil {
				t.Fatal(err)
			}
		}

		e.svc.Unpublished(e.ctx, map[string]bool{"web.2": true})

		for _, gone := range []string{"web.1", "web.3", "web.9"} {
			if _, err := os.Stat(filepath.Join(e.publish, gone)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s's folder: %v, want it gone", gone, err)
			}
		}
		if got := mountsUnder(t, e.publish); p.files && (len(got) != 1 || got[0] != targets["web.2"]) {
			t.Errorf("mounted under PublishDir: %v, want only %s", got, targets["web.2"])
		}
		if m := e.plugin.mock; m != nil {
			for instance, target := range targets {
				if got := m.publishedAt(target) != ""; got != (instance == "web.2") {
					t.Errorf("%s published in the plugin: %v", instance, got)
				}
			}
		}
		if v, _ := e.svc.Get(e.ctx, "data-1"); !e.svc.InUse(v) {
			t.Error("data-1 not in use while web.2 has it")
		}
		if v, _ := e.svc.Get(e.ctx, "data"); e.svc.InUse(v) {
			t.Error("data in use after web.1 was swept")
		}
		if p.files {
			if b, err := os.ReadFile(filepath.Join(targets["web.2"], "f")); err != nil || string(b) != "web.2" {
				t.Errorf("web.2's file: %q, %v", b, err)
			}
		}
	})
}

// TestTeamQuota: the apps granted to a team share its quota; an app of no
// team, or of another team, does not count.
func TestTeamQuota(t *testing.T) {
	e := newEnv(t, mockDriver(), func(cfg *volume.Config) { cfg.TeamQuota = 64 * mib })
	for _, step := range []func() error{
		func() error { _, err := e.st.CreateApp(e.ctx, store.App{Name: "side"}); return err },
		func() error { _, err := e.st.CreateApp(e.ctx, store.App{Name: "alone"}); return err },
		func() error { return e.st.CreateTeam(e.ctx, store.Team{Name: "t1"}) },
		func() error { return e.st.SetGrant(e.ctx, store.Grant{App: app, Team: "t1", Role: "developer"}) },
		func() error { return e.st.SetGrant(e.ctx, store.Grant{App: "side", Team: "t1", Role: "viewer"}) },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	e.create("data", 40*mib)
	_, err := e.svc.Create(e.ctx, "side", "side-data", 32*mib)
	if !errors.Is(err, volume.ErrQuota) || !strings.Contains(err.Error(), "team t1") || !strings.Contains(err.Error(), "64MiB") {
		t.Errorf("a team's second app past the team's quota: %v, want ErrQuota naming the team and its quota", err)
	}
	if _, err := e.svc.Create(e.ctx, "side", "side-data", 24*mib); err != nil {
		t.Errorf("within the team's quota: %v", err)
	}
	if _, err := e.svc.Create(e.ctx, "alone", "alone-data", 100*mib); err != nil {
		t.Errorf("an app of no team: %v", err)
	}
}

// TestOrphansDeleteOnlyWhatACrashLeft: at start the volumes a crash left
// half made are deleted; a store that lost its records (a fresh one, an
// older copy) takes no volume with it.
func TestOrphansDeleteOnlyWhatACrashLeft(t *testing.T) {
	e := newEnv(t, mockDriver())
	e.create("data", 16*mib)
	e.snapshot("data", "one")
	before := len(e.pluginVolumes())

	fresh, err := sqlite.Open(e.ctx, filepath.Join(t.TempDir(), "fresh.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	other, err := volume.New(volume.Config{Store: fresh, Controller: e.ctrl, Node: e.node, PublishDir: e.publish})
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Orphans(e.ctx); err != nil {
		t.Fatal(err)
	}
	if got := len(e.pluginVolumes()); got != before {
		t.Errorf("a store without records made Orphans delete volumes: %d left of %d", got, before)
	}

	// A volume written down as pending, as a restore's copy is while it is
	// filled, and then left by a crash.
	resp, err := e.ctrl.CreateVolume(e.ctx, &csispec.CreateVolumeRequest{Name: "pdk-left", CapacityRange: &csispec.CapacityRange{RequiredBytes: 16 * mib},
		VolumeCapabilities: []*csispec.VolumeCapability{{AccessType: &csispec.VolumeCapability_Mount{Mount: &csispec.VolumeCapability_MountVolume{}},
			AccessMode: &csispec.VolumeCapability_AccessMode{Mode: csispec.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}}})
	if err != nil {
		t.Fatal(err)
	}
	pending := filepath.Join(e.dir, "pending", hex.EncodeToString([]byte(resp.Volume.VolumeId))+".json")
	if err := os.WriteFile(pending, []byte(`{"volume_id":"`+resp.Volume.VolumeId+`","why":"a test"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Orphans(e.ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.pluginVolumes()[resp.Volume.VolumeId]; ok {
		t.Error("the volume a crash left is still there")
	}
	if got := len(e.pluginVolumes()); got != before {
		t.Errorf("%d volumes after Orphans, want the %d recorded", got, before)
	}
	if _, err := os.Stat(pending); !os.IsNotExist(err) {
		t.Errorf("the pending note is still there: %v", err)
	}
}
