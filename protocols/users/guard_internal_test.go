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
		c.add(fmt.Sprint(i), now, time.Hour)
	}
	if n, m := c.order.Len(), len(c.byKey); n != 100 || m != 100 {
		t.Fatalf("%d entries in the list, %d in the map, want 100", n, m)
	}
	if c.count("9999", now, time.Hour) != 1 || c.count("0", now, time.Hour) != 0 {
		t.Error("not the oldest that were dropped")
	}
}
