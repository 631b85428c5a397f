package reshard

// This file turns the changes a Stream decodes into statements on the
// target: which rows to keep, and SQL that applies them.

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardgate/shardgate/topology"
)

type relKind int

const (
	ignored relKind = iota
	sharded
	reference
)

// relation is a source table as the slot describes it, with what the
// target needs to apply its changes.
type relation struct {
	name    string // as in the config
	ident   string // quoted, schema-qualified
	kind    relKind
	cols    []*pglogrepl.RelationMessageColumn
	oids    []uint32
	key     int // shard key column, for sharded tables
	keyType topology.KeyType
	// identity is the columns a row is found by on the target: its primary
	// key or, without one, the replica identity (every column when FULL).
	identity []int
	hasPK    bool
	upsert   string
	remove   string
	fetch    string
	updates  map[string]string // by which columns are sent
}

// relation records a table's description, which precedes its first change
// on every connection and follows any change to its columns.
func (r *runner) relation(ctx context.Context, m *pglogrepl.RelationMessage) error {
	rel := &relation{name: m.RelationName, ident: pgx.Identifier{m.Namespace, m.RelationName}.Sanitize(), cols: m.Columns, key: -1}
	if m.Namespace != "public" {
		rel.name = m.Namespace + "." + m.RelationName
	}
	r.rels[m.RelationID] = rel
	if t, ok := r.s.Tables[rel.name]; ok {
		rel.kind, rel.keyType = sharded, t.KeyType
		if rel.keyType == "" {
			rel.keyType = topology.KeyBigint
		}
		rel.key = slices.IndexFunc(m.Columns, func(c *pglogrepl.RelationMessageColumn) bool { return c.Name == t.ShardKey })
		if rel.key < 0 {
			return fmt.Errorf("table %s has no shard key column %s in the change stream", rel.name, t.ShardKey)
		}
	} else if slices.Contains(r.s.Reference, rel.name) {
		rel.kind = reference
	} else {
		return nil
	}
	for _, c := range m.Columns {
		// Built-in types have the same OID everywhere; others are left
		// for the target to infer from the column.
		oid := c.DataType
		if oid >= 16384 {
			oid = 0
		}
		rel.oids = append(rel.oids, oid)
	}
	pk, err := r.targetKey(ctx, rel)
	if err != nil {
		return err
	}
	return rel.prepare(pk, m.ReplicaIdentity)
}

// targetKey returns the primary key columns of the table on the target.
func (r *runner) targetKey(ctx context.Context, rel *relation) ([]string, error) {
	var exists bool
	if err := r.dst.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", rel.ident).Scan(&exists); err != nil {
		return nil, fmt.Errorf("table %s on the target: %w", rel.name, err)
	}
	if !exists {
		return nil, fmt.Errorf("table %s does not exist on the target", rel.name)
	}
	const q = `SELECT a.attname FROM pg_index i
	CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, n)
	JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = to_regclass($1) AND i.indisprimary ORDER BY k.n`
	rows, _ := r.dst.Query(ctx, q, rel.ident)
	pk, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("primary key of %s on the target: %w", rel.name, err)
	}
	return pk, nil
}

