package users

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"

	gcalgorithm "github.com/go-crypt/crypt/algorithm"
	"github.com/go-crypt/crypt/algorithm/md5crypt"
	"github.com/go-crypt/crypt/algorithm/scrypt"
	"github.com/go-crypt/crypt/algorithm/shacrypt"
	"github.com/go-crypt/x/yescrypt"
	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// A verifier is a stored password, parsed from a passwd-file's password
// field.
type verifier interface {
	// verify reports whether password is the stored one. Its time does
	// not depend on how much of the password is right.
	verify(password []byte) bool
	// work names what one verify costs: two verifiers with the same work
	// take the same time.
	work() string
}

// encoding of a scheme's stored value, as Dovecot names them after a dot:
// {SSHA512.HEX}, {PLAIN.B64}.
type pwEncoding int

const (
	encNone pwEncoding = iota
	encBase64
	encHex
)

// scheme is one of Dovecot's password schemes.
type scheme struct {
	enc pwEncoding // the encoding when the field names none
	// rawLen is the decoded length of a fixed-size digest; with it and no
	// encoding named, hex or base64 is told by the length, as Dovecot does.
	rawLen int
	parse  func(raw []byte) (verifier, error)
}

// schemes are the password schemes read, by Dovecot's names. A field
// without a {SCHEME} is {CRYPT}, passwd-file's default_pass_scheme.
var schemes = map[string]scheme{
	"BLF-CRYPT":    {parse: parseBcrypt},
	"SHA512-CRYPT": {parse: parseSHACrypt(shacrypt.VariantSHA512, "$6$")},
	"SHA256-CRYPT": {parse: parseSHACrypt(shacrypt.VariantSHA256, "$5$")},
	"MD5-CRYPT":    {parse: parseMD5Crypt},
	"MD5":          {parse: parseMD5},
	"CRYPT":        {parse: parseCrypt},
	"DES-CRYPT":    {parse: parseDESCrypt},
	"SSHA":         {enc: encBase64, parse: parseSalted("ssha", sha1.New)},
	"SSHA256":      {enc: encBase64, parse: parseSalted("ssha256", sha256.New)},
	"SSHA512":      {enc: encBase64, parse: parseSalted("ssha512", sha512.New)},
	"SMD5":         {enc: encBase64, parse: parseSalted("smd5", md5.New)},
	"SHA":          {enc: encBase64, rawLen: sha1.Size, parse: parseDigest(sha1.New)},
	"SHA1":         {enc: encBase64, rawLen: sha1.Size, parse: parseDigest(sha1.New)},
	"SHA256":       {enc: encBase64, rawLen: sha256.Size, parse: parseDigest(sha256.New)},
	"SHA512":       {enc: encBase64, rawLen: sha512.Size, parse: parseDigest(sha512.New)},
	"PLAIN-MD5":    {enc: encHex, rawLen: md5.Size, parse: parseDigest(md5.New)},
	"LDAP-MD5":     {enc: encBase64, rawLen: md5.Size, parse: parseDigest(md5.New)},
	"PLAIN":        {parse: parsePlain},
	"CLEAR":        {parse: parsePlain},
	"CLEARTEXT":    {parse: parsePlain},
	"CRAM-MD5":     {enc: encHex, rawLen: cramLen, parse: parseCRAM},
	"HMAC-MD5":     {enc: encHex, rawLen: cramLen, parse: parseCRAM},
	"PBKDF2":       {parse: parsePBKDF2},
	"ARGON2I":      {parse: parseArgon2("argon2i")},
	"ARGON2ID":     {parse: parseArgon2("argon2id")},
}

// schemeError is a field whose scheme is not one twinbox reads.
func schemeError(format string, a ...any) error {
	return &lineError{kind: ErrScheme, msg: fmt.Sprintf(format, a...)}
}

