package backend

import "testing"

func TestLSNParsing(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
	}{{"0/16B3748", 0x16B3748}, {"1A/FF", 0x1A<<32 | 0xFF}, {"0/0", 0}, {"bad", 0}, {"1/2/3", 0}} {
		if got, err := ParseLSN(tc.in); tc.want != 0 && (err != nil || got != tc.want) {
			t.Errorf("ParseLSN(%q) = %x, %v", tc.in, got, err)
		}
		if tc.want != 0 && FormatLSN(tc.want) != tc.in {
			t.Errorf("FormatLSN(%x) = %s, want %s", tc.want, FormatLSN(tc.want), tc.in)
		}
	}
}

// TestLSNInvalid: what is not an "X/Y" pair of 32-bit hex numbers is an
// error, never a position.
func TestLSNInvalid(t *testing.T) {
	for _, in := range []string{"bad", "1/2/3", "", "/", "0/", "G/1", "100000000/0", "0/-1"} {
		if got, err := ParseLSN(in); err == nil {
			t.Errorf("ParseLSN(%q) = %x, want an error", in, got)
		}
	}
	if got := FormatLSN(0); got != "0/0" {
		t.Errorf("FormatLSN(0) = %s, want 0/0", got)
	}
	if got, err := ParseLSN(FormatLSN(1<<63 | 5)); err != nil || got != 1<<63|5 {
		t.Errorf("round trip of 1<<63|5 = %x, %v", got, err)
	}
}
