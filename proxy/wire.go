package proxy

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"slices"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/shardgate/shardgate/pgerr"
)

// Message size limits, as in Postgres's pqcomm.c: before login a client
// has proved nothing, so what it may send is small; after login the bound
// is max_packet_size.
const (
	// maxStartupPacket is Postgres's MAX_STARTUP_PACKET_LENGTH.
	maxStartupPacket = 10000
	// maxAuthMessage bounds password and SASL messages: Postgres's
	// PG_MAX_AUTH_TOKEN_LENGTH is 65535.
	maxAuthMessage = 64 << 10
	// maxSmallMessage bounds messages that carry nothing of the client's
	// (Sync, Flush, Terminate, CopyDone): Postgres's PQ_SMALL_MESSAGE_LIMIT.
	maxSmallMessage = 5000
	// maxServerMessage bounds a server's message: servers are trusted, but
	// a corrupt length must not allocate without limit.
	maxServerMessage = 1 << 30
	// growStep is the first allocation for a message larger than the
	// buffer at hand; larger messages grow from there as bytes arrive.
	growStep = 64 << 10
	// keepBuffer is the largest buffer a connection keeps between
	// messages: one large message must not cost its size for the life of
	// the connection.
	keepBuffer = 64 << 10
)

// errMessageTooLarge: a message's length is over the bound for its place
// in the protocol. The stream cannot be resynchronised without reading the
// rest, so the client is disconnected, as Postgres and PgBouncer do.
type errMessageTooLarge struct {
	typ       byte
	size, max int
	limitName string
}

func (e *errMessageTooLarge) Error() string {
	return fmt.Sprintf("message of type %q is %d bytes, over the limit of %d (%s)", e.typ, e.size, e.max, e.limitName)
}

// readMessage reads one typed message of at most limit bytes (limitName
// names it in errors); body reuses buf's storage when it fits.
func readMessage(r *bufio.Reader, buf []byte, limit int, limitName string) (typ byte, body []byte, err error) {
	hdr, err := r.Peek(5)
	if err != nil {
		return 0, nil, err
	}
	typ = hdr[0]
	size := int(int32(binary.BigEndian.Uint32(hdr[1:])))
	if size < 4 {
		return 0, nil, fmt.Errorf("invalid message length %d for message type %q", size, typ)
	}
	switch typ {
	case 'S', 'H', 'X', 'c':
		if limit > maxSmallMessage {
			limit, limitName = maxSmallMessage, "the limit for this message type"
		}
	}
	if size > limit {
		return 0, nil, &errMessageTooLarge{typ: typ, size: size, max: limit, limitName: limitName}
	}
	if _, err := r.Discard(5); err != nil {
		return 0, nil, err
	}
	body, err = readBody(r, buf, size-4)
	return typ, body, err
}

// readBody reads n bytes into buf's storage when they fit; otherwise it
// grows a buffer as the bytes arrive, so a length claimed but never sent
// costs nothing.
func readBody(r io.Reader, buf []byte, n int) ([]byte, error) {
	if n <= cap(buf) {
		body := buf[:n]
		_, err := io.ReadFull(r, body)
		return body, err
	}
	body := buf[:0]
	for len(body) < n {
		if len(body) == cap(body) {
			body = slices.Grow(body, min(n-len(body), max(len(body), growStep)))
		}
		m, err := r.Read(body[len(body):min(cap(body), n)])
		body = body[:len(body)+m]
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return body, err
		}
	}
	return body, nil
}

// shrink drops an empty buffer grown past keepBuffer; small ones stay for
// reuse and one still holding bytes is left alone.
func shrink(b []byte) []byte {
	if len(b) == 0 && cap(b) > keepBuffer {
		return nil
	}
	return b
}

// readStartup reads the untyped first message of a connection.
func readStartup(r *bufio.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[:])) - 4
	if n < 4 || n > maxStartupPacket {
		return nil, fmt.Errorf("invalid startup packet length %d", n+4)
	}
	return readBody(r, nil, n)
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

func appendError(dst []byte, e *pgerr.Error) []byte {
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
