package e2e

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"paddock.dev/paddock/internal/client"
	"paddock.dev/paddock/internal/testenv"
)

// sumLine is what the app prints of a secret it got: its SHA-256, never the
// value, so that the logs show which version it has.
func sumLine(name, value string) string {
	h := sha256.Sum256([]byte(value))
	return name + "-sum=" + hex.EncodeToString(h[:])
}

// deploySummer deploys app with a web process that prints the sums of the
// secrets named, from the environment or from $PADDOCK_SECRETS_DIR.
func deploySummer(t *testing.T, p *testenv.Platform, app string, names ...string) {
	t.Helper()
	var cmd []string
	for _, n := range names {
		cmd = append(cmd, fmt.Sprintf(`if [ -n "${%[1]s+x}" ]; then s=$(printf %%s "$%[1]s" | sha256sum); else s=$(sha256sum < $PADDOCK_SECRETS_DIR/%[1]s); fi; echo "%[1]s-sum=${s%%%% *}"`, n))
	}
	cmd = append(cmd, "exec ./tenant serve")
	manifest := fmt.Sprintf("[processes.web]\ncommand = %q\n", strings.Join(cmd, "; "))
	if out, errOut, err := p.Run("deploy", tenantApp(t, manifest), "--app", app); err != nil {
		t.Fatalf("deploy %s: %v\n%s\n%s", app, err, out, errOut)
	}
}

// waitLogged waits until the app's logs show line, and returns them.
func waitLogged(t *testing.T, p *testenv.Platform, app, line string) string {
	t.Helper()
	var logs string
	testenv.Eventually(t, 30*time.Second, func() error {
		logs = p.MustRun("logs", app, "-n", "0")
		if !strings.Contains(logs, line+"\n") {
			return fmt.Errorf("no %q in the logs of %s yet:\n%s", line, app, logs)
		}
		return nil
	})
	return logs
}

// TestSecretVersionsFollowReleases: a secret change rolls out a release; a
// rollback brings back exactly the secret versions of the release rolled
// back to; an instance restarted by its supervisor while the server is
// stopped still gets its secrets.
func TestSecretVersionsFollowReleases(t *testing.T) {
	p := testenv.Start(t)
	p.MustRun("apps", "create", "shop")
	p.MustRun("config", "set", "shop", "NAME=shop")
	setSecret(t, p, "shop", "KEY", "first-value")
	setSecret(t, p, "shop", "CERT", "-----BEGIN CERT-----\nfirst\n-----END CERT-----\n", "--as-file")
	deploySummer(t, p, "shop", "KEY", "CERT")
	waitLogged(t, p, "shop", sumLine("KEY", "first-value"))
	waitLogged(t, p, "shop", sumLine("CERT", "-----BEGIN CERT-----\nfirst\n-----END CERT-----\n"))
	first := releaseVersion(t, p, "shop")

	setSecret(t, p, "shop", "KEY", "second-value")
	waitLogged(t, p, "shop", sumLine("KEY", "second-value"))
	if rels := p.MustRun("releases", "shop"); !strings.Contains(rels, "KEY") {
		t.Errorf("releases do not say KEY changed:\n%s", rels)
	}
	// --no-restart: stored now, out with the next release.
	setSecret(t, p, "shop", "KEY", "third-value", "--no-restart")
	p.MustRun("config", "set", "shop", "OTHER=1")
	waitLogged(t, p, "shop", sumLine("KEY", "third-value"))

	p.MustRun("rollback", "shop", fmt.Sprintf("v%d", first))
	logs := waitLogged(t, p, "shop", sumLine("KEY", "first-value"))
	if strings.Count(logs, sumLine("KEY", "first-value")) < 2 {
		t.Errorf("the rollback did not bring back KEY's first version:\n%s", logs)
	}
	// An unrelated release after the rollback keeps the versions rolled
	// back to.
	third := strings.Count(logs, sumLine("KEY", "third-value"))
	p.MustRun("config", "set", "shop", "OTHER=2")
	testenv.Eventually(t, 30*time.Second, func() error {
		logs = p.MustRun("logs", "shop", "-n", "0")
		if strings.Count(logs, sumLine("KEY", "first-value")) < 3 {
			return fmt.Errorf("the release after the rollback has not started yet")
		}
		return nil
	})
	if strings.Count(logs, sumLine("KEY", "third-value")) != third {
		t.Errorf("a config change after a rollback brought back the version rolled away from:\n%s", logs)
	}

	// The server stops; an instance crashes; its supervisor starts it again
	// with the secrets it keeps in memory.
	rows := ps(t, p, "shop")
	p.Stop()
	syscall.Kill(rows[0].PID, syscall.SIGKILL)
	logFile := filepath.Join(p.Data, "logs", "shop.*", rows[0].ID+".log")
	testenv.Eventually(t, 20*time.Second, func() error {
		files, _ := filepath.Glob(logFile)
		if len(files) != 1 {
			return fmt.Errorf("no log file %s", logFile)
		}
		b, _ := os.ReadFile(files[0])
		if strings.Count(string(b), sumLine("KEY", "first-value")+"\n") < 2 || strings.Count(string(b), sumLine("CERT", "-----BEGIN CERT-----\nfirst\n-----END CERT-----\n")+"\n") < 2 {
			return fmt.Errorf("the restarted process has not printed its secrets' sums:\n%s", b)
		}
		return nil
	})
	p.Up()
}

func releaseVersion(t *testing.T, p *testenv.Platform, app string) int {
	t.Helper()
	var info struct {
		Current struct {
			Version int `json:"version"`
		} `json:"current"`
	}
	if err := jsonUnmarshal(p.MustRun("apps", "info", app, "--json"), &info); err != nil || info.Current.Version == 0 {
		t.Fatalf("apps info %s: %v", app, err)
	}
	return info.Current.Version
}

