package pgpmsg

import (
	"encoding/hex"
	"fmt"
	"strings"
)

// Fingerprint is a v4 key fingerprint as 40 upper-case hex digits.
type Fingerprint string

// ParseFingerprint accepts 40 hex digits in either case, optionally broken up
// by spaces (as gpg prints them), and returns the canonical form.
func ParseFingerprint(s string) (Fingerprint, error) {
	t := strings.ReplaceAll(s, " ", "")
	if len(t) != 40 {
		return "", fmt.Errorf("pgpmsg: parse fingerprint %q: want 40 hex digits, have %d characters", s, len(t))
	}
	for i := 0; i < len(t); i++ {
		if !isHex(t[i]) {
			return "", fmt.Errorf("pgpmsg: parse fingerprint %q: %q is not a hex digit", s, t[i])
		}
	}
	return Fingerprint(strings.ToUpper(t)), nil
}

// String returns fp as is.
func (fp Fingerprint) String() string { return string(fp) }

// KeyID returns the low 64 bits of fp (the v4 key id), or 0 if fp is not canonical.
func (fp Fingerprint) KeyID() uint64 {
	if !fp.valid() {
		return 0
	}
	b, _ := hex.DecodeString(string(fp[24:]))
	var id uint64
	for _, c := range b {
		id = id<<8 | uint64(c)
	}
	return id
}

// valid reports whether fp is in canonical form.
func (fp Fingerprint) valid() bool {
	if len(fp) != 40 {
		return false
	}
	for i := 0; i < len(fp); i++ {
		c := fp[i]
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

func fingerprintOf(b []byte) Fingerprint {
	return Fingerprint(strings.ToUpper(hex.EncodeToString(b)))
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
