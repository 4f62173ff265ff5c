package users

import "crypto/subtle"

// Traditional crypt(3) DES ({DES-CRYPT}, and {CRYPT} with a 13-character
// hash), as old passwd-files and doveadm pw -s DES-CRYPT have it: the
// password's first 8 characters, 7 bits each, are the DES key; the two
// salt characters swap bits of the expansion E; a zero block is encrypted
// 25 times. No maintained Go module implements it (it is insecure: a
// login with it should be moved to a strong scheme with twinbox user
// passwd), so it is here, written from the Seventh Edition's crypt.c with
// the DES tables of Go's crypto/des (BSD licence, same bit numbering:
// a table entry is a source bit counted from the least significant, an
// output position counted from the most significant).

// desCrypt is a DES crypt hash: its salt and 11 characters of result.
type desCrypt struct {
	hash string // 13 characters
}

func (d desCrypt) verify(password []byte) bool {
	got := desCryptHash(password, d.hash[:2])
	return subtle.ConstantTimeCompare([]byte(got), []byte(d.hash)) == 1
}

func (desCrypt) work() string { return "des-crypt" }

const cryptAlphabet = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// cryptValue is a crypt alphabet character's value (bad ones map as the
// Seventh Edition's code does, so that any salt gives the same hash).
func cryptValue(c byte) uint {
	if c > 'Z' {
		c -= 6
	}
	if c > '9' {
		c -= 7
	}
	return uint(c-'.') & 0x3f
}

func desPermute(src uint64, table []byte) (out uint64) {
	for pos, n := range table {
		out |= (src >> n & 1) << uint(len(table)-1-pos)
	}
	return out
}

// desCryptHash computes crypt(3) DES of password with a two-character
// salt: 13 characters.
func desCryptHash(password []byte, salt string) string {
	var key uint64
	for i := 0; i < 8; i++ {
		var c byte
		if i < len(password) {
			c = password[i]
		}
		key = key<<8 | uint64(c<<1)
	}
	// The salt's 12 bits: bit j of character i swaps E's outputs 6i+j
	// and 6i+j+24 (positions from the first, most significant, bit).
	var swaps [24]bool
	for i := 0; i < 2; i++ {
		v := cryptValue(salt[i])
		for j := 0; j < 6; j++ {
			swaps[6*i+j] = v>>j&1 == 1
		}
	}
	subkeys := desSubkeys(key)
	f := desRound(&swaps)
	var block uint64
	for n := 0; n < 25; n++ {
		block = desBlock(block, &subkeys, f)
	}
	out := []byte{salt[0], salt[1]}
	for i := 0; i < 11; i++ {
		// 66 bits: the block and two zero bits, 6 at a time from the top.
		shift := 64 - 6*(i+1)
		var v uint64
		if shift >= 0 {
			v = block >> uint(shift) & 0x3f
		} else {
			v = block << uint(-shift) & 0x3f
		}
		out = append(out, cryptAlphabet[v])
	}
	return string(out)
}

// desSubkeys is DES's key schedule.
func desSubkeys(key uint64) (subkeys [16]uint64) {
	pc1 := desPermute(key, desPC1[:])
	c, d := uint32(pc1>>28)&0x0fffffff, uint32(pc1)&0x0fffffff
	rot := [16]uint{1, 1, 2, 2, 2, 2, 2, 2, 1, 2, 2, 2, 2, 2, 2, 1}
	for r := 0; r < 16; r++ {
		c = (c<<rot[r] | c>>(28-rot[r])) & 0x0fffffff
		d = (d<<rot[r] | d>>(28-rot[r])) & 0x0fffffff
		subkeys[r] = desPermute(uint64(c)<<28|uint64(d), desPC2[:])
	}
	return subkeys
}

