package admin

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/twinbox/twinbox/failover"
)

// TestPromoteForceIsPerRequest: promote?force=1 forces that promote
// only; a plain promote after it is plain (the agent of a cluster manager
// sends both, and a forced one acknowledges alone).
func TestPromoteForceIsPerRequest(t *testing.T) {
	var got []failover.Command
	h := Handler(Options{Metrics: NewMetrics(), Command: func(_ context.Context, c failover.Command) error {
		got = append(got, c)
		return nil
	}})
	for _, path := range []string{"/failover/promote?force=1", "/failover/promote", "/failover/demote", "/failover/promote"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("POST %s: %d %s", path, rec.Code, rec.Body)
		}
	}
	want := []failover.Command{failover.CmdPromoteForce, failover.CmdPromote, failover.CmdDemote, failover.CmdPromote}
	if !slices.Equal(got, want) {
		t.Fatalf("commands %v, want %v", got, want)
	}
}
