package cache

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps cache independent of the rest of the project
// (DESIGN: cache may import store; it chose to import nothing).
func TestDependencies(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not found:", err)
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	const self = "github.com/twinbox/twinbox/cache"
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "github.com/twinbox/twinbox/") && dep != self {
			t.Errorf("cache imports project package %s", dep)
		}
	}
}
