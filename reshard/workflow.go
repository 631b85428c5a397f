package reshard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/shardgate/shardgate/topology"
)

// Runner runs the steps of one reshard: each command of `shardgate reshard`
// is one call. Every step starts from the state file and the servers, so
// one killed anywhere is simply run again.
type Runner struct {
	State   *State
	Config  *topology.Config // the layout before the reshard, with tables
	Proxies Proxies
	Log     *slog.Logger
	// CutoverTimeout bounds the write pause: fencing, the last catch-up
	// and the switch. Past it, the old layout keeps serving.
	CutoverTimeout time.Duration
	// OnCopy is told of rows as they are copied, e.g. for a progress bar.
	OnCopy func(part int, table string, rows int64)
	// OnCatchUp is told of every stream's progress.
	OnCatchUp func(part int, p Progress)
}

// Begin records a new reshard of the config at configPath (state phase
// copying); nothing is touched yet.
func Begin(configPath string, cfg *topology.Config, p Plan, now time.Time) (*State, error) {
	after, err := p.Apply(cfg)
	if err != nil {
		return nil, err
	}
	id := fmt.Sprintf("r%d", now.Unix())
	st := &State{
		ID: id, Config: configPath, Phase: PhaseCopying,
		Source: p.Source, From: p.From.String(),
		Publication: "shardgate_" + id,
		Before:      LayoutOf(cfg), After: LayoutOf(after),
		Started: now.UTC(),
	}
	for _, part := range p.Parts {
		st.Parts = append(st.Parts, PartState{
			Range: part.Range.String(), Target: part.Target,
			Slot:   "shardgate_" + id + "_" + slotSafe(part.Target.Name),
			Tables: map[string]TableCopy{},
		})
	}
	return st, st.Save()
}

// slotSafe maps a shard name onto the characters a slot name may have.
func slotSafe(name string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '_':
			return r
		case r >= 'A' && r <= 'Z':
			return r + ('a' - 'A')
		}
		return '_'
	}, name)
}

func (r *Runner) sourceDSN() string {
	for _, s := range r.State.Before.Shards {
		if s.Name == r.State.Source {
			return s.Primary
		}
	}
	return ""
}

func (r *Runner) tables() []string { return slices.Sorted(maps.Keys(r.Config.Tables)) }

// allTables is every table a target receives: sharded, then reference.
func (r *Runner) allTables() []string { return append(r.tables(), r.Config.ReferenceTables...) }

func (r *Runner) save() error { return r.State.Save() }

// Copy makes the schema on every target and copies each part under its
// slot's snapshot; afterwards the state is copied. A part whose copy was
// cut short continues: the tables it finished catch up from the old slot
// to a new snapshot, and only the others are copied again.
func (r *Runner) Copy(ctx context.Context) error {
	if r.State.Phase != PhaseCopying {
		return nil
	}
	if err := r.Proxies.lockDDL(ctx, true); err != nil {
		return err
	}
	src := r.sourceDSN()
	if err := EnsurePublication(ctx, src, r.State.Publication, r.allTables()); err != nil {
		return err
	}
	for i := range r.State.Parts {
		part := &r.State.Parts[i]
		if err := CopySchema(ctx, src, part.Target.Primary, r.allTables()); err != nil {
			return fmt.Errorf("schema onto %s: %w", part.Target.Name, err)
		}
		if err := r.copyPart(ctx, i); err != nil {
			return fmt.Errorf("copy onto %s: %w", part.Target.Name, err)
		}
	}
	r.State.Phase = PhaseCopied
	return r.save()
}

