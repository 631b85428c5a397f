package reshard

import (
	"context"
	"errors"
	"math"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardgate/shardgate/topology"
)

// Status is a reshard's progress, for `reshard status` and its --json.
type Status struct {
	ID      string       `json:"id"`
	Phase   Phase        `json:"phase"`
	Source  string       `json:"source"`
	From    string       `json:"from"`
	Started time.Time    `json:"started"`
	Parts   []PartStatus `json:"parts"`
}

// PartStatus is one target's copy and stream.
type PartStatus struct {
	Target string        `json:"target"`
	Range  string        `json:"range"`
	Tables []TableStatus `json:"tables"`
	// The forward stream before cutover, the reverse one after.
	Slot     string  `json:"slot"`
	Applied  string  `json:"applied_lsn"`
	LagBytes uint64  `json:"lag_bytes"`
	LagSecs  float64 `json:"lag_seconds"`
}

// TableStatus is one table's copy: rows so far, rate and time left.
type TableStatus struct {
	Table    string  `json:"table"`
	Rows     int64   `json:"rows"`
	Estimate int64   `json:"estimated_rows"`
	Done     bool    `json:"done"`
	Rate     float64 `json:"rows_per_second"`
	ETASecs  float64 `json:"eta_seconds,omitempty"`
}

// Status reads the state and asks the servers how far the streams are.
func (r *Runner) Status(ctx context.Context) (Status, error) {
	st := r.State
	out := Status{ID: st.ID, Phase: st.Phase, Source: st.Source, From: st.From, Started: st.Started}
	var errs []error
	for _, part := range st.Parts {
		ps := PartStatus{Target: part.Target.Name, Range: part.Range, Slot: part.Slot}
		for _, t := range r.allTables() {
			ps.Tables = append(ps.Tables, tableStatus(t, part.Tables[t]))
		}
		from, to := r.sourceDSN(), part.Target.Primary
		if st.Phase == PhaseSwitched {
			ps.Slot, from, to = part.ReverseSlot, part.Target.Primary, r.sourceDSN()
		}
		if st.Phase != PhaseCopying {
			errs = append(errs, streamLag(ctx, &ps, from, to))
		}
		out.Parts = append(out.Parts, ps)
	}
	return out, errors.Join(errs...)
}

func isUndefinedTable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "42P01"
}

func tableStatus(name string, tc TableCopy) TableStatus {
	ts := TableStatus{Table: name, Rows: tc.Rows, Estimate: tc.Estimate, Done: tc.Done}
	if took := tc.Updated.Sub(tc.Began).Seconds(); took > 0 {
		ts.Rate = float64(tc.Rows) / took
	}
	if !tc.Done && ts.Rate > 0 && tc.Estimate > tc.Rows {
		ts.ETASecs = float64(tc.Estimate-tc.Rows) / ts.Rate
	}
	return ts
}

// streamLag: bytes between the sender's WAL position and what the
// receiver applied (or, before it applied anything, the slot's start);
// seconds since that was applied, while behind.
func streamLag(ctx context.Context, ps *PartStatus, from, to string) error {
	var (
		end, applied pglogrepl.LSN
		at           time.Time
	)
	err := withConn(ctx, from, func(c *pgx.Conn) error {
		var endText, slotText string
		err := c.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text, coalesce((SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1), '')`, ps.Slot).Scan(&endText, &slotText)
		if err != nil {
			return err
		}
		if end, err = pglogrepl.ParseLSN(endText); err != nil || slotText == "" {
			return err
		}
		applied, err = pglogrepl.ParseLSN(slotText)
		return err
	})
	if err != nil {
		return err
	}
	err = withConn(ctx, to, func(c *pgx.Conn) error {
		var lsn string
		err := c.QueryRow(ctx, "SELECT lsn::text, at FROM shardgate_reshard.applied WHERE slot = $1", ps.Slot).Scan(&lsn, &at)
		if err != nil {
			return err
		}
		got, err := pglogrepl.ParseLSN(lsn)
		applied = max(applied, got)
		return err
	})
	if err != nil && !errors.Is(err, pgx.ErrNoRows) && !isUndefinedTable(err) {
		return err
	}
	ps.Applied = applied.String()
	if end > applied {
		ps.LagBytes = uint64(end - applied)
		if !at.IsZero() {
			ps.LagSecs = math.Round(time.Since(at).Seconds()*10) / 10
		}
	}
	return nil
}

// estimateRows guesses how many rows of table a part gets: the table's
// rows, times the part's share of the source's keys. The planner's count
// (reltuples) is -1 until the first ANALYZE and the statistics' live rows
// may not be flushed yet; only when both know nothing is the table counted.
func estimateRows(ctx context.Context, dsn, table string, part, from topology.KeyRange, sharded bool) int64 {
	var n float64
	name := pgx.Identifier{table}.Sanitize()
	err := withConn(ctx, dsn, func(c *pgx.Conn) error {
		err := c.QueryRow(ctx, `SELECT greatest(c.reltuples, s.n_live_tup, 0)::float8
FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE c.oid = to_regclass($1)`, name).Scan(&n)
		if err != nil || n > 0 {
			return err
		}
		return c.QueryRow(ctx, "SELECT count(*)::float8 FROM "+name).Scan(&n)
	})
	if err != nil {
		return 0
	}
	if sharded {
		n *= width(part) / width(from)
	}
	return int64(n)
}

func width(r topology.KeyRange) float64 {
	end := float64(r.End)
	if r.EndMax {
		end = math.Exp2(64)
	}
	return end - float64(r.Start)
}
