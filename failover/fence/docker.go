package fence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
)

// DefaultDockerSocket is where the Docker Engine API listens by default.
const DefaultDockerSocket = "/var/run/docker.sock"

// dockerAPI is the Engine API version asked for: old enough for every
// maintained daemon (Docker 20.10 and later).
const dockerAPI = "/v1.41"

// dockerBodyLimit bounds what is read of an answer of the daemon.
const dockerBodyLimit = 1 << 20

// dockerName is what Docker accepts as a container name or ID.
var dockerName = regexp.MustCompile(`^/?[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// Docker fences a peer that is a Docker container (the docker-compose lab)
// through the Docker Engine API on a unix socket: Off kills the container
// with SIGKILL, Status reports whether it is running, On starts it again.
//
// Docker does not apply a restart policy to a container killed through the
// API, but a container that comes back anyway is reported On, so Fence
// does not confirm it. A container removed once stopped (--rm) can no
// longer be looked up, so its Status is an error, not Off.
//
// A Docker is safe for concurrent use.
type Docker struct {
	container string
	socket    string
	client    *http.Client
}

var _ Switcher = (*Docker)(nil)

// NewDocker returns the fence device for the container (a name or an ID) of
// the Docker daemon listening on socket (DefaultDockerSocket when "").
// Nothing is asked of the daemon yet.
func NewDocker(container, socket string) (*Docker, error) {
	if !dockerName.MatchString(container) {
		return nil, fmt.Errorf("fence docker: container name %q: want letters, digits, '_', '.', '-'", container)
	}
	if socket == "" {
		socket = DefaultDockerSocket
	}
	transport := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConns: 1,
	}
	return &Docker{
		container: strings.TrimPrefix(container, "/"),
		socket:    socket,
		client:    &http.Client{Transport: transport},
	}, nil
}

// NewDockerFromOptions builds a Docker from fence-agent options: port= (or
// plug=, its newer name) is the container, socket= the daemon's socket
// (optional). Other options are ignored.
func NewDockerFromOptions(opts map[string]string) (Device, error) {
	name := portOption(opts)
	if name == "" {
		return nil, errors.New("fence docker: no port= option: which container is the peer?")
	}
	return NewDocker(name, opts["socket"])
}

// portOption is the peer named by fence-agent options: port=, or plug=,
// the name newer fence-agents use.
func portOption(opts map[string]string) string {
	if p := opts["port"]; p != "" {
		return p
	}
	return opts["plug"]
}

func (d *Docker) String() string {
	return fmt.Sprintf("fence docker %s (%s)", d.container, d.socket)
}

// Off kills the container with SIGKILL. A container that is not running is
// already off.
func (d *Docker) Off(ctx context.Context) error {
	status, msg, err := d.do(ctx, http.MethodPost, "/kill?signal=KILL", nil)
	switch {
	case err != nil:
		return d.error("kill", err)
	case status == http.StatusNoContent || status == http.StatusOK:
		return nil
	case status == http.StatusConflict && strings.Contains(msg, "is not running"):
		return nil
	}
	return d.error("kill", apiError(status, msg))
}

// On starts the container. One that is already running is already on.
func (d *Docker) On(ctx context.Context) error {
	status, msg, err := d.do(ctx, http.MethodPost, "/start", nil)
	switch {
	case err != nil:
		return d.error("start", err)
	case status == http.StatusNoContent || status == http.StatusOK || status == http.StatusNotModified:
		return nil
	}
	return d.error("start", apiError(status, msg))
}

// Status reports On while the container runs (paused and restarting
// included), Off once it has stopped.
func (d *Docker) Status(ctx context.Context) (Power, error) {
	var inspect struct {
		State *struct {
			Running    bool
			Restarting bool
		}
	}
	status, msg, err := d.do(ctx, http.MethodGet, "/json", &inspect)
	switch {
	case err != nil:
		return Unknown, d.error("inspect", err)
	case status != http.StatusOK:
		return Unknown, d.error("inspect", apiError(status, msg))
	case inspect.State == nil:
		return Unknown, d.error("inspect", errors.New("the answer has no State"))
	case inspect.State.Running || inspect.State.Restarting:
		return On, nil
	}
	return Off, nil
}

// do sends a request about the container; a 200 answer is decoded into out
// (when not nil), any other gives the API's message.
func (d *Docker) do(ctx context.Context, method, suffix string, out any) (status int, msg string, err error) {
	u := "http://docker" + dockerAPI + "/containers/" + url.PathEscape(d.container) + suffix
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := d.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return 0, "", &timeoutError{msg: "no answer from the Docker daemon in time: " + err.Error(), cause: err}
		}
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, dockerBodyLimit))
	if err != nil {
		return 0, "", fmt.Errorf("read the answer: %w", err)
	}
	if resp.StatusCode == http.StatusOK && out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			return 0, "", fmt.Errorf("decode the answer: %w", err)
		}
		return resp.StatusCode, "", nil
	}
	if resp.StatusCode >= 300 {
		var e struct{ Message string }
		if json.Unmarshal(body, &e) == nil && e.Message != "" {
			msg = e.Message
		} else {
			msg = string(body)
		}
		msg = trimOutput(msg, outputShow)
	}
	return resp.StatusCode, msg, nil
}

func apiError(status int, msg string) error {
	if msg == "" {
		return fmt.Errorf("%d %s", status, http.StatusText(status))
	}
	return fmt.Errorf("%d %s: %s", status, http.StatusText(status), msg)
}

func (d *Docker) error(op string, err error) error {
	return fmt.Errorf("fence docker %s (%s): %s: %w", d.container, d.socket, op, err)
}
