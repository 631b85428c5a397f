package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// probe is one kind of hostile client, run in a loop through the main
// phase; run returns what the proxy did, e.g. "error 08P01, closed".
type probe struct {
	name  string
	pause time.Duration // between two runs
	run   func(h *hostile, ctx context.Context, i int) string
}

var probes = []probe{
	{"huge-startup", 500 * time.Millisecond, (*hostile).hugeStartup},
	{"huge-message", time.Second, (*hostile).hugeMessage},
	{"slowloris", 0, nil}, // waves, see slowloris
	{"garbage", 200 * time.Millisecond, (*hostile).garbage},
	{"ssl-probe", 200 * time.Millisecond, (*hostile).sslProbe},
	{"bad-length", 200 * time.Millisecond, (*hostile).badLength},
	{"unknown-type", 200 * time.Millisecond, (*hostile).unknownType},
	{"long-expr", 2 * time.Second, (*hostile).longExpr},
	{"deep-parens", 2 * time.Second, (*hostile).deepParens},
	{"in-list", 2 * time.Second, (*hostile).inList},
	{"no-read", 2 * time.Second, (*hostile).noRead},
}

func probeNames() []string {
	names := make([]string, len(probes))
	for i, p := range probes {
		names[i] = p.name
	}
	return names
}

// hostile runs the probes and counts what the proxy did to each.
type hostile struct {
	addr, db string
	o        options

	mu       sync.Mutex
	outcomes map[string]map[string]int // by probe, then outcome
	peakHalf int                       // most half-open logins held at once
	half     int
}

// start runs the chosen probes until ctx ends; the channel is closed once
// every hostile connection is closed.
func (h *hostile) start(ctx context.Context, names []string) <-chan struct{} {
	h.outcomes = map[string]map[string]int{}
	var wg sync.WaitGroup
	for _, p := range probes {
		if !slices.Contains(names, p.name) {
			continue
		}
		if p.name == "slowloris" {
			wg.Go(func() { h.slowloris(ctx) })
			continue
		}
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				out := p.run(h, ctx, i)
				if ctx.Err() != nil && cutShort(out) {
					break
				}
				h.count(p.name, out)
				sleep(ctx, p.pause)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	return done
}

// cutShort reports whether an outcome is that of a run the end of the
// phase interrupted before it sent its probe, which is not counted.
func cutShort(outcome string) bool {
	for _, prefix := range []string{"dial failed", "login failed", "write failed"} {
		if strings.HasPrefix(outcome, prefix) {
			return true
		}
	}
	return false
}

func (h *hostile) count(probe, outcome string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.outcomes[probe] == nil {
		h.outcomes[probe] = map[string]int{}
	}
	h.outcomes[probe][outcome]++
}

// dial connects a hostile client that ctx's end closes.
func (h *hostile) dial(ctx context.Context) (*rawConn, func(), error) {
	c, err := dialRaw(ctx, h.addr)
	if err != nil {
		return nil, nil, err
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	return c, func() { stop(); c.Close() }, nil
}

// loggedIn dials and logs in; on failure it returns the outcome to count.
func (h *hostile) loggedIn(ctx context.Context) (*rawConn, func(), string) {
	c, closeConn, err := h.dial(ctx)
	if err != nil {
		return nil, nil, "dial failed"
	}
	if err := c.login(h.db); err != nil {
		closeConn()
		return nil, nil, "login failed: " + err.Error()
	}
	return c, closeConn, ""
}

// stallOrClose waits for the proxy's reaction after a message that
// promised more bytes (even runs), or closes at once (odd runs).
func stallOrClose(c *rawConn, i int, stall time.Duration) string {
	if i%2 == 1 {
		return "client closed at once"
	}
	return "stalled: " + c.await(stall)
}

// hugeStartup sends a startup packet header claiming 1 GB, then a few
// bytes of it.
func (h *hostile) hugeStartup(ctx context.Context, i int) string {
	c, closeConn, err := h.dial(ctx)
	if err != nil {
		return "dial failed"
	}
	defer closeConn()
	b := binary.BigEndian.AppendUint32(nil, 1<<30)
	b = binary.BigEndian.AppendUint32(b, protocol3)
	if err := c.send(append(b, "user\x00postgres\x00"...)); err != nil {
		return "write failed"
	}
	return stallOrClose(c, i, 5*time.Second)
}

// hugeMessage logs in, then sends a Query (or Parse) header claiming 1 GB
// and the first bytes of its body.
func (h *hostile) hugeMessage(ctx context.Context, i int) string {
	c, closeConn, out := h.loggedIn(ctx)
	if c == nil {
		return out
	}
	defer closeConn()
	typ := []byte{'Q', 'P'}[i/2%2]
	b := binary.BigEndian.AppendUint32([]byte{typ}, 1<<30)
	if err := c.send(append(b, "SELECT 1 -- and then a gigabyte"...)); err != nil {
		return string(typ) + ": write failed"
	}
	return string(typ) + " " + stallOrClose(c, i, 5*time.Second)
}

// garbage sends random bytes, before login on even runs, after on odd.
func (h *hostile) garbage(ctx context.Context, i int) string {
	r := rand.New(rand.NewPCG(uint64(i), 3))
	junk := make([]byte, 64+r.IntN(4096))
	for j := range junk {
		junk[j] = byte(r.Uint32())
	}
	var (
		c         *rawConn
		closeConn func()
		when      = "before login"
	)
	if i%2 == 0 {
		var err error
		if c, closeConn, err = h.dial(ctx); err != nil {
			return "dial failed"
		}
	} else {
		var out string
		if c, closeConn, out = h.loggedIn(ctx); c == nil {
			return out
		}
		when = "after login"
	}
	defer closeConn()
	if err := c.send(junk); err != nil {
		return when + ": write failed"
	}
	return when + ": " + c.await(3*time.Second)
}

// sslProbe asks for TLS, then GSS encryption, as clients do before
// falling back to plain text, then closes or logs in.
func (h *hostile) sslProbe(ctx context.Context, i int) string {
	c, closeConn, err := h.dial(ctx)
	if err != nil {
		return "dial failed"
	}
	defer closeConn()
	var answers []string
	for _, code := range []uint32{sslRequestCode, gssEncRequestCode} {
		if err := c.send(untyped(code, nil)); err != nil {
			return "write failed"
		}
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		b, err := c.rd.ReadByte()
		if err != nil {
			return strings.Join(append(answers, "closed"), ", ")
		}
		answers = append(answers, strconv.QuoteRune(rune(b)))
		if b == 'S' {
			return strings.Join(append(answers, "(TLS offered) client closed"), ", ")
		}
	}
	if i%2 == 0 {
		return strings.Join(append(answers, "client closed"), ", ")
	}
	out := "login ok"
	if err := c.login(h.db); err != nil {
		out = "login failed: " + err.Error()
	}
	return strings.Join(append(answers, out), ", ")
}

// badLengths are message lengths no valid message has: below the header
// itself, "negative" as a signed 32-bit number, or (for a startup packet)
// ten times Postgres's limit of 10,000 bytes.
var badLengths = []uint32{0, 3, 0xffffffff, 0x80000000, 100000}

// badLength sends a startup packet, or after login a Query, whose length
// field is absurd.
func (h *hostile) badLength(ctx context.Context, i int) string {
	length := badLengths[i/2%len(badLengths)]
	label := fmt.Sprintf("length %d (%#x)", int32(length), length)
	var (
		c         *rawConn
		closeConn func()
		b         []byte
	)
	if i%2 == 0 {
		var err error
		if c, closeConn, err = h.dial(ctx); err != nil {
			return "dial failed"
		}
		b = binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, length), protocol3)
		label = "startup " + label
	} else {
		var out string
		if c, closeConn, out = h.loggedIn(ctx); c == nil {
			return out
		}
		b = append(binary.BigEndian.AppendUint32([]byte{'Q'}, length), "SELECT 1\x00"...)
		label = "Q " + label
	}
	defer closeConn()
	if err := c.send(b); err != nil {
		return label + ": write failed"
	}
	return label + ": " + c.await(3*time.Second)
}

