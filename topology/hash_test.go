package topology

import (
	"strings"
	"testing"
)

// The expected hashes were computed once, independently of this package, by
// running xxhash.Sum64 over bytes built by hand with binary.BigEndian. They
// pin the public hashing contract: if one changes, existing data is on the
// wrong shard.
func TestHashVectors(t *testing.T) {
	tests := []struct {
		kt   KeyType
		text string
		want uint64
	}{
		{KeyBigint, "0", 0x34c96acdcadb1bbb},
		{KeyBigint, "1", 0x9f1ffc793b8a47da},
		{KeyBigint, "42", 0xa2c396223f8bdbdf},
		{KeyBigint, "-1", 0x85d136adb773c6c9},
		{KeyBigint, "9223372036854775807", 0x043de1bbaf341994},
		{KeyBigint, "-9223372036854775808", 0xa7299a58d03a1d0c},
		{KeyInt, "42", 0xa2c396223f8bdbdf},
		{KeySmallint, "-32768", 0x06355d4075586cda},
		{KeySmallint, "32767", 0x69e912b8aac3f8bb},
		{KeyText, "", 0xef46db3751d8e999},
		{KeyText, "alice", 0x73a3ea485f2e6049},
		{KeyText, "日本", 0x80c2e40b8486afab},
		{KeyUUID, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", 0x2be0e46a4e11f685},
	}
	for _, tt := range tests {
		b, err := AppendCanonicalText(nil, tt.kt, tt.text)
		if err != nil {
			t.Errorf("%s %q: %v", tt.kt, tt.text, err)
			continue
		}
		if got := keyspaceID(b); got != tt.want {
			t.Errorf("%s %q: hash %#016x, want %#016x", tt.kt, tt.text, got, tt.want)
		}
		if got, err := KeyspaceID(tt.kt, tt.text); err != nil || got != tt.want {
			t.Errorf("KeyspaceID(%s, %q) = %#016x, %v; want %#016x", tt.kt, tt.text, got, err, tt.want)
		}
		if got, err := KeyspaceIDBinary(tt.kt, b); err != nil || got != tt.want {
			t.Errorf("KeyspaceIDBinary(%s, % x) = %#016x, %v; want %#016x", tt.kt, b, got, err, tt.want)
		}
	}
}

// Every spelling of the same key must land on the same shard.
func TestEquivalentForms(t *testing.T) {
	const h42 = 0xa2c396223f8bdbdf
	const hUUID = 0x2be0e46a4e11f685
	uuidBytes := []byte{0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11}
	tests := []struct {
		name   string
		kt     KeyType
		text   string // used when bin is nil
		bin    []byte
		want   uint64
		binary bool
	}{
		{name: "text", kt: KeyBigint, text: "42", want: h42},
		{name: "spaces", kt: KeyBigint, text: " 42 ", want: h42},
		{name: "tabs and newline", kt: KeyInt, text: "\t42\n", want: h42},
		{name: "plus sign", kt: KeySmallint, text: "+42", want: h42},
		{name: "leading zeros", kt: KeyBigint, text: "0042", want: h42},
		{name: "int2 as bigint", kt: KeyBigint, bin: []byte{0, 42}, binary: true, want: h42},
		{name: "int4 as bigint", kt: KeyBigint, bin: []byte{0, 0, 0, 42}, binary: true, want: h42},
		{name: "int8 as bigint", kt: KeyBigint, bin: []byte{0, 0, 0, 0, 0, 0, 0, 42}, binary: true, want: h42},
		{name: "int8 as smallint", kt: KeySmallint, bin: []byte{0, 0, 0, 0, 0, 0, 0, 42}, binary: true, want: h42},
		{name: "int2 as int", kt: KeyInt, bin: []byte{0, 42}, binary: true, want: h42},
		{name: "int2 -1 sign-extends", kt: KeyBigint, bin: []byte{0xff, 0xff}, binary: true, want: 0x85d136adb773c6c9},
		{name: "int4 -1 sign-extends", kt: KeyInt, bin: []byte{0xff, 0xff, 0xff, 0xff}, binary: true, want: 0x85d136adb773c6c9},
		{name: "uuid canonical", kt: KeyUUID, text: "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", want: hUUID},
		{name: "uuid upper", kt: KeyUUID, text: "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", want: hUUID},
		{name: "uuid braces", kt: KeyUUID, text: "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}", want: hUUID},
		{name: "uuid no hyphens", kt: KeyUUID, text: "a0eebc999c0b4ef8bb6d6bb9bd380a11", want: hUUID},
		{name: "uuid braces no hyphens", kt: KeyUUID, text: "{a0eebc999c0b4ef8bb6d6bb9bd380a11}", want: hUUID},
		{name: "uuid hyphen every 4", kt: KeyUUID, text: "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11", want: hUUID},
		{name: "uuid binary", kt: KeyUUID, bin: uuidBytes, binary: true, want: hUUID},
		{name: "text binary", kt: KeyText, bin: []byte("alice"), binary: true, want: 0x73a3ea485f2e6049},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b []byte
			var err error
			if tt.binary {
				b, err = AppendCanonicalBinary(nil, tt.kt, tt.bin)
			} else {
				b, err = AppendCanonicalText(nil, tt.kt, tt.text)
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := keyspaceID(b); got != tt.want {
				t.Errorf("hash %#016x, want %#016x", got, tt.want)
			}
		})
	}
}