// parseField reads a password field, {SCHEME}value or a bare crypt(3)
// hash, and returns its verifier. Errors never hold the value.
func parseField(field string) (verifier, error) {
	name, value := "CRYPT", field
	if strings.HasPrefix(field, "{") {
		var ok bool
		name, value, ok = strings.Cut(field[1:], "}")
		if !ok {
			return nil, malformed("password scheme has no closing '}'")
		}
	}
	shown := "{" + shorten(name, 40) + "}"
	base, encName, hasEnc := strings.Cut(strings.ToUpper(name), ".")
	s, ok := schemes[base]
	if !ok {
		return nil, schemeError("password scheme %q is not one twinbox reads", shown)
	}
	enc := s.enc
	switch encName {
	case "":
		if hasEnc {
			return nil, schemeError("password scheme %q names no encoding after the dot", shown)
		}
	case "B64", "BASE64":
		enc = encBase64
	case "HEX":
		enc = encHex
	default:
		return nil, schemeError("password scheme %q has an unknown encoding (want .b64 or .hex)", shown)
	}
	if value == "" {
		return nil, malformed("%s password is empty", shown)
	}
	raw, err := decodeValue(value, enc, s.rawLen, hasEnc)
	if err != nil {
		return nil, malformed("%s: %v", shown, err)
	}
	v, err := s.parse(raw)
	if err != nil {
		var le *lineError
		if errors.As(err, &le) {
			le.msg = shown + ": " + le.msg
			return nil, le
		}
		return nil, malformed("%s: %v", shown, err)
	}
	return v, nil
}

// decodeValue decodes a stored value as Dovecot's password_decode does:
// a fixed-size digest whose encoding was not named is hex when its length
// says so and base64 otherwise.
func decodeValue(value string, enc pwEncoding, rawLen int, named bool) ([]byte, error) {
	if enc != encNone && rawLen != 0 && !named {
		enc = encBase64
		if len(value) == 2*rawLen {
			enc = encHex
		}
	}
	var raw []byte
	switch enc {
	case encNone:
		raw = []byte(value)
	case encHex:
		var err error
		if raw, err = hex.DecodeString(value); err != nil {
			if named || rawLen == 0 {
				return nil, errors.New("value is not hex")
			}
			// Some lengths are both; Dovecot then tries base64.
			enc = encBase64
		}
	}
	if enc == encBase64 {
		var err error
		raw, err = base64.StdEncoding.DecodeString(value)
		if err != nil {
			if raw, err = base64.RawStdEncoding.DecodeString(value); err != nil {
				return nil, errors.New("value is not base64")
			}
		}
	}
	if rawLen != 0 && len(raw) != rawLen {
		return nil, fmt.Errorf("value decodes to %d bytes, want %d", len(raw), rawLen)
	}
	return raw, nil
}

// bcryptHash is {BLF-CRYPT}: bcrypt, $2y$, $2b$ or $2a$.
type bcryptHash struct {
	hash []byte
	cost int
}

func parseBcrypt(raw []byte) (verifier, error) {
	h := string(raw)
	if err := checkBcrypt(h); err != nil {
		return nil, err
	}
	cost, _ := bcrypt.Cost(raw)
	return bcryptHash{hash: raw, cost: cost}, nil
}

func (b bcryptHash) verify(password []byte) bool {
	// Dovecot's bcrypt reads the first 72 bytes, Go's refuses more.
	if len(password) > MaxPassword {
		password = password[:MaxPassword]
	}
	return bcrypt.CompareHashAndPassword(b.hash, password) == nil
}

func (b bcryptHash) work() string { return "bcrypt/" + strconv.Itoa(b.cost) }