// desRound is DES's round function with crypt's salt: E's outputs p and
// p+24 swapped where swaps[p] is set.
func desRound(swaps *[24]bool) func(r uint32, k uint64) uint32 {
	return func(r uint32, k uint64) uint32 {
		e := desPermute(uint64(r), desE[:])
		for p := 0; p < 24; p++ {
			if swaps[p] {
				hi, lo := uint(47-p), uint(47-p-24)
				if (e >> hi & 1) != (e >> lo & 1) {
					e ^= 1<<hi | 1<<lo
				}
			}
		}
		x := e ^ k
		var out uint32
		for i := 0; i < 8; i++ {
			six := x >> uint(42-6*i) & 0x3f
			row := (six>>4)&2 | six&1
			col := six >> 1 & 0xf
			out |= uint32(desS[i][row][col]) << uint(28-4*i)
		}
		return uint32(desPermute(uint64(out), desP[:]))
	}
}

// desBlock encrypts one block with the subkeys and round function f.
func desBlock(block uint64, subkeys *[16]uint64, f func(uint32, uint64) uint32) uint64 {
	b := desPermute(block, desIP[:])
	l, r := uint32(b>>32), uint32(b)
	for i := 0; i < 16; i++ {
		l, r = r, l^f(r, subkeys[i])
	}
	return desPermute(uint64(r)<<32|uint64(l), desFP[:])
}

// Tables of Go's crypto/des (const.go), renamed.

var desIP = [64]byte{
	6, 14, 22, 30, 38, 46, 54, 62,
	4, 12, 20, 28, 36, 44, 52, 60,
	2, 10, 18, 26, 34, 42, 50, 58,
	0, 8, 16, 24, 32, 40, 48, 56,
	7, 15, 23, 31, 39, 47, 55, 63,
	5, 13, 21, 29, 37, 45, 53, 61,
	3, 11, 19, 27, 35, 43, 51, 59,
	1, 9, 17, 25, 33, 41, 49, 57,
}

var desFP = [64]byte{
	24, 56, 16, 48, 8, 40, 0, 32,
	25, 57, 17, 49, 9, 41, 1, 33,
	26, 58, 18, 50, 10, 42, 2, 34,
	27, 59, 19, 51, 11, 43, 3, 35,
	28, 60, 20, 52, 12, 44, 4, 36,
	29, 61, 21, 53, 13, 45, 5, 37,
	30, 62, 22, 54, 14, 46, 6, 38,
	31, 63, 23, 55, 15, 47, 7, 39,
}

var desE = [48]byte{
	0, 31, 30, 29, 28, 27, 28, 27,
	26, 25, 24, 23, 24, 23, 22, 21,
	20, 19, 20, 19, 18, 17, 16, 15,
	16, 15, 14, 13, 12, 11, 12, 11,
	10, 9, 8, 7, 8, 7, 6, 5,
	4, 3, 4, 3, 2, 1, 0, 31,
}

var desP = [32]byte{
	16, 25, 12, 11, 3, 20, 4, 15,
	31, 17, 9, 6, 27, 14, 1, 22,
	30, 24, 8, 18, 0, 5, 29, 23,
	13, 19, 2, 26, 10, 21, 28, 7,
}

var desPC1 = [56]byte{
	7, 15, 23, 31, 39, 47, 55, 63,
	6, 14, 22, 30, 38, 46, 54, 62,
	5, 13, 21, 29, 37, 45, 53, 61,
	4, 12, 20, 28, 1, 9, 17, 25,
	33, 41, 49, 57, 2, 10, 18, 26,
	34, 42, 50, 58, 3, 11, 19, 27,
	35, 43, 51, 59, 36, 44, 52, 60,
}

var desPC2 = [48]byte{
	42, 39, 45, 32, 55, 51, 53, 28,
	41, 50, 35, 46, 33, 37, 44, 52,
	30, 48, 40, 49, 29, 36, 43, 54,
	15, 4, 25, 19, 9, 1, 26, 16,
	5, 11, 23, 8, 12, 7, 17, 0,
	22, 3, 10, 14, 6, 20, 27, 24,
}

