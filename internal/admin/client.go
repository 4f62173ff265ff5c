package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"time"
)

// SocketName is the admin socket's name in a node's data directory.
const SocketName = "admin.sock"

// Client reaches a node's admin API: over its unix socket, or over TCP
// with the node's token.
type Client struct {
	// Addr is what the client was made for, as an operator wrote it.
	Addr string

	base  string // http://host:port, or http://twinbox over the socket
	token string
	http  *http.Client
}

// NewClient returns a client of the admin API at addr: a unix socket
// path (anything with a '/' and no "://", or "unix:PATH"), host:port or
// an http(s) URL. token, if not empty, is sent as a bearer token (TCP
// only: the socket needs none). timeout bounds each request (0: none).
func NewClient(addr, token string, timeout time.Duration) *Client {
	c := &Client{Addr: addr, token: token, http: &http.Client{Timeout: timeout}}
	path, isUnix := strings.CutPrefix(addr, "unix:")
	if !isUnix && strings.Contains(addr, "/") && !strings.Contains(addr, "://") {
		path, isUnix = addr, true
	}
	switch {
	case isUnix:
		c.base, c.token = "http://twinbox", ""
		var d net.Dialer
		c.http.Transport = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", path)
		}}
	case strings.Contains(addr, "://"):
		c.base = strings.TrimSuffix(addr, "/")
	default:
		c.base = "http://" + addr
	}
	return c
}

// SocketClient is a client of the socket in data directory data.
func SocketClient(data string, timeout time.Duration) *Client {
	return NewClient(filepath.Join(data, SocketName), "", timeout)
}

// Do sends a request for path (with its query) and returns the answer's
// status and body, at most limit bytes of it.
func (c *Client) Do(ctx context.Context, method, path string, limit int64) (code int, body []byte, err error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, nil)
	if err != nil {
		return 0, nil, fmt.Errorf("admin address %q: %w", c.Addr, err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("no node answers at %s: %w", c.Addr, err)
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", c.Addr, path, err)
	}
	return resp.StatusCode, body, nil
}

// GetJSON reads path and decodes it into v; an answer other than 200 is
// an error quoting its body.
func (c *Client) GetJSON(ctx context.Context, path string, v any) error {
	code, body, err := c.Do(ctx, "GET", path, 1<<30)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("%s answered %d to GET %s: %s", c.Addr, code, path, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%s GET %s: %w", c.Addr, path, err)
	}
	return nil
}

// Send sends req, whose URL names only a path (and query), to the node:
// over its socket or its address, with the token. For requests with a
// body (twinbox import's batches); the caller closes the answer's body.
func (c *Client) Send(req *http.Request) (*http.Response, error) {
	u, err := url.Parse(c.base + req.URL.RequestURI())
	if err != nil {
		return nil, fmt.Errorf("admin address %q: %w", c.Addr, err)
	}
	req.URL, req.Host = u, u.Host
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("no node answers at %s: %w", c.Addr, err)
	}
	return resp, nil
}
