package topology

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"unsafe"

	"github.com/cespare/xxhash/v2"
)

// KeyType is the SQL type of a table's shard key. It decides how a key value
// is turned into canonical bytes before hashing.
type KeyType string

const (
	KeyBigint   KeyType = "bigint"
	KeyInt      KeyType = "int"
	KeySmallint KeyType = "smallint"
	KeyText     KeyType = "text"
	KeyUUID     KeyType = "uuid"
)

func (kt KeyType) valid() bool {
	switch kt {
	case KeyBigint, KeyInt, KeySmallint, KeyText, KeyUUID:
		return true
	}
	return false
}

// The hashing contract. It is public (the README documents it) because rows
// already placed on shards depend on it: changing it moves every key.
//
// Canonical key bytes:
//   - bigint, int, smallint: the value as an int64, 8 bytes big-endian two's
//     complement. The width of the key type does not matter, so 42 as int2,
//     int4 or int8 has the same canonical bytes.
//   - text: the value's UTF-8 bytes, unmodified (no trimming, no case or
//     Unicode normalisation).
//   - uuid: its 16 raw bytes in RFC 4122 order, i.e. the order the hex digits
//     are written in.
//
// The keyspace id of a key is the hash of its canonical bytes: xxHash64 with seed
// 0 (github.com/cespare/xxhash/v2, Sum64).

// KeyspaceID returns the keyspace id of a key written as text: a SQL
// literal, a text-format bind parameter, a COPY text or CSV field, or a
// routing hint. Every path that places a key comes through here or through
// KeyspaceIDBinary, so live routing, COPY and resharding cannot disagree.
func KeyspaceID(kt KeyType, text string) (uint64, error) {
	if kt == KeyText { // canonical bytes are the text itself: no copy
		return keyspaceID(unsafe.Slice(unsafe.StringData(text), len(text))), nil
	}
	var buf [maxFixedCanonical]byte
	canon, err := AppendCanonicalText(buf[:0], kt, text)
	if err != nil {
		return 0, err
	}
	return keyspaceID(canon), nil
}

// KeyspaceIDBinary returns the keyspace id of a key given as a binary-format
// bind parameter.
func KeyspaceIDBinary(kt KeyType, b []byte) (uint64, error) {
	if kt == KeyText {
		return keyspaceID(b), nil
	}
	var buf [maxFixedCanonical]byte
	canon, err := AppendCanonicalBinary(buf[:0], kt, b)
	if err != nil {
		return 0, err
	}
	return keyspaceID(canon), nil
}

// maxFixedCanonical is the longest canonical form of a fixed-size key type
// (a uuid's 16 bytes), so those never leave the stack.
const maxFixedCanonical = 16

// keyspaceID is the one place canonical bytes become a keyspace id.
func keyspaceID(canonical []byte) uint64 {
	return xxhash.Sum64(canonical)
}

// AppendCanonicalText appends the canonical bytes of a key given in text
// form, as in a SQL literal or a text-format bind parameter, to dst.
//
// Integer types accept what PostgreSQL's int2in/int4in/int8in accept for
// decimal input: optional leading and trailing whitespace, an optional + or
// - sign, and decimal digits. The value must fit the key type (smallint
// -32768..32767, int the int32 range, bigint the int64 range). PostgreSQL
// 16's non-decimal (0x2A) and underscore (1_000) forms are rejected.
//
// uuid accepts what PostgreSQL's uuid_in accepts: 32 hex digits in either
// case, optionally wrapped in braces, with an optional hyphen after any group
// of four digits (this covers the canonical 8-4-4-4-12 form and the
// no-hyphen form). Anything else, including surrounding whitespace, is
// rejected.
//
// It does not allocate when dst has room for the result.
func AppendCanonicalText(dst []byte, kt KeyType, text string) ([]byte, error) {
	switch kt {
	case KeyBigint, KeyInt, KeySmallint:
		v, err := strconv.ParseInt(trimSpace(text), 10, 64)
		if err != nil {
			if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
				return dst, fmt.Errorf("value %q is out of range for %s", text, kt)
			}
			return dst, fmt.Errorf("invalid input syntax for %s: %q", kt, text)
		}
		if !fits(kt, v) {
			return dst, fmt.Errorf("value %q is out of range for %s", text, kt)
		}
		return binary.BigEndian.AppendUint64(dst, uint64(v)), nil
	case KeyText:
		return append(dst, text...), nil
	case KeyUUID:
		return appendUUIDText(dst, text)
	}
	return dst, fmt.Errorf("unknown key type %q", kt)
}

