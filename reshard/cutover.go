package reshard

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// CutoverReport is what a cutover measured.
type CutoverReport struct {
	Catchup     time.Duration // the passes before the fence
	WritePause  time.Duration // from fencing to lifting the fence
	FinalApply  time.Duration // the catch-up inside the fence
	SwitchPoint map[string]string
}

// Cutover switches the proxies to the new layout. Outside the fence the
// streams catch up until a pass is short; then writes to the source queue
// on every proxy while the streams apply the rest, each target gets a
// reverse slot (abort after cutover replays the target's writes onto the
// source), and the proxies switch. Past CutoverTimeout, or on any error
// before the switch, the fence lifts and the old layout keeps serving.
func (r *Runner) Cutover(ctx context.Context) (CutoverReport, error) {
	var rep CutoverReport
	switch r.State.Phase {
	case PhaseSwitched: // a cutover killed after the switch: say it again
		return rep, errors.Join(r.Proxies.switchTo(ctx, r.State.After), r.Proxies.unfence(ctx))
	case PhaseCopied, PhaseSwitching:
	default:
		return rep, fmt.Errorf("the reshard is %s: cutover comes after the copy", r.State.Phase)
	}
	began := time.Now()
	for pass := 0; ; pass++ {
		took, err := r.CatchUp(ctx)
		if err != nil {
			return rep, err
		}
		if took < r.CutoverTimeout/4 || pass == 20 {
			break
		}
	}
	rep.Catchup = time.Since(began)

	fenced := time.Now()
	err := r.fencedSwitch(ctx, &rep)
	if uerr := r.Proxies.unfence(ctx); uerr != nil {
		err = errors.Join(err, uerr)
	}
	rep.WritePause = time.Since(fenced)
	switch {
	case err != nil && r.State.Phase == PhaseSwitched:
		return rep, fmt.Errorf("the proxies switched to the new layout, but: %w", err)
	case err != nil && r.State.Phase == PhaseSwitching:
		return rep, fmt.Errorf("some proxies may serve the new layout; run cutover again: %w", err)
	case err != nil:
		return rep, fmt.Errorf("cutover abandoned, the old layout serves: %w", err)
	}
	return rep, nil
}

func (r *Runner) fencedSwitch(ctx context.Context, rep *CutoverReport) error {
	ctx, cancel := context.WithTimeout(ctx, r.CutoverTimeout)
	defer cancel()
	if err := r.Proxies.fence(ctx, r.State.Source, r.CutoverTimeout.Milliseconds(), r.State.Phase == PhaseSwitching); err != nil {
		return err
	}
	applyBegan := time.Now()
	until, err := currentLSN(ctx, r.sourceDSN())
	if err != nil {
		return err
	}
	if err := r.runStreams(ctx, until); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("the targets did not catch up within cutover_timeout %s", r.CutoverTimeout)
		}
		return err
	}
	rep.FinalApply = time.Since(applyBegan)
	if err := r.copySequences(ctx); err != nil {
		return err
	}
	after := r.State.After
	after.ReadFloor = map[string]string{}
	for i := range r.State.Parts {
		part := &r.State.Parts[i]
		part.ReverseSlot = "shardgate_" + r.State.ID + "_rev_" + slotSafe(part.Target.Name)
		if err := EnsurePublication(ctx, part.Target.Primary, r.State.Publication, r.allTables()); err != nil {
			return err
		}
		if _, err := EnsureSlot(ctx, part.Target.Primary, part.ReverseSlot); err != nil {
			return err
		}
		floor, err := currentLSN(ctx, part.Target.Primary)
		if err != nil {
			return err
		}
		after.ReadFloor[part.Target.Name] = floor.String()
	}
	rep.SwitchPoint = after.ReadFloor
	// Should this command stop while proxies switch, the state must say
	// that some may serve the new layout: abort would otherwise empty
	// targets that take writes.
	r.State.Phase = PhaseSwitching
	if err := r.save(); err != nil {
		return err
	}
	if err := r.Proxies.switchTo(ctx, after); err != nil {
		// A proxy that did switch goes back; the targets took no write,
		// as the source stayed fenced.
		if berr := r.Proxies.switchTo(context.WithoutCancel(ctx), r.State.Before); berr != nil {
			return errors.Join(err, berr) // still switching: cutover again
		}
		r.State.Phase = PhaseCopied
		return errors.Join(err, r.save())
	}
	r.State.After = after
	r.State.Phase = PhaseSwitched
	r.State.Switched = time.Now().UTC()
	if err := r.save(); err != nil {
		return err
	}
	return RewriteLayout(r.State.Config, after)
}

