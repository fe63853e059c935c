package dashboard_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestOnlyThroughTheAPI: the dashboard reaches the platform through the
// API's handler and decodes internal/wire, nothing else of the server's,
// so that it cannot read or change anything behind the API's checks.
func TestOnlyThroughTheAPI(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "paddock.dev/paddock/internal/dashboard").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "paddock.dev/paddock/") && pkg != "paddock.dev/paddock/internal/wire" && pkg != "paddock.dev/paddock/internal/dashboard" {
			t.Errorf("internal/dashboard depends on %s: reach it through the API instead", pkg)
		}
	}
}