// TestTamperedSecret: a ciphertext changed in the store fails to open with
// an error that names the secret and version; the other secrets are still
// served.
func TestTamperedSecret(t *testing.T) {
	p := testenv.Start(t)
	p.MustRun("apps", "create", "shop")
	setSecret(t, p, "shop", "GOOD", "good-value")
	setSecret(t, p, "shop", "BAD", "bad-value")
	p.Stop()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(p.Data, "paddock.db"))
	if err != nil {
		t.Fatal(err)
	}
	// Flip a bit of the last byte of the sealed value: the GCM tag no
	// longer matches.
	var sealed []byte
	if err := db.QueryRowContext(context.Background(), `SELECT sealed FROM secrets WHERE name = 'BAD'`).Scan(&sealed); err != nil {
		t.Fatal(err)
	}
	sealed[len(sealed)-1] ^= 1
	if _, err := db.ExecContext(context.Background(), `UPDATE secrets SET sealed = ? WHERE name = 'BAD'`, sealed); err != nil {
		t.Fatal(err)
	}
	db.Close()
	p.Up()
	_, errOut, err := p.Run("secrets", "reveal", "shop", "BAD")
	if err == nil || !regexp.MustCompile(`BAD v1`).MatchString(errOut) || strings.Contains(errOut, "bad-value") {
		t.Errorf("reveal of a tampered secret: got %v, %q; want an error naming BAD v1", err, errOut)
	}
	if got := p.MustRun("secrets", "reveal", "shop", "GOOD"); got != "good-value" {
		t.Errorf("reveal of the untouched secret: got %q", got)
	}
}

// TestKeyRotationUnderLoad: the KEK rotates while an app with secrets
// serves under load: no request fails, every secret still opens, and the
// old KEK opens nothing (a server given it back refuses to start).
func TestKeyRotationUnderLoad(t *testing.T) {
	p := testenv.Start(t)
	p.MustRun("apps", "create", "busy")
	p.MustRun("config", "set", "busy", "NAME=busy")
	setSecret(t, p, "busy", "KEY", "busy-value")
	deploySummer(t, p, "busy", "KEY")
	serving(t, p, "busy.localhost", "busy")
	kek := filepath.Join(p.Data, "keys", "kek")
	old, err := os.ReadFile(kek)
	if err != nil {
		t.Fatal(err)
	}
	status := p.MustRun("keys", "status")
	l := startLoad(p, "busy.localhost", 8)
	// Secrets are sealed and opened all through the rotation.
	stop := make(chan struct{})
	var ops, failed atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c := p.Client()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			v := fmt.Sprintf("during-%d", i)
			if _, err := c.SetSecret(context.Background(), "busy", "OTHER", []byte(v), client.SecretOptions{NoRestart: true}); err != nil {
				failed.Add(1)
				t.Logf("set during rotation: %v", err)
			}
			if got, err := c.RevealSecret(context.Background(), "busy", "OTHER"); err != nil || string(got) != v {
				failed.Add(1)
				t.Logf("reveal during rotation: %q, %v", got, err)
			}
			ops.Add(2)
		}
	}()
	time.Sleep(time.Second)
	p.MustRun("keys", "rotate")
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	l.finish(t, "KEK rotation")
	if failed.Load() > 0 || ops.Load() < 10 {
		t.Errorf("secret operations during the rotation: %d of %d failed", failed.Load(), ops.Load())
	}
	if again := p.MustRun("keys", "status"); again == status {
		t.Errorf("keys status is the same after a rotation:\n%s", again)
	}
	if got := p.MustRun("secrets", "reveal", "busy", "KEY"); got != "busy-value" {
		t.Errorf("reveal after rotation: got %q", got)
	}
	setSecret(t, p, "busy", "KEY", "after-rotation")
	waitLogged(t, p, "busy", sumLine("KEY", "after-rotation"))

	p.Stop()
	if err := os.WriteFile(kek, old, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(p.Bin, "up", "--api", "127.0.0.1:0", "--http", "127.0.0.1:0")
	cmd.Env = p.Env()
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "kek") {
		t.Errorf("paddock up with the old KEK: got %v, want a refusal that names the key:\n%s", err, out)
	}
}

// TestLostKeyIsRestoredOffline: without its key file, paddock up refuses
// to start rather than make a new key over the secrets, and says how to
// restore it; the backup, imported into the stopped platform's data
// folder, brings every secret back.
func TestLostKeyIsRestoredOffline(t *testing.T) {
	p := testenv.Start(t)
	p.MustRun("apps", "create", "shop")
	setSecret(t, p, "shop", "KEY", "kept-value")
	backup := filepath.Join(t.TempDir(), "key.backup")
	p.MustRun("keys", "export", "--out", backup)
	p.Stop()
	kek := filepath.Join(p.Data, "keys", "kek")
	if err := os.Remove(kek); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(p.Bin, "up", "--api", "127.0.0.1:0", "--http", "127.0.0.1:0")
	cmd.Env = p.Env()
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "keys import") {
		t.Fatalf("paddock up without its key file: got %v, want a refusal that says how to restore the key:\n%s", err, out)
	}
	if _, err := os.Stat(kek); err == nil {
		t.Fatalf("paddock up made a new key over the store's secrets")
	}
	if o, e, err := p.Run("keys", "import", backup, "--data", p.Data); err != nil {
		t.Fatalf("keys import --data: %v\n%s\n%s", err, o, e)
	}
	p.Up()
	if got := p.MustRun("secrets", "reveal", "shop", "KEY"); got != "kept-value" {
		t.Errorf("reveal after the key was restored: got %q", got)
	}
}