// prepare builds the statements that do not depend on which columns a
// change sends.
func (rel *relation) prepare(pk []string, replicaIdentity uint8) error {
	for _, name := range pk {
		i := slices.IndexFunc(rel.cols, func(c *pglogrepl.RelationMessageColumn) bool { return c.Name == name })
		if i < 0 {
			return fmt.Errorf("primary key column %s of %s on the target is not in the source's change stream", name, rel.name)
		}
		rel.identity = append(rel.identity, i)
	}
	rel.hasPK = len(pk) > 0
	if !rel.hasPK {
		for i, c := range rel.cols {
			if c.Flags&1 != 0 || replicaIdentity == 'f' {
				rel.identity = append(rel.identity, i)
			}
		}
		if len(rel.identity) == 0 {
			return fmt.Errorf("table %s has neither a primary key on the target nor a replica identity on the source", rel.name)
		}
	}
	names := make([]string, len(rel.cols))
	params := make([]string, len(rel.cols))
	for i, c := range rel.cols {
		names[i] = pgx.Identifier{c.Name}.Sanitize()
		params[i] = "$" + strconv.Itoa(i+1)
	}
	rel.upsert = "INSERT INTO " + rel.ident + " (" + strings.Join(names, ", ") + ") VALUES (" + strings.Join(params, ", ") + ")"
	if rel.hasPK {
		var set []string
		for i, n := range names {
			if !slices.Contains(rel.identity, i) {
				set = append(set, n+" = EXCLUDED."+n)
			}
		}
		rel.upsert += " ON CONFLICT (" + strings.Join(rel.pick(names), ", ") + ")"
		if len(set) == 0 {
			rel.upsert += " DO NOTHING"
		} else {
			rel.upsert += " DO UPDATE SET " + strings.Join(set, ", ")
		}
	}
	rel.remove = "DELETE FROM " + rel.ident + " WHERE " + rel.where(1)
	if !rel.hasPK { // one of possibly equal rows, as the source deleted one
		rel.remove = "DELETE FROM " + rel.ident + " WHERE ctid = (SELECT ctid FROM " + rel.ident + " WHERE " + rel.where(1) + " LIMIT 1)"
	}
	rel.fetch = "SELECT " + strings.Join(names, ", ") + " FROM " + rel.ident + " WHERE " + rel.where(1)
	rel.updates = map[string]string{}
	return nil
}

// where matches the identity columns to parameters from $first on.
func (rel *relation) where(first int) string {
	op := " = $"
	if !rel.hasPK {
		op = " IS NOT DISTINCT FROM $"
	}
	conds := make([]string, len(rel.identity))
	for j, i := range rel.identity {
		conds[j] = pgx.Identifier{rel.cols[i].Name}.Sanitize() + op + strconv.Itoa(first+j)
	}
	return strings.Join(conds, " AND ")
}

// pick returns the identity columns' entries of s.
func (rel *relation) pick(s []string) []string {
	out := make([]string, len(rel.identity))
	for j, i := range rel.identity {
		out[j] = s[i]
	}
	return out
}

// update returns the statement that sets the columns sent (not unchanged
// TOAST) of the row found by identity values after them.
func (rel *relation) update(sent []bool) string {
	shape := make([]byte, len(sent))
	for i, s := range sent {
		shape[i] = '0'
		if s {
			shape[i] = '1'
		}
	}
	if sql, ok := rel.updates[string(shape)]; ok {
		return sql
	}
	var set []string
	for i, s := range sent {
		if s {
			set = append(set, pgx.Identifier{rel.cols[i].Name}.Sanitize()+" = $"+strconv.Itoa(len(set)+1))
		}
	}
	sql := "UPDATE " + rel.ident + " SET " + strings.Join(set, ", ") + " WHERE " + rel.where(len(set)+1)
	if !rel.hasPK {
		sql = "UPDATE " + rel.ident + " SET " + strings.Join(set, ", ") + " WHERE ctid = (SELECT ctid FROM " + rel.ident + " WHERE " + rel.where(len(set)+1) + " LIMIT 1)"
	}
	rel.updates[string(shape)] = sql
	return sql
}

// values are a tuple's columns as text parameters (nil is NULL).
func values(t []*pglogrepl.TupleDataColumn) [][]byte {
	v := make([][]byte, len(t))
	for i, c := range t {
		if c.DataType == pglogrepl.TupleDataTypeText {
			v[i] = c.Data
		}
	}
	return v
}

func unchanged(t []*pglogrepl.TupleDataColumn) bool {
	return slices.ContainsFunc(t, func(c *pglogrepl.TupleDataColumn) bool { return c.DataType == pglogrepl.TupleDataTypeToast })
}

