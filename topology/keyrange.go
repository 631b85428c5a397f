package topology

import (
	"fmt"
	"strconv"
	"strings"
)

// KeyRange is a half-open interval [Start, End) of the 64-bit keyspace.
// The keyspace's upper bound, 2^64, does not fit in a uint64, so a range that
// runs to the end of the keyspace has EndMax set and End zero.
type KeyRange struct {
	Start, End uint64
	EndMax     bool
}

// ParseKeyRange parses Vitess shard-range notation "start-end". Each side is
// a hex string of at most 16 digits, left-aligned in 64 bits, so "80" is
// 0x8000000000000000 and "4000" is 0x4000000000000000. An empty start means 0
// and an empty end means 2^64; "-" is the whole keyspace. Start must be below
// end.
func ParseKeyRange(s string) (KeyRange, error) {
	lo, hi, ok := strings.Cut(s, "-")
	if !ok {
		return KeyRange{}, fmt.Errorf("key range %q: want \"start-end\" in hex, e.g. \"-80\", \"40-80\", \"80-\"", s)
	}
	var r KeyRange
	var err error
	if r.Start, err = parseBound(lo); err != nil {
		return KeyRange{}, fmt.Errorf("key range %q: start: %w", s, err)
	}
	if hi == "" {
		r.EndMax = true
		return r, nil
	}
	if r.End, err = parseBound(hi); err != nil {
		return KeyRange{}, fmt.Errorf("key range %q: end: %w", s, err)
	}
	if r.Start >= r.End {
		return KeyRange{}, fmt.Errorf("key range %q: start must be below end", s)
	}
	return r, nil
}

// parseBound reads one side of a range; "" is 0.
func parseBound(s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	if len(s) > 16 {
		return 0, fmt.Errorf("%q has more than 16 hex digits", s)
	}
	for i := 0; i < len(s); i++ {
		// Checked by hand because ParseUint would also accept '_' and
		// signs in some bases; the notation is plain hex digits.
		if !isHex(s[i]) {
			return 0, fmt.Errorf("%q is not hex", s)
		}
	}
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("%q: %w", s, err)
	}
	return v << (4 * (16 - len(s))), nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// String returns the range in Vitess notation, lower-case, with trailing
// zero bytes trimmed: "-80", "80-c0", "c0-", "-".
func (r KeyRange) String() string {
	end := ""
	if !r.EndMax {
		end = formatBound(r.End)
	}
	return formatBound(r.Start) + "-" + end
}

func formatBound(v uint64) string {
	s := fmt.Sprintf("%016x", v)
	for strings.HasSuffix(s, "00") {
		s = s[:len(s)-2]
	}
	return s
}

// Contains reports whether keyspace id h falls in the range.
func (r KeyRange) Contains(h uint64) bool {
	return h >= r.Start && (r.EndMax || h < r.End)
}
