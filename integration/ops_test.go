package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHooks runs ops/hooks/on_promote and on_demote with the system
// programs they call replaced by stubs that record their arguments (and
// answer drbdadm role, mountpoint and ip addr show as a node would): the
// promote makes DRBD primary, mounts, adds the IP and sends gratuitous
// ARP; running it twice changes nothing more; the demote undoes it.
func TestHooks(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	calls := filepath.Join(dir, "calls")
	os.WriteFile(state, []byte(""), 0o644)
	stub := func(name, body string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte("#!/bin/sh\necho \""+name+" $*\" >> "+calls+"\n"+body), 0o755)
		return p
	}
	has := func(word string) string { return "grep -q " + word + " " + state }
	env := []string{
		"PATH=/usr/bin:/bin",
		"TWINBOX_SYSVOL_DIR=" + filepath.Join(dir, "sysvol"), "TWINBOX_SERVICE_IP=10.0.0.10/24", "TWINBOX_SERVICE_DEV=eth9",
		"DRBDADM=" + stub("drbdadm", `case $1 in
role) if `+has("primary")+`; then echo Primary/Secondary; else echo Secondary/Primary; fi;;
primary) echo primary >> `+state+`;;
secondary) sed -i /primary/d `+state+`;;
esac`),
		"MOUNT=" + stub("mount", "echo mounted >> "+state),
		"UMOUNT=" + stub("umount", "sed -i /mounted/d "+state),
		"MOUNTPOINT=" + stub("mountpoint", has("mounted")),
		"IP=" + stub("ip", `case $2 in
show) if `+has("ipaddr")+`; then echo "    inet 10.0.0.10/24 scope global eth9"; fi;;
add) echo ipaddr >> `+state+`;;
del) sed -i /ipaddr/d `+state+`;;
esac`),
		"ARPING=" + stub("arping", ""),
	}
	hook := func(name string) string {
		t.Helper()
		r := run(t, time.Minute, env, nil, "../ops/hooks/"+name)
		if r.code != 0 {
			t.Fatalf("%s: exit %d\n%s%s", name, r.code, r.stdout, r.stderr)
		}
		b, _ := os.ReadFile(calls)
		os.Remove(calls)
		return string(b)
	}
	got := hook("on_promote")
	for _, want := range []string{"drbdadm primary sysvol", "mount /dev/drbd0 ", "ip addr add 10.0.0.10/24 dev eth9", "arping -U -c 3 -I eth9 10.0.0.10"} {
		if !strings.Contains(got, want) {
			t.Errorf("on_promote did not run %q; it ran:\n%s", want, got)
		}
	}
	if again := hook("on_promote"); strings.Contains(again, "primary sysvol") || strings.Contains(again, "mount /dev") || strings.Contains(again, "addr add") {
		t.Errorf("on_promote on an active node changed something:\n%s", again)
	}
	got = hook("on_demote")
	for _, want := range []string{"ip addr del 10.0.0.10/24 dev eth9", "umount ", "drbdadm secondary sysvol"} {
		if !strings.Contains(got, want) {
			t.Errorf("on_demote did not run %q; it ran:\n%s", want, got)
		}
	}
	if b, _ := os.ReadFile(state); strings.TrimSpace(string(b)) != "" {
		t.Errorf("after on_demote the node still holds: %q", b)
	}
}

// TestSystemdUnit checks ops/systemd/twinbox.service with systemd-analyze
// verify, pointed at a real twinbox binary.
func TestSystemdUnit(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed")
	}
	bin := buildTwinbox(t)
	unit, err := os.ReadFile("../ops/systemd/twinbox.service")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "twinbox.service")
	os.WriteFile(p, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/twinbox", bin)), 0o644)
	r := run(t, time.Minute, nil, nil, sa, "verify", p)
	if out := string(r.stdout) + string(r.stderr); r.code != 0 || strings.Contains(out, "twinbox.service") {
		t.Fatalf("systemd-analyze verify: exit %d\n%s", r.code, out)
	}
}
