package proxy

import (
	"encoding/binary"
	"testing"
)

// TestLSNParsing checks the captured position read from the wire; the
// text forms are package backend's (backend/lsn_test.go).
func TestLSNParsing(t *testing.T) {
	row := func(v string) []byte {
		msg := []byte{'D', 0, 0, 0, 0, 0, 1}
		msg = binary.BigEndian.AppendUint32(msg, uint32(len(v)))
		msg = append(msg, v...)
		binary.BigEndian.PutUint32(msg[1:], uint32(len(msg)-1))
		return msg
	}
	for _, tc := range []struct {
		in   string
		want uint64
	}{{"0/16B3748", 0x16B3748}, {"1A/FF", 0x1A<<32 | 0xFF}, {"0/0", 0}, {"bad", 0}, {"1/2/3", 0}} {
		if got := dataRowLSN(row(tc.in)); got != tc.want {
			t.Errorf("dataRowLSN(%q) = %x, want %x", tc.in, got, tc.want)
		}
	}
}

// BenchmarkDataRowLSN: reading the captured position should not allocate
// (a timed test would count the monitors' allocations too).
func BenchmarkDataRowLSN(b *testing.B) {
	msg := appendMessage(nil, 'D', []byte{0, 1, 0, 0, 0, 9, '0', '/', '1', '6', 'B', '3', '7', '4', '8'})
	b.ReportAllocs()
	for b.Loop() {
		if dataRowLSN(msg) != 0x16B3748 {
			b.Fatal("wrong LSN")
		}
	}
}
