package e2e

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"paddock.dev/paddock/internal/testenv"
)

// volumeApp deploys app with a web process that, at each start, appends a
// line to $PADDOCK_VOLUME_<VOL>/starts, prints what the file holds, then
// runs extra (a shell command) and serves.
func deployVolumeApp(t *testing.T, p *testenv.Platform, app, env, extra string) {
	t.Helper()
	cmd := fmt.Sprintf(`d=$%s; echo "start $PADDOCK_RELEASE" >> $d/starts && echo "starts=$(wc -l < $d/starts)"; echo "path=$d"; %s; exec ./tenant serve`, env, extra)
	if out, errOut, err := p.Run("deploy", tenantApp(t, fmt.Sprintf("[processes.web]\ncommand = %q\n", cmd)), "--app", app); err != nil {
		t.Fatalf("deploy %s: %v\n%s\n%s", app, err, out, errOut)
	}
}

// TestVolumes: a volume keeps an app's data across releases, holds its
// size for real, snapshots and restores, and is the app's alone.
func TestVolumes(t *testing.T) {
	p := testenv.Start(t)
	p.MustRun("apps", "create", "shop")
	p.MustRun("config", "set", "shop", "NAME=shop")
	p.MustRun("volumes", "create", "shop-data", "--app", "shop", "--size", "16MiB")
	p.MustRun("volumes", "attach", "shop-data", "shop", "--process", "web", "--path", "data")
	deployVolumeApp(t, p, "shop", "PADDOCK_VOLUME_SHOP_DATA",
		`head -c 33554432 /dev/zero > $d/big 2>/dev/null && echo "wrote=32MiB" || echo "write-refused size=$(du -m $d/big | cut -f1)"; rm -f $d/big`)
	logs := waitLogged(t, p, "shop", "starts=1")
	if !strings.Contains(logs, ": write-refused") || strings.Contains(logs, ": wrote=32MiB") {
		t.Errorf("a 32 MiB write into a 16 MiB volume was not refused:\n%s", logs)
	}
	show := p.MustRun("volumes", "show", "shop-data")
	if !strings.Contains(show, "16.0MiB") || !strings.Contains(show, "web:data") || strings.Contains(show, "NOT ENFORCED") {
		t.Errorf("volumes show:\n%s", show)
	}

	// A new release: the data is still there.
	p.MustRun("config", "set", "shop", "N=1")
	waitLogged(t, p, "shop", "starts=2")

	// Snapshot, change, restore.
	snap := strings.TrimSpace(p.MustRun("volumes", "snapshot", "shop-data", "--name", "two-starts"))
	p.MustRun("config", "set", "shop", "N=2")
	waitLogged(t, p, "shop", "starts=3")
	if _, errOut, err := p.Run("volumes", "restore", "shop-data", snap); err == nil || !strings.Contains(errOut, "scale") {
		t.Errorf("restore of a volume in use: got %v %q, want a refusal that says to scale to 0", err, errOut)
	}
	p.MustRun("scale", "shop", "web=0")
	testenv.Eventually(t, 20*time.Second, func() error {
		if rows := ps(t, p, "shop"); len(rows) != 0 {
			return fmt.Errorf("%d instances still run", len(rows))
		}
		return nil
	})
	p.MustRun("volumes", "restore", "shop-data", "two-starts")
	p.MustRun("scale", "shop", "web=1")
	testenv.Eventually(t, 30*time.Second, func() error {
		logs := p.MustRun("logs", "shop", "-n", "0")
		if strings.Count(logs, ": starts=3\n") != 2 || strings.Contains(logs, ": starts=4\n") {
			return fmt.Errorf("after restoring the snapshot of two starts, the next start is not the third again:\n%s", logs)
		}
		return nil
	})

	// Clone from the snapshot, into a new volume of the same app.
	p.MustRun("volumes", "clone", "shop-data", "two-starts", "shop-copy")
	if list := p.MustRun("volumes", "--app", "shop"); !strings.Contains(list, "shop-copy") {
		t.Errorf("volumes list lacks the clone:\n%s", list)
	}

	// Refusals that keep data.
	if _, errOut, err := p.Run("scale", "shop", "web=2"); err == nil || !strings.Contains(errOut, "volume") {
		t.Errorf("scale of a process with a volume to 2: got %v %q, want a refusal", err, errOut)
	}
	if _, errOut, err := p.Run("volumes", "delete", "shop-data", "--yes"); err == nil || !strings.Contains(errOut, "shop-data") {
		t.Errorf("delete of an attached volume: got %v %q, want a refusal", err, errOut)
	}
	if _, errOut, err := p.Run("apps", "destroy", "shop", "--yes"); err == nil || !strings.Contains(errOut, "volumes") {
		t.Errorf("destroy of an app with volumes: got %v %q, want a refusal", err, errOut)
	}
	for _, bad := range [][]string{
		{"volumes", "create", "x", "--app", "shop", "--size", "0"},
		{"volumes", "create", "x", "--app", "shop", "--size", "-5G"},
		{"volumes", "create", "x", "--app", "shop", "--size", "9EiB"},
		{"volumes", "create", "a/b", "--app", "shop", "--size", "1GiB"},
		{"volumes", "create", "x", "--app", "nope", "--size", "1GiB"},
		{"volumes", "attach", "shop-copy", "shop", "--process", "web", "--path", "../../etc"},
		{"volumes", "resize", "shop-data", "--size", "1MiB"},
	} {
		if _, errOut, err := p.Run(bad...); err == nil || errOut == "" {
			t.Errorf("paddock %s: got %v %q, want a clear refusal", strings.Join(bad, " "), err, errOut)
		}
	}
	p.MustRun("volumes", "resize", "shop-data", "--size", "32MiB")

	// Another app's user cannot reach the volume.
	rows := ps(t, p, "shop")
	path := filepath.Join(p.Data, "instances", rows[0].ID, "app", "data", "starts")
	p.MustRun("apps", "create", "evil")
	manifest := fmt.Sprintf("[processes.worker]\ncommand = \"cat %s && echo READ || echo denied; exec sleep 1000\"\n", path)
	if out, errOut, err := p.Run("deploy", tenantApp(t, manifest), "--app", "evil"); err != nil {
		t.Fatalf("deploy evil: %v\n%s\n%s", err, out, errOut)
	}
	if logs := waitLogged(t, p, "evil", "denied"); strings.Contains(logs, ": READ\n") {
		t.Errorf("another app read the volume:\n%s", logs)
	}
}

