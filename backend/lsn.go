package backend

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseLSN reads Postgres's "X/Y" WAL position.
func ParseLSN(s string) (uint64, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("invalid LSN %q", s)
	}
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("invalid LSN %q", s)
	}
	return h<<32 | l, nil
}

// FormatLSN writes a WAL position as Postgres does.
func FormatLSN(l uint64) string {
	return fmt.Sprintf("%X/%X", l>>32, uint32(l))
}