func TestCanonicalErrors(t *testing.T) {
	tests := []struct {
		name    string
		kt      KeyType
		text    string
		bin     []byte
		binary  bool
		wantErr string
	}{
		{name: "smallint overflow", kt: KeySmallint, text: "99999", wantErr: `value "99999" is out of range for smallint`},
		{name: "smallint underflow", kt: KeySmallint, text: "-32769", wantErr: "out of range for smallint"},
		{name: "int overflow", kt: KeyInt, text: "2147483648", wantErr: "out of range for int"},
		{name: "bigint overflow", kt: KeyBigint, text: "9223372036854775808", wantErr: "out of range for bigint"},
		{name: "empty", kt: KeyBigint, text: "", wantErr: "invalid input syntax for bigint"},
		{name: "blank", kt: KeyBigint, text: "  ", wantErr: "invalid input syntax"},
		{name: "letters", kt: KeyBigint, text: "12a", wantErr: "invalid input syntax"},
		{name: "decimal point", kt: KeyInt, text: "4.2", wantErr: "invalid input syntax"},
		{name: "inner space", kt: KeyInt, text: "- 42", wantErr: "invalid input syntax"},
		{name: "hex", kt: KeyBigint, text: "0x2a", wantErr: "invalid input syntax"},
		{name: "underscore", kt: KeyBigint, text: "1_000", wantErr: "invalid input syntax"},
		{name: "binary int4 as smallint", kt: KeySmallint, bin: []byte{0, 1, 0, 0}, binary: true, wantErr: "value 65536 is out of range for smallint"},
		{name: "binary int8 as int", kt: KeyInt, bin: []byte{0, 0, 0, 1, 0, 0, 0, 0}, binary: true, wantErr: "out of range for int"},
		{name: "binary int 3 bytes", kt: KeyBigint, bin: []byte{0, 0, 42}, binary: true, wantErr: "has 3 bytes, want 2, 4 or 8"},
		{name: "binary int empty", kt: KeyBigint, bin: []byte{}, binary: true, wantErr: "has 0 bytes"},
		{name: "uuid short", kt: KeyUUID, text: "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1", wantErr: "invalid input syntax for uuid"},
		{name: "uuid long", kt: KeyUUID, text: "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111", wantErr: "invalid input syntax for uuid"},
		{name: "uuid bad hex", kt: KeyUUID, text: "g0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", wantErr: "invalid input syntax for uuid"},
		{name: "uuid open brace only", kt: KeyUUID, text: "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", wantErr: "invalid input syntax for uuid"},
		{name: "uuid close brace only", kt: KeyUUID, text: "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}", wantErr: "invalid input syntax for uuid"},
		{name: "uuid odd hyphen", kt: KeyUUID, text: "a0eebc9-99c0b-4ef8-bb6d-6bb9bd380a11", wantErr: "invalid input syntax for uuid"},
		{name: "uuid trailing hyphen", kt: KeyUUID, text: "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-", wantErr: "invalid input syntax for uuid"},
		{name: "uuid spaces", kt: KeyUUID, text: " a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", wantErr: "invalid input syntax for uuid"},
		{name: "uuid binary 15 bytes", kt: KeyUUID, bin: make([]byte, 15), binary: true, wantErr: "has 15 bytes, want 16"},
		{name: "unknown key type text", kt: "float", text: "1", wantErr: `unknown key type "float"`},
		{name: "unknown key type binary", kt: "float", bin: []byte{1}, binary: true, wantErr: `unknown key type "float"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := []byte("prefix")
			var got []byte
			var err error
			if tt.binary {
				got, err = AppendCanonicalBinary(dst, tt.kt, tt.bin)
			} else {
				got, err = AppendCanonicalText(dst, tt.kt, tt.text)
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want it to contain %q", err, tt.wantErr)
			}
			if string(got) != "prefix" {
				t.Errorf("dst changed on error: %q", got)
			}
		})
	}
}

func TestAppendCanonicalNoAlloc(t *testing.T) {
	buf := make([]byte, 0, 64)
	long := strings.Repeat("x", 200)
	tests := []struct {
		name string
		f    func()
	}{
		{"bigint text", func() { _, _ = AppendCanonicalText(buf, KeyBigint, " -42 ") }},
		{"uuid text", func() { _, _ = AppendCanonicalText(buf, KeyUUID, "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}") }},
		{"text text", func() { _, _ = AppendCanonicalText(buf, KeyText, "alice") }},
		{"int binary", func() { _, _ = AppendCanonicalBinary(buf, KeyInt, []byte{0, 0, 0, 42}) }},
		{"KeyspaceID bigint", func() { _, _ = KeyspaceID(KeyBigint, "1234567890123") }},
		{"KeyspaceID uuid", func() { _, _ = KeyspaceID(KeyUUID, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11") }},
		{"KeyspaceID long text", func() { _, _ = KeyspaceID(KeyText, long) }},
		{"KeyspaceIDBinary int2", func() { _, _ = KeyspaceIDBinary(KeySmallint, []byte{0, 42}) }},
	}
	for _, tt := range tests {
		if n := testing.AllocsPerRun(100, tt.f); n != 0 {
			t.Errorf("%s: %v allocs per run, want 0", tt.name, n)
		}
	}
}

func BenchmarkAppendCanonicalTextBigint(b *testing.B) {
	buf := make([]byte, 0, 8)
	b.ReportAllocs()
	for b.Loop() {
		c, err := AppendCanonicalText(buf[:0], KeyBigint, "1234567890123")
		if err != nil {
			b.Fatal(err)
		}
		_ = keyspaceID(c)
	}
}
