package users

import (
	"crypto/des"
	"encoding/binary"
	"testing"
)

// TestDESCryptVectors: hashes made by doveadm pw -s DES-CRYPT and by
// glibc's crypt(3) (through Python's crypt module): salts across the
// alphabet, the empty password, more than 8 characters (ignored), bytes
// above ASCII.
func TestDESCryptVectors(t *testing.T) {
	for _, v := range []struct{ pw, hash string }{
		{"eight ch", "qyvGr9gpIg9/Y"},
		{"eight ch", "VaG6xX07td/is"},
		{"", "abmF1QH4PEr.E"},
		{"a", "./xT2u5QYaHcU"},
		{"longer than eight", "zz.JiwC6aD7cA"},
		{"password", "Z9x7Z2ipwW3t2"},
		{"pässwörd", "x.Beqy.U5WwmU"},
		{"12345678", "/.HRN5uKZbDhw"},
	} {
		if got := desCryptHash([]byte(v.pw), v.hash[:2]); got != v.hash {
			t.Errorf("DES crypt of %q with salt %q = %q, want %q", v.pw, v.hash[:2], got, v.hash)
		}
		if !(desCrypt{hash: v.hash}).verify([]byte(v.pw)) || (desCrypt{hash: v.hash}).verify([]byte(v.pw+"x")) && len(v.pw) < 8 {
			t.Errorf("verify %q against %s", v.pw, v.hash)
		}
	}
}

// TestDESBlockIsDES: with no salt the block function is DES, as
// crypto/des computes it.
func TestDESBlockIsDES(t *testing.T) {
	for _, key := range [][]byte{[]byte("\x02\x04\x08\x10\x20\x40\x80\xfe"), []byte("abcdefgh"), make([]byte, 8)} {
		for _, in := range []uint64{0, 1, 0x0123456789abcdef, ^uint64(0)} {
			c, err := des.NewCipher(key)
			if err != nil {
				t.Fatal(err)
			}
			var src, out [8]byte
			binary.BigEndian.PutUint64(src[:], in)
			c.Encrypt(out[:], src[:])
			subkeys := desSubkeys(binary.BigEndian.Uint64(key))
			if got, want := desBlock(in, &subkeys, desRound(&[24]bool{})), binary.BigEndian.Uint64(out[:]); got != want {
				t.Errorf("key %x block %x: %x, crypto/des %x", key, in, got, want)
			}
		}
	}
}
