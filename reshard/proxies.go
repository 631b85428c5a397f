package reshard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// Proxies are the admin consoles of the shardgate proxies that serve the
// config being resharded; every one of them must switch at cutover.
type Proxies []string

// run sends one admin command to every proxy, stopping at the first that
// refuses it.
func (ps Proxies) run(ctx context.Context, cmd string) error {
	for _, dsn := range ps {
		conn, err := pgconn.Connect(ctx, dsn)
		if err != nil {
			return fmt.Errorf("proxy admin console %s: %w", redact(dsn), err)
		}
		_, err = conn.Exec(ctx, cmd).ReadAll()
		conn.Close(context.Background())
		if err != nil {
			return fmt.Errorf("proxy %s: %s: %w", redact(dsn), strings.Fields(cmd)[1], err)
		}
	}
	return nil
}

// fence pauses writes to shard on every proxy. The fence's lease, three
// timeouts, outlives any cutover yet lifts it should this command die.
// With gone, a proxy that no longer has shard (it switched before this
// command was cut short) counts as fenced.
func (ps Proxies) fence(ctx context.Context, shard string, timeoutMS int64, gone bool) error {
	cmd := fmt.Sprintf("RESHARD FENCE %s TIMEOUT %d LEASE %d", quote(shard), timeoutMS, 3*timeoutMS)
	for _, dsn := range ps {
		err := Proxies{dsn}.run(ctx, cmd)
		var pe *pgconn.PgError
		if err != nil && !(gone && errors.As(err, &pe) && pe.Code == "42704") {
			return err
		}
	}
	return nil
}

// unfence is sent on the way out of every step that fenced, even a failed
// one, so that queued writes never wait on a reshard that gave up.
func (ps Proxies) unfence(ctx context.Context) error {
	ctx = context.WithoutCancel(ctx)
	var errs []error
	for _, dsn := range ps {
		errs = append(errs, Proxies{dsn}.run(ctx, "RESHARD UNFENCE"))
	}
	return errors.Join(errs...)
}

func (ps Proxies) switchTo(ctx context.Context, l Layout) error {
	data, err := json.Marshal(l)
	if err != nil {
		return err
	}
	return ps.run(ctx, "RESHARD SWITCH "+quote(string(data)))
}

func (ps Proxies) lockDDL(ctx context.Context, locked bool) error {
	if locked {
		return ps.run(ctx, "RESHARD DDL LOCK")
	}
	return ps.run(ctx, "RESHARD DDL UNLOCK")
}

// quote makes s an SQL string literal.
func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
