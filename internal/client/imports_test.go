package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"go/parser"
	"go/token"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const module = "paddock.dev/paddock/"

// serverSide are the packages a client of the API must not depend on: it
// speaks the protocol (internal/wire), not the server's types.
var serverSide = []string{
	module + "internal/api",
	module + "internal/deploy",
	module + "internal/store",
	module + "internal/audit",
	module + "internal/runtime",
}

func isServerSide(pkg string) bool {
	for _, s := range serverSide {
		if pkg == s || strings.HasPrefix(pkg, s+"/") {
			return true
		}
	}
	return false
}

type listedPackage struct {
	ImportPath string
	Standard   bool
	Imports    []string
}

// goList runs `go list -deps -json` and returns every package listed.
func goList(t *testing.T, pkgs ...string) []listedPackage {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-deps", "-json"}, pkgs...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	var list []listedPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listedPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		list = append(list, p)
	}
	return list
}

// TestWireImportsOnlyTheStandardLibrary keeps the protocol's types free of
// anything a client would have to drag along.
func TestWireImportsOnlyTheStandardLibrary(t *testing.T) {
	for _, p := range goList(t, module+"internal/wire") {
		if !p.Standard && p.ImportPath != module+"internal/wire" {
			t.Errorf("internal/wire depends on %s: it may import only the standard library", p.ImportPath)
		}
	}
}

// TestClientImportsNoServerPackage checks the whole import graph of the
// client: nothing of the server's reaches it, directly or not.
func TestClientImportsNoServerPackage(t *testing.T) {
	all := goList(t, module+"internal/client")
	for _, p := range all {
		if isServerSide(p.ImportPath) {
			t.Errorf("internal/client depends on %s (through %s): use the types of internal/wire", p.ImportPath, importers(all, p.ImportPath))
		}
	}
}

// TestCLICommandsImportNoServerPackage checks the CLI: the commands a
// person types reach the server only through internal/client. The
// commands that run the server and its processes (up, and the hidden
// router, shim and cgexec) are the exception, and they live in server.go
// alone: no other file of the CLI may import what they do.
func TestCLICommandsImportNoServerPackage(t *testing.T) {
	runners := []string{module + "internal/daemon", module + "internal/router", module + "internal/runtime/process"}
	files, err := filepath.Glob(filepath.Join("..", "cli", "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("the CLI's files: %v %v", files, err)
	}
	var direct []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		parsed, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range parsed.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if slices.Contains(runners, path) {
				if filepath.Base(f) != "server.go" {
					t.Errorf("%s imports %s: only server.go, which runs the server, may", filepath.Base(f), path)
				}
				continue
			}
			if isServerSide(path) {
				t.Errorf("%s imports %s: commands reach the server through internal/client and internal/wire", filepath.Base(f), path)
			}
			if strings.HasPrefix(path, module) && !slices.Contains(direct, path) {
				direct = append(direct, path)
			}
		}
	}
	if len(direct) == 0 {
		t.Fatal("the CLI imports none of the module's packages: the test reads the wrong files")
	}
	all := goList(t, direct...)
	for _, p := range all {
		if isServerSide(p.ImportPath) {
			t.Errorf("the CLI's commands depend on %s through %s", p.ImportPath, importers(all, p.ImportPath))
		}
	}
}

// importers lists the packages of list that import pkg.
func importers(list []listedPackage, pkg string) string {
	var by []string
	for _, p := range list {
		if slices.Contains(p.Imports, pkg) {
			by = append(by, p.ImportPath)
		}
	}
	if len(by) == 0 {
		return "a direct import"
	}
	return strings.Join(by, ", ")
}