// unknownType sends, after login, messages of types no frontend message has.
func (h *hostile) unknownType(ctx context.Context, i int) string {
	typ := []byte{'y', 'A', 0, 0xff, 'k'}[i%5]
	c, closeConn, out := h.loggedIn(ctx)
	if c == nil {
		return out
	}
	defer closeConn()
	label := fmt.Sprintf("type %q", typ)
	if err := c.send(message(typ, []byte("hello\x00"))); err != nil {
		return label + ": write failed"
	}
	return label + ": " + c.await(3*time.Second)
}

// bigQuery sends sql as a simple Query (even runs) or through the extended
// protocol (odd runs) and waits for the whole answer.
func (h *hostile) bigQuery(ctx context.Context, i int, sql string) string {
	c, closeConn, out := h.loggedIn(ctx)
	if c == nil {
		return out
	}
	defer closeConn()
	label, msg := "simple", queryMessage(sql)
	if i%2 == 1 {
		label, msg = "extended", extendedQuery(sql)
	}
	if err := c.send(msg); err != nil {
		return label + ": write failed"
	}
	return label + ": " + c.await(60*time.Second)
}

// longExpr is SELECT 1+1+...+1 with -terms terms.
func (h *hostile) longExpr(ctx context.Context, i int) string {
	return h.bigQuery(ctx, i, "SELECT 1"+strings.Repeat("+1", h.o.terms-1))
}

// deepParens is SELECT ((...(1)...)) nested -depth times.
func (h *hostile) deepParens(ctx context.Context, i int) string {
	return h.bigQuery(ctx, i, "SELECT "+strings.Repeat("(", h.o.depth)+"1"+strings.Repeat(")", h.o.depth))
}

// inList is a keyed select with -terms values in an IN list on the shard key.
func (h *hostile) inList(ctx context.Context, i int) string {
	var b strings.Builder
	b.WriteString("SELECT id FROM users WHERE id IN (1")
	for v := 2; v <= h.o.terms; v++ {
		b.WriteString(",")
		b.WriteString(strconv.Itoa(v))
	}
	b.WriteString(")")
	return h.bigQuery(ctx, i, b.String())
}

// noReadHold is how long a no-read client keeps its query's result unread.
const noReadHold = 15 * time.Second

// noRead sends a query with a 256 MB result and never reads it.
func (h *hostile) noRead(ctx context.Context, _ int) string {
	c, closeConn, out := h.loggedIn(ctx)
	if c == nil {
		return out
	}
	defer closeConn()
	if err := c.send(queryMessage("SELECT repeat('x', 1048576) FROM generate_series(1, 256)")); err != nil {
		return "write failed"
	}
	sleep(ctx, noReadHold)
	return fmt.Sprintf("result unread for %s, client closed", noReadHold)
}