// TestVolumeBackups: snapshots carry a checksum manifest that verify
// checks; an exported snapshot imports into a new volume with the same
// content, and a damaged or hostile stream makes nothing; scheduled
// backups keep the newest; a paced restore copies the snapshot back.
func TestVolumeBackups(t *testing.T) {
	p := testenv.Start(t)
	p.MustRun("apps", "create", "shop")
	p.MustRun("volumes", "create", "shop-data", "--app", "shop", "--size", "64MiB")
	p.MustRun("volumes", "attach", "shop-data", "shop", "--process", "web", "--path", "data")
	// Four MiB of data, a folder, and a link the app planted out of its
	// volume: kept as a link, never followed.
	deployVolumeApp(t, p, "shop", "PADDOCK_VOLUME_SHOP_DATA",
		`[ -e $d/blob ] || { head -c 4194304 /dev/urandom > $d/blob; mkdir -p $d/sub; echo hello > $d/sub/file; ln -s /etc/shadow $d/link; }; echo "sum=$(sha256sum < $d/blob | cut -c1-16)"`)
	logs := waitLogged(t, p, "shop", "starts=1")
	sum := logs[strings.Index(logs, ": sum=")+6:]
	sum = sum[:16]

	snap := strings.TrimSpace(p.MustRun("volumes", "snapshot", "shop-data", "--name", "one"))
	var snaps []struct {
		ID, Checksum string
		VerifiedAt   time.Time `json:"verified_at"`
	}
	// The checksum manifest is made after the snapshot's answer.
	testenv.Eventually(t, 20*time.Second, func() error {
		if err := jsonUnmarshal(p.MustRun("volumes", "snapshots", "shop-data", "--json"), &snaps); err != nil || len(snaps) != 1 || !strings.HasPrefix(snaps[0].Checksum, "sha256:") {
			return fmt.Errorf("snapshots: %+v %v", snaps, err)
		}
		return nil
	})
	if out := p.MustRun("volumes", "verify", "shop-data", "one"); !strings.Contains(out, snaps[0].Checksum) {
		t.Errorf("verify: %s", out)
	}

	// Export, then import into a new volume: same content, same checksum.
	dir := t.TempDir()
	stream := filepath.Join(dir, "shop.tar")
	p.MustRun("volumes", "export", "shop-data", snap, "-o", stream)
	// An export takes the app's data off the platform: it is audited.
	if out := p.MustRun("audit", "list", "--app", "shop", "--json"); !strings.Contains(out, `"apps.volumes.export"`) {
		t.Errorf("the export is not in the audit log:\n%s", out)
	}
	if _, errOut, err := p.Run("volumes", "export", "shop-data", snap, "-o", stream); err == nil || !strings.Contains(errOut, "exists") {
		t.Errorf("export over an existing file: %v %q", err, errOut)
	}
	_, errOut, err := p.Run("volumes", "import", "shop-copy", "--app", "shop", "--size", "64MiB", "--rate", "8MiB/s", stream)
	if err != nil {
		t.Fatalf("import: %v\n%s", err, errOut)
	}
	if !strings.Contains(errOut, "written") {
		t.Errorf("import showed no progress:\n%s", errOut)
	}
	p.MustRun("volumes", "snapshot", "shop-copy", "--name", "copy")
	testenv.Eventually(t, 20*time.Second, func() error {
		var copies []struct{ Checksum string }
		if err := jsonUnmarshal(p.MustRun("volumes", "snapshots", "shop-copy", "--json"), &copies); err != nil || len(copies) != 1 || copies[0].Checksum != snaps[0].Checksum {
			return fmt.Errorf("the imported volume's content differs: %+v, want checksum %s", copies, snaps[0].Checksum)
		}
		return nil
	})

	// Damaged, cut and hostile streams make no volume.
	good, err := os.ReadFile(stream)
	if err != nil {
		t.Fatal(err)
	}
	flipped := append([]byte(nil), good...)
	flipped[len(flipped)/2] ^= 0xff
	var evil bytes.Buffer
	tw := tar.NewWriter(&evil)
	tw.WriteHeader(&tar.Header{Name: "data/../../../../etc/paddock-evil", Mode: 0o644, Size: 4, Typeflag: tar.TypeReg})
	tw.Write([]byte("evil"))
	tw.Close()
	for name, b := range map[string][]byte{"flipped": flipped, "cut": good[:len(good)/2], "evil": evil.Bytes(), "empty": nil} {
		f := filepath.Join(dir, name)
		os.WriteFile(f, b, 0o600)
		if _, errOut, err := p.Run("volumes", "import", "bad-"+name, "--app", "shop", "--size", "64MiB", f); err == nil || errOut == "" {
			t.Errorf("import of a %s stream: %v %q, want a refusal", name, err, errOut)
		}
		if _, _, err := p.Run("volumes", "show", "bad-"+name); err == nil {
			t.Errorf("import of a %s stream left a volume", name)
		}
	}
	if _, err := os.Stat("/etc/paddock-evil"); err == nil {
		os.Remove("/etc/paddock-evil")
		t.Errorf("a stream wrote out of its volume")
	}

	// Backups: each verified, the newest two kept.
	p.MustRun("backups", "schedule", "shop-data", "--every", "6h", "--keep", "2")
	for range 3 {
		p.MustRun("backups", "run", "shop-data")
	}
	var kept []struct{ Backup bool }
	jsonUnmarshal(p.MustRun("volumes", "snapshots", "shop-data", "--json"), &kept)
	backups := 0
	for _, s := range kept {
		if s.Backup {
			backups++
		}
	}
	if backups != 2 || len(kept) != 3 {
		t.Errorf("after 3 backups keeping 2: %d backups of %d snapshots", backups, len(kept))
	}
	if out := p.MustRun("backups", "list"); !strings.Contains(out, "shop-data") || strings.Contains(out, "never") {
		t.Errorf("backups list:\n%s", out)
	}

	// A paced restore by copy brings the snapshot's data back.
	p.MustRun("scale", "shop", "web=0")
	testenv.Eventually(t, 20*time.Second, func() error {
		if rows := ps(t, p, "shop"); len(rows) != 0 {
			return fmt.Errorf("%d instances still run", len(rows))
		}
		return nil
	})
	_, errOut, err = p.Run("volumes", "restore", "shop-data", "one", "--rate", "4MiB/s")
	if err != nil {
		t.Fatalf("restore --rate: %v\n%s", err, errOut)
	}
	if !strings.Contains(errOut, "copied") {
		t.Errorf("restore --rate showed no progress:\n%s", errOut)
	}
	p.MustRun("scale", "shop", "web=1")
	waitLogged(t, p, "shop", "starts=2")
	testenv.Eventually(t, 20*time.Second, func() error {
		if logs := p.MustRun("logs", "shop", "-n", "0"); strings.Count(logs, ": sum=") != 2 || strings.Count(logs, ": sum="+sum) != 2 {
			return fmt.Errorf("after the restore the data differs (want sum=%s twice):\n%s", sum, logs)
		}
		return nil
	})
}

