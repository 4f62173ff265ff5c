package loadgen

import (
	"bytes"
	"testing"
)

func TestSampleMessage(t *testing.T) {
	a, b := SampleMessage(10240, 1), SampleMessage(10240, 2)
	if len(a) != 10240 || len(b) != 10240 {
		t.Fatalf("sizes %d and %d, want 10240", len(a), len(b))
	}
	if bytes.Equal(a, b) {
		t.Error("two seeds gave the same message")
	}
	if !bytes.Contains(a, []byte("\r\n\r\n")) || !bytes.HasPrefix(a, []byte("From: ")) {
		t.Errorf("not a message:\n%.200s", a)
	}
	if n := len(SampleMessage(0, 3)); n != DefaultMessageSize {
		t.Errorf("size 0 gave %d bytes, want the default %d", n, DefaultMessageSize)
	}
}
