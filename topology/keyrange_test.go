package topology

import (
	"strings"
	"testing"
)

func TestParseKeyRange(t *testing.T) {
	tests := []struct {
		in    string
		want  KeyRange
		canon string // String() of the result
	}{
		{"-", KeyRange{EndMax: true}, "-"},
		{"-80", KeyRange{End: 0x8000000000000000}, "-80"},
		{"80-", KeyRange{Start: 0x8000000000000000, EndMax: true}, "80-"},
		{"40-80", KeyRange{Start: 0x4000000000000000, End: 0x8000000000000000}, "40-80"},
		{"80-c0", KeyRange{Start: 0x8000000000000000, End: 0xc000000000000000}, "80-c0"},
		{"c0-", KeyRange{Start: 0xc000000000000000, EndMax: true}, "c0-"},
		{"4000-8000", KeyRange{Start: 0x4000000000000000, End: 0x8000000000000000}, "40-80"},
		{"C0-", KeyRange{Start: 0xc000000000000000, EndMax: true}, "c0-"},
		{"0001-", KeyRange{Start: 0x0001000000000000, EndMax: true}, "0001-"},
		{"-8", KeyRange{End: 0x8000000000000000}, "-80"},
		{"00-80", KeyRange{End: 0x8000000000000000}, "-80"},
		{"-ffffffffffffffff", KeyRange{End: 0xffffffffffffffff}, "-ffffffffffffffff"},
		{"0123456789abcdef-", KeyRange{Start: 0x0123456789abcdef, EndMax: true}, "0123456789abcdef-"},
	}
	for _, tt := range tests {
		got, err := ParseKeyRange(tt.in)
		if err != nil {
			t.Errorf("ParseKeyRange(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseKeyRange(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
		if s := got.String(); s != tt.canon {
			t.Errorf("ParseKeyRange(%q).String() = %q, want %q", tt.in, s, tt.canon)
		}
		again, err := ParseKeyRange(got.String())
		if err != nil || again != got {
			t.Errorf("round trip of %q: %+v, %v", tt.in, again, err)
		}
	}
}

func TestParseKeyRangeErrors(t *testing.T) {
	tests := []struct {
		in, wantErr string
	}{
		{"80-80", "start must be below end"},
		{"c0-80", "start must be below end"},
		{"-00", "start must be below end"},
		{"zz-", "not hex"},
		{"-8g", "not hex"},
		{"0x80-", "not hex"},
		{"+80-", "not hex"},
		{"10000000000000000-", "more than 16 hex digits"},
		{"-10000000000000000", "more than 16 hex digits"},
		{"", "want \"start-end\""},
		{"80", "want \"start-end\""},
		{"40-80-c0", "not hex"},
	}
	for _, tt := range tests {
		_, err := ParseKeyRange(tt.in)
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("ParseKeyRange(%q) error %v, want it to contain %q", tt.in, err, tt.wantErr)
		}
	}
}

func TestKeyRangeContains(t *testing.T) {
	const max = ^uint64(0)
	tests := []struct {
		r    string
		h    uint64
		want bool
	}{
		{"-", 0, true},
		{"-", max, true},
		{"-80", 0, true},
		{"-80", 0x7fffffffffffffff, true},
		{"-80", 0x8000000000000000, false},
		{"80-", 0x7fffffffffffffff, false},
		{"80-", 0x8000000000000000, true},
		{"80-", max, true},
		{"40-80", 0x3fffffffffffffff, false},
		{"40-80", 0x4000000000000000, true},
		{"40-80", 0x7fffffffffffffff, true},
		{"40-80", 0x8000000000000000, false},
		{"-ffffffffffffffff", max, false},
	}
	for _, tt := range tests {
		r, err := ParseKeyRange(tt.r)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.Contains(tt.h); got != tt.want {
			t.Errorf("%s.Contains(%#x) = %v, want %v", tt.r, tt.h, got, tt.want)
		}
	}
}
