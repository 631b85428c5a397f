package reshard

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardgate/shardgate/copyfmt"
	"github.com/shardgate/shardgate/topology"
)

// Snapshot is the source as of a logical replication slot's consistent
// point: the copy reads exactly that state, and the catch-up streams the
// slot's changes from there, so no write is missed or applied twice. The
// exported snapshot lives as long as the replication connection that made
// it runs nothing else: Close it once every table is copied.
type Snapshot struct {
	Slot  string
	Name  string // for SET TRANSACTION SNAPSHOT
	Point pglogrepl.LSN
	repl  *pgconn.PgConn
}

// OpenSnapshot creates the logical replication slot slot (pgoutput) on the
// server at dsn and exports its snapshot.
func OpenSnapshot(ctx context.Context, dsn, slot string) (*Snapshot, error) {
	return openSnapshot(ctx, dsn, slot, false)
}

// openSnapshot makes the slot; a temporary one goes with its connection.
func openSnapshot(ctx context.Context, dsn, slot string, temporary bool) (*Snapshot, error) {
	if !validSlotName(slot) { // it is spliced into a replication command
		return nil, fmt.Errorf("slot name %q: want 1 to 63 lower-case letters, digits or underscores", slot)
	}
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	cfg.RuntimeParams["replication"] = "database"
	repl, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("replication connection to the source: %w", err)
	}
	res, err := pglogrepl.CreateReplicationSlot(ctx, repl, slot, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "EXPORT_SNAPSHOT", Temporary: temporary})
	if err != nil {
		repl.Close(context.Background())
		return nil, fmt.Errorf("create replication slot %s: %w", slot, err)
	}
	point, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		repl.Close(context.Background())
		return nil, fmt.Errorf("slot %s: consistent point %q: %w", slot, res.ConsistentPoint, err)
	}
	return &Snapshot{Slot: slot, Name: res.SnapshotName, Point: point, repl: repl}, nil
}

// validSlotName is PostgreSQL's rule for replication slot names.
func validSlotName(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// Close ends the exported snapshot; the slot stays for the catch-up.
func (s *Snapshot) Close(ctx context.Context) error { return s.repl.Close(ctx) }

// CopyTable copies, as of snap, the rows of table whose shard key is in
// rng from the server at srcDSN to the one at dstDSN, whose table must
// exist, and returns how many it copied; progress, if not nil, hears the
// running count. Rows stream through in COPY text format and are filtered
// in Go, by the function the proxy routes by: PostgreSQL has no xxhash64.
func CopyTable(ctx context.Context, snap *Snapshot, srcDSN, dstDSN string, rng topology.KeyRange, table string, t topology.TableConfig, progress func(int64)) (int64, error) {
	return copyAsOf(ctx, snap, srcDSN, dstDSN, table, func(tx pgx.Tx, name string, out io.Writer) (copyWriter, error) {
		f, err := newRowFilter(ctx, tx, name, t, rng)
		if err != nil {
			return nil, err
		}
		f.out, f.progress = out, progress
		return f, nil
	})
}

// CopyReference copies, as of snap, every row of reference table table.
func CopyReference(ctx context.Context, snap *Snapshot, srcDSN, dstDSN, table string, progress func(int64)) (int64, error) {
	return copyAsOf(ctx, snap, srcDSN, dstDSN, table, func(_ pgx.Tx, _ string, out io.Writer) (copyWriter, error) {
		return &lineCounter{out: out, progress: progress}, nil
	})
}

// copyWriter takes COPY TO data and passes on what the target gets.
type copyWriter interface {
	io.Writer
	end() error
	copied() int64
}

func copyAsOf(ctx context.Context, snap *Snapshot, srcDSN, dstDSN, table string,
	through func(tx pgx.Tx, name string, out io.Writer) (copyWriter, error)) (int64, error) {
	dst, err := pgx.Connect(ctx, dstDSN)
	if err != nil {
		return 0, fmt.Errorf("connect to the target: %w", err)
	}
	defer dst.Close(context.Background())
	pr, pw := io.Pipe()
	copied := make(chan error, 1)
	go func() {
		_, err := dst.PgConn().CopyFrom(ctx, pr, "COPY "+pgx.Identifier{table}.Sanitize()+" FROM STDIN")
		pr.CloseWithError(err) // unblocks the source side if the target fails
		copied <- err
	}()
	w, err := readAsOf(ctx, snap, srcDSN, table, func(tx pgx.Tx, name string) (copyWriter, error) {
		return through(tx, name, pw)
	})
	pw.CloseWithError(err)
	if cerr := <-copied; err == nil && cerr != nil {
		err = fmt.Errorf("COPY into the target: %w", cerr)
	}
	if err != nil {
		return 0, fmt.Errorf("copy %s: %w", table, err)
	}
	return w.copied(), nil
}

// readAsOf streams table as of snap into the writer made by into.
func readAsOf(ctx context.Context, snap *Snapshot, srcDSN, table string,
	into func(tx pgx.Tx, name string) (copyWriter, error)) (copyWriter, error) {
	src, err := pgx.Connect(ctx, srcDSN)
	if err != nil {
		return nil, fmt.Errorf("connect to the source: %w", err)
	}
	defer src.Close(context.Background())
	tx, err := src.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+snap.Name+"'"); err != nil {
		return nil, fmt.Errorf("use snapshot %s: %w", snap.Name, err)
	}
	name := pgx.Identifier{table}.Sanitize()
	w, err := into(tx, name)
	if err != nil {
		return nil, err
	}
	if _, err := src.PgConn().CopyTo(ctx, w, "COPY (SELECT * FROM "+name+") TO STDOUT"); err != nil {
		return nil, err
	}
	return w, w.end()
}

