package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"paddock.dev/paddock/internal/testenv"
)

// The attacks of a hostile app on the machine it shares: each test plays
// the attacker and checks that the wall holds.

// logValue waits until the app's logs show "KEY=VALUE" and returns VALUE.
func logValue(t *testing.T, p *testenv.Platform, app, key string) string {
	t.Helper()
	re := regexp.MustCompile(regexp.QuoteMeta(key) + `=(\S+)`)
	var v string
	testenv.Eventually(t, 20*time.Second, func() error {
		m := re.FindAllStringSubmatch(p.MustRun("logs", app, "-n", "0"), -1)
		if len(m) == 0 {
			return fmt.Errorf("no %s= in the logs of %s yet", key, app)
		}
		v = m[len(m)-1][1]
		return nil
	})
	return v
}

// deployWorker deploys an app whose worker runs command.
func deployWorker(t *testing.T, p *testenv.Platform, app, command string) {
	t.Helper()
	dir := writeApp(t, map[string]string{"paddock.toml": fmt.Sprintf("[processes.worker]\ncommand = %q\n", command)})
	if _, err := p.Client().CreateApp(t.Context(), app, nil); err != nil {
		t.Fatal(err)
	}
	if out, errOut, err := p.Run("deploy", dir, "--app", app); err != nil {
		t.Fatalf("deploy %s: %v\n%s\n%s", app, err, out, errOut)
	}
}

func pidAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z'
}

