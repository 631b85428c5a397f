package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	goruntime "runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shardgate/shardgate/topology"
)

// The fuzz targets here need no PostgreSQL: TestMain starts none when
// fuzzing (see main_test.go). A client session runs over a scripted
// connection against shards nobody listens on, so everything up to the
// first server contact is what gets fuzzed: framing, startup,
// authentication, extended-protocol decoding and routing.

// FuzzReadMessage: any byte stream decodes into messages within their
// limit, or an error, and a message costs memory in proportion to the
// bytes that really arrived, whatever length it claims.
func FuzzReadMessage(f *testing.F) {
	f.Add(appendMessage(nil, 'Q', []byte("SELECT 1\x00")), 1<<20)
	f.Add([]byte{'Q', 0x7f, 0xff, 0xff, 0xff, 'x'}, 1<<30)
	f.Add([]byte{'S', 0, 0, 0, 4, 'X', 0, 0, 0, 4}, 100)
	f.Add([]byte{'p', 0xff, 0xff, 0xff, 0xf0}, maxAuthMessage)
	f.Fuzz(func(t *testing.T, data []byte, limit int) {
		if limit < 5 || limit > 1<<30 {
			limit = 1 << 30
		}
		rd := bufio.NewReaderSize(bytes.NewReader(data), clientReadBuffer)
		var buf []byte
		for {
			typ, body, err := readMessage(rd, buf, limit, "limit")
			if err != nil {
				return
			}
			if len(body)+4 > limit {
				t.Fatalf("message %q of %d bytes passed a limit of %d", typ, len(body)+4, limit)
			}
			if grown := max(len(data)*5/2, growStep*5/2, clientReadBuffer); cap(body) > grown {
				t.Fatalf("a %d-byte stream made a %d-byte buffer", len(data), cap(body))
			}
			buf = body[:0]
		}
	})
}

// FuzzHandshake: whatever a client sends from its first byte (SSL and GSS
// requests, cancel requests, startup packets, password and SASL messages),
// its session ends without a panic and with well-formed answers.
func FuzzHandshake(f *testing.F) {
	f.Add(startupPacket("app", "app"), false)
	f.Add(append(sslRequest(), startupPacket("app", "app")...), false)
	f.Add(append(startupPacket("app", "app"), appendMessage(nil, 'p', []byte("SCRAM-SHA-256\x00\x00\x00\x00\x20n,,n=,r=abcdefghijklmnopqrstuvwx"))...), false)
	f.Add(append(startupPacket("app", "app"), appendMessage(nil, 'p', []byte("SCRAM-SHA-256-PLUS\x00\xff\xff\xff\xff"))...), false)
	f.Add(append(startupPacket("app", "app"), appendMessage(nil, 'p', []byte("md5a3556571e93b0d20722ba62be61e8c2d\x00"))...), true)
	f.Add(append(startupPacket("nobody", "nowhere"), appendMessage(nil, 'p', []byte("secret\x00"))...), true)
	f.Add([]byte{0, 0, 0, 16, 4, 210, 22, 46, 0, 0, 0, 1, 0, 0, 0, 2}, false) // CancelRequest
	f.Add([]byte{0, 0, 0, 8, 4, 210, 22, 48}, false)                          // GSSENCRequest
	servers := map[bool]*Server{}
	for _, md5 := range []bool{false, true} {
		method := map[bool]string{false: "scram-sha-256", true: "md5"}[md5]
		servers[md5] = fuzzServer(f, func(c *topology.Config) {
			c.Auth = topology.AuthConfig{Type: method, Users: []topology.UserConfig{{Name: "app", Password: "s3cret"}}}
		})
	}
	f.Fuzz(func(t *testing.T, data []byte, md5 bool) { runScripted(t, servers[md5], data) })
}

// FuzzSession: after a good startup, whatever a logged-in client sends
// (simple queries, extended-protocol batches, COPY data, garbage) is
// answered with well-formed messages and never panics the session.
func FuzzSession(f *testing.F) {
	login := startupPacket("postgres", "app")
	q := func(sql string) []byte { return appendMessage(nil, 'Q', append([]byte(sql), 0)) }
	f.Add(q("SELECT * FROM users WHERE id = 1"))
	f.Add(q("BEGIN; SELECT 1; COMMIT"))
	f.Add(q("SELECT " + strings.Repeat("(", 5000) + "1" + strings.Repeat(")", 5000)))
	var batch []byte
	batch = appendMessage(batch, 'P', []byte("s1\x00SELECT * FROM users WHERE id = $1\x00\x00\x01\x00\x00\x00\x14"))
	batch = appendMessage(batch, 'B', []byte("\x00s1\x00\x00\x01\x00\x01\x00\x01\x00\x00\x00\x08\x00\x00\x00\x00\x00\x00\x00\x2a\x00\x00"))
	batch = appendMessage(batch, 'D', []byte("P\x00"))
	batch = appendMessage(batch, 'E', []byte("\x00\x00\x00\x00\x00"))
	batch = appendMessage(batch, 'S', nil)
	f.Add(batch)
	f.Add(appendMessage(nil, 'B', []byte("\x00nope\x00\xff\xff\x00\x00")))
	f.Add(appendMessage(nil, 'd', []byte("1\tx\n")))
	f.Add([]byte{'Q', 0, 0, 0, 4})
	s := fuzzServer(f, func(*topology.Config) {})
	// No shard answers, so the parameters a real one would report are set
	// here: startup then completes without a server.
	s.params = []param{{"server_version", "15.0"}, {"client_encoding", "UTF8"}}
	f.Fuzz(func(t *testing.T, data []byte) { runScripted(t, s, append(login[:len(login):len(login)], data...)) })
}

