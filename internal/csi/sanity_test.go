package csi

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
)

// The official CSI conformance suite, csi-sanity, against both backends.
// Ginkgo runs one suite per process, so each backend's run happens in a
// child process: this test binary again, running just that test.

func TestSanityBtrfs(t *testing.T) {
	needRoot(t)
	runSanity(t, "btrfs")
}

func TestSanityFolders(t *testing.T) { runSanity(t, "folders") }

const sanityEnv = "PADDOCK_CSI_SANITY"

func runSanity(t *testing.T, backend string) {
	if os.Getenv(sanityEnv) != backend {
		if testing.Short() {
			t.Skip("csi-sanity takes a while")
		}
		cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v", "-test.timeout=15m", "-ginkgo.no-color")
		cmd.Env = append(os.Environ(), sanityEnv+"="+backend)
		out, err := cmd.CombinedOutput()
		summary := regexp.MustCompile(`Ran \d+ of \d+ Specs.*\n.*(SUCCESS|FAIL).*`).Find(out)
		if err != nil {
			t.Fatalf("csi-sanity against the %s backend failed: %v\n%s", backend, err, out)
		}
		if len(summary) == 0 {
			t.Fatalf("csi-sanity against the %s backend printed no summary:\n%s", backend, out)
		}
		t.Logf("csi-sanity against the %s backend: %s", backend, bytes.ReplaceAll(summary, []byte("\n"), []byte(" ")))
		return
	}

	e := newEnv(t, Config{
		Backend:  backend,
		PoolSize: 1 << 30,
		NodeID:   "sanity-node",
		Logger:   testLogger(t),
	})
	cfg := sanity.NewTestConfig()
	cfg.Address = "unix://" + e.sock
	cfg.TargetPath = filepath.Join(e.dir, "target")
	cfg.StagingPath = filepath.Join(e.dir, "staging")
	cfg.TestVolumeSize = 16 << 20
	cfg.TestVolumeExpandSize = 32 << 20
	cfg.TestVolumeParameters = map[string]string{ParamUID: "65534", ParamGID: "65534"}
	sanity.Test(t, cfg)
}
