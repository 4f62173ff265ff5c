package users

import (
	"fmt"
	"testing"
	"time"
)

// The failure counts stay bounded whatever the number of names tried.
func TestStrikesBounded(t *testing.T) {
	c := newStrikes(100)
	now := time.Now()
	for i := range 10_000 {
		c.fail(fmt.Sprint(i), now, time.Hour)
	}
	if n, m := c.order.Len(), len(c.byKey); n != 100 || m != 100 {
		t.Fatalf("%d entries in the list, %d in the map, want 100", n, m)
	}
	if c.get("9999", now, time.Hour).count() != 1 || c.get("0", now, time.Hour) != nil {
		t.Error("not the oldest that were dropped")
	}
}