// TestRestoreSurvivesACrash: a server killed in the middle of a restore
// leaves the volume's old data, and cleans up the half-made copy at its
// next start.
func TestRestoreSurvivesACrash(t *testing.T) {
	p := testenv.Start(t)
	p.MustRun("apps", "create", "shop")
	p.MustRun("volumes", "create", "shop-data", "--app", "shop", "--size", "64MiB")
	p.MustRun("volumes", "attach", "shop-data", "shop", "--process", "web", "--path", "data")
	deployVolumeApp(t, p, "shop", "PADDOCK_VOLUME_SHOP_DATA", `[ -e $d/blob ] || head -c 8388608 /dev/urandom > $d/blob`)
	waitLogged(t, p, "shop", "starts=1")
	p.MustRun("volumes", "snapshot", "shop-data", "--name", "one-start")
	p.MustRun("config", "set", "shop", "N=1")
	waitLogged(t, p, "shop", "starts=2")
	p.MustRun("scale", "shop", "web=0")
	testenv.Eventually(t, 20*time.Second, func() error {
		if rows := ps(t, p, "shop"); len(rows) != 0 {
			return fmt.Errorf("%d instances still run", len(rows))
		}
		return nil
	})

	// 8 MiB at 512 KiB/s: 16 s; the server dies after 2.
	done := make(chan string, 1)
	go func() {
		_, errOut, _ := p.Run("volumes", "restore", "shop-data", "one-start", "--rate", "512KiB/s")
		done <- errOut
	}()
	testenv.Eventually(t, 10*time.Second, func() error {
		if matches, _ := filepath.Glob(filepath.Join(p.Data, "volumes", "published", "scratch-*")); len(matches) < 2 {
			return fmt.Errorf("the copy has not started: %v", matches)
		}
		return nil
	})
	time.Sleep(2 * time.Second)
	p.Kill()
	if errOut := <-done; !strings.Contains(errOut, "copied") {
		t.Errorf("the restore showed no progress before the crash:\n%s", errOut)
	}
	p.Up()
	p.MustRun("scale", "shop", "web=1")
	waitLogged(t, p, "shop", "starts=3")
	if !strings.Contains(p.ServerLog(), "deleting a volume a crash left half made") {
		t.Errorf("the half-made copy was not cleaned up at start:\n%s", p.ServerLog())
	}
	if matches, _ := filepath.Glob(filepath.Join(p.Data, "volumes", "published", "scratch-*")); len(matches) != 0 {
		t.Errorf("scratch publications left: %v", matches)
	}
}