// identityOf returns the identity values of tuple t, which must carry them.
func (r *runner) identityOf(rel *relation, t []*pglogrepl.TupleDataColumn) ([][]byte, []uint32, error) {
	vals := make([][]byte, len(rel.identity))
	oids := make([]uint32, len(rel.identity))
	for j, i := range rel.identity {
		if i >= len(t) {
			return nil, nil, r.errorf(rel, "a tuple of %d columns", len(t))
		}
		switch t[i].DataType {
		case pglogrepl.TupleDataTypeText:
			vals[j] = t[i].Data
		case pglogrepl.TupleDataTypeNull:
			if rel.hasPK {
				return nil, nil, r.errorf(rel, "the change does not carry key column %s", rel.cols[i].Name)
			}
		default:
			return nil, nil, r.errorf(rel, "key column %s is not sent in text (%c)", rel.cols[i].Name, t[i].DataType)
		}
		oids[j] = rel.oids[i]
	}
	return vals, oids, nil
}

func sameIdentity(rel *relation, a, b []*pglogrepl.TupleDataColumn) bool {
	for _, i := range rel.identity {
		if a[i].DataType != b[i].DataType || string(a[i].Data) != string(b[i].Data) {
			return false
		}
	}
	return true
}

func (r *runner) errorf(rel *relation, format string, args ...any) error {
	return fmt.Errorf("table %s, source transaction committed at %s: %s", rel.name, r.txnCommit, fmt.Sprintf(format, args...))
}

func (r *runner) rel(id uint32) (*relation, error) {
	rel := r.rels[id]
	if rel == nil {
		return nil, fmt.Errorf("slot %s: change of relation %d before its description (source transaction committed at %s)", r.s.Slot, id, r.txnCommit)
	}
	return rel, nil
}

// inRange reports whether the shard key in column c is in the range.
func (r *runner) inRange(rel *relation, c *pglogrepl.TupleDataColumn) (bool, error) {
	switch c.DataType {
	case pglogrepl.TupleDataTypeText:
		id, err := topology.KeyspaceID(rel.keyType, string(c.Data))
		if err != nil {
			return false, r.errorf(rel, "shard key %s: %v", rel.cols[rel.key].Name, err)
		}
		return r.s.Range.Contains(id), nil
	case pglogrepl.TupleDataTypeNull:
		return false, r.errorf(rel, "a row with a NULL (or unsent) shard key %s", rel.cols[rel.key].Name)
	}
	return false, r.errorf(rel, "shard key %s is not sent in text (%c)", rel.cols[rel.key].Name, c.DataType)
}

func (r *runner) insert(ctx context.Context, m *pglogrepl.InsertMessage) error {
	rel, err := r.rel(m.RelationID)
	if err != nil || rel.kind == ignored {
		return err
	}
	t := m.Tuple.Columns
	if rel.kind == sharded {
		if in, err := r.inRange(rel, t[rel.key]); err != nil || !in {
			return err
		}
	}
	return r.queue(ctx, rel, "insert", rel.upsert, values(t), rel.oids)
}

func (r *runner) delete(ctx context.Context, m *pglogrepl.DeleteMessage) error {
	rel, err := r.rel(m.RelationID)
	if err != nil || rel.kind == ignored {
		return err
	}
	t := m.OldTuple.Columns
	if rel.kind == sharded {
		if in, err := r.inRange(rel, t[rel.key]); err != nil || !in {
			return err
		}
	}
	return r.remove(ctx, rel, t)
}

func (r *runner) remove(ctx context.Context, rel *relation, t []*pglogrepl.TupleDataColumn) error {
	vals, oids, err := r.identityOf(rel, t)
	if err != nil {
		return err
	}
	return r.queue(ctx, rel, "delete", rel.remove, vals, oids)
}

// update applies an update by where its row's key was and is: a row that
// enters the range is inserted whole, one that leaves it deleted. Without
// an old tuple the key did not change.
func (r *runner) update(ctx context.Context, m *pglogrepl.UpdateMessage) error {
	rel, err := r.rel(m.RelationID)
	if err != nil || rel.kind == ignored {
		return err
	}
	newT := m.NewTuple.Columns
	var oldT []*pglogrepl.TupleDataColumn
	if m.OldTuple != nil {
		oldT = m.OldTuple.Columns
	}
	oldIn, newIn := true, true
	if rel.kind == sharded {
		key := newT[rel.key]
		if key.DataType == pglogrepl.TupleDataTypeToast && oldT != nil {
			key = oldT[rel.key]
		}
		if newIn, err = r.inRange(rel, key); err != nil {
			return err
		}
		oldIn = newIn
		if oldT != nil {
			if oldIn, err = r.inRange(rel, oldT[rel.key]); err != nil {
				return err
			}
		}
	}
	switch {
	case !oldIn && !newIn:
		return nil
	case !newIn:
		return r.remove(ctx, rel, cmpOr(oldT, newT))
	case !oldIn:
		return r.enter(ctx, rel, newT)
	}
	same := oldT == nil || sameIdentity(rel, oldT, newT)
	if !unchanged(newT) {
		if !same {
			if err := r.remove(ctx, rel, oldT); err != nil {
				return err
			}
		}
		return r.queue(ctx, rel, "update", rel.upsert, values(newT), rel.oids)
	}
	return r.partialUpdate(ctx, rel, newT, cmpOr(oldT, newT))
}