// AppendCanonicalBinary appends the canonical bytes of a key given as a
// binary-format bind parameter to dst.
//
// Integer types accept 2, 4 or 8 bytes (the int2, int4 and int8 wire
// encodings: big-endian two's complement), sign-extended to int64; the value
// must fit the key type. text takes the bytes as they are. uuid takes exactly
// 16 bytes.
//
// It does not allocate when dst has room for the result.
func AppendCanonicalBinary(dst []byte, kt KeyType, b []byte) ([]byte, error) {
	switch kt {
	case KeyBigint, KeyInt, KeySmallint:
		var v int64
		switch len(b) {
		case 2:
			v = int64(int16(binary.BigEndian.Uint16(b)))
		case 4:
			v = int64(int32(binary.BigEndian.Uint32(b)))
		case 8:
			v = int64(binary.BigEndian.Uint64(b))
		default:
			return dst, fmt.Errorf("binary %s value has %d bytes, want 2, 4 or 8", kt, len(b))
		}
		if !fits(kt, v) {
			return dst, fmt.Errorf("value %d is out of range for %s", v, kt)
		}
		return binary.BigEndian.AppendUint64(dst, uint64(v)), nil
	case KeyText:
		return append(dst, b...), nil
	case KeyUUID:
		if len(b) != 16 {
			return dst, fmt.Errorf("binary uuid value has %d bytes, want 16", len(b))
		}
		return append(dst, b...), nil
	}
	return dst, fmt.Errorf("unknown key type %q", kt)
}

func fits(kt KeyType, v int64) bool {
	switch kt {
	case KeySmallint:
		return v >= -1<<15 && v < 1<<15
	case KeyInt:
		return v >= -1<<31 && v < 1<<31
	}
	return true
}

// trimSpace trims the characters C's isspace accepts, which is what
// PostgreSQL's integer input functions skip; strings.TrimSpace would also
// trim Unicode spaces.
func trimSpace(s string) string {
	for len(s) > 0 && isSpace(s[0]) {
		s = s[1:]
	}
	for len(s) > 0 && isSpace(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	return s
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

// appendUUIDText mirrors PostgreSQL's string_to_uuid so that exactly the
// spellings the server would store are routed.
func appendUUIDText(dst []byte, text string) ([]byte, error) {
	s := text
	braces := len(s) > 0 && s[0] == '{'
	if braces {
		s = s[1:]
	}
	n := len(dst)
	for i := 0; i < 16; i++ {
		if len(s) < 2 || !isHex(s[0]) || !isHex(s[1]) {
			return dst[:n], fmt.Errorf("invalid input syntax for uuid: %q", text)
		}
		dst = append(dst, unhex(s[0])<<4|unhex(s[1]))
		s = s[2:]
		if len(s) > 0 && s[0] == '-' && i%2 == 1 && i < 15 {
			s = s[1:]
		}
	}
	if braces {
		if len(s) == 0 || s[0] != '}' {
			return dst[:n], fmt.Errorf("invalid input syntax for uuid: %q", text)
		}
		s = s[1:]
	}
	if s != "" {
		return dst[:n], fmt.Errorf("invalid input syntax for uuid: %q", text)
	}
	return dst, nil
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}
