package reshard

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The small SQL a reshard runs on its servers, one connection a call: the
// steps are seconds apart, so nothing is gained by keeping connections.

func withConn(ctx context.Context, dsn string, f func(*pgx.Conn) error) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", redact(dsn), err)
	}
	defer conn.Close(context.Background())
	return f(conn)
}

// currentLSN is the server's WAL insert position: every transaction
// committed so far ends before it.
func currentLSN(ctx context.Context, dsn string) (pglogrepl.LSN, error) {
	var text string
	err := withConn(ctx, dsn, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&text)
	})
	if err != nil {
		return 0, err
	}
	return pglogrepl.ParseLSN(text)
}

// dropSlots drops replication slots, ending the walsenders that still read
// them; slots that are gone already are no error.
func dropSlots(ctx context.Context, dsn string, slots ...string) error {
	return withConn(ctx, dsn, func(c *pgx.Conn) error {
		for _, s := range slots {
			if s == "" {
				continue
			}
			if _, err := c.Exec(ctx, "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL", s); err != nil {
				return err
			}
			if _, err := c.Exec(ctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", s); err != nil {
				return fmt.Errorf("drop slot %s: %w", s, err)
			}
		}
		return nil
	})
}

func dropPublication(ctx context.Context, dsn, name string) error {
	return withConn(ctx, dsn, func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, "DROP PUBLICATION IF EXISTS "+pgx.Identifier{name}.Sanitize())
		return err
	})
}

func truncate(ctx context.Context, dsn string, tables []string) error {
	if len(tables) == 0 {
		return nil
	}
	names := make([]string, len(tables))
	for i, t := range tables {
		names[i] = pgx.Identifier{t}.Sanitize()
	}
	return withConn(ctx, dsn, func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, "TRUNCATE "+strings.Join(names, ", "))
		return err
	})
}

// redact leaves a DSN's password out of messages.
func redact(dsn string) string {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return "a server"
	}
	return fmt.Sprintf("%s@%s:%d/%s", cfg.User, cfg.Host, cfg.Port, cfg.Database)
}
