package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestPrometheusRules: the alert rules parse (promtool check rules) and
// their unit tests pass (promtool test rules): two actives and no
// active fire per pair, a silent heartbeat path fires with its path.
func TestPrometheusRules(t *testing.T) {
	promtool := need(t, "promtool")
	for _, args := range [][]string{{"check", "rules", "twinbox.rules.yml"}, {"test", "rules", "twinbox.rules.test.yml"}} {
		r := runIn(t, "../ops/prometheus", promtool, args...)
		if r.code != 0 {
			t.Fatalf("promtool %v: exit %d\n%s%s", args, r.code, r.stdout, r.stderr)
		}
	}
}

// runIn runs a program in dir.
func runIn(t *testing.T, dir, prog string, args ...string) result {
	t.Helper()
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	return run(t, time.Minute, nil, nil, "/bin/sh", append([]string{"-c", `cd "$0" && exec "$@"`, abs, prog}, args...)...)
}

// dashboard is what TestMonitoring reads of the Grafana dashboard.
type dashboard struct {
	UID           string `json:"uid"`
	Title         string `json:"title"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []struct{ Name string } `json:"list"`
	} `json:"templating"`
	Panels []struct {
		ID      int                      `json:"id"`
		Type    string                   `json:"type"`
		Title   string                   `json:"title"`
		GridPos struct{ H, W, X, Y int } `json:"gridPos"`
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

// TestMonitoring runs a pair with failover and checks what a monitoring
// setup reads: /metrics passes promtool check metrics; the metrics a
// dashboard needs are there (build info, a gauge per role, heartbeat age
// by path, lag in seconds and entries, delivery histogram, fencing
// state); and the Grafana dashboard loads: its JSON has the fields
// Grafana needs, every query is valid PromQL (promtool) and names only
// metrics Twinbox exports.
func TestMonitoring(t *testing.T) {
	promtool := need(t, "promtool")
	p := newFOPair(t, nil)
	p.startBoth(t)
	active := p.waitActive(t, -1)
	n := p.nodes[active]
	n.send(t, message("for the histograms", "one"), "sender@example.org", "alice@localhost")
	var text string
	n.waitFor(t, 30*time.Second, "heartbeat ages on both paths", func() bool {
		_, b := n.get("/metrics")
		text = string(b)
		return strings.Contains(text, `twinbox_heartbeat_age_seconds{path="udp"}`) && strings.Contains(text, `twinbox_heartbeat_age_seconds{path="nats"}`)
	})
	r := run(t, time.Minute, nil, []byte(text), promtool, "check", "metrics")
	if r.code != 0 {
		t.Errorf("promtool check metrics: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{
		"twinbox_build_info{", `twinbox_role{role="active"} 1`, `twinbox_role{role="passive"} 0`, `twinbox_role{role="standalone"} 0`,
		"twinbox_replication_lag_seconds ", "twinbox_replication_lag_entries ", `twinbox_fencing_state{state="none"} 1`,
		`twinbox_delivery_duration_seconds_bucket{proto="smtp"`, `twinbox_fence_total{result="failure"} 0`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// The active's append and its wait for the passive, as histograms,
	// counted for the delivery above.
	for _, stage := range []string{"append", "peer_wait"} {
		m := regexp.MustCompile(`twinbox_replication_duration_seconds_count\{stage="` + stage + `"\} (\d+)`).FindStringSubmatch(text)
		if m == nil || m[1] == "0" {
			t.Errorf("/metrics: no %s observed in twinbox_replication_duration_seconds (%v)", stage, m)
		}
	}
	if strings.Contains(text, "_last_seconds -1") {
		t.Errorf("/metrics reports -1 for a heartbeat age")
	}
	// The passive's role gauge, without failover's own metrics needed.
	_, b := p.nodes[1-active].get("/metrics")
	if !strings.Contains(string(b), `twinbox_role{role="passive"} 1`) {
		t.Errorf("the passive's /metrics lacks twinbox_role{role=\"passive\"} 1")
	}

	raw, err := os.ReadFile("../ops/grafana/twinbox.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}
	if d.UID == "" || d.Title == "" || d.SchemaVersion < 30 || len(d.Panels) == 0 {
		t.Fatalf("dashboard: uid %q title %q schemaVersion %d, %d panels", d.UID, d.Title, d.SchemaVersion, len(d.Panels))
	}
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
	}
	source, err := os.ReadFile("../internal/admin/metrics.go")
	if err != nil {
		t.Fatal(err)
	}
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	ids := map[int]bool{}
	name := regexp.MustCompile(`\btwinbox_[a-z_]+`)
	for _, pn := range d.Panels {
		if ids[pn.ID] || pn.Type == "" || pn.Title == "" || len(pn.Targets) == 0 {
			t.Errorf("panel %d %q (%s): duplicate id, or no type, title or query", pn.ID, pn.Title, pn.Type)
		}
		ids[pn.ID] = true
		if g := pn.GridPos; g.W < 1 || g.H < 1 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside the 24 columns", pn.Title, g)
		}
		for i, tg := range pn.Targets {
			for _, v := range regexp.MustCompile(`\$\{?([a-z_]+)`).FindAllStringSubmatch(tg.Expr, -1) {
				if !vars[v[1]] && !strings.HasPrefix(v[1], "__") {
					t.Errorf("panel %q uses $%s, which the dashboard does not define", pn.Title, v[1])
				}
			}
			expr := strings.NewReplacer("$__rate_interval", "5m", "$job", ".*").Replace(tg.Expr)
			fmt.Fprintf(&rules, "      - record: panel_%d_%d\n        expr: %q\n", pn.ID, i, expr)
			for _, m := range name.FindAllString(expr, -1) {
				base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_sum"), "_count")
				if !strings.Contains(text, "# HELP "+base+" ") && !strings.Contains(string(source), `"`+base+`"`) &&
					!strings.Contains(string(source), `"`+strings.TrimSuffix(base, "_sessions")) {
					t.Errorf("panel %q queries %s, which Twinbox does not export", pn.Title, m)
				}
			}
		}
	}
	f := filepath.Join(t.TempDir(), "dashboard.rules.yml")
	os.WriteFile(f, []byte(rules.String()), 0o644)
	if r := run(t, time.Minute, nil, nil, promtool, "check", "rules", f); r.code != 0 {
		t.Errorf("the dashboard's queries are not all valid PromQL: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}