func cmpOr(a, b []*pglogrepl.TupleDataColumn) []*pglogrepl.TupleDataColumn {
	if a != nil {
		return a
	}
	return b
}

// partialUpdate sets the columns sent of the row with where's identity,
// leaving unchanged TOAST columns as the target has them.
func (r *runner) partialUpdate(ctx context.Context, rel *relation, newT, where []*pglogrepl.TupleDataColumn) error {
	sent := make([]bool, len(newT))
	var (
		vals [][]byte
		oids []uint32
	)
	for i, c := range newT {
		if sent[i] = c.DataType != pglogrepl.TupleDataTypeToast; sent[i] {
			vals = append(vals, values(newT[i : i+1])[0])
			oids = append(oids, rel.oids[i])
		}
	}
	idVals, idOIDs, err := r.identityOf(rel, where)
	if err != nil {
		return err
	}
	return r.queue(ctx, rel, "update", rel.update(sent), append(vals, idVals...), append(oids, idOIDs...))
}

// enter inserts a row whose key moved into the range. Its unchanged TOAST
// columns were not sent and the target never had it: they come from the
// source as it is now. A row gone from the source by now is left out: a
// later change in the stream deletes it or moves its key.
func (r *runner) enter(ctx context.Context, rel *relation, newT []*pglogrepl.TupleDataColumn) error {
	vals := values(newT)
	if unchanged(newT) {
		row, found, err := r.fetch(ctx, rel, newT)
		if err != nil || !found {
			return err
		}
		for i, c := range newT {
			if c.DataType == pglogrepl.TupleDataTypeToast {
				vals[i] = row[i]
			}
		}
	}
	return r.queue(ctx, rel, "insert moved row", rel.upsert, vals, rel.oids)
}

func (r *runner) fetch(ctx context.Context, rel *relation, t []*pglogrepl.TupleDataColumn) ([][]byte, bool, error) {
	idVals, idOIDs, err := r.identityOf(rel, t)
	if err != nil {
		return nil, false, err
	}
	src, err := r.source(ctx)
	if err != nil {
		return nil, false, err
	}
	res := src.PgConn().ExecParams(ctx, rel.fetch, idVals, idOIDs, nil, nil).Read()
	if res.Err != nil {
		return nil, false, r.errorf(rel, "read unchanged TOAST columns from the source: %v", res.Err)
	}
	if len(res.Rows) == 0 {
		return nil, false, nil
	}
	return res.Rows[0], true, nil
}

// truncate: a reference table is truncated on the target too; a sharded
// table cannot be, as the target holds only the range.
func (r *runner) truncate(ctx context.Context, m *pglogrepl.TruncateMessage) error {
	var idents []string
	var first *relation
	for _, id := range m.RelationIDs {
		rel, err := r.rel(id)
		if err != nil {
			return err
		}
		switch rel.kind {
		case sharded:
			return r.errorf(rel, "TRUNCATE of a sharded table cannot be applied to a range of it; restart the reshard after the truncate")
		case reference:
			idents = append(idents, rel.ident)
			first = rel
		}
	}
	if len(idents) == 0 {
		return nil
	}
	sql := "TRUNCATE " + strings.Join(idents, ", ")
	if m.Option&pglogrepl.TruncateOptionRestartIdentity != 0 {
		sql += " RESTART IDENTITY"
	}
	if m.Option&pglogrepl.TruncateOptionCascade != 0 {
		sql += " CASCADE"
	}
	return r.queue(ctx, first, "truncate", sql, nil, nil)
}

