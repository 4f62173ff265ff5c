package admin

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestRequireToken(t *testing.T) {
	token := []byte("0123456789abcdef")
	h := RequireToken(token, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	for _, c := range []struct {
		name   string
		header map[string]string
		want   int
	}{
		{"none", nil, 401},
		{"empty bearer", map[string]string{"Authorization": "Bearer "}, 401},
		{"longer", map[string]string{"Authorization": "Bearer 0123456789abcdefX"}, 401},
		{"lower-case scheme", map[string]string{"Authorization": "bearer 0123456789abcdef"}, 200},
		{"basic", map[string]string{"Authorization": "Basic 0123456789abcdef"}, 401},
		{"right", map[string]string{"Authorization": "Bearer 0123456789abcdef"}, 200},
		{"right, user typed in the address bar", map[string]string{"Authorization": "Bearer 0123456789abcdef", "Sec-Fetch-Site": "none"}, 200},
		{"right, from a page", map[string]string{"Authorization": "Bearer 0123456789abcdef", "Origin": "http://127.0.0.1:8410"}, 403},
		{"right, cross-site", map[string]string{"Authorization": "Bearer 0123456789abcdef", "Sec-Fetch-Site": "cross-site"}, 403},
	} {
		r := httptest.NewRequest("POST", "/failover/demote", nil)
		for k, v := range c.header {
			r.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != c.want {
			t.Errorf("%s: %d, want %d", c.name, w.Code, c.want)
		}
		if w.Code == 401 && w.Header().Get("WWW-Authenticate") == "" {
			t.Errorf("%s: 401 without WWW-Authenticate", c.name)
		}
	}
}

func TestReadToken(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, perm os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), perm); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, perm)
		return p
	}
	if tok, err := ReadToken(write("good", "  0123456789abcdef0123\n", 0o600)); err != nil || string(tok) != "0123456789abcdef0123" {
		t.Errorf("good token: %q %v", tok, err)
	}
	if _, err := ReadToken(write("short", "short\n", 0o600)); err == nil {
		t.Error("a short token was accepted")
	}
	if _, err := ReadToken(write("open", "0123456789abcdef0123\n", 0o640)); err == nil {
		t.Error("a token readable by the group was accepted")
	}
}

// TestClientOverSocket: a path is a unix socket, and no token is sent
// over it.
func TestClientOverSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), SocketName)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			http.Error(w, "token sent over the socket", 400)
			return
		}
		w.Write([]byte(`{"node":"a"}`))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	for _, addr := range []string{sock, "unix:" + sock} {
		var st Status
		if err := NewClient(addr, "secret-token-123456", 10*time.Second).GetJSON(context.Background(), "/status", &st); err != nil || st.Node != "a" {
			t.Errorf("%s: %+v %v", addr, st, err)
		}
	}
}
