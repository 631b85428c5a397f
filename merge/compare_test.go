package merge

import (
	"encoding/binary"
	"errors"
	"math"
	"testing"
)

func be16(v int16) []byte  { return binary.BigEndian.AppendUint16(nil, uint16(v)) }
func be32(v int32) []byte  { return binary.BigEndian.AppendUint32(nil, uint32(v)) }
func be64(v int64) []byte  { return binary.BigEndian.AppendUint64(nil, uint64(v)) }
func f4b(f float32) []byte { return binary.BigEndian.AppendUint32(nil, math.Float32bits(f)) }
func f8b(f float64) []byte { return binary.BigEndian.AppendUint64(nil, math.Float64bits(f)) }

// numBin encodes numeric_send's format by hand.
func numBin(weight int16, sign uint16, dscale int16, digits ...uint16) []byte {
	b := be16(int16(len(digits)))
	b = append(b, be16(weight)...)
	b = binary.BigEndian.AppendUint16(b, sign)
	b = append(b, be16(dscale)...)
	for _, d := range digits {
		b = binary.BigEndian.AppendUint16(b, d)
	}
	return b
}

func TestCompare(t *testing.T) {
	text := func(oid uint32) Column { return Column{Name: "c", TypeOID: oid} }
	bin := func(oid uint32) Column { return Column{Name: "c", TypeOID: oid, Format: 1} }
	uuidA := []byte{0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff}
	uuidB := []byte{0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xef, 0x00}
	tests := []struct {
		name string
		col  Column
		a, b []byte
		want int
	}{
		{"int2 text", text(OIDInt2), []byte("-5"), []byte("3"), -1},
		{"int4 text numeric not lexical", text(OIDInt4), []byte("10"), []byte("9"), 1},
		{"int8 text equal", text(OIDInt8), []byte("9223372036854775807"), []byte("9223372036854775807"), 0},
		{"int2 binary", bin(OIDInt2), be16(-1), be16(1), -1},
		{"int4 binary", bin(OIDInt4), be32(math.MaxInt32), be32(math.MinInt32), 1},
		{"int8 binary", bin(OIDInt8), be64(-1), be64(0), -1},
		{"float8 text", text(OIDFloat8), []byte("1.5"), []byte("1e+20"), -1},
		{"float8 NaN above Infinity", text(OIDFloat8), []byte("NaN"), []byte("Infinity"), 1},
		{"float8 NaN equals NaN", text(OIDFloat8), []byte("NaN"), []byte("NaN"), 0},
		{"float8 -Infinity lowest", text(OIDFloat8), []byte("-Infinity"), []byte("-1e+308"), -1},
		{"float8 -0 equals 0", text(OIDFloat8), []byte("-0"), []byte("0"), 0},
		{"float8 binary NaN", bin(OIDFloat8), f8b(math.NaN()), f8b(math.Inf(1)), 1},
		{"float8 binary", bin(OIDFloat8), f8b(-2.5), f8b(1), -1},
		{"float4 text", text(OIDFloat4), []byte("0.1"), []byte("0.2"), -1},
		{"float4 binary NaN", bin(OIDFloat4), f4b(1), f4b(float32(math.NaN())), -1},
		{"numeric text", text(OIDNumeric), []byte("10.5"), []byte("9.75"), 1},
		{"numeric scale-insensitive", text(OIDNumeric), []byte("1.0"), []byte("1.000"), 0},
		{"numeric exact beyond float", text(OIDNumeric), []byte("12345678901234567890.000000000000000001"), []byte("12345678901234567890"), 1},
		{"numeric negative", text(OIDNumeric), []byte("-2"), []byte("-10"), 1},
		{"numeric NaN above Infinity", text(OIDNumeric), []byte("NaN"), []byte("Infinity"), 1},
		{"numeric -Infinity lowest", text(OIDNumeric), []byte("-Infinity"), []byte("-1e1000"), -1},
		{"numeric NaN equals NaN", text(OIDNumeric), []byte("NaN"), []byte("NaN"), 0},
		// 12345.678 = digits 1, 2345, 6780 with weight 1; 12345.6 = 1, 2345, 6000
		{"numeric binary", bin(OIDNumeric), numBin(1, 0, 3, 1, 2345, 6780), numBin(1, 0, 1, 1, 2345, 6000), 1},
		{"numeric binary negative", bin(OIDNumeric), numBin(0, 0x4000, 0, 5), numBin(0, 0, 0, 5), -1},
		{"numeric binary fraction", bin(OIDNumeric), numBin(-1, 0, 4, 1), numBin(-2, 0, 8, 9999), 1}, // 0.0001 vs 0.00009999
		{"numeric binary NaN", bin(OIDNumeric), numBin(0, 0xC000, 0), numBin(0, 0xD000, 0), 1},
		{"numeric binary -Inf", bin(OIDNumeric), numBin(0, 0xF000, 0), numBin(0, 0x4000, 0, 9999), -1},
		{"numeric binary zero", bin(OIDNumeric), numBin(0, 0, 2), numBin(0, 0, 0), 0},
		{"text bytewise", text(OIDText), []byte("B"), []byte("a"), -1},
		{"text prefix shorter first", text(OIDText), []byte("ab"), []byte("abc"), -1},
		{"text utf8 after ascii", text(OIDText), []byte("é"), []byte("z"), 1},
		{"varchar", text(OIDVarchar), []byte("x"), []byte("x"), 0},
		{"name binary", bin(OIDName), []byte("a"), []byte("b"), -1},
		{"text keeps trailing spaces", text(OIDText), []byte("a "), []byte("a"), 1},
		{"bpchar ignores trailing spaces", text(OIDBpchar), []byte("a  "), []byte("a"), 0},
		{"bpchar leading spaces count", text(OIDBpchar), []byte(" a"), []byte("a"), -1},
		{"bpchar binary", bin(OIDBpchar), []byte("ab "), []byte("ab"), 0},
		{"bpchar inner space", text(OIDBpchar), []byte("a b"), []byte("a"), 1},
		{"bool text", text(OIDBool), []byte("f"), []byte("t"), -1},
		{"bool binary", bin(OIDBool), []byte{1}, []byte{0}, 1},
		{"date text", text(OIDDate), []byte("2024-01-02"), []byte("2023-12-31"), 1},
		{"date BC", text(OIDDate), []byte("0001-01-01 BC"), []byte("0001-01-01"), -1},
		{"date BC years reverse", text(OIDDate), []byte("0100-01-01 BC"), []byte("0050-01-01 BC"), -1},
		{"date infinity", text(OIDDate), []byte("infinity"), []byte("294276-01-01"), 1},
		{"date -infinity", text(OIDDate), []byte("-infinity"), []byte("4713-01-01 BC"), -1},
		{"date binary", bin(OIDDate), be32(-1), be32(0), -1},
		{"date binary infinity", bin(OIDDate), be32(math.MaxInt32), be32(2000000), 1},
		{"timestamp text fraction", text(OIDTimestamp), []byte("2024-01-02 03:04:05.5"), []byte("2024-01-02 03:04:05.123456"), 1},
		{"timestamp text", text(OIDTimestamp), []byte("1999-12-31 23:59:59.999999"), []byte("2000-01-01 00:00:00"), -1},
		{"timestamp BC", text(OIDTimestamp), []byte("0044-03-15 12:00:00 BC"), []byte("0001-01-01 00:00:00"), -1},
		{"timestamp binary", bin(OIDTimestamp), be64(-1), be64(1), -1},
		{"timestamptz offsets", text(OIDTimestamptz), []byte("2024-01-02 08:34:05+05:30"), []byte("2024-01-02 03:04:05+00"), 0},
		{"timestamptz negative offset", text(OIDTimestamptz), []byte("2024-01-01 22:00:00-05"), []byte("2024-01-02 02:00:00+00"), 1},
		{"timestamptz seconds offset", text(OIDTimestamptz), []byte("1800-01-01 05:53:28+05:53:28"), []byte("1800-01-01 00:00:00+00"), 0},
		{"timestamptz infinity", text(OIDTimestamptz), []byte("infinity"), []byte("-infinity"), 1},
		{"timestamptz binary", bin(OIDTimestamptz), be64(math.MaxInt64), be64(0), 1},
		{"uuid text", text(OIDUUID), []byte("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), []byte("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"), 0},
		{"uuid text order", text(OIDUUID), []byte("00000000-0000-0000-0000-000000000001"), []byte("10000000-0000-0000-0000-000000000000"), -1},
		{"uuid binary", bin(OIDUUID), uuidA, uuidB, -1},
		{"bytea hex", text(OIDBytea), []byte(`\x00ff`), []byte(`\x01`), -1},
		{"bytea hex prefix", text(OIDBytea), []byte(`\x`), []byte(`\x00`), -1},
		{"bytea escape", text(OIDBytea), []byte(`a\000`), []byte(`\x6100`), 0},
		{"bytea binary", bin(OIDBytea), []byte{0xff}, []byte{0x00, 0x01}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Compare(tt.col, tt.a, tt.b)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("Compare(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
			}
			back, err := Compare(tt.col, tt.b, tt.a)
			if err != nil {
				t.Fatal(err)
			}
			if back != -tt.want {
				t.Errorf("Compare(%q, %q) = %d, want %d", tt.b, tt.a, back, -tt.want)
			}
		})
	}
}

func TestCompareErrors(t *testing.T) {
	tests := []struct {
		name        string
		col         Column
		a, b        []byte
		unsupported bool
	}{
		{"unknown type", Column{TypeOID: 114}, []byte("{}"), []byte("{}"), true}, // json
		{"interval", Column{TypeOID: 1186}, []byte("1 day"), []byte("2 days"), true},
		{"bad int", Column{TypeOID: OIDInt4}, []byte("x"), []byte("1"), false},
		{"int4 out of range", Column{TypeOID: OIDInt4}, []byte("2147483648"), []byte("1"), false},
		{"short binary int8", Column{TypeOID: OIDInt8, Format: 1}, []byte{1, 2}, be64(1), false},
		{"bad numeric", Column{TypeOID: OIDNumeric}, []byte("1.2.3"), []byte("1"), false},
		{"bad date", Column{TypeOID: OIDDate}, []byte("01/02/2024"), []byte("2024-01-02"), false},
		{"timestamptz without offset", Column{TypeOID: OIDTimestamptz}, []byte("2024-01-02 00:00:00"), []byte("2024-01-02 00:00:00+00"), false},
		{"bad uuid", Column{TypeOID: OIDUUID}, []byte("nope"), []byte("nope"), false},
		{"bad format", Column{TypeOID: OIDText, Format: 2}, []byte("a"), []byte("b"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compare(tt.col, tt.a, tt.b)
			if err == nil {
				t.Fatal("no error")
			}
			if got := errors.Is(err, ErrUnsupportedType); got != tt.unsupported {
				t.Errorf("errors.Is(%v, ErrUnsupportedType) = %v", err, got)
			}
		})
	}
}

// TestCompareAcross covers what the Postgres comparison in pg_test.go does
// not: binary values and the mixes it refuses.
func TestCompareAcross(t *testing.T) {
	text := func(oid uint32) Column { return Column{Name: "c", TypeOID: oid} }
	bin := func(oid uint32) Column { return Column{Name: "c", TypeOID: oid, Format: 1} }
	tests := []struct {
		name        string
		a           Column
		x           []byte
		b           Column
		y           []byte
		want        int
		unsupported bool
	}{
		{"int8 text vs int4 binary", text(OIDInt8), []byte("5"), bin(OIDInt4), be32(6), -1, false},
		{"numeric binary vs int8 text", bin(OIDNumeric), numBin(0, 0, 1, 5, 1000), text(OIDInt8), []byte("5"), 1, false}, // 5.1
		{"float8 binary vs numeric text", bin(OIDFloat8), f8b(0.1), text(OIDNumeric), []byte("0.1"), 0, false},
		{"float4 vs float8: float4 widened", text(OIDFloat4), []byte("0.1"), text(OIDFloat8), []byte("0.1"), 1, false},
		{"same type: Compare", text(OIDBpchar), []byte("a  "), text(OIDBpchar), []byte("a"), 0, false},
		{"varchar vs text", text(OIDVarchar), []byte("a"), text(OIDText), []byte("b"), -1, false},
		{"text vs int", text(OIDText), []byte("1"), text(OIDInt4), []byte("1"), 0, true},
		{"date vs timestamptz", text(OIDDate), []byte("2024-01-01"), text(OIDTimestamptz), []byte("2024-01-01 00:00:00+00"), 0, true},
		{"bpchar vs text", text(OIDBpchar), []byte("a "), text(OIDText), []byte("a"), 0, true},
		{"unknown type", Column{TypeOID: 114}, []byte("{}"), text(OIDInt4), []byte("1"), 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CompareAcross(tt.a, tt.x, tt.b, tt.y)
			if tt.unsupported {
				if !errors.Is(err, ErrUnsupportedType) {
					t.Fatalf("got %d, %v; want ErrUnsupportedType", got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %d, %v; want %d", got, err, tt.want)
			}
		})
	}
	if _, err := CompareAcross(text(OIDNumeric), []byte("x"), text(OIDInt8), []byte("1")); err == nil || errors.Is(err, ErrUnsupportedType) {
		t.Errorf("a bad numeric: %v, want a decoding error", err)
	}
}

func TestCompareRowsNulls(t *testing.T) {
	cols := []Column{{Name: "a", TypeOID: OIDInt4}, {Name: "b", TypeOID: OIDText}}
	one, null := []byte("1"), []byte(nil)
	tests := []struct {
		name string
		keys []SortKey
		a, b Row
		want int
	}{
		{"asc default: NULLS LAST", []SortKey{DefaultSortKey(0, false)}, Row{null, null}, Row{one, null}, 1},
		{"desc default: NULLS FIRST", []SortKey{DefaultSortKey(0, true)}, Row{null, null}, Row{one, null}, -1},
		{"asc NULLS FIRST", []SortKey{{Col: 0, NullsFirst: true}}, Row{null, null}, Row{one, null}, -1},
		{"desc NULLS LAST", []SortKey{{Col: 0, Desc: true}}, Row{null, null}, Row{one, null}, 1},
		{"both NULL go to next key", []SortKey{{Col: 0}, {Col: 1}}, Row{null, []byte("a")}, Row{null, []byte("b")}, -1},
		{"desc reverses values", []SortKey{{Col: 0, Desc: true}}, Row{[]byte("2"), null}, Row{one, null}, -1},
		{"second key desc", []SortKey{{Col: 0}, {Col: 1, Desc: true}}, Row{one, []byte("a")}, Row{one, []byte("b")}, 1},
		{"all equal", []SortKey{{Col: 0}, {Col: 1}}, Row{one, null}, Row{one, null}, 0},
		{"no keys", nil, Row{one, null}, Row{null, one}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CompareRows(cols, tt.keys, tt.a, tt.b)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %d, want %d", got, tt.want)
			}
		})
	}
	if _, err := CompareRows(cols, []SortKey{{Col: 2}}, Row{one, one}, Row{one, one}); err == nil {
		t.Error("out-of-range sort column: no error")
	}
}