// copySequences sets every sequence of the targets to the source's value,
// so a default nextval() on a target cannot hand out a number the source
// already did. It runs fenced: no write on the source moves them.
func (r *Runner) copySequences(ctx context.Context) error {
	type seq struct {
		name string
		last int64
	}
	var seqs []seq
	err := withConn(ctx, r.sourceDSN(), func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, "SELECT format('%I.%I', schemaname, sequencename), last_value FROM pg_sequences WHERE last_value IS NOT NULL AND schemaname NOT IN ('pg_catalog', 'information_schema')")
		if err != nil {
			return err
		}
		seqs, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (seq, error) {
			var s seq
			return s, row.Scan(&s.name, &s.last)
		})
		return err
	})
	if err != nil || len(seqs) == 0 {
		return err
	}
	for _, part := range r.State.Parts {
		err := withConn(ctx, part.Target.Primary, func(c *pgx.Conn) error {
			for _, s := range seqs {
				// Never backwards: a cutover run again after the switch
				// finds targets that already handed out numbers.
				if _, err := c.Exec(ctx, `SELECT setval(to_regclass($1), greatest($2, coalesce(s.last_value, 0)))
FROM pg_sequences s WHERE format('%I.%I', s.schemaname, s.sequencename) = $1`, s.name, s.last); err != nil {
					return fmt.Errorf("sequence %s: %w", s.name, err)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// Abort returns to the layout before the reshard with nothing lost. After
// cutover, writes to the targets queue while the reverse streams bring the
// source up to date; then the proxies switch back. Either way the slots
// and the publication go, and the targets are emptied.
func (r *Runner) Abort(ctx context.Context) error {
	if r.State.Phase == PhaseSwitching {
		return errors.New("a cutover was cut short while the proxies switched: run cutover again, then abort")
	}
	if r.State.Phase == PhaseSwitched {
		if err := r.switchBack(ctx); err != nil {
			return err
		}
	}
	return r.cleanup(ctx, true)
}

func (r *Runner) switchBack(ctx context.Context) error {
	fctx, cancel := context.WithTimeout(ctx, r.CutoverTimeout)
	defer cancel()
	err := r.fencedSwitchBack(fctx)
	if uerr := r.Proxies.unfence(ctx); uerr != nil {
		err = errors.Join(err, uerr)
	}
	if err != nil {
		return fmt.Errorf("abort after cutover failed, the new layout still serves: %w", err)
	}
	return nil
}

func (r *Runner) fencedSwitchBack(ctx context.Context) error {
	for _, part := range r.State.Parts {
		if err := r.Proxies.fence(ctx, part.Target.Name, r.CutoverTimeout.Milliseconds(), true); err != nil {
			return err
		}
	}
	errs := make([]error, len(r.State.Parts))
	done := make(chan struct{})
	for i := range r.State.Parts {
		go func() {
			defer func() { done <- struct{}{} }()
			until, err := currentLSN(ctx, r.State.Parts[i].Target.Primary)
			if err == nil {
				err = r.reverse(i).Run(ctx, until)
			}
			errs[i] = err
		}()
	}
	for range r.State.Parts {
		<-done
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	floor, err := currentLSN(ctx, r.sourceDSN())
	if err != nil {
		return err
	}
	before := r.State.Before
	before.ReadFloor = map[string]string{r.State.Source: floor.String()}
	if err := r.Proxies.switchTo(ctx, before); err != nil {
		return err
	}
	r.State.Phase = PhaseCopied // no longer switched: cleanup follows
	if err := r.save(); err != nil {
		return err
	}
	return RewriteLayout(r.State.Config, before)
}

// reverse is part i's stream from its target back to the source. The
// first part's also carries the reference tables, which the proxies now
// write on the targets and no longer on the retired source.
func (r *Runner) reverse(i int) *Stream {
	part := r.State.Parts[i]
	s := r.stream(i, part.ReverseSlot, nil)
	s.SourceDSN, s.TargetDSN = part.Target.Primary, r.sourceDSN()
	if i > 0 {
		s.Reference = nil
	}
	return s
}

// Complete ends a reshard that was switched: the slots and publications
// go, and the retired source's rows are deleted in batches.
func (r *Runner) Complete(ctx context.Context, batch int) error {
	if r.State.Phase != PhaseSwitched {
		return fmt.Errorf("the reshard is %s: complete comes after cutover (or abort it)", r.State.Phase)
	}
	if err := r.dropReplication(ctx); err != nil {
		return err
	}
	for _, t := range r.tables() {
		if err := deleteInBatches(ctx, r.sourceDSN(), t, batch); err != nil {
			return err
		}
	}
	if err := r.Proxies.lockDDL(ctx, false); err != nil {
		return err
	}
	return r.State.Remove()
}

func (r *Runner) dropReplication(ctx context.Context) error {
	var errs []error
	src := r.sourceDSN()
	for _, part := range r.State.Parts {
		errs = append(errs, dropSlots(ctx, part.Target.Primary, part.ReverseSlot))
		errs = append(errs, dropPublication(ctx, part.Target.Primary, r.State.Publication))
		errs = append(errs, dropSlots(ctx, src, part.Slot))
	}
	errs = append(errs, dropPublication(ctx, src, r.State.Publication))
	return errors.Join(errs...)
}

// cleanup drops what the reshard made; with emptyTargets the targets'
// copies go too (abort), so the same reshard can be started again.
func (r *Runner) cleanup(ctx context.Context, emptyTargets bool) error {
	if err := r.dropReplication(ctx); err != nil {
		return err
	}
	if emptyTargets {
		for _, part := range r.State.Parts {
			if err := truncateExisting(ctx, part.Target.Primary, r.allTables()); err != nil {
				return err
			}
		}
	}
	if err := r.Proxies.lockDDL(ctx, false); err != nil {
		return err
	}
	return r.State.Remove()
}

func truncateExisting(ctx context.Context, dsn string, tables []string) error {
	var existing []string
	err := withConn(ctx, dsn, func(c *pgx.Conn) error {
		for _, t := range tables {
			var ok bool
			if err := c.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", pgx.Identifier{t}.Sanitize()).Scan(&ok); err != nil {
				return err
			}
			if ok {
				existing = append(existing, t)
			}
		}
		_, err := c.Exec(ctx, "DROP SCHEMA IF EXISTS shardgate_reshard CASCADE")
		return err
	})
	if err != nil {
		return err
	}
	return truncate(ctx, dsn, existing)
}

// deleteInBatches empties table a batch at a time, each its own
// transaction, so that neither locks nor WAL pile up on the source.
func deleteInBatches(ctx context.Context, dsn, table string, batch int) error {
	name := pgx.Identifier{table}.Sanitize()
	return withConn(ctx, dsn, func(c *pgx.Conn) error {
		for {
			tag, err := c.Exec(ctx, "DELETE FROM "+name+" WHERE ctid = ANY (ARRAY(SELECT ctid FROM "+name+" LIMIT $1))", batch)
			if err != nil {
				return fmt.Errorf("delete moved rows of %s: %w", table, err)
			}
			if tag.RowsAffected() == 0 {
				return nil
			}
		}
	})
}
