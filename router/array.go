package router

import (
	"encoding/binary"
	"errors"
	"unsafe"
)

// unsafeString views b as a string without copying, for parsing a value
// that does not outlive the call.
func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// arrayElements splits a one-dimensional array parameter (= ANY($1)) into
// its non-NULL elements, in the text ('{1,2,"3"}') or binary wire format.
// The second result says whether the elements are binary.
func arrayElements(v []byte, isBinary bool) ([][]byte, bool, error) {
	if v == nil {
		return nil, false, nil
	}
	if isBinary {
		elems, err := binaryArray(v)
		return elems, true, err
	}
	elems, err := textArray(v)
	return elems, false, err
}

var errArray = errors.New("malformed array parameter for the shard key")

func textArray(v []byte) ([][]byte, error) {
	if len(v) < 2 || v[0] != '{' || v[len(v)-1] != '}' {
		return nil, errArray
	}
	body := v[1 : len(v)-1]
	var out [][]byte
	for len(body) > 0 {
		var elem []byte
		quoted := false
		if body[0] == '"' {
			quoted = true
			i := 1
			for ; i < len(body) && body[i] != '"'; i++ {
				if body[i] == '\\' && i+1 < len(body) {
					i++
				}
				elem = append(elem, body[i])
			}
			if i >= len(body) {
				return nil, errArray
			}
			body = body[i+1:]
		} else {
			i := 0
			for i < len(body) && body[i] != ',' {
				i++
			}
			elem, body = body[:i], body[i:]
			if string(elem) == "{" || len(elem) > 0 && elem[0] == '{' {
				return nil, errors.New("the shard key array parameter must be one-dimensional")
			}
		}
		if quoted || string(elem) != "NULL" {
			out = append(out, elem)
		}
		if len(body) > 0 {
			if body[0] != ',' {
				return nil, errArray
			}
			body = body[1:]
		}
	}
	return out, nil
}

func binaryArray(v []byte) ([][]byte, error) {
	if len(v) < 12 {
		return nil, errArray
	}
	ndim := int32(binary.BigEndian.Uint32(v))
	v = v[12:] // ndim, has-null flag, element type
	if ndim == 0 {
		return nil, nil
	}
	if ndim != 1 || len(v) < 8 {
		return nil, errors.New("the shard key array parameter must be one-dimensional")
	}
	n := int(int32(binary.BigEndian.Uint32(v)))
	v = v[8:]
	out := make([][]byte, 0, n)
	for i := 0; i < n; i++ {
		if len(v) < 4 {
			return nil, errArray
		}
		size := int32(binary.BigEndian.Uint32(v))
		v = v[4:]
		if size < 0 {
			continue
		}
		if int(size) > len(v) {
			return nil, errArray
		}
		out = append(out, v[:size])
		v = v[size:]
	}
	return out, nil
}