// checkBcrypt accepts a modular-crypt bcrypt hash, $2y$NN$ followed by 53
// characters of bcrypt's base64 alphabet. $2x$ (the hash of a buggy
// implementation) and the pre-1999 $2$ are refused.
func checkBcrypt(h string) error {
	if len(h) != 60 {
		return fmt.Errorf("bcrypt hash is %d characters, want 60", len(h))
	}
	if h[0] != '$' || h[1] != '2' || h[3] != '$' || h[6] != '$' {
		return errors.New("bcrypt hash does not start like $2y$NN$")
	}
	switch h[2] {
	case 'a', 'b', 'y':
	default:
		return fmt.Errorf("bcrypt variant $2%c$ is not supported (want $2y$, $2b$ or $2a$)", h[2])
	}
	if h[4] < '0' || h[4] > '9' || h[5] < '0' || h[5] > '9' {
		return errors.New("bcrypt cost is not two digits")
	}
	if i := badCryptChar(h[7:]); i >= 0 {
		return fmt.Errorf("bcrypt hash has %q at offset %d", h[7+i], 7+i)
	}
	if _, err := bcrypt.Cost([]byte(h)); err != nil {
		return fmt.Errorf("bcrypt hash: %w", err)
	}
	return nil
}

// badCryptChar returns the offset of the first byte of s outside crypt's
// base64 alphabet (./0-9A-Za-z), or -1.
func badCryptChar(s string) int {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '/') {
			return i
		}
	}
	return -1
}

// goCrypt is a crypt(3) hash checked by github.com/go-crypt/crypt.
type goCrypt struct {
	d    gcalgorithm.Digest
	cost string
}

func (g goCrypt) verify(password []byte) bool { return g.d.MatchBytes(password) }
func (g goCrypt) work() string                { return g.cost }

// parseSHACrypt reads SHA-crypt ($5$, $6$, with or without rounds=N$), as
// glibc and `doveadm pw -s SHA512-CRYPT` write it.
func parseSHACrypt(variant shacrypt.Variant, prefix string) func([]byte) (verifier, error) {
	keyLen := map[shacrypt.Variant]int{shacrypt.VariantSHA256: 43, shacrypt.VariantSHA512: 86}[variant]
	return func(raw []byte) (verifier, error) {
		h := string(raw)
		if !strings.HasPrefix(h, prefix) {
			return nil, fmt.Errorf("hash does not start with %s", prefix)
		}
		rounds := shacrypt.IterationsDefaultOmitted
		parts := strings.Split(h[len(prefix):], "$")
		if len(parts) == 3 {
			r, ok := strings.CutPrefix(parts[0], "rounds=")
			n, err := strconv.Atoi(r)
			if !ok || err != nil {
				return nil, errors.New("hash has a bad rounds= field")
			}
			rounds, parts = n, parts[1:]
		}
		if len(parts) != 2 || len(parts[1]) != keyLen || badCryptChar(parts[1]) >= 0 {
			return nil, fmt.Errorf("hash is not %ssalt$ and %d characters", prefix, keyLen)
		}
		d, err := shacrypt.DecodeVariant(variant)(h)
		if err != nil {
			return nil, err
		}
		return goCrypt{d: d, cost: fmt.Sprintf("%s/%d", variant, rounds)}, nil
	}
}

// parseMD5Crypt reads $1$salt$hash.
func parseMD5Crypt(raw []byte) (verifier, error) {
	h := string(raw)
	parts := strings.Split(h, "$")
	if len(parts) != 4 || parts[1] != "1" || len(parts[3]) != 22 || badCryptChar(parts[3]) >= 0 {
		return nil, errors.New("hash is not $1$salt$ and 22 characters")
	}
	d, err := md5crypt.DecodeVariant(md5crypt.VariantStandard)(h)
	if err != nil {
		return nil, err
	}
	return goCrypt{d: d, cost: "md5crypt"}, nil
}

// parseMD5 reads Dovecot's {MD5}: MD5-CRYPT, or else PLAIN-MD5.
func parseMD5(raw []byte) (verifier, error) {
	if bytes.HasPrefix(raw, []byte("$1$")) {
		return parseMD5Crypt(raw)
	}
	d, err := decodeValue(string(raw), encHex, md5.Size, false)
	if err != nil {
		return nil, errors.New("value is neither MD5-CRYPT nor PLAIN-MD5")
	}
	return parseDigest(md5.New)(d)
}