// queue adds a change to the batch; a long source transaction goes to the
// target in chunks inside one target transaction.
func (r *runner) queue(ctx context.Context, rel *relation, op, sql string, vals [][]byte, oids []uint32) error {
	r.txnKept++
	sd, err := r.prepare(ctx, sql, oids)
	if err != nil {
		return r.errorf(rel, "prepare %s: %v", op, err)
	}
	r.batch.add(statement{rel: rel, op: op, commit: r.txnCommit, sd: sd}, sql, vals, oids)
	if r.batch.queued() < chunkStatements {
		return nil
	}
	return r.batch.send(ctx, r.dst)
}

// statement says what a queued statement applies, for errors.
type statement struct {
	rel    *relation
	op     string
	commit pglogrepl.LSN
	sd     *pgconn.StatementDescription // prepared, or nil
}

// prepare returns the statement sql prepared on the target: a change is
// then planned once per shape, not once per row.
func (r *runner) prepare(ctx context.Context, sql string, oids []uint32) (*pgconn.StatementDescription, error) {
	if sd, ok := r.prepared[sql]; ok {
		return sd, nil
	}
	sd, err := r.dst.PgConn().Prepare(ctx, "shardgate_"+strconv.Itoa(len(r.prepared)), sql, oids)
	if err != nil {
		return nil, err
	}
	r.prepared[sql] = sd
	return sd, nil
}

// batch is the target transaction being built: statements queued but not
// sent, and whether BEGIN has been sent.
type batch struct {
	b       *pgconn.Batch
	what    []statement
	open    bool
	began   time.Time // first change received
	changes int
	txns    int
}

func (b *batch) pending() bool { return b.open || len(b.what) > 0 }
func (b *batch) queued() int   { return len(b.what) }

func (b *batch) add(s statement, sql string, vals [][]byte, oids []uint32) {
	if !b.pending() {
		b.began = time.Now()
	}
	if b.b == nil {
		b.b = &pgconn.Batch{}
		if !b.open {
			b.b.ExecParams("BEGIN", nil, nil, nil, nil)
			b.what = append(b.what, statement{op: "begin"})
		}
	}
	if s.sd != nil {
		b.b.ExecStatement(s.sd, vals, nil, nil)
	} else {
		b.b.ExecParams(sql, vals, oids, nil, nil)
	}
	b.what = append(b.what, s)
	if s.rel != nil {
		b.changes++
	}
}

// send runs the queued statements in one round trip, leaving the
// transaction open.
func (b *batch) send(ctx context.Context, conn *pgx.Conn) error {
	if b.b == nil {
		return nil
	}
	results, err := conn.PgConn().ExecBatch(ctx, b.b).ReadAll()
	if err != nil {
		i := len(results)
		if i > 0 && results[i-1].Err != nil {
			i--
		}
		if i < len(b.what) && b.what[i].rel != nil {
			s := b.what[i]
			return fmt.Errorf("apply %s on table %s (source transaction committed at %s): %w", s.op, s.rel.name, s.commit, err)
		}
		return fmt.Errorf("apply on the target: %w", err)
	}
	b.b, b.what, b.open = nil, b.what[:0], true
	return nil
}

// commit stores the position with the batch's changes and commits them.
func (b *batch) commit(ctx context.Context, conn *pgx.Conn, slot string, pos pglogrepl.LSN) error {
	b.add(statement{op: "store position"}, `INSERT INTO shardgate_reshard.applied (slot, lsn, at) VALUES ($1, $2, now())
ON CONFLICT (slot) DO UPDATE SET lsn = EXCLUDED.lsn, at = EXCLUDED.at`, [][]byte{[]byte(slot), []byte(pos.String())}, []uint32{25, 3220})
	b.b.ExecParams("COMMIT", nil, nil, nil, nil)
	b.what = append(b.what, statement{op: "commit"})
	if err := b.send(ctx, conn); err != nil {
		return err
	}
	*b = batch{what: b.what[:0]}
	return nil
}