func (r *Runner) copyPart(ctx context.Context, i int) error {
	part := &r.State.Parts[i]
	var done, todo []string
	for _, t := range r.allTables() {
		if part.Tables[t].Done {
			done = append(done, t)
		} else {
			todo = append(todo, t)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	src, dst := r.sourceDSN(), part.Target.Primary
	oldSlot := part.Slot
	slot := oldSlot
	if len(done) > 0 {
		slot = nextSlotName(oldSlot)
	}
	// The slot about to be made may exist: one whose snapshot died with
	// the copy, or a replacement made just before a crash, before the state
	// named it. Nothing reads either.
	if err := dropSlots(ctx, src, slot); err != nil {
		return err
	}
	snap, err := OpenSnapshot(ctx, src, slot)
	if err != nil {
		return err
	}
	defer snap.Close(context.WithoutCancel(ctx))
	if len(done) > 0 {
		// The finished tables are as of the old slot: bring them to the new
		// snapshot, then the old slot is no longer needed.
		if err := r.stream(i, oldSlot, done).Run(ctx, snap.Point); err != nil {
			return fmt.Errorf("catch up the tables already copied: %w", err)
		}
		part.Slot = slot
		if err := r.save(); err != nil {
			return err
		}
		if err := dropSlots(ctx, src, oldSlot); err != nil {
			return err
		}
	}
	if err := truncate(ctx, dst, todo); err != nil { // rows of a copy cut short
		return err
	}
	rng, err := topology.ParseKeyRange(part.Range)
	if err != nil {
		return err
	}
	for _, t := range todo {
		if err := r.copyTable(ctx, i, snap, rng, t); err != nil {
			return err
		}
	}
	return nil
}

func (r *Runner) copyTable(ctx context.Context, i int, snap *Snapshot, rng topology.KeyRange, table string) error {
	part := &r.State.Parts[i]
	tc, sharded := r.Config.Tables[table]
	from, _ := topology.ParseKeyRange(r.State.From)
	began := time.Now().UTC()
	cp := TableCopy{Estimate: estimateRows(ctx, r.sourceDSN(), table, rng, from, sharded), Began: began, Updated: began}
	part.Tables[table] = cp
	// The state file shows status the rows so far, once a second.
	lastSave := time.Now()
	progress := func(n int64) {
		if r.OnCopy != nil {
			r.OnCopy(i, table, n)
		}
		if time.Since(lastSave) >= time.Second {
			cp.Rows, cp.Updated, lastSave = n, time.Now().UTC(), time.Now()
			part.Tables[table] = cp
			r.save() // best effort: status only
		}
	}
	var (
		n   int64
		err error
	)
	if sharded {
		n, err = CopyTable(ctx, snap, r.sourceDSN(), part.Target.Primary, rng, table, tc, progress)
	} else {
		n, err = CopyReference(ctx, snap, r.sourceDSN(), part.Target.Primary, table, progress)
	}
	if err != nil {
		return err
	}
	cp.Rows, cp.Done, cp.Updated = n, true, time.Now().UTC()
	part.Tables[table] = cp
	r.Log.Info("table copied", "table", table, "target", part.Target.Name, "rows", n, "took", time.Since(began).Round(time.Millisecond))
	return r.save()
}

// nextSlotName gives a slot that replaces s a new name: s with a counter.
func nextSlotName(s string) string {
	base, n := s, 1
	if i := strings.LastIndex(s, "_c"); i > 0 {
		if _, err := fmt.Sscanf(s[i:], "_c%d", &n); err == nil {
			base, n = s[:i], n+1
		}
	}
	return fmt.Sprintf("%s_c%d", base, n)
}

// stream is part i's forward stream, applying only tables (nil: all).
func (r *Runner) stream(i int, slot string, tables []string) *Stream {
	part := r.State.Parts[i]
	rng, _ := topology.ParseKeyRange(part.Range) // checked when the state was made
	s := &Stream{
		Slot: slot, Publication: r.State.Publication,
		SourceDSN: r.sourceDSN(), TargetDSN: part.Target.Primary,
		Range: rng, Tables: map[string]topology.TableConfig{}, Log: r.Log,
	}
	if tables == nil {
		tables = r.allTables()
	}
	for _, t := range tables {
		if tc, ok := r.Config.Tables[t]; ok {
			s.Tables[t] = tc
		} else {
			s.Reference = append(s.Reference, t)
		}
	}
	if r.OnCatchUp != nil {
		s.OnProgress = func(p Progress) { r.OnCatchUp(i, p) }
	}
	return s
}

// CatchUp runs every part's stream until it has applied what the source
// had committed when it was called, and returns how long the pass took.
func (r *Runner) CatchUp(ctx context.Context) (time.Duration, error) {
	if r.State.Phase != PhaseCopied && r.State.Phase != PhaseSwitching {
		return 0, fmt.Errorf("catch-up runs after the copy and before cutover; the reshard is %s", r.State.Phase)
	}
	began := time.Now()
	until, err := currentLSN(ctx, r.sourceDSN())
	if err != nil {
		return 0, err
	}
	return time.Since(began), r.runStreams(ctx, until)
}

func (r *Runner) runStreams(ctx context.Context, until pglogrepl.LSN) error {
	errs := make([]error, len(r.State.Parts))
	done := make(chan struct{})
	for i := range r.State.Parts {
		go func() {
			defer func() { done <- struct{}{} }()
			errs[i] = r.stream(i, r.State.Parts[i].Slot, nil).Run(ctx, until)
		}()
	}
	for range r.State.Parts {
		<-done
	}
	return errors.Join(errs...)
}