// lineCounter passes COPY data through whole, counting rows.
type lineCounter struct {
	out      io.Writer
	progress func(int64)
	rows     int64
}

func (l *lineCounter) Write(data []byte) (int, error) {
	l.rows += int64(bytes.Count(data, []byte{'\n'}))
	if l.progress != nil {
		l.progress(l.rows)
	}
	return l.out.Write(data)
}

func (l *lineCounter) end() error    { return nil }
func (l *lineCounter) copied() int64 { return l.rows }

// rowFilter is an io.Writer for COPY TO data that passes on the rows whose
// key is in rng.
type rowFilter struct {
	sp   *copyfmt.Splitter
	kt   topology.KeyType
	rng  topology.KeyRange
	out  io.Writer
	buf  []byte
	rows int64

	progress func(int64)
}

func newRowFilter(ctx context.Context, tx pgx.Tx, name string, t topology.TableConfig, rng topology.KeyRange) (*rowFilter, error) {
	rows, err := tx.Query(ctx, "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum", name)
	if err != nil {
		return nil, err
	}
	columns, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("columns of %s: %w", name, err)
	}
	key := -1
	for i, c := range columns {
		if c == t.ShardKey {
			key = i
		}
	}
	if key < 0 {
		return nil, fmt.Errorf("table %s has no column %s", name, t.ShardKey)
	}
	sp, err := copyfmt.NewSplitter(copyfmt.Options{Null: `\N`}, columns, key)
	if err != nil {
		return nil, err
	}
	kt := t.KeyType
	if kt == "" {
		kt = topology.KeyBigint
	}
	return &rowFilter{sp: sp, kt: kt, rng: rng}, nil
}

func (f *rowFilter) Write(data []byte) (int, error) {
	f.sp.Write(data)
	if err := f.drain(false); err != nil {
		return 0, err
	}
	return len(data), nil
}

func (f *rowFilter) end() error    { return f.drain(true) }
func (f *rowFilter) copied() int64 { return f.rows }

// drain passes on the complete rows that move, a batch per Write.
func (f *rowFilter) drain(end bool) error {
	f.buf = f.buf[:0]
	for {
		row, ok, err := f.sp.Next()
		if !ok && err == nil && end {
			row, ok, err = f.sp.End()
			end = false
		}
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		if row.Null {
			return errors.New("a row with a NULL shard key")
		}
		id, err := topology.KeyspaceID(f.kt, string(row.Key))
		if err != nil {
			return err
		}
		if f.rng.Contains(id) {
			f.buf = append(f.buf, row.Raw...)
			f.rows++
		}
	}
	if len(f.buf) == 0 {
		return nil
	}
	if f.progress != nil {
		f.progress(f.rows)
	}
	_, err := f.out.Write(f.buf)
	return err
}