// parseCrypt reads {CRYPT}, which Dovecot hands to the C library's
// crypt(3): bcrypt, SHA-crypt, MD5-crypt and yescrypt are read here.
func parseCrypt(raw []byte) (verifier, error) {
	h := string(raw)
	switch {
	case strings.HasPrefix(h, "$2"):
		return parseBcrypt(raw)
	case strings.HasPrefix(h, "$1$"):
		return parseMD5Crypt(raw)
	case strings.HasPrefix(h, "$5$"):
		return parseSHACrypt(shacrypt.VariantSHA256, "$5$")(raw)
	case strings.HasPrefix(h, "$6$"):
		return parseSHACrypt(shacrypt.VariantSHA512, "$6$")(raw)
	case strings.HasPrefix(h, "$y$"):
		parts := strings.Split(h, "$")
		if len(parts) != 5 || len(parts[4]) != 43 || badCryptChar(parts[4]) >= 0 {
			return nil, errors.New("hash is not $y$params$salt$ and 43 characters")
		}
		params := parts[2]
		_, ln, r, err := yescrypt.DecodeSetting([]byte(params))
		if err != nil {
			return nil, errors.New("yescrypt parameters are not of the $y$j..$ kind twinbox reads")
		}
		// Memory is 128·r·2^ln bytes; bound it as Argon2's.
		if ln > 30 || 128*r<<ln > maxArgon2Memory<<10 {
			return nil, fmt.Errorf("yescrypt parameters %q ask for more than %d MiB", shorten(params, 12), maxArgon2Memory>>10)
		}
		d, err := scrypt.Decode(h)
		if err != nil {
			return nil, err
		}
		return goCrypt{d: d, cost: "yescrypt/" + params}, nil
	case len(h) == 13 && badCryptChar(h) < 0, strings.HasPrefix(h, "_"):
		return parseDESCrypt(raw)
	}
	return nil, schemeError("hash is of a crypt(3) kind twinbox does not read (it reads $2y$, $1$, $5$, $6$ and $y$)")
}

// parseDESCrypt reads traditional DES crypt (13 characters of the crypt
// alphabet); BSDi's extended form ("_" and 19 characters) is refused.
func parseDESCrypt(raw []byte) (verifier, error) {
	if len(raw) != 13 || badCryptChar(string(raw)) >= 0 {
		return nil, schemeError("DES crypt: only the traditional 13-character form is read (not BSDi's extended _ form)")
	}
	return desCrypt{hash: string(raw)}, nil
}

// digestHash is an unsalted digest: {SHA}, {SHA256}, {SHA512},
// {PLAIN-MD5}, {LDAP-MD5}.
type digestHash struct {
	h   func() hash.Hash
	sum []byte
}

func parseDigest(h func() hash.Hash) func([]byte) (verifier, error) {
	return func(raw []byte) (verifier, error) { return digestHash{h: h, sum: raw}, nil }
}

func (d digestHash) verify(password []byte) bool {
	h := d.h()
	h.Write(password)
	return subtle.ConstantTimeCompare(h.Sum(nil), d.sum) == 1
}

func (d digestHash) work() string { return "digest" }

// saltedHash is a digest of the password and a salt, stored as digest
// then salt: {SSHA}, {SSHA256}, {SSHA512}, {SMD5}.
type saltedHash struct {
	h          func() hash.Hash
	sum, salt  []byte
	schemeName string
}

func parseSalted(name string, h func() hash.Hash) func([]byte) (verifier, error) {
	size := h().Size()
	return func(raw []byte) (verifier, error) {
		if len(raw) <= size {
			return nil, fmt.Errorf("value is %d bytes, too short for a %d-byte digest and a salt", len(raw), size)
		}
		return saltedHash{h: h, sum: raw[:size], salt: raw[size:], schemeName: name}, nil
	}
}

