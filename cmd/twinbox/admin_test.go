package main

import (
	"context"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twinbox/twinbox/internal/admin"
)

// writeToken writes a token file of mode perm and returns its path.
func writeToken(t *testing.T, token string, perm os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(path, []byte(token+"\n"), perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil { // whatever the umask
		t.Fatal(err)
	}
	return path
}

// do sends a request with the headers given and returns the status.
func do(t *testing.T, method, url string, header ...string) int {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestAdminAccess (issue 14 D1): the admin API is a 0600 socket by
// default; over TCP it answers only requests with the token and none a
// web page made; metrics_addr serves /metrics and /healthz and nothing
// that reads users' data or changes the node.
func TestAdminAccess(t *testing.T) {
	const token = "0123456789abcdef0123456789abcdef"
	tokenFile := writeToken(t, token, 0o600)
	addrs, _, _ := startServe(t, "--admin-addr", "127.0.0.1:0", "--admin-token-file", tokenFile)

	sock := addrs["admin-socket"]
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatalf("admin socket %q: %v", sock, err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Mode().Type() != os.ModeSocket {
		t.Errorf("admin socket mode %v, want a socket of 0600", fi.Mode())
	}
	// The CLI over the socket, no token needed.
	out, errOut, err := runCmd(t, "status", "--admin", sock)
	if err != nil || !strings.Contains(out, "standalone") {
		t.Errorf("twinbox status over the socket: %v\n%s%s", err, out, errOut)
	}
	// ... and by default, the socket of TWINBOX_DATA.
	t.Setenv("TWINBOX_ADMIN_ADDR", "")
	t.Setenv("TWINBOX_DATA", filepath.Dir(sock))
	if out, errOut, err := runCmd(t, "status"); err != nil || !strings.Contains(out, "standalone") {
		t.Errorf("twinbox status with TWINBOX_DATA: %v\n%s%s", err, out, errOut)
	}

	tcp := "http://" + addrs["admin"]
	bearer := "Bearer " + token
	for _, c := range []struct {
		name, method, path string
		header             []string
		want               int
	}{
		{"no token", "GET", "/status", nil, http.StatusUnauthorized},
		{"no token, digest", "GET", "/digest", nil, http.StatusUnauthorized},
		{"no token, health", "GET", "/healthz", nil, http.StatusUnauthorized},
		{"no token, demote", "POST", "/failover/demote", nil, http.StatusUnauthorized},
		{"wrong token", "GET", "/status", []string{"Authorization", "Bearer " + strings.Repeat("x", len(token))}, http.StatusUnauthorized},
		{"token prefix", "GET", "/status", []string{"Authorization", bearer[:len(bearer)-1]}, http.StatusUnauthorized},
		{"basic auth", "GET", "/status", []string{"Authorization", "Basic " + token}, http.StatusUnauthorized},
		{"token", "GET", "/status", []string{"Authorization", bearer}, http.StatusOK},
		{"token, digest", "GET", "/digest", []string{"Authorization", bearer}, http.StatusOK},
		{"token, pprof off", "GET", "/debug/pprof/", []string{"Authorization", bearer}, http.StatusNotFound},
		{"from a page on another site", "POST", "/failover/demote", []string{"Authorization", bearer, "Origin", "http://evil.example"}, http.StatusForbidden},
		{"no-cors from a page", "POST", "/failover/demote", []string{"Origin", "null", "Sec-Fetch-Site", "cross-site"}, http.StatusForbidden},
		{"same-site page", "GET", "/status", []string{"Authorization", bearer, "Sec-Fetch-Site", "same-site"}, http.StatusForbidden},
	} {
		if got := do(t, c.method, tcp+c.path, c.header...); got != c.want {
			t.Errorf("TCP admin, %s: %s %s answered %d, want %d", c.name, c.method, c.path, got, c.want)
		}
	}
	// The CLI over TCP with the token file, and without.
	if out, errOut, err := runCmd(t, "status", "--admin", addrs["admin"], "--admin-token-file", tokenFile); err != nil || !strings.Contains(out, "standalone") {
		t.Errorf("twinbox status over TCP with the token: %v\n%s%s", err, out, errOut)
	}
	if _, _, err := runCmd(t, "status", "--admin", addrs["admin"]); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("twinbox status over TCP without the token: %v, want a 401", err)
	}

	metrics := "http://" + addrs["metrics"]
	for path, want := range map[string]int{"/metrics": 200, "/healthz": 200, "/status": 404, "/digest": 404, "/debug/pprof/": 404} {
		if got := do(t, "GET", metrics+path); got != want {
			t.Errorf("metrics_addr GET %s: %d, want %d", path, got, want)
		}
	}
	if got := do(t, "POST", metrics+"/failover/demote"); got != http.StatusNotFound && got != http.StatusMethodNotAllowed {
		t.Errorf("metrics_addr POST /failover/demote: %d", got)
	}
}

// TestAdminPprof: the profiler is served on the admin API only when
// admin_pprof is set, never on metrics_addr.
func TestAdminPprof(t *testing.T) {
	addrs, _, _ := startServe(t, "--admin-pprof=true")
	c := admin.NewClient(addrs["admin-socket"], "", 10*time.Second)
	code, _, err := c.Do(context.Background(), "GET", "/debug/pprof/", 1<<20)
	if err != nil || code != http.StatusOK {
		t.Errorf("pprof on the socket with admin_pprof: %d %v", code, err)
	}
	if got := do(t, "GET", "http://"+addrs["metrics"]+"/debug/pprof/"); got != http.StatusNotFound {
		t.Errorf("pprof on metrics_addr: %d", got)
	}
}

// TestAdminConfigRefused: a TCP admin listener without a good token file
// is a refusal to start, naming the setting.
func TestAdminConfigRefused(t *testing.T) {
	short := writeToken(t, "short", 0o600)
	open := writeToken(t, "0123456789abcdef0123456789abcdef", 0o644)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--admin-addr", "127.0.0.1:0"}, "needs admin_token_file"},
		{[]string{"--admin-addr", "127.0.0.1:0", "--admin-token-file", short}, "shorter than 16"},
		{[]string{"--admin-addr", "127.0.0.1:0", "--admin-token-file", open}, "readable by others"},
		{[]string{"--admin-addr", "127.0.0.1:0", "--admin-token-file", filepath.Join(t.TempDir(), "none")}, "no such file"},
		{[]string{"--admin-socket", "/" + strings.Repeat("x", 120)}, "admin_socket"},
	} {
		err := run(context.Background(), append([]string{"serve", "--data", t.TempDir()}, c.args...), io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("serve %v: %v, want an error with %q", c.args, err, c.want)
		}
	}
}

// TestDataPrivate (issue 14 D12): whatever the umask, the data directory
// and everything in it (Pebble's files, the JetStream log, the
// certificate's key) are private to the node's user once it runs, also
// files an older node left readable.
func TestDataPrivate(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	data := t.TempDir()
	if err := os.MkdirAll(filepath.Join(data, "store"), 0o755); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(data, "store", "LEFT-BY-AN-OLD-NODE")
	if err := os.WriteFile(stale, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(data, 0o755)
	_, stop, done := startServe(t, "--data", data)
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	files := 0
	filepath.WalkDir(data, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Error(err)
			return nil
		}
		fi, _ := d.Info()
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: mode %v, want nothing for group and others", path, fi.Mode())
		}
		files++
		return nil
	})
	if files < 10 {
		t.Errorf("only %d files under %s: did the store and the log start?", files, data)
	}
}
