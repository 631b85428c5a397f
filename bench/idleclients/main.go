// Command idleclients opens many PostgreSQL client connections, completes
// the startup handshake on each (trust authentication only), and holds them
// idle so that a benchmark can measure a pooler's memory per idle client.
//
// It speaks the startup part of the wire protocol itself, with the standard
// library only, so that the holder costs a socket and a few hundred bytes per
// connection rather than a driver's buffers:
//
//	idleclients -addr 127.0.0.1:6432 -n 10000 -hold 10m
//
// When every connection is ready it prints one line starting with
// "connected", then waits for SIGINT, SIGTERM or -hold. Before closing it
// runs "SELECT 1" on every connection (unless -verify=false) and prints how
// many answered, so a pooler that silently dropped idle clients is noticed.
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	var (
		addr     = flag.String("addr", "127.0.0.1:6432", "host:port to connect to")
		user     = flag.String("user", "postgres", "user name in the startup message")
		database = flag.String("db", "app", "database name in the startup message")
		n        = flag.Int("n", 10000, "number of connections")
		parallel = flag.Int("parallel", 32, "connections being opened at once")
		hold     = flag.Duration("hold", 10*time.Minute, "how long to hold the connections at most")
		timeout  = flag.Duration("timeout", 30*time.Second, "deadline for one connection's startup (and for -verify)")
		verify   = flag.Bool("verify", true, "run SELECT 1 on every connection before closing")
	)
	flag.Parse()
	if err := run(*addr, *user, *database, *n, *parallel, *hold, *timeout, *verify); err != nil {
		fmt.Fprintln(os.Stderr, "idleclients:", err)
		os.Exit(1)
	}
}

func run(addr, user, database string, n, parallel int, hold, timeout time.Duration, verify bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	startup := startupMessage(map[string]string{
		"user": user, "database": database, "application_name": "idleclients",
	})
	conns := make([]net.Conn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Write([]byte{'X', 0, 0, 0, 4}) // Terminate; errors do not matter here
				c.Close()
			}
		}
	}()

	began := time.Now()
	var (
		retries  atomic.Int64
		firstErr error
		errOnce  sync.Once
	)
	forEach(n, parallel, func(i int) bool {
		if ctx.Err() != nil {
			return false
		}
		c, err := connect(ctx, addr, startup, timeout, &retries)
		if err != nil {
			errOnce.Do(func() { firstErr = fmt.Errorf("connection %d: %w", i+1, err) })
			return false // stop the other workers
		}
		conns[i] = c
		return true
	})
	if firstErr != nil {
		return fmt.Errorf("%w (after %d connected)", firstErr, countOpen(conns))
	}
	if ctx.Err() != nil {
		return errors.New("interrupted while connecting")
	}
	fmt.Printf("connected %d clients to %s in %.1fs (%d dial retries)\n",
		n, addr, time.Since(began).Seconds(), retries.Load())

	select {
	case <-ctx.Done():
	case <-time.After(hold):
	}
	stop()
	if verify {
		ok := verifyAll(conns, parallel, timeout)
		fmt.Printf("verified %d/%d clients still answer SELECT 1\n", ok, n)
		if ok != n {
			return fmt.Errorf("%d of %d idle clients no longer answer", n-ok, n)
		}
	}
	return nil
}

// connect dials addr and completes the startup handshake. Dials that fail
// because the loopback has run out of ephemeral ports (many TIME_WAIT
// sockets after a reconnect benchmark) are retried for a while.
func connect(ctx context.Context, addr string, startup []byte, timeout time.Duration, retries *atomic.Int64) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	var (
		c   net.Conn
		err error
	)
	for attempt := 0; ; attempt++ {
		c, err = d.DialContext(ctx, "tcp", addr)
		if err == nil || attempt == 50 || !errors.Is(err, syscall.EADDRNOTAVAIL) {
			break
		}
		retries.Add(1)
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write(startup); err != nil {
		c.Close()
		return nil, err
	}
	if err := readUntilReady(c); err != nil {
		c.Close()
		return nil, err
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

func startupMessage(params map[string]string) []byte {
	b := make([]byte, 8, 64)
	binary.BigEndian.PutUint32(b[4:], 196608) // protocol 3.0
	for k, v := range params {
		b = append(b, k...)
		b = append(b, 0)
		b = append(b, v...)
		b = append(b, 0)
	}
	b = append(b, 0)
	binary.BigEndian.PutUint32(b, uint32(len(b)))
	return b
}

// readUntilReady reads backend messages until ReadyForQuery. It accepts only
// AuthenticationOk: the benchmark's targets all use trust authentication.
func readUntilReady(r io.Reader) error {
	var hdr [5]byte
	body := make([]byte, 0, 256)
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return err
		}
		size := int(binary.BigEndian.Uint32(hdr[1:])) - 4
		if size < 0 || size > 1<<20 {
			return fmt.Errorf("bad message length %d for %q", size+4, hdr[0])
		}
		if cap(body) < size {
			body = make([]byte, size)
		}
		body = body[:size]
		if _, err := io.ReadFull(r, body); err != nil {
			return err
		}
		switch hdr[0] {
		case 'R':
			if len(body) < 4 || binary.BigEndian.Uint32(body) != 0 {
				return errors.New("server asks for authentication; only trust is supported")
			}
		case 'E':
			return fmt.Errorf("server error: %s", errorText(body))
		case 'Z':
			return nil
		}
	}
}

// errorText renders an ErrorResponse's severity, code and message fields.
func errorText(body []byte) string {
	var sev, code, msg string
	for len(body) > 1 {
		t := body[0]
		end := 1
		for end < len(body) && body[end] != 0 {
			end++
		}
		v := string(body[1:end])
		switch t {
		case 'S':
			sev = v
		case 'C':
			code = v
		case 'M':
			msg = v
		}
		if end+1 > len(body) {
			break
		}
		body = body[end+1:]
	}
	return fmt.Sprintf("%s %s %s", sev, code, msg)
}

func countOpen(conns []net.Conn) int {
	k := 0
	for _, c := range conns {
		if c != nil {
			k++
		}
	}
	return k
}

// verifyAll sends a simple query on every connection and counts the ones that
// answer with ReadyForQuery and no error.
func verifyAll(conns []net.Conn, parallel int, timeout time.Duration) int {
	query := []byte("SELECT 1\x00")
	msg := make([]byte, 5, 5+len(query))
	msg[0] = 'Q'
	binary.BigEndian.PutUint32(msg[1:], uint32(4+len(query)))
	msg = append(msg, query...)

	var ok atomic.Int64
	forEach(len(conns), parallel, func(i int) bool {
		c := conns[i]
		c.SetDeadline(time.Now().Add(timeout))
		if _, err := c.Write(msg); err == nil && readUntilReady(c) == nil {
			ok.Add(1)
		}
		return true
	})
	return int(ok.Load())
}

// forEach calls fn(0..n-1) from up to parallel workers; fn returning false
// stops every worker.
func forEach(n, parallel int, fn func(i int) bool) {
	var (
		next atomic.Int64
		wg   sync.WaitGroup
	)
	next.Store(-1)
	for range max(1, parallel) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1))
				if i >= n {
					return
				}
				if !fn(i) {
					next.Store(int64(n))
					return
				}
			}
		}()
	}
	wg.Wait()
}
