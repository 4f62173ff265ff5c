package node_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/twinbox/twinbox/internal/node"
	"github.com/twinbox/twinbox/store"
)

// TestSyncUsersCreatesEveryUserInFewCommits: the users of a passwd-file
// the store lacks are all created, and concurrently, so that group commit
// takes many per fsync (and, on an active, per wait for the passive).
func TestSyncUsersCreatesEveryUserInFewCommits(t *testing.T) {
	ctx := context.Background()
	n, err := node.Open(ctx, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close(ctx)
	if _, err := n.Write(ctx, &store.CreateUser{User: "user0"}); err != nil {
		t.Fatal(err)
	}
	users := make([]string, 500)
	for i := range users {
		users[i] = fmt.Sprintf("user%d", i)
	}
	before := n.Stats().Commit
	n.SyncUsers(ctx, users)
	for _, u := range users {
		if ok, err := n.Store().HasUser(u); err != nil || !ok {
			t.Fatalf("%s not in the store after SyncUsers (%v)", u, err)
		}
	}
	after := n.Stats().Commit
	created, batches := after.Requests-before.Requests, after.Batches-before.Batches
	if created != 499 {
		t.Errorf("%d users written, want the 499 missing ones", created)
	}
	if batches >= created/2 {
		t.Errorf("%d users in %d commits: written one after the other", created, batches)
	}
	// Nothing left to do: a second pass writes nothing.
	n.SyncUsers(ctx, users)
	if again := n.Stats().Commit.Requests - after.Requests; again != 0 {
		t.Errorf("a second SyncUsers wrote %d times", again)
	}
}
