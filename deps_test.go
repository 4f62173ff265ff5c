package twinbox_test

import (
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/twinbox/twinbox"

// allowed lists, for each package area, the project areas its code
// imports directly (docs/architecture.md, "Dependencies"). It is exact:
// an edge the code does not use is an error too, so that the list (and
// the document) cannot go stale. cmd wires everything; nothing imports
// cmd or integration.
var allowed = map[string][]string{
	"store":     {},
	"dedupe":    {"store"},
	"cache":     {"store"},
	"replog":    {"store"},
	"failover":  {"internal/fsutil"},
	"protocols": {"store", "dedupe"},
	"pair":      {"store", "dedupe", "cache", "replog", "failover", "protocols"},
	"migrate":   {"store", "dedupe"},
	// Shared internals, each its own area.
	"internal/admin":       {"pair", "failover", "store"},
	"internal/harness":     {"internal/admin", "internal/poll", "internal/tlscert", "protocols", "store"},
	"internal/bench":       {"internal/harness", "internal/loadgen", "internal/admin", "failover"},
	"internal/demo":        {"internal/harness"},
	"internal/loadgen":     {},
	"internal/poll":        {},
	"internal/testmail":    {},
	"internal/tlscert":     {"internal/fsutil"},
	"internal/fsutil":      {},
	"internal/dovecottest": {},
	// Test support: packages whose name ends in "test".
	"failover/failovertest":        {"failover", "internal/poll"},
	"protocols/internal/prototest": {"pair", "protocols"},
}

// allowedInTests lists what a package's tests import beyond its code's
// edges; checked exactly, as allowed is.
var allowedInTests = map[string][]string{
	"cache":       {"dedupe"},
	"dedupe":      {"internal/testmail"},
	"failover":    {"failover/failovertest"},
	"pair":        {"failover/failovertest", "internal/harness", "internal/poll", "internal/tlscert"},
	"protocols":   {"internal/testmail", "protocols/internal/prototest", "internal/poll"},
	"replog":      {"dedupe", "internal/poll"},
	"migrate":     {"internal/dovecottest"},
	"store":       {"cache", "dedupe", "internal/testmail"},
	"cmd":         {"dedupe", "internal/testmail", "internal/poll", "internal/harness"},
	"integration": {"dedupe", "failover", "internal/testmail", "store", "internal/harness", "internal/poll", "internal/admin", "internal/dovecottest"},
}

// area returns the project area of an import path, or "" for a package
// outside the project: the top-level directory; internal/X; and a test
// support package (its name ends in "test") is an area of its own.
func area(path string) string {
	rest, ok := strings.CutPrefix(path, module+"/")
	if !ok {
		return ""
	}
	parts := strings.Split(rest, "/")
	switch {
	case len(parts) > 1 && strings.HasSuffix(parts[len(parts)-1], "test"):
		return rest
	case parts[0] == "internal" && len(parts) > 1:
		return "internal/" + parts[1]
	}
	return parts[0]
}

type pkg struct {
	ImportPath                         string
	Imports, TestImports, XTestImports []string
}

// edges returns, per area, the areas its code imports and those its tests
// import besides.
func edges(pkgs []pkg) (code, tests map[string]map[string]bool) {
	code, tests = map[string]map[string]bool{}, map[string]map[string]bool{}
	add := func(m map[string]map[string]bool, from string, imports []string) {
		for _, d := range imports {
			if to := area(d); to != "" && to != from {
				if m[from] == nil {
					m[from] = map[string]bool{}
				}
				m[from][to] = true
			}
		}
	}
	for _, p := range pkgs {
		from := area(p.ImportPath)
		add(code, from, p.Imports)
		add(tests, from, p.TestImports)
		add(tests, from, p.XTestImports)
	}
	for from, tos := range tests {
		for to := range code[from] {
			delete(tos, to)
		}
	}
	return code, tests
}

// violations returns one line per forbidden or unused edge (unused: of
// the areas pkgs hold).
func violations(pkgs []pkg) []string {
	code, tests := edges(pkgs)
	present := map[string]bool{}
	for _, p := range pkgs {
		present[area(p.ImportPath)] = true
	}
	var out []string
	check := func(kind string, got map[string]map[string]bool, want map[string][]string) {
		for from, tos := range got {
			for to := range tos {
				switch {
				case to == "cmd" || to == "integration":
					out = append(out, fmt.Sprintf("%s %s imports %s", from, kind, to))
				case from == "cmd" && kind == "code":
				case !slices.Contains(want[from], to):
					out = append(out, fmt.Sprintf("%s %s imports %s, which is not allowed", from, kind, to))
				}
			}
		}
		for from, tos := range want {
			if !present[from] {
				continue
			}
			for _, to := range tos {
				if !got[from][to] {
					out = append(out, fmt.Sprintf("%s %s is allowed to import %s but does not", from, kind, to))
				}
			}
		}
	}
	check("code", code, allowed)
	check("tests", tests, allowedInTests)
	sort.Strings(out)
	return out
}

func TestDependencyDirection(t *testing.T) {
	out, err := exec.Command("go", "list", "-json=ImportPath,Imports,TestImports,XTestImports", "./...").Output()
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
	for want := range allowed {
		if !areas[want] {
			t.Errorf("go list did not report package area %q; the check would be empty for it", want)
		}
	}
	for _, v := range violations(pkgs) {
		t.Error(v)
	}
}

// TestViolationsDetected keeps the checker honest.
func TestViolationsDetected(t *testing.T) {
	got := violations([]pkg{
		{ImportPath: module + "/store", Imports: []string{module + "/dedupe"}},
		{ImportPath: module + "/protocols/imap", Imports: []string{module + "/store", module + "/replog"}},
		{ImportPath: module + "/dedupe", Imports: []string{module + "/store", "fmt"}},
		{ImportPath: module + "/cmd/twinbox", Imports: []string{module + "/store", module + "/replog"}},
		{ImportPath: module + "/cache", Imports: []string{module + "/integration"}, XTestImports: []string{module + "/pair"}},
	})
	for _, want := range []string{
		"store code imports dedupe, which is not allowed",
		"protocols code imports replog, which is not allowed",
		"cache code imports integration",
		"cache tests imports pair, which is not allowed",
		"cache code is allowed to import store but does not",
		"protocols code is allowed to import dedupe but does not",
	} {
		if !slices.Contains(got, want) {
			t.Errorf("violations lack %q; got:\n%s", want, strings.Join(got, "\n"))
		}
	}
	for _, v := range got {
		if strings.HasPrefix(v, "dedupe code imports") || strings.HasPrefix(v, "cmd code imports") {
			t.Errorf("a fine edge reported: %q", v)
		}
	}
}
