package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
)

// MinTokenLen is the shortest admin token a node accepts: 16 bytes, as
// for the heartbeat key (32 random hex digits, `openssl rand -hex 16`).
const MinTokenLen = 16

// ErrTokenShort is returned by ReadToken for a token under MinTokenLen.
var ErrTokenShort = errors.New("admin: token shorter than 16 bytes")

// ReadToken reads an admin token from a file: its content without
// surrounding whitespace. A file others can read is refused, as ssh
// refuses a private key others can read.
func ReadToken(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("admin token: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("admin token: %s is readable by others (mode %04o); chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("admin token: %w", err)
	}
	t := []byte(strings.TrimSpace(string(b)))
	if len(t) < MinTokenLen {
		return nil, fmt.Errorf("%w: %s holds %d", ErrTokenShort, path, len(t))
	}
	return t, nil
}

// RequireToken lets a request through to h only when it carries
// "Authorization: Bearer TOKEN" with the node's token (compared in
// constant time) and does not come from a browser on another site. It
// wraps the whole admin mux of a TCP listener.
func RequireToken(token []byte, h http.Handler) http.Handler {
	want := sha256.Sum256(token)
	return refuseCrossSite(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, got, ok := strings.Cut(r.Header.Get("Authorization"), " ")
		ok = ok && strings.EqualFold(scheme, "Bearer") // schemes are case-insensitive (RFC 9110)
		// Hashing both sides gives equal lengths, so the comparison
		// says nothing of the token's length either.
		sum := sha256.Sum256([]byte(got))
		if !ok || subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="twinbox admin"`)
			http.Error(w, "admin: a bearer token is required (the node's admin_token_file)", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	}))
}

// Local is the admin mux of the unix socket: whoever can open the socket
// (its owner: the file is 0600 in a 0700 directory) is the operator.
// Browsers cannot reach a unix socket, but the cross-site check costs
// nothing and holds should a proxy forward to it.
func Local(h http.Handler) http.Handler { return refuseCrossSite(h) }

// refuseCrossSite refuses any request a browser made for a page: one
// with an Origin header (sent with every cross-origin request and every
// POST), or whose Sec-Fetch-Site says it came from a site. The CLI, curl
// and Prometheus send neither.
func refuseCrossSite(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		site := r.Header.Get("Sec-Fetch-Site")
		if r.Header.Get("Origin") != "" || (site != "" && site != "none") {
			http.Error(w, "admin: requests from a web page are refused", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}
