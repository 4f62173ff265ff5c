package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/twinbox/twinbox/failover"
	"github.com/twinbox/twinbox/pair"
)

// externalRole runs the operator's role commands of a node whose role an
// outside cluster manager decides (external = true; Pacemaker through
// ops/ocf/twinbox). The manager is trusted as Twinbox's own failover
// would be: it promotes one node only, and only after the other is
// demoted or fenced.
//
//   - promote: a passive becomes active at the next epoch, replicating
//     to its peer (sync mode waits for it). On an active, it waits for the
//     peer again (after promote --force: the peer came back).
//   - promote --force: the peer is off (the manager fenced or stopped
//     it): a passive becomes active acknowledging alone (degraded); an
//     active goes on alone.
//   - demote: the active hands over what its peer lacks and becomes
//     passive; with no peer to hand over to, it steps down anyway (what
//     it acknowledged alone is merged when the nodes meet again).
//   - switchover needs the other node: the manager does it as demote
//     here, promote there.
type externalRole struct {
	p  *pair.Pair
	lg *slog.Logger
}

func (e externalRole) command(ctx context.Context, c failover.Command) error {
	st := e.p.State()
	switch c {
	case failover.CmdPromote, failover.CmdPromoteForce:
		alone := c == failover.CmdPromoteForce
		if st.Role == pair.Active {
			e.p.SetDegraded(alone)
			e.lg.Info("external: already active", "alone", alone)
			return nil
		}
		epoch := max(st.Epoch, e.p.Position().LastEpoch) + 1
		if err := e.p.Promote(ctx, epoch, alone); err != nil {
			return fmt.Errorf("promote: %w", err)
		}
		if alone {
			e.p.SetDegraded(true)
		}
		e.lg.Warn("external: promoted by the cluster manager", "epoch", epoch, "alone", alone)
		return nil
	case failover.CmdDemote:
		if st.Role != pair.Active {
			return nil // already passive: demote is idempotent for the manager
		}
		_, err := e.p.Demote(ctx, true)
		if err != nil {
			e.lg.Warn("external: no handover to the peer; stepping down without it", "err", err)
			if _, err2 := e.p.Demote(ctx, false); err2 != nil {
				return fmt.Errorf("demote: %w", errors.Join(err, err2))
			}
		}
		e.lg.Warn("external: demoted by the cluster manager")
		return nil
	}
	return fmt.Errorf("%s: with external = true the cluster manager changes roles: demote here, promote there", c)
}