func (s saltedHash) verify(password []byte) bool {
	h := s.h()
	h.Write(password)
	h.Write(s.salt)
	return subtle.ConstantTimeCompare(h.Sum(nil), s.sum) == 1
}

func (s saltedHash) work() string { return "digest" }

// plainText is {PLAIN}, {CLEAR}: the password itself. It is compared by
// digest, so that the time does not tell its length either.
type plainText struct{ sum [sha256.Size]byte }

func parsePlain(raw []byte) (verifier, error) { return plainText{sum: sha256.Sum256(raw)}, nil }

func (p plainText) verify(password []byte) bool {
	sum := sha256.Sum256(password)
	return subtle.ConstantTimeCompare(sum[:], p.sum[:]) == 1
}

func (p plainText) work() string { return "digest" }

// cramLen is the size of a {CRAM-MD5} value: the two MD5 states of
// HMAC-MD5 after the key's outer and inner pads.
const cramLen = 32

// cramMD5 is {CRAM-MD5} (alias {HMAC-MD5}): not a hash of the password
// but HMAC-MD5's keyed state, kept so that a server can answer CRAM-MD5
// challenges. Twinbox offers no CRAM-MD5 mechanism; it verifies a
// plaintext password by computing the same state.
type cramMD5 struct{ ctx []byte }

func parseCRAM(raw []byte) (verifier, error) { return cramMD5{ctx: raw}, nil }

func (c cramMD5) verify(password []byte) bool {
	return subtle.ConstantTimeCompare(cramContext(password), c.ctx) == 1
}

func (c cramMD5) work() string { return "digest" }

// cramContext computes what Dovecot's hmac_md5_get_cram_context writes:
// the MD5 state (A, B, C, D, little-endian) after the outer pad's block,
// then after the inner pad's.
func cramContext(password []byte) []byte {
	key := password
	if len(key) > md5.BlockSize {
		s := md5.Sum(key)
		key = s[:]
	}
	state := func(pad byte) []byte {
		block := make([]byte, md5.BlockSize)
		copy(block, key)
		for i := range block {
			block[i] ^= pad
		}
		h := md5.New()
		h.Write(block)
		// crypto/md5's state encoding: "md5\x01", then A, B, C and D
		// big-endian, then the buffered input and the length.
		m, err := h.(encoding.BinaryMarshaler).MarshalBinary()
		if err != nil || len(m) < 4+16 || string(m[:4]) != "md5\x01" {
			panic("users: crypto/md5 state encoding changed")
		}
		out := make([]byte, 16)
		for i := range 4 {
			binary.LittleEndian.PutUint32(out[4*i:], binary.BigEndian.Uint32(m[4+4*i:]))
		}
		return out
	}
	return append(state(0x5c), state(0x36)...)
}

// pbkdf2Hash is Dovecot's {PBKDF2}: $1$salt$rounds$hex, PBKDF2 with
// HMAC-SHA1 and a 20-byte key; the salt is used as written.
type pbkdf2Hash struct {
	salt   string
	rounds int
	key    []byte
}

// maxPBKDF2Rounds bounds the work a line may ask of each login.
const maxPBKDF2Rounds = 10_000_000

func parsePBKDF2(raw []byte) (verifier, error) {
	parts := strings.Split(string(raw), "$")
	if len(parts) != 5 || parts[0] != "" || parts[1] != "1" {
		return nil, errors.New("value is not $1$salt$rounds$hex")
	}
	rounds, err := strconv.Atoi(parts[3])
	if err != nil || rounds < 1 || rounds > maxPBKDF2Rounds {
		return nil, fmt.Errorf("rounds %q is not a number from 1 to %d", shorten(parts[3], 12), maxPBKDF2Rounds)
	}
	key, err := hex.DecodeString(parts[4])
	if err != nil || len(key) != sha1.Size {
		return nil, fmt.Errorf("key is not %d bytes of hex", sha1.Size)
	}
	return pbkdf2Hash{salt: parts[2], rounds: rounds, key: key}, nil
}

