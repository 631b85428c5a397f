package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestClassify(t *testing.T) {
	loginErr := func(code string) error {
		_, err := pgconn.Connect(context.Background(), "postgres://127.0.0.1:1/x?connect_timeout=1")
		var ce *pgconn.ConnectError
		if !errors.As(err, &ce) {
			t.Fatalf("want a ConnectError from a refused dial, got %v", err)
		}
		if code == "" {
			return err
		}
		// A login the proxy refused: the ConnectError wraps its ErrorResponse.
		return fmt.Errorf("%w: %w", ce, &pgconn.PgError{Code: code})
	}
	for _, tc := range []struct {
		name        string
		err         error
		class       string
		connFailure bool
	}{
		{"admin shutdown", &pgconn.PgError{Code: "57P01"}, "SQLSTATE 57P01", true},
		{"connection failure", fmt.Errorf("wrapped: %w", &pgconn.PgError{Code: "08006"}), "SQLSTATE 08006", true},
		{"pool wait timeout", &pgconn.PgError{Code: "53300"}, "SQLSTATE 53300", true},
		{"syntax error", &pgconn.PgError{Code: "42601"}, "SQLSTATE 42601", false},
		{"prepared statement gone", &pgconn.PgError{Code: "26000"}, "SQLSTATE 26000", false},
		{"client limit at login", loginErr("53300"), classLockout.name, false},
		{"login refused for a fault", loginErr("08006"), "login refused: 08006", true},
		{"login without answer", loginErr(""), "login failed (no answer)", true},
		{"deadline", fmt.Errorf("query: %w", context.DeadlineExceeded), classTimeout.name, false},
		{"lost connection", fmt.Errorf("read: %w", io.ErrUnexpectedEOF), classLostConn.name, true},
		{"wrong result", errWrongResult{"x"}, "wrong result", false},
		{"anything else", errors.New("boom\nmore"), "other: boom", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := classify(tc.err)
			if c.name != tc.class || c.connFailure != tc.connFailure {
				t.Errorf("classify(%v) = %q, connFailure %v; want %q, %v", tc.err, c.name, c.connFailure, tc.class, tc.connFailure)
			}
		})
	}
}

func TestLedgerExcusesOnlyFaultsOfTheRequestsShard(t *testing.T) {
	l := newLedger(time.Second)
	end := l.beginFault("restart", 0)
	began := time.Now()
	shutdown := &pgconn.PgError{Code: "57P01", Message: "terminating connection due to administrator command"}
	l.record("read", oneShard(0), began, shutdown)                                                            // its shard's fault
	l.record("read", oneShard(1), began, shutdown)                                                            // another shard: fails
	l.record("read", oneShard(1), began, &pgconn.PgError{Code: "08006", Message: "pool s0/primary: connect"}) // names s0
	l.record("read", oneShard(1), began, &pgconn.PgError{Code: "08006", Message: "pool s10/primary: connect"})
	l.record("read", allShards, began, &pgconn.PgError{Code: "42601"}) // not a connection failure
	l.record("read", allShards, began, nil)
	end()
	l.record("read", oneShard(0), time.Now(), shutdown) // within the grace period
	time.Sleep(1100 * time.Millisecond)
	l.record("read", oneShard(0), time.Now(), shutdown) // after it

	tot := l.totals()
	want := map[errKey]int64{
		{"SQLSTATE 57P01", ownShard}:     2,
		{"SQLSTATE 57P01", noExcuse}:     2,
		{"SQLSTATE 08006", namedInError}: 1,
		{"SQLSTATE 08006", noExcuse}:     1,
		{"SQLSTATE 42601", noExcuse}:     1,
	}
	if fmt.Sprint(tot.errs) != fmt.Sprint(want) {
		t.Errorf("errors %v, want %v", tot.errs, want)
	}
	if tot.ops["read"] != 8 || tot.tolerated != 3 || tot.failures != 4 || len(tot.examples) != 4 {
		t.Errorf("ops %d, tolerated %d, failures %d, %d examples; want 8, 3, 4, 4", tot.ops["read"], tot.tolerated, tot.failures, len(tot.examples))
	}
}

func TestNamesShard(t *testing.T) {
	for msg, want := range map[string]bool{
		"pool s0/primary: connect":     true,
		"could not reach shard s0":     true,
		"s0":                           true,
		"pool s10/primary":             false,
		"s0x is not a shard":           false,
		"xs0 then s0_ then s01 but s0": true,
	} {
		if got := namesShard(msg, 0); got != want {
			t.Errorf("namesShard(%q, 0) = %v, want %v", msg, got, want)
		}
	}
}
