package kubetest_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestOnlyTestsImportKubetest keeps the test harness, and the kube-apiserver
// it drives, out of the paddock binary.
func TestOnlyTestsImportKubetest(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "paddock.dev/paddock/cmd/paddock").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if pkg == "paddock.dev/paddock/internal/kubetest" {
			t.Errorf("cmd/paddock depends on %s: only tests may import it", pkg)
		}
	}
}
