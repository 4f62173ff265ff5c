// Package fence is STONITH for a twinbox pair (docs/architecture.md, failover/): it
// powers the peer off before this node promotes itself, through a fence
// device, and confirms it.
//
// The contract, which the failover driver relies on:
//
//   - Fence(ctx, device, timeout) returns nil only when the peer is
//     confirmed off: Off succeeded and then a Status query reported Off,
//     all within timeout. Anything else is an error, and the caller must
//     not promote.
//   - A timeout is a failure (ErrTimeout): an action cut short says nothing
//     about the peer. Off that succeeded without a confirming Status is
//     ErrNotConfirmed.
//   - Errors say which device, which action and why; for an external agent
//     (*AgentError) its exit code and the end of its stderr, a few hundred
//     bytes on one line. Option values (passwords) are never shown.
//
// Devices:
//
//   - Agent runs an external fence agent (fence_ipmilan, fence_virsh,
//     fence_aws, ...) with the fence-agents stdin protocol, as Pacemaker
//     does, and kills its whole process group when it outlives its time.
//   - Docker kills a container through the Docker Engine API on a unix
//     socket (the docker-compose lab).
//   - Process kills a local process named by a pid file (the loopback demo,
//     integration tests; PIDs are reused, so nothing more).
//   - Manual waits for an operator to confirm the peer is off.
//   - Fake is scripted, for tests of the failover driver.
//
// ServeAgent is the other side of the protocol: it runs a Device as a fence
// agent reading stdin, so that the built-in devices can be used by
// Pacemaker (`twinbox fence-agent docker|process`) and the tests drive the
// real protocol end to end. NewDockerFromOptions and NewProcessFromOptions
// build those devices from the agent's options (port= names the peer).
//
// Deciding when to fence and delaying one node's fencing so that both do
// not shoot each other at once belong to the failover driver, not here.
//
// Every device here is safe for concurrent use. The package works on Unix
// systems (process groups, signals); zombie detection reads Linux's /proc.
package fence