// runScripted runs one client session that reads data and then EOF, and
// checks what the proxy wrote back.
func runScripted(t *testing.T, s *Server, data []byte) {
	conn := &scriptedConn{in: bytes.NewReader(data)}
	c := newClient(s, conn, 1)
	c.entry.loginSlot, _ = s.logins.add(conn, 1<<20)
	s.track(c) // as Server.start does: the session's end untracks it
	panics := s.log.Handler().(*panicCatcher)
	before := panics.n.Load()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { c.serve(ctx); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		buf := make([]byte, 1<<20)
		t.Fatalf("session still running after 5s on input %q\n%s", data, buf[:goruntime.Stack(buf, true)])
	}
	if panics.n.Load() != before {
		t.Fatalf("the session panicked: %s", panics.last.Load())
	}
	if err := checkAnswers(conn.out.Bytes()); err != nil {
		t.Fatalf("malformed answer: %v\n%q", err, conn.out.Bytes())
	}
}

// checkAnswers parses what the proxy wrote: single-byte answers to SSL and
// GSS requests, then backend messages of known types, each framed exactly.
func checkAnswers(out []byte) error {
	for len(out) > 0 && (out[0] == 'N' || out[0] == 'S') && (len(out) == 1 || out[1] != 0) {
		out = out[1:]
	}
	for len(out) > 0 {
		if len(out) < 5 {
			return fmt.Errorf("%d bytes left, less than a header", len(out))
		}
		typ, size := out[0], int(binary.BigEndian.Uint32(out[1:]))
		if !strings.ContainsRune("RSKZEN1234CTDIAnstvcdGHW", rune(typ)) {
			return fmt.Errorf("unknown backend message type %q", typ)
		}
		if size < 4 || size+1 > len(out) {
			return fmt.Errorf("message %q claims %d bytes, %d left", typ, size, len(out)-1)
		}
		out = out[1+size:]
	}
	return nil
}

// fuzzServer is a server whose shards nobody listens on.
func fuzzServer(f *testing.F, edit func(*topology.Config)) *Server {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	cfg, err := topology.ParseConfig("fuzz.yaml", []byte(`
database: app
shards:
  - {name: s0, primary: "postgres://postgres@`+dead+`/app"}
  - {name: s1, primary: "postgres://postgres@`+dead+`/app"}
keyspace:
  - {range: "-80", shard: s0}
  - {range: "80-", shard: s1}
tables:
  users: {shard_key: id}
  posts: {shard_key: user_id}
reference_tables: [countries]
pool:
  server_connect_timeout: 100ms
  query_wait_timeout: 100ms
`))
	if err != nil {
		f.Fatal(err)
	}
	edit(cfg)
	s, err := New(cfg, slog.New(&panicCatcher{}))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		s.rt.Load().backends.Close()
	})
	return s
}

// panicCatcher is a log handler that counts the session's recovered
// panics, which serve logs instead of crashing.
type panicCatcher struct {
	n    atomic.Int64
	last atomic.Value
}

func (h *panicCatcher) Enabled(context.Context, slog.Level) bool { return true }
func (h *panicCatcher) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *panicCatcher) WithGroup(string) slog.Handler            { return h }
func (h *panicCatcher) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "panicked") {
		var b strings.Builder
		r.Attrs(func(a slog.Attr) bool { b.WriteString(a.String() + "\n"); return true })
		h.last.Store(b.String())
		h.n.Add(1)
	}
	return nil
}

// scriptedConn is a client connection that sends a script, then EOF.
type scriptedConn struct {
	in  *bytes.Reader
	out bytes.Buffer
}

func (c *scriptedConn) Read(b []byte) (int, error)       { return c.in.Read(b) }
func (c *scriptedConn) Write(b []byte) (int, error)      { return c.out.Write(b) }
func (c *scriptedConn) Close() error                     { return nil }
func (c *scriptedConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *scriptedConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *scriptedConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptedConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptedConn) SetWriteDeadline(time.Time) error { return nil }

func startupPacket(user, database string) []byte {
	body := binary.BigEndian.AppendUint32(nil, protocolVersion30)
	body = append(body, "user\x00"+user+"\x00database\x00"+database+"\x00\x00"...)
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body)+4)), body...)
}

func sslRequest() []byte { return []byte{0, 0, 0, 8, 4, 210, 22, 47} }