// TestPerInstanceVolumes: a volume attached --per-instance gives each
// instance of a process type a volume of its own, kept across releases
// and when scaled down.
func TestPerInstanceVolumes(t *testing.T) {
	p := testenv.Start(t)
	p.MustRun("apps", "create", "db")
	p.MustRun("volumes", "create", "db-data", "--app", "db", "--size", "16MiB")
	p.MustRun("volumes", "attach", "db-data", "db", "--process", "web", "--path", "data", "--per-instance")
	deployVolumeApp(t, p, "db", "PADDOCK_VOLUME_DB_DATA", `[ -e $d/mark ] || head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n' > $d/mark; echo "mark=$(cat $d/mark)"`)
	p.MustRun("scale", "db", "web=3")
	// marks returns the mark each instance of release found.
	marks := func(release int) map[string]bool {
		var got map[string]bool
		testenv.Eventually(t, 30*time.Second, func() error {
			got = map[string]bool{}
			logs := p.MustRun("logs", "db", "-n", "0")
			for _, r := range ps(t, p, "db") {
				if r.Release != release {
					continue
				}
				prefix := strings.TrimPrefix(r.ID, "db.") + ": mark="
				for line := range strings.Lines(logs) {
					if _, m, ok := strings.Cut(line, prefix); ok {
						got[strings.TrimSpace(m)] = true
					}
				}
			}
			if len(got) != 3 {
				return fmt.Errorf("%d marks from instances of v%d, want 3:\n%s", len(got), release, logs)
			}
			return nil
		})
		return got
	}
	first := marks(1)
	out := p.MustRun("volumes", "--app", "db")
	for _, name := range []string{"db-data-1", "db-data-2"} {
		if !strings.Contains(out, name) {
			t.Errorf("volumes lacks %s:\n%s", name, out)
		}
	}
	// A new release: three instances again, each on one of the volumes.
	p.MustRun("config", "set", "db", "N=1")
	testenv.Eventually(t, 30*time.Second, func() error {
		rows := ps(t, p, "db")
		if len(rows) != 3 {
			return fmt.Errorf("%d instances", len(rows))
		}
		for _, r := range rows {
			if r.Release != 2 {
				return fmt.Errorf("instance %s of v%d", r.ID, r.Release)
			}
		}
		return nil
	})
	if again := marks(2); len(again) != 3 || !mapsEqual(first, again) {
		t.Errorf("after a release the instances have marks %v, want the same three %v", again, first)
	}
	p.MustRun("scale", "db", "web=1")
	if out := p.MustRun("volumes", "--app", "db"); !strings.Contains(out, "db-data-2") {
		t.Errorf("a scale down deleted an instance's volume:\n%s", out)
	}
}

func mapsEqual(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}
