package reshard

import (
	"bytes"
	"context"
	"fmt"
	"slices"

	"github.com/cespare/xxhash/v2"
	"github.com/jackc/pgx/v5"

	"github.com/shardgate/shardgate/topology"
)

// TableDiff compares one table of one part, source against target.
type TableDiff struct {
	Table      string   `json:"table"`
	Source     int64    `json:"source_rows"`
	Target     int64    `json:"target_rows"`
	SourceSum  string   `json:"source_checksum"`
	TargetSum  string   `json:"target_checksum"`
	Mismatched []string `json:"mismatched,omitempty"` // first column of rows on one side only
}

// OK is whether both sides hold the same rows.
func (d TableDiff) OK() bool { return d.Source == d.Target && d.SourceSum == d.TargetSum }

// PartVerify is one target's comparison, at one source position.
type PartVerify struct {
	Target string      `json:"target"`
	Point  string      `json:"point"`
	Tables []TableDiff `json:"tables"`
}

// maxListed bounds the mismatching rows a report names.
const maxListed = 20

// Verify compares every part, table by table, at one consistent point: a
// temporary slot's snapshot of the source, to which the part's stream is
// brought exactly, so that the target holds what the source held then.
// Rows are compared as their COPY text, by count and an order-independent
// checksum, and the rows on one side only are named.
func (r *Runner) Verify(ctx context.Context) ([]PartVerify, error) {
	if r.State.Phase != PhaseCopied {
		return nil, fmt.Errorf("the reshard is %s: verify runs after the copy and before cutover", r.State.Phase)
	}
	var out []PartVerify
	for i, part := range r.State.Parts {
		snap, err := openSnapshot(ctx, r.sourceDSN(), part.Slot+"_verify", true)
		if err != nil {
			return nil, err
		}
		pv, err := r.verifyPart(ctx, i, snap)
		snap.Close(context.WithoutCancel(ctx))
		if err != nil {
			return nil, fmt.Errorf("verify %s: %w", part.Target.Name, err)
		}
		out = append(out, pv)
	}
	return out, nil
}

func (r *Runner) verifyPart(ctx context.Context, i int, snap *Snapshot) (PartVerify, error) {
	part := r.State.Parts[i]
	if err := r.stream(i, part.Slot, nil).Run(ctx, snap.Point); err != nil {
		return PartVerify{}, err
	}
	pv := PartVerify{Target: part.Target.Name, Point: snap.Point.String()}
	rng, err := topology.ParseKeyRange(part.Range)
	if err != nil {
		return pv, err
	}
	for _, t := range r.allTables() {
		d, err := r.compare(ctx, snap, part.Target.Primary, rng, t)
		if err != nil {
			return pv, err
		}
		pv.Tables = append(pv.Tables, d)
	}
	return pv, nil
}

func (r *Runner) compare(ctx context.Context, snap *Snapshot, dst string, rng topology.KeyRange, table string) (TableDiff, error) {
	src, tgt := newRowSet(), newRowSet()
	name := pgx.Identifier{table}.Sanitize()
	_, err := readAsOf(ctx, snap, r.sourceDSN(), table, func(tx pgx.Tx, name string) (copyWriter, error) {
		tc, sharded := r.Config.Tables[table]
		if !sharded {
			return &lineCounter{out: src}, nil
		}
		f, err := newRowFilter(ctx, tx, name, tc, rng)
		if err != nil {
			return nil, err
		}
		f.out = src
		return f, nil
	})
	if err != nil {
		return TableDiff{}, err
	}
	err = withConn(ctx, dst, func(c *pgx.Conn) error {
		_, err := c.PgConn().CopyTo(ctx, tgt, "COPY (SELECT * FROM "+name+") TO STDOUT")
		return err
	})
	if err != nil {
		return TableDiff{}, fmt.Errorf("read %s on the target: %w", table, err)
	}
	d := TableDiff{Table: table, Source: src.rows, Target: tgt.rows,
		SourceSum: fmt.Sprintf("%016x", src.sum), TargetSum: fmt.Sprintf("%016x", tgt.sum)}
	if !d.OK() {
		d.Mismatched = src.differences(tgt)
	}
	return d, nil
}

// rowSet is an io.Writer of COPY text rows that counts them, sums their
// hashes (a sum does not depend on order) and keeps each row's hash to
// name differences.
type rowSet struct {
	rows    int64
	sum     uint64
	hashes  map[uint64]int
	firstOf map[uint64]string
	partial []byte
}

func newRowSet() *rowSet {
	return &rowSet{hashes: map[uint64]int{}, firstOf: map[uint64]string{}}
}

func (s *rowSet) Write(data []byte) (int, error) {
	n := len(data)
	if len(s.partial) > 0 {
		data = append(s.partial, data...)
		s.partial = s.partial[:0]
	}
	for {
		nl := bytes.IndexByte(data, '\n')
		if nl < 0 {
			s.partial = append(s.partial, data...)
			return n, nil
		}
		s.add(data[:nl])
		data = data[nl+1:]
	}
}

func (s *rowSet) add(line []byte) {
	h := xxhash.Sum64(line)
	s.rows++
	s.sum += h
	s.hashes[h]++
	if _, ok := s.firstOf[h]; !ok {
		first, _, _ := bytes.Cut(line, []byte{'\t'})
		s.firstOf[h] = string(first)
	}
}

// differences names, by first column, rows that one set has more of.
func (s *rowSet) differences(other *rowSet) []string {
	var out []string
	note := func(a, b *rowSet, side string) {
		for h, n := range a.hashes {
			if b.hashes[h] < n && len(out) < maxListed {
				out = append(out, side+" "+a.firstOf[h])
			}
		}
	}
	note(s, other, "source only:")
	note(other, s, "target only:")
	slices.Sort(out)
	return out
}
