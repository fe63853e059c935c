package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"paddock.dev/paddock/internal/testenv"
)

// TestIsolation: builds and apps run as users of their own and cannot read
// the platform's store, keys or another app's files.
func TestIsolation(t *testing.T) {
	p := testenv.Start(t)
	db := filepath.Join(p.Data, "paddock.db")
	key := filepath.Join(p.Data, "tls", "ca.key")
	probe := func(who string) string {
		return fmt.Sprintf(`echo %[1]s-uid=$(id -u); for f in %[2]s %[3]s ../../../paddock.db; do cat $f >/dev/null 2>&1 && echo %[1]s-READ-$f || echo %[1]s-denied; done`, who, db, key)
	}
	dir := writeApp(t, map[string]string{"paddock.toml": fmt.Sprintf(`
[build]
command = %q
[processes.worker]
command = %q
`, probe("build")+"; echo secret > mine; echo cached > $HOME/cache && echo build-home-ok", probe("app")+"; exec sleep 100")})
	p.MustRun("apps", "create", "iso")
	stdout, stderr, err := p.Run("deploy", dir, "--app", "iso")
	if err != nil {
		t.Fatalf("deploy: %v\n%s\n%s", err, stdout, stderr)
	}
	var out string
	testenv.Eventually(t, 20*time.Second, func() error {
		out = p.MustRun("logs", "iso", "-n", "0")
		if strings.Count(out, "app-denied\n") < 3 {
			return fmt.Errorf("the app's probe has not run yet:\n%s", out)
		}
		return nil
	})
	uid := p.AppUsers().Base + 1 // the first app's user
	for _, want := range []string{fmt.Sprintf("build-uid=%d", uid), fmt.Sprintf("app-uid=%d", uid), "build-home-ok\n"} {
		if !strings.Contains(stderr+out, want) {
			t.Errorf("missing %q in the build output and logs:\n%s\n%s", want, stderr, out)
		}
	}
	// The probes' own command lines are echoed too: what they printed ends
	// a line.
	if strings.Contains(stderr+out, "-READ-/") || strings.Contains(stderr+out, "-READ-.") {
		t.Errorf("a build or an app read the platform's data:\n%s\n%s", stderr, out)
	}
	if n := strings.Count(stderr, "build-denied\n"); n != 3 {
		t.Errorf("build output: got %d denials, want 3:\n%s", n, stderr)
	}
}
