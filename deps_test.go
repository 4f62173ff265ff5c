package twinbox_test

import (
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/twinbox/twinbox"

// allowed lists, for each top-level package area, the project areas it may
// depend on, directly or through others (DESIGN.md, "Dependency direction").
// cmd wires everything; integration tests may use anything; nothing may
// import cmd or integration.
var allowed = map[string][]string{
	"store":     {},
	"dedupe":    {"store"},
	"cache":     {"store"},
	"replog":    {"store", "dedupe"},
	"failover":  {"replog", "store", "dedupe"},
	"protocols": {"store", "cache", "dedupe"},
	// Shared internals, each its own area.
	"internal/node":     {"store", "cache", "dedupe", "protocols"}, // the standalone write/read path
	"internal/loadgen":  {},
	"internal/testmail": {},
	// Test support that starts a whole node, as cmd does.
	"protocols/internal": {"store", "cache", "dedupe", "protocols", "internal/node"},
}

// area returns the top-level project directory of an import path, or "" for
// a package outside the project.
func area(path string) string {
	rest, ok := strings.CutPrefix(path, module+"/")
	if !ok {
		return ""
	}
	a, sub, _ := strings.Cut(rest, "/")
	if a == "internal" || (a == "protocols" && strings.HasPrefix(sub, "internal")) {
		next, _, _ := strings.Cut(sub, "/")
		if a == "protocols" {
			return "protocols/internal"
		}
		return a + "/" + next
	}
	return a
}

type pkg struct {
	ImportPath string
	Deps       []string
}

// violations returns one line per forbidden dependency.
func violations(pkgs []pkg) []string {
	var out []string
	for _, p := range pkgs {
		from := area(p.ImportPath)
		for _, d := range p.Deps {
			to := area(d)
			if to == "" || to == from {
				continue
			}
			bad := false
			switch {
			case to == "cmd" || to == "integration":
				bad = true
			case from == "cmd" || from == "integration" || from == "":
			default:
				rules, known := allowed[from]
				bad = !known || !slices.Contains(rules, to)
			}
			if bad {
				out = append(out, fmt.Sprintf("%s depends on %s", p.ImportPath, d))
			}
		}
	}
	return out
}

func TestDependencyDirection(t *testing.T) {
	out, err := exec.Command("go", "list", "-json=ImportPath,Deps", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	areas := map[string]bool{}
	for _, p := range pkgs {
		areas[area(p.ImportPath)] = true
	}
	for _, want := range []string{"store", "dedupe", "cache", "cmd"} {
		if !areas[want] {
			t.Fatalf("go list did not report package area %q; the check would be empty", want)
		}
	}
	for _, v := range violations(pkgs) {
		t.Error(v)
	}
}

// TestViolationsDetected keeps the checker honest.
func TestViolationsDetected(t *testing.T) {
	got := violations([]pkg{
		{module + "/store", []string{module + "/dedupe"}},
		{module + "/protocols/imap", []string{module + "/store", module + "/replog"}},
		{module + "/dedupe", []string{module + "/store", "fmt"}},
		{module + "/cmd/twinbox", []string{module + "/store", module + "/replog"}},
		{module + "/cache", []string{module + "/integration"}},
	})
	want := []string{
		module + "/store depends on " + module + "/dedupe",
		module + "/protocols/imap depends on " + module + "/replog",
		module + "/cache depends on " + module + "/integration",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("violations = %q\nwant %q", got, want)
	}
}