func TestFormatFloat(t *testing.T) {
	point1, point2 := 0.1, 0.2 // not constants: those would add exactly
	tests := []struct {
		f    float64
		want string
	}{
		{0, "0"}, {math.Copysign(0, -1), "-0"}, {1.5, "1.5"}, {0.1, "0.1"}, {point1 + point2, "0.30000000000000004"},
		{1e14, "100000000000000"}, {1e15, "1e+15"}, {123456789012345678, "1.2345678901234568e+17"},
		{0.0001, "0.0001"}, {0.00001, "1e-05"}, {1e-300, "1e-300"}, {-2.5e-7, "-2.5e-07"},
		{math.NaN(), "NaN"}, {math.Inf(1), "Infinity"}, {math.Inf(-1), "-Infinity"},
	}
	for _, tt := range tests {
		if got := FormatFloat8(tt.f); got != tt.want {
			t.Errorf("FormatFloat8(%v) = %q, want %q", tt.f, got, tt.want)
		}
	}
	tests4 := []struct {
		f    float32
		want string
	}{{100000, "100000"}, {1e6, "1e+06"}, {0.1, "0.1"}, {1.5, "1.5"}, {0.00001, "1e-05"}, {16777216, "1.6777216e+07"}}
	for _, tt := range tests4 {
		if got := FormatFloat4(tt.f); got != tt.want {
			t.Errorf("FormatFloat4(%v) = %q, want %q", tt.f, got, tt.want)
		}
	}
}