var desS = [8][4][16]uint8{
	// S-box 1
	{
		{14, 4, 13, 1, 2, 15, 11, 8, 3, 10, 6, 12, 5, 9, 0, 7},
		{0, 15, 7, 4, 14, 2, 13, 1, 10, 6, 12, 11, 9, 5, 3, 8},
		{4, 1, 14, 8, 13, 6, 2, 11, 15, 12, 9, 7, 3, 10, 5, 0},
		{15, 12, 8, 2, 4, 9, 1, 7, 5, 11, 3, 14, 10, 0, 6, 13},
	},
	// S-box 2
	{
		{15, 1, 8, 14, 6, 11, 3, 4, 9, 7, 2, 13, 12, 0, 5, 10},
		{3, 13, 4, 7, 15, 2, 8, 14, 12, 0, 1, 10, 6, 9, 11, 5},
		{0, 14, 7, 11, 10, 4, 13, 1, 5, 8, 12, 6, 9, 3, 2, 15},
		{13, 8, 10, 1, 3, 15, 4, 2, 11, 6, 7, 12, 0, 5, 14, 9},
	},
	// S-box 3
	{
		{10, 0, 9, 14, 6, 3, 15, 5, 1, 13, 12, 7, 11, 4, 2, 8},
		{13, 7, 0, 9, 3, 4, 6, 10, 2, 8, 5, 14, 12, 11, 15, 1},
		{13, 6, 4, 9, 8, 15, 3, 0, 11, 1, 2, 12, 5, 10, 14, 7},
		{1, 10, 13, 0, 6, 9, 8, 7, 4, 15, 14, 3, 11, 5, 2, 12},
	},
	// S-box 4
	{
		{7, 13, 14, 3, 0, 6, 9, 10, 1, 2, 8, 5, 11, 12, 4, 15},
		{13, 8, 11, 5, 6, 15, 0, 3, 4, 7, 2, 12, 1, 10, 14, 9},
		{10, 6, 9, 0, 12, 11, 7, 13, 15, 1, 3, 14, 5, 2, 8, 4},
		{3, 15, 0, 6, 10, 1, 13, 8, 9, 4, 5, 11, 12, 7, 2, 14},
	},
	// S-box 5
	{
		{2, 12, 4, 1, 7, 10, 11, 6, 8, 5, 3, 15, 13, 0, 14, 9},
		{14, 11, 2, 12, 4, 7, 13, 1, 5, 0, 15, 10, 3, 9, 8, 6},
		{4, 2, 1, 11, 10, 13, 7, 8, 15, 9, 12, 5, 6, 3, 0, 14},
		{11, 8, 12, 7, 1, 14, 2, 13, 6, 15, 0, 9, 10, 4, 5, 3},
	},
	// S-box 6
	{
		{12, 1, 10, 15, 9, 2, 6, 8, 0, 13, 3, 4, 14, 7, 5, 11},
		{10, 15, 4, 2, 7, 12, 9, 5, 6, 1, 13, 14, 0, 11, 3, 8},
		{9, 14, 15, 5, 2, 8, 12, 3, 7, 0, 4, 10, 1, 13, 11, 6},
		{4, 3, 2, 12, 9, 5, 15, 10, 11, 14, 1, 7, 6, 0, 8, 13},
	},
	// S-box 7
	{
		{4, 11, 2, 14, 15, 0, 8, 13, 3, 12, 9, 7, 5, 10, 6, 1},
		{13, 0, 11, 7, 4, 9, 1, 10, 14, 3, 5, 12, 2, 15, 8, 6},
		{1, 4, 11, 13, 12, 3, 7, 14, 10, 15, 6, 8, 0, 5, 9, 2},
		{6, 11, 13, 8, 1, 4, 10, 7, 9, 5, 0, 15, 14, 2, 3, 12},
	},
	// S-box 8
	{
		{13, 2, 8, 4, 6, 15, 11, 1, 10, 9, 3, 14, 5, 0, 12, 7},
		{1, 15, 13, 8, 10, 3, 7, 4, 12, 5, 6, 11, 0, 14, 9, 2},
		{7, 11, 4, 1, 9, 12, 14, 2, 0, 6, 10, 13, 15, 3, 5, 8},
		{2, 1, 14, 7, 4, 10, 8, 13, 15, 12, 9, 0, 3, 5, 6, 11},
	},
}