func waitPidGone(t *testing.T, pid int, what string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for pidAlive(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("%s (pid %d) is still running", what, pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAppUsersAreNeverReused: the user of a destroyed app, whose processes
// could still run, is never given to a new app, not even when the newest
// app is the one destroyed; and two platforms on the machine never share
// app users.
func TestAppUsersAreNeverReused(t *testing.T) {
	p := testenv.Start(t)
	deployWorker(t, p, "old", "echo uid=$(id -u); exec sleep 1000")
	oldUID := logValue(t, p, "old", "uid")
	p.MustRun("apps", "destroy", "old", "--yes")
	deployWorker(t, p, "new", "echo uid=$(id -u); exec sleep 1000")
	if newUID := logValue(t, p, "new", "uid"); newUID == oldUID {
		t.Errorf("the new app runs as %s, the user of the destroyed app", newUID)
	}

	other := testenv.Start(t)
	deployWorker(t, other, "new", "echo uid=$(id -u); exec sleep 1000")
	if otherUID := logValue(t, other, "new", "uid"); otherUID == oldUID || otherUID == logValue(t, p, "new", "uid") {
		t.Errorf("two platforms on one machine share the app user %s", otherUID)
	}
}

// TestDestroyEndsEveryProcess: a process that starts a session of its own
// (a daemonising server) leaves its process group, but not its app: the
// app's destruction, and a build's timeout, end it.
func TestDestroyEndsEveryProcess(t *testing.T) {
	p := testenv.Start(t)
	deployWorker(t, p, "daemon", "setsid sleep 1000 & echo daemon=$!; exec sleep 1000")
	pid, err := strconv.Atoi(logValue(t, p, "daemon", "daemon"))
	if err != nil || !pidAlive(pid) {
		t.Fatalf("the daemon did not start: %v", err)
	}
	p.MustRun("apps", "destroy", "daemon", "--yes")
	waitPidGone(t, pid, "a daemon of a destroyed app")

	// A build that daemonises and then hangs past its timeout.
	dir := writeApp(t, map[string]string{"paddock.toml": `
[build]
command = "setsid sleep 1000 & echo daemon=$!; sleep 1000"
timeout = "2s"
[processes.worker]
command = "true"
`})
	p.MustRun("apps", "create", "slow")
	_, stderr, err := p.Run("deploy", dir, "--app", "slow")
	if err == nil || !strings.Contains(stderr, "timed out") {
		t.Fatalf("deploy of a hanging build: got %v, want a timeout\n%s", err, stderr)
	}
	m := regexp.MustCompile(`daemon=(\d+)`).FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("the build printed no pid:\n%s", stderr)
	}
	pid, _ = strconv.Atoi(m[1])
	waitPidGone(t, pid, "a daemon of a timed-out build")
}

// TestBuildHomeIsNeverHandedOver: a new app of a destroyed app's name does
// not inherit its build home, and root does not walk a home the old app's
// daemon keeps rigging with links to a file of root's.
func TestBuildHomeIsNeverHandedOver(t *testing.T) {
	p := testenv.Start(t)
	// A file of root's, where the old app's links point.
	victimDir := filepath.Join(p.Dir, "victim")
	os.MkdirAll(victimDir, 0o755)
	victim := filepath.Join(victimDir, "precious")
	os.WriteFile(victim, []byte("root's"), 0o644)

	// The old app leaves a folder in its build home, and a daemon (which
	// would have outlived the app) that swaps it for a link to the victim's
	// folder, over and over.
	rig := fmt.Sprintf(`mkdir -p $HOME/d/e && echo mine > $HOME/cache.txt && (setsid sh -c 'while true; do mv $HOME/d $HOME/d.x 2>/dev/null; ln -sfn %s $HOME/d; rm -f $HOME/d; mv $HOME/d.x $HOME/d 2>/dev/null; done' >/dev/null 2>&1 &) && echo home=$HOME`, victimDir)
	dir := writeApp(t, map[string]string{"paddock.toml": fmt.Sprintf("[build]\ncommand = %q\n[processes.worker]\ncommand = \"exec sleep 1000\"\n", rig)})
	p.MustRun("apps", "create", "twin")
	if out, errOut, err := p.Run("deploy", dir, "--app", "twin"); err != nil {
		t.Fatalf("deploy: %v\n%s\n%s", err, out, errOut)
	}
	p.MustRun("apps", "destroy", "twin", "--yes")

	dir = writeApp(t, map[string]string{"paddock.toml": "[build]\ncommand = \"ls -A $HOME; echo home=$HOME; test ! -e $HOME/cache.txt\"\n[processes.worker]\ncommand = \"exec sleep 1000\"\n"})
	p.MustRun("apps", "create", "twin")
	if out, errOut, err := p.Run("deploy", dir, "--app", "twin"); err != nil {
		t.Fatalf("deploy of the new app: %v (did it inherit the old app's home?)\n%s\n%s", err, out, errOut)
	}
	fi, err := os.Stat(victim)
	if err != nil {
		t.Fatal(err)
	}
	if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != 0 {
		t.Errorf("root's file behind the old app's link now belongs to uid %d", uid)
	}
}

// tenantApp returns a folder with the tenant program (testdata/tenant)
// built, and a paddock.toml.
func tenantApp(t *testing.T, manifest string) string {
	t.Helper()
	b, err := os.ReadFile(testenv.GoBuild(t, "./testdata/tenant"))
	if err != nil {
		t.Fatal(err)
	}
	return writeApp(t, map[string]string{"tenant": string(b), "paddock.toml": manifest})
}

// deployVictim deploys the app vic, whose web instance answers "vic", and
// waits until it serves.
func deployVictim(t *testing.T, p *testenv.Platform) {
	t.Helper()
	p.MustRun("apps", "create", "vic")
	p.MustRun("config", "set", "vic", "NAME=vic")
	if out, errOut, err := p.Run("deploy", tenantApp(t, "[processes.web]\ncommand = \"./tenant serve\"\n"), "--app", "vic"); err != nil {
		t.Fatalf("deploy vic: %v\n%s\n%s", err, out, errOut)
	}
	serving(t, p, "vic.localhost", "vic")
}

// TestPortSquatting: an app that tries to bind the port of another app's
// instance while it restarts, on any address, cannot, and the victim
// serves again; no request for it ever reaches the squatter.
func TestPortSquatting(t *testing.T) {
	p := testenv.Start(t)
	deployVictim(t, p)
	rows := ps(t, p, "vic")
	port, pid := rows[0].Port, rows[0].PID

	p.MustRun("apps", "create", "evil")
	squat := fmt.Sprintf("[processes.worker]\ncommand = \"./tenant squat %d & ./tenant squat 127.0.0.2:%d & exec ./tenant squat [::1]:%d\"\n", port, port, port)
	if out, errOut, err := p.Run("deploy", tenantApp(t, squat), "--app", "evil"); err != nil {
		t.Fatalf("deploy evil: %v\n%s\n%s", err, out, errOut)
	}
	// The victim crashes; the squatter tries to bind its port before it
	// restarts.
	syscall.Kill(pid, syscall.SIGKILL)
	var stolen, served int
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && served < 20 {
		code, body, err := p.Get("vic.localhost", "/")
		switch {
		case err == nil && strings.Contains(body, "STOLEN"):
			stolen++
		case err == nil && code == 200 && body == "vic":
			if rows := ps(t, p, "vic"); len(rows) == 1 && rows[0].PID != pid {
				served++
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if stolen > 0 {
		t.Errorf("%d requests for vic were answered by the app squatting its port", stolen)
	}
	if served == 0 {
		t.Fatalf("vic never served again after its crash; ps: %+v", ps(t, p, "vic"))
	}
	if logs := p.MustRun("logs", "evil", "-n", "0"); strings.Count(logs, "bind: operation not permitted") < 3 {
		t.Errorf("the squatter's binds were not refused on every address:\n%s", logs)
	}
}

// TestAppsMeetOnlyThroughTheRouter: an app cannot connect to another app's
// instance directly (and so cannot hand it a forged X-Forwarded-For); it
// reaches it through the router, like anyone else.
func TestAppsMeetOnlyThroughTheRouter(t *testing.T) {
	p := testenv.Start(t)
	deployVictim(t, p)
	direct := fmt.Sprintf("127.0.0.1:%d", ps(t, p, "vic")[0].Port)
	manifest := fmt.Sprintf("[processes.worker]\ncommand = \"./tenant get %s vic.localhost; ./tenant get %s vic.localhost; exec sleep 1000\"\n", direct, p.Router)
	p.MustRun("apps", "create", "evil")
	if out, errOut, err := p.Run("deploy", tenantApp(t, manifest), "--app", "evil"); err != nil {
		t.Fatalf("deploy evil: %v\n%s\n%s", err, out, errOut)
	}
	var logs string
	testenv.Eventually(t, 20*time.Second, func() error {
		logs = p.MustRun("logs", "evil", "-n", "0")
		if strings.Count(logs, "get 127.0.0.1:") < 2 {
			return fmt.Errorf("the probes have not run yet:\n%s", logs)
		}
		return nil
	})
	if !regexp.MustCompile(`get ` + regexp.QuoteMeta(direct) + `: .*connect: operation not permitted\n`).MatchString(logs) {
		t.Errorf("evil reached vic's instance directly, or failed for another reason:\n%s", logs)
	}
	if !strings.Contains(logs, "get "+p.Router+": vic\n") {
		t.Errorf("evil did not reach vic through the router:\n%s", logs)
	}
}

// TestBuildOutputHardLink: a build that hard-links a file of another user
// into its output (which the kernel allows for a file it may write) does
// not get root to pack it: the deploy fails and says why.
func TestBuildOutputHardLink(t *testing.T) {
	p := testenv.Start(t)
	loot := filepath.Join(t.TempDir(), "loot")
	os.Chmod(filepath.Dir(loot), 0o755)
	if err := os.WriteFile(loot, []byte("root's"), 0o666); err != nil {
		t.Fatal(err)
	}
	os.Chmod(loot, 0o666) // past the umask: writable, so linkable, by anyone
	dir := writeApp(t, map[string]string{"paddock.toml": fmt.Sprintf("[build]\ncommand = \"ln %s loot\"\n[processes.worker]\ncommand = \"exec sleep 1000\"\n", loot)})
	p.MustRun("apps", "create", "linker")
	_, stderr, err := p.Run("deploy", dir, "--app", "linker")
	if err == nil || !strings.Contains(stderr, "not the app's") || !strings.Contains(stderr, "loot") {
		t.Fatalf("deploy of a build output with a hard link to root's file: got %v, want it refused naming loot\n%s", err, stderr)
	}
	if rels := p.MustRun("releases", "linker"); strings.Contains(rels, "v1") {
		t.Errorf("a release was made:\n%s", rels)
	}
}