func (p pbkdf2Hash) verify(password []byte) bool {
	k, err := pbkdf2.Key(sha1.New, string(password), []byte(p.salt), p.rounds, sha1.Size)
	return err == nil && subtle.ConstantTimeCompare(k, p.key) == 1
}

func (p pbkdf2Hash) work() string { return "pbkdf2/" + strconv.Itoa(p.rounds) }

// argon2Hash is {ARGON2I} and {ARGON2ID} as libsodium writes them:
// $argon2id$v=19$m=KiB,t=passes,p=lanes$salt$hash, base64 without padding.
type argon2Hash struct {
	id            bool
	memory, time  uint32
	threads       uint8
	salt, key     []byte
	paramsWritten string
}

// maxArgon2Memory bounds the memory (KiB) one login may take: 1 GiB.
const maxArgon2Memory = 1 << 20

func parseArgon2(variant string) func([]byte) (verifier, error) {
	return func(raw []byte) (verifier, error) {
		parts := strings.Split(string(raw), "$")
		if len(parts) != 6 || parts[0] != "" {
			return nil, fmt.Errorf("value is not $%s$v=19$m=..,t=..,p=..$salt$hash", variant)
		}
		if parts[1] != variant {
			return nil, fmt.Errorf("value is $%s$, want $%s$", shorten(parts[1], 12), variant)
		}
		if parts[2] != "v=19" {
			return nil, schemeError("argon2 version %q is not supported (want v=19)", shorten(parts[2], 12))
		}
		a := argon2Hash{id: variant == "argon2id", paramsWritten: parts[3]}
		var m, t, p uint64
		for _, kv := range strings.Split(parts[3], ",") {
			k, v, _ := strings.Cut(kv, "=")
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("parameter %q is not a number", shorten(kv, 20))
			}
			switch k {
			case "m":
				m = n
			case "t":
				t = n
			case "p":
				p = n
			default:
				return nil, fmt.Errorf("unknown parameter %q", shorten(k, 12))
			}
		}
		if m < 8*p || m > maxArgon2Memory || t < 1 || p < 1 || p > 255 {
			return nil, fmt.Errorf("parameters %q out of range (m at most %d KiB, t at least 1, p from 1 to 255)", shorten(parts[3], 40), maxArgon2Memory)
		}
		a.memory, a.time, a.threads = uint32(m), uint32(t), uint8(p)
		var err error
		if a.salt, err = base64.RawStdEncoding.DecodeString(parts[4]); err != nil || len(a.salt) < 8 {
			return nil, errors.New("salt is not base64 of 8 bytes or more")
		}
		if a.key, err = base64.RawStdEncoding.DecodeString(parts[5]); err != nil || len(a.key) < 16 {
			return nil, errors.New("hash is not base64 of 16 bytes or more")
		}
		return a, nil
	}
}

func (a argon2Hash) verify(password []byte) bool {
	keyLen := uint32(len(a.key))
	var k []byte
	if a.id {
		k = argon2.IDKey(password, a.salt, a.time, a.memory, a.threads, keyLen)
	} else {
		k = argon2.Key(password, a.salt, a.time, a.memory, a.threads, keyLen)
	}
	return subtle.ConstantTimeCompare(k, a.key) == 1
}

func (a argon2Hash) work() string {
	if a.id {
		return "argon2id/" + a.paramsWritten
	}
	return "argon2i/" + a.paramsWritten
}

// hmacKey is a fresh random key for keyed hashes that live in memory only.
func hmacKey() []byte {
	k := make([]byte, 32)
	rand.Read(k)
	return k
}

// keyedSum returns HMAC-SHA256 under key of the parts, each length-prefixed.
func keyedSum(key []byte, parts ...string) [sha256.Size]byte {
	m := hmac.New(sha256.New, key)
	var n [8]byte
	for _, p := range parts {
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		m.Write(n[:])
		m.Write([]byte(p))
	}
	var out [sha256.Size]byte
	m.Sum(out[:0])
	return out
}
