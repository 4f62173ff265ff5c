package loadgen

import (
	"bytes"
	"math/rand/v2"
)

// SampleMessage returns a message as a delivery load of this size sends
// it (same generator, same shape), from the seed: for a report to compare
// what travelled with what was sent, e.g. how well the messages compress.
func SampleMessage(size int, seed uint64) []byte {
	if size <= 0 {
		size = DefaultMessageSize
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	g := newMessageGen(size, DefaultDomain, rng)
	var buf bytes.Buffer
	return bytes.Clone(g.build(&buf, rng, 0, seed, DefaultUserPrefix+"1@"+DefaultDomain))
}
