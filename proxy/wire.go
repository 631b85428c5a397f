package proxy

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/shardgate/shardgate/router"
)

// maxMessageLen bounds one frontend message, as Postgres does (1 GB), so a
// corrupt length cannot make the proxy allocate without limit.
const maxMessageLen = 1 << 30

// readMessage reads one typed message; body reuses buf's storage.
func readMessage(r *bufio.Reader, buf []byte) (typ byte, body []byte, err error) {
	hdr, err := r.Peek(5)
	if err != nil {
		return 0, nil, err
	}
	typ = hdr[0]
	n := int(binary.BigEndian.Uint32(hdr[1:])) - 4
	if n < 0 || n > maxMessageLen {
		return 0, nil, fmt.Errorf("invalid message length %d for message type %q", n+4, typ)
	}
	if _, err := r.Discard(5); err != nil {
		return 0, nil, err
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	body = buf[:n]
	_, err = io.ReadFull(r, body)
	return typ, body, err
}

// readStartup reads the untyped first message of a connection.
func readStartup(r *bufio.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[:])) - 4
	if n < 4 || n > 10000 {
		return nil, fmt.Errorf("invalid startup message length %d", n+4)
	}
	body := make([]byte, n)
	_, err := io.ReadFull(r, body)
	return body, err
}

func appendMessage(dst []byte, typ byte, body []byte) []byte {
	dst = append(dst, typ)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(body)+4))
	return append(dst, body...)
}

func appendReadyForQuery(dst []byte, status byte) []byte {
	return append(dst, 'Z', 0, 0, 0, 5, status)
}

func appendCommandComplete(dst []byte, tag string) []byte {
	dst = append(dst, 'C')
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(tag)+5))
	dst = append(dst, tag...)
	return append(dst, 0)
}

func appendEmpty(dst []byte, typ byte) []byte { return append(dst, typ, 0, 0, 0, 4) }

func appendError(dst []byte, e *router.Error) []byte {
	msg := pgproto3.ErrorResponse{
		Severity: "ERROR", SeverityUnlocalized: "ERROR",
		Code: e.Code, Message: e.Message, Detail: e.Detail, Hint: e.Hint, Position: e.Position, Where: e.Where,
	}
	out, err := msg.Encode(dst)
	if err != nil { // only fields over 1 GB fail, and the proxy builds none
		return dst
	}
	return out
}

func appendParameterStatus(dst []byte, name, value string) []byte {
	dst = append(dst, 'S')
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(name)+len(value)+6))
	dst = append(dst, name...)
	dst = append(dst, 0)
	dst = append(dst, value...)
	return append(dst, 0)
}

// cstring splits a NUL-terminated string off the front of b.
func cstring(b []byte) (s []byte, rest []byte, ok bool) {
	for i, c := range b {
		if c == 0 {
			return b[:i], b[i+1:], true
		}
	}
	return nil, nil, false
}
