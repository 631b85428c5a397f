package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

// rawConn is a hostile client's connection: the wire protocol written by
// hand, so that a probe can send what no driver would.
type rawConn struct {
	net.Conn
	rd *bufio.Reader
}

// Protocol codes of the untyped first messages.
const (
	protocol3         = 196608
	sslRequestCode    = 80877103
	gssEncRequestCode = 80877104
)

func dialRaw(ctx context.Context, addr string) (*rawConn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &rawConn{Conn: c, rd: bufio.NewReader(c)}, nil
}

// send writes b, giving up after 5 s (a proxy that stopped reading).
func (c *rawConn) send(b []byte) error {
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Write(b)
	return err
}

func startupMessage(db string) []byte {
	b := binary.BigEndian.AppendUint32(make([]byte, 4, 64), protocol3)
	for _, kv := range [][2]string{{"user", "postgres"}, {"database", db}, {"application_name", "soak-hostile"}} {
		b = append(append(b, kv[0]...), 0)
		b = append(append(b, kv[1]...), 0)
	}
	b = append(b, 0)
	binary.BigEndian.PutUint32(b, uint32(len(b)))
	return b
}

// untyped is a first message: length, code, body.
func untyped(code uint32, body []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(8+len(body)))
	b = binary.BigEndian.AppendUint32(b, code)
	return append(b, body...)
}

func message(typ byte, body []byte) []byte {
	b := append([]byte{typ}, 0, 0, 0, 0)
	binary.BigEndian.PutUint32(b[1:], uint32(4+len(body)))
	return append(b, body...)
}

func queryMessage(sql string) []byte { return message('Q', append([]byte(sql), 0)) }

// extendedQuery is Parse, Bind, Execute and Sync of an unnamed statement
// without parameters.
func extendedQuery(sql string) []byte {
	b := message('P', append(append([]byte{0}, sql...), 0, 0, 0))
	b = append(b, message('B', []byte{0, 0, 0, 0, 0, 0, 0, 0})...)
	b = append(b, message('E', []byte{0, 0, 0, 0, 0})...)
	return append(b, message('S', nil)...)
}

// login completes the startup handshake (trust authentication).
func (c *rawConn) login(db string) error {
	if err := c.send(startupMessage(db)); err != nil {
		return err
	}
	out := c.await(10 * time.Second)
	if out != "answered" {
		return errors.New(out)
	}
	return nil
}

// await reads the proxy's answer up to ReadyForQuery and sums it up:
// "answered", "error CODE" (then ReadyForQuery), "error CODE, closed",
// "closed" or "no answer in T".
func (c *rawConn) await(timeout time.Duration) string {
	c.SetReadDeadline(time.Now().Add(timeout))
	var code string
	for {
		typ, body, err := c.readMessage()
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			return fmt.Sprintf("%sno answer in %s", withComma(code), timeout)
		case err != nil:
			return withComma(code) + "closed"
		case typ == 'E' && code == "":
			code = "error " + errorCode(body)
		case typ == 'Z' && code != "":
			return code
		case typ == 'Z':
			return "answered"
		}
	}
}

func withComma(s string) string {
	if s == "" {
		return ""
	}
	return s + ", "
}

// readMessage reads one backend message; bodies over 16 MB are skipped.
func (c *rawConn) readMessage() (typ byte, body []byte, err error) {
	var hdr [5]byte
	if _, err := io.ReadFull(c.rd, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := int64(binary.BigEndian.Uint32(hdr[1:])) - 4
	if n < 0 {
		return 0, nil, fmt.Errorf("bad message length %d", n+4)
	}
	if n > 16<<20 {
		_, err := io.CopyN(io.Discard, c.rd, n)
		return hdr[0], nil, err
	}
	body = make([]byte, n)
	_, err = io.ReadFull(c.rd, body)
	return hdr[0], body, err
}

// errorCode is the SQLSTATE field of an ErrorResponse body.
func errorCode(body []byte) string {
	for len(body) > 1 {
		field := body[0]
		end := 1
		for end < len(body) && body[end] != 0 {
			end++
		}
		if field == 'C' {
			return string(body[1:end])
		}
		if end+1 >= len(body) {
			break
		}
		body = body[end+1:]
	}
	return "?"
}
