package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/twinbox/twinbox/failover/fence"
)

const roleUsage = `usage: twinbox switchover|promote [--force]|demote|fence confirm [--admin SOCKET|HOST:PORT]

Operator role changes, sent to a running node's admin API (by default its
socket, TWINBOX_DATA/admin.sock; over TCP with --admin-token-file):

  switchover      hand the active role to the other node (planned, no loss):
                  on the active it drains and hands over; on the passive it
                  asks the active to
  promote         on a passive: leave standby and take the active role (a
                  switchover if the peer is active)
  promote --force on a passive: become active now, without fencing; you vouch
                  that the peer is not writing
  demote          on the active: hand over (if the peer is up) and stay
                  standby until promote
  fence confirm   with fence_agent = manual: the peer is powered off

With external = true (a cluster manager such as Pacemaker decides the
role, ops/ocf/twinbox): promote makes a passive active (on an active: wait
for the peer again), promote --force does so acknowledging alone (the
manager fenced the peer), demote hands over and becomes passive.

Flags:`

// runRole sends an operator's command to a node: switchover, promote,
// demote or fence confirm.
func runRole(ctx context.Context, name string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	af := addAdminFlags(fs, name)
	force := fs.Bool("force", false, "promote: without fencing")
	fs.Usage = func() { fmt.Fprintln(stderr, roleUsage); fs.PrintDefaults() }
	path := map[string]string{"switchover": "switchover", "promote": "promote", "demote": "demote", "fence": "fence-confirm"}[name]
	if name == "fence" {
		if len(args) == 0 || args[0] != "confirm" {
			fs.Usage()
			return fmt.Errorf("%w: fence takes the subcommand confirm", errUsage)
		}
		args = args[1:]
	}
	if help, err := parseFlags(fs, args, name); help || err != nil {
		return err
	}
	if *force && name != "promote" {
		return fmt.Errorf("%w: --force is for promote", errUsage)
	}
	path = "/failover/" + path
	if *force {
		path += "?force=1"
	}
	c, err := af.client(*af.addr, 15*time.Second)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	code, body, err := c.Do(ctx, "POST", path, 64<<10)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	msg := strings.TrimSpace(string(body))
	switch code {
	case http.StatusOK:
		fmt.Fprintln(stdout, msg)
		return nil
	case http.StatusNotFound, http.StatusMethodNotAllowed:
		return fmt.Errorf("%s: the node at %s does not take role commands (failover = false and external = false)", name, c.Addr)
	}
	return fmt.Errorf("%s: %s", name, msg)
}

const fenceAgentUsage = `usage: twinbox fence-agent process|docker < OPTIONS

A fence agent speaking the fence-agents stdin protocol (as fence_ipmilan and
fence_virsh do, so Pacemaker can run it too): it reads key=value lines
(action=off|on|reboot|status|monitor|metadata, port=...) and exits 0 on
success (status: 0 on, 2 off), 1 on failure.

  process   port= is a pid file; off kills that process (SIGKILL)
  docker    port= is a container; socket= the Docker Engine API socket
            (default /var/run/docker.sock)`

// runFenceAgent is `twinbox fence-agent`: a built-in device behind the
// fence-agents protocol.
func runFenceAgent(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) != 1 {
		fmt.Fprintln(stderr, fenceAgentUsage)
		return fmt.Errorf("%w: fence-agent takes process or docker", errUsage)
	}
	var newDevice func(map[string]string) (fence.Device, error)
	switch args[0] {
	case "process":
		newDevice = fence.NewProcessFromOptions
	case "docker":
		newDevice = fence.NewDockerFromOptions
	case "-h", "--help", "help":
		fmt.Fprintln(stdout, fenceAgentUsage)
		return nil
	default:
		fmt.Fprintln(stderr, fenceAgentUsage)
		return fmt.Errorf("%w: unknown fence device %q", errUsage, args[0])
	}
	if code := fence.ServeAgent(stdin, stdout, stderr, newDevice); code != 0 {
		return exitError{code}
	}
	return nil
}
