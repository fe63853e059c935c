package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"paddock.dev/paddock/internal/testenv"
)

// TestScripts runs the CLI scripts in testdata/script against one real
// platform: each script drives the real binary, `paddock` on its PATH, and
// asserts on output and exit codes. Scripts share the platform, so each
// uses app and user names of its own.
func TestScripts(t *testing.T) {
	p := testenv.Start(t)
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(env *testscript.Env) error {
			env.Setenv("PATH", filepath.Dir(p.Bin)+string(os.PathListSeparator)+os.Getenv("PATH"))
			for _, kv := range p.Env() {
				if k, v, ok := strings.Cut(kv, "="); ok && (strings.HasPrefix(k, "XDG_") || strings.HasPrefix(k, "PADDOCK_")) {
					env.Setenv(k, v)
				}
			}
			env.Setenv("ADMIN_TOKEN", p.Token)
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			// setenv-file VAR FILE sets VAR to FILE's first line: a token
			// a command printed, say.
			"setenv-file": func(ts *testscript.TestScript, neg bool, args []string) {
				if neg || len(args) != 2 {
					ts.Fatalf("usage: setenv-file VAR FILE")
				}
				line, _, _ := strings.Cut(ts.ReadFile(args[1]), "\n")
				ts.Setenv(args[0], strings.TrimSpace(line))
			},
		},
	})
}
