package heartbeat_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twinbox/twinbox/failover/heartbeat"
)

var (
	testKey  = []byte("0123456789abcdef0123456789abcdef")
	otherKey = []byte("fedcba9876543210fedcba9876543210")
	t0       = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
)

func newVerifier(tb testing.TB, self string) *heartbeat.Verifier {
	tb.Helper()
	v, err := heartbeat.NewVerifier(testKey, self, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

func seal(tb testing.TB, key []byte, m *heartbeat.Message) []byte {
	tb.Helper()
	b, err := heartbeat.Seal(key, m)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func msg(counter uint64, sent time.Time) *heartbeat.Message {
	return &heartbeat.Message{Node: "alpha", Boot: 0xb007, Counter: counter, Sent: sent, Payload: []byte(`{"role":"active"}`)}
}

// envelope builds a datagram as the documented envelope says, with any
// version and body, correctly signed with key.
func envelope(key []byte, version byte, body []byte) []byte {
	b := []byte("TBHB")
	b = append(b, version)
	b = binary.BigEndian.AppendUint16(b, uint16(len(body)))
	b = append(b, body...)
	h := hmac.New(sha256.New, key)
	h.Write(b)
	return h.Sum(b)
}

// body returns the body of a sealed datagram.
func body(b []byte) []byte { return b[7 : len(b)-sha256.Size] }

func TestSealOpenRoundTrip(t *testing.T) {
	v := newVerifier(t, "beta")
	for _, m := range []*heartbeat.Message{
		msg(1, t0),
		{Node: "a", Boot: 0, Counter: 2, Sent: t0.Add(-time.Second)},
		{Node: strings.Repeat("n", heartbeat.MaxNode), Boot: ^uint64(0), Counter: ^uint64(0), Sent: t0.Add(time.Second),
			Payload: bytes.Repeat([]byte{0xff}, heartbeat.MaxPayload)},
	} {
		b := seal(t, testKey, m)
		if len(b) > heartbeat.MaxDatagram {
			t.Errorf("sealed %d bytes, above MaxDatagram %d", len(b), heartbeat.MaxDatagram)
		}
		got, err := v.Open("udp", b, t0)
		if err != nil {
			t.Fatalf("Open(Seal(%+v)): %v", m, err)
		}
		if got.Node != m.Node || got.Boot != m.Boot || got.Counter != m.Counter || !got.Sent.Equal(m.Sent) || !bytes.Equal(got.Payload, m.Payload) {
			t.Errorf("round trip: got %+v, want %+v", got, m)
		}
	}
}

func TestFlippedBit(t *testing.T) {
	v := newVerifier(t, "beta")
	b := seal(t, testKey, msg(1, t0))
	for i := range len(b) * 8 {
		c := bytes.Clone(b)
		c[i/8] ^= 1 << (i % 8)
		_, err := v.Open("udp", c, t0)
		if !errors.Is(err, heartbeat.ErrBadSignature) && !errors.Is(err, heartbeat.ErrFormat) {
			t.Fatalf("bit %d flipped: %v, want a bad signature or a format error", i, err)
		}
	}
	if _, err := v.Open("udp", b, t0); err != nil {
		t.Fatalf("the intact datagram after the flipped ones: %v", err)
	}
}

func TestWrongKey(t *testing.T) {
	v := newVerifier(t, "beta")
	_, err := v.Open("udp", seal(t, otherKey, msg(1, t0)), t0)
	if !errors.Is(err, heartbeat.ErrBadSignature) {
		t.Fatalf("wrong key: %v, want ErrBadSignature", err)
	}
}

func TestStale(t *testing.T) {
	v := newVerifier(t, "beta")
	for _, d := range []time.Duration{-31 * time.Second, 31 * time.Second} {
		_, err := v.Open("udp", seal(t, testKey, msg(1, t0.Add(d))), t0)
		if !errors.Is(err, heartbeat.ErrStale) {
			t.Errorf("sent %v from now: %v, want ErrStale", d, err)
		}
	}
	for i, d := range []time.Duration{-29 * time.Second, 29 * time.Second} {
		if _, err := v.Open("udp", seal(t, testKey, msg(uint64(i+1), t0.Add(d))), t0); err != nil {
			t.Errorf("sent %v from now: %v, want accepted", d, err)
		}
	}

	short, err := heartbeat.NewVerifier(testKey, "beta", &heartbeat.VerifierOptions{MaxSkew: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := short.Open("udp", seal(t, testKey, msg(1, t0.Add(-2*time.Second))), t0); !errors.Is(err, heartbeat.ErrStale) {
		t.Errorf("MaxSkew 1s, sent 2s ago: %v, want ErrStale", err)
	}
}

func TestReplay(t *testing.T) {
	v := newVerifier(t, "beta")
	b5 := seal(t, testKey, msg(5, t0))
	if _, err := v.Open("udp", b5, t0); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Open("udp", b5, t0); !errors.Is(err, heartbeat.ErrReplay) {
		t.Fatalf("same datagram twice on one path: %v, want ErrReplay", err)
	}
	if _, err := v.Open("nats", b5, t0); err != nil {
		t.Fatalf("same counter on the other path: %v, want accepted", err)
	}
	if _, err := v.Open("udp", seal(t, testKey, msg(4, t0)), t0); !errors.Is(err, heartbeat.ErrReplay) {
		t.Fatalf("lower counter: %v, want ErrReplay", err)
	}
	if _, err := v.Open("udp", seal(t, testKey, msg(6, t0)), t0); err != nil {
		t.Fatalf("next counter: %v", err)
	}

	// The sender restarts: a new boot starts its counter again.
	restarted := msg(1, t0.Add(time.Second))
	restarted.Boot = 0xb008
	if _, err := v.Open("udp", seal(t, testKey, restarted), t0.Add(time.Second)); err != nil {
		t.Fatalf("new boot, fresh: %v, want accepted", err)
	}
	// A message of the old boot replayed after the restart is still one.
	if _, err := v.Open("udp", b5, t0.Add(time.Second)); !errors.Is(err, heartbeat.ErrReplay) {
		t.Fatalf("old boot replayed after the restart: %v, want ErrReplay", err)
	}
	// A rejected message does not move the mark.
	if _, err := v.Open("udp", seal(t, otherKey, msg(100, t0)), t0); err == nil {
		t.Fatal("wrong key accepted")
	}
	if _, err := v.Open("udp", seal(t, testKey, msg(7, t0)), t0); err != nil {
		t.Fatalf("counter 7 after a forged 100: %v", err)
	}

	got := v.Rejected()
	if got["udp"]["replay"] != 3 || got["udp"]["signature"] != 1 || len(got["nats"]) != 0 {
		t.Errorf("Rejected() = %v, want udp replay 3, signature 1, nothing on nats", got)
	}
}

func TestVersion(t *testing.T) {
	v := newVerifier(t, "beta")
	b := envelope(testKey, 2, body(seal(t, testKey, msg(1, t0))))
	_, err := v.Open("udp", b, t0)
	if !errors.Is(err, heartbeat.ErrVersion) {
		t.Fatalf("version 2: %v, want ErrVersion", err)
	}
	if s := err.Error(); !strings.Contains(s, "2") || !strings.Contains(s, "1") {
		t.Errorf("error %q should name both versions (2 and 1)", s)
	}
	// Another version under a wrong key is a forgery first.
	if _, err := v.Open("udp", envelope(otherKey, 2, nil), t0); !errors.Is(err, heartbeat.ErrBadSignature) {
		t.Errorf("version 2, wrong key: %v, want ErrBadSignature", err)
	}
}

func TestSelf(t *testing.T) {
	v := newVerifier(t, "alpha")
	if _, err := v.Open("udp", seal(t, testKey, msg(1, t0)), t0); !errors.Is(err, heartbeat.ErrSelf) {
		t.Fatalf("own name: %v, want ErrSelf", err)
	}
}

func TestMalformed(t *testing.T) {
	v := newVerifier(t, "beta")
	b := seal(t, testKey, msg(1, t0))
	cases := map[string][]byte{
		"nil":        nil,
		"empty":      {},
		"one more":   append(bytes.Clone(b), 0),
		"huge":       make([]byte, 1<<16),
		"above max":  make([]byte, heartbeat.MaxDatagram+1),
		"not magic":  append([]byte("XXXX"), b[4:]...),
		"no body":    envelope(testKey, 1, nil),
		"short body": envelope(testKey, 1, []byte{5, 'a'}),
	}
	for i := range len(b) {
		cases[fmt.Sprintf("truncated to %d bytes", i)] = b[:i]
	}
	// Correctly signed bodies that do not parse (a buggy peer).
	good := body(b)
	nodeLen := int(good[0])
	payAt := 1 + nodeLen + 24
	zeroNode := bytes.Clone(good)
	zeroNode[0] = 0
	longNode := bytes.Clone(good)
	longNode[0] = 200
	payTooLong := bytes.Clone(good)
	binary.BigEndian.PutUint16(payTooLong[payAt:], uint16(len(good)-payAt-2+1))
	payHuge := bytes.Clone(good)
	binary.BigEndian.PutUint16(payHuge[payAt:], 0xffff)
	cases["node length 0"] = envelope(testKey, 1, zeroNode)
	cases["node length 200"] = envelope(testKey, 1, longNode)
	cases["payload length past the end"] = envelope(testKey, 1, payTooLong)
	cases["payload length 65535"] = envelope(testKey, 1, payHuge)
	cases["trailing byte"] = envelope(testKey, 1, append(bytes.Clone(good), 0))
	cases["payload above MaxPayload"] = envelope(testKey, 1, bigPayloadBody())

	for name, c := range cases {
		if _, err := v.Open("udp", c, t0); !errors.Is(err, heartbeat.ErrFormat) {
			t.Errorf("%s (%d bytes): %v, want ErrFormat", name, len(c), err)
		}
	}
}

// bigPayloadBody is a well-formed version 1 body whose payload is one
// byte above MaxPayload.
func bigPayloadBody() []byte {
	b := []byte{1, 'a'}
	b = binary.BigEndian.AppendUint64(b, 1)
	b = binary.BigEndian.AppendUint64(b, 1)
	b = binary.BigEndian.AppendUint64(b, uint64(t0.UnixNano()))
	b = binary.BigEndian.AppendUint16(b, heartbeat.MaxPayload+1)
	return append(b, make([]byte, heartbeat.MaxPayload+1)...)
}

func TestNewVerifierErrors(t *testing.T) {
	_, err := heartbeat.NewVerifier([]byte("short"), "", &heartbeat.VerifierOptions{MaxSkew: -1})
	if err == nil {
		t.Fatal("NewVerifier accepted a 5-byte key, no name and a negative skew")
	}
	for _, want := range []string{"key: 5 bytes, at least 16", "node", "max skew"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestSealErrors(t *testing.T) {
	for name, c := range map[string]struct {
		key []byte
		m   *heartbeat.Message
	}{
		"short key":   {[]byte("short"), msg(1, t0)},
		"nil message": {testKey, nil},
		"no node":     {testKey, &heartbeat.Message{Sent: t0}},
		"long node":   {testKey, &heartbeat.Message{Node: strings.Repeat("n", heartbeat.MaxNode+1), Sent: t0}},
		"big payload": {testKey, &heartbeat.Message{Node: "a", Sent: t0, Payload: make([]byte, heartbeat.MaxPayload+1)}},
	} {
		if b, err := heartbeat.Seal(c.key, c.m); err == nil {
			t.Errorf("%s: Seal gave %d bytes, want an error", name, len(b))
		}
	}
}

func TestReason(t *testing.T) {
	for err, want := range map[error]string{
		heartbeat.ErrBadSignature: "signature", heartbeat.ErrStale: "stale", heartbeat.ErrReplay: "replay",
		heartbeat.ErrVersion: "version", heartbeat.ErrFormat: "format", heartbeat.ErrSelf: "self",
		errors.New("other"): "",
	} {
		if got := heartbeat.Reason(errors.Join(errors.New("x"), err)); got != want {
			t.Errorf("Reason(%v) = %q, want %q", err, got, want)
		}
	}
}

// FuzzOpen: Open never panics, and every refusal has a reason. Each input
// is tried as a whole datagram and as the body of a correctly signed one,
// so the fuzzer reaches the decoder behind the signature.
func FuzzOpen(f *testing.F) {
	good, err := heartbeat.Seal(testKey, msg(1, t0))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(body(good))
	f.Add([]byte{})
	f.Add(good[:10])
	f.Add(bigPayloadBody())
	f.Fuzz(func(t *testing.T, b []byte) {
		v := newVerifier(t, "beta")
		for _, d := range [][]byte{b, envelope(testKey, heartbeat.Version, b)} {
			m, err := v.Open("udp", d, t0)
			if err != nil {
				if m != nil || heartbeat.Reason(err) == "" {
					t.Fatalf("Open: %v (message %v); every refusal needs a reason and no message", err, m)
				}
				continue
			}
			if len(m.Node) == 0 || len(m.Node) > heartbeat.MaxNode || len(m.Payload) > heartbeat.MaxPayload {
				t.Fatalf("accepted a message outside the limits: %+v", m)
			}
			// What was accepted seals back to the same bytes.
			if again := seal(t, testKey, m); !bytes.Equal(again, d) {
				t.Fatalf("accepted %x, which seals back as %x", d, again)
			}
		}
	})
}
