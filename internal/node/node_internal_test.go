package node

import (
	"context"
	"errors"
	"testing"

	"github.com/twinbox/twinbox/protocols"
	"github.com/twinbox/twinbox/store"
)

// TestFlushRefusesWritesTheRoleNoLongerAllows: a write admitted before a
// switch whose flush starts after it is refused, uncommitted: all of a
// batch once the node is read-only, and those admitted for a commit path
// that has been replaced.
func TestFlushRefusesWritesTheRoleNoLongerAllows(t *testing.T) {
	ctx := context.Background()
	n, err := Open(ctx, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close(ctx)
	var got [][]store.Op
	n.UseCommit(func(ctx context.Context, ops []store.Op) ([]Outcome, error) {
		got = append(got, ops)
		return make([]Outcome, len(ops)), nil
	})
	old := n.role.Load().path
	n.UseCommit(n.role.Load().commit) // the same function, a new path
	cur := n.role.Load().path
	a, b := &store.CreateUser{User: "a"}, &store.CreateUser{User: "b"}

	out, err := n.flush(ctx, []admitted{{a, old}, {b, cur}})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(out[0].refused, protocols.ErrUnavailable) || out[1].refused != nil {
		t.Errorf("after UseCommit: refused %v and %v, want the old path's write only", out[0].refused, out[1].refused)
	}
	if len(got) != 1 || len(got[0]) != 1 || got[0][0] != b {
		t.Errorf("committed %v, want b alone", got)
	}

	n.SetReadOnly("demoted")
	got = nil
	out, err = n.flush(ctx, []admitted{{a, cur}, {b, cur}})
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range out {
		if !errors.Is(o.refused, protocols.ErrReadOnly) {
			t.Errorf("write %d after SetReadOnly: refused %v, want protocols.ErrReadOnly", i, o.refused)
		}
	}
	if got != nil {
		t.Errorf("committed %v on a read-only node", got)
	}
}
