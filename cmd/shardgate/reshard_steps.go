package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/shardgate/shardgate/reshard"
	"github.com/shardgate/shardgate/topology"
)

// reshardStartCmd is split or move: plan and preflight (or find the same
// reshard in progress), copy, catch up, and with --cutover-when-ready
// switch. Run again after any failure, it continues.
func reshardStartCmd(o *reshardOpts, verb string) *cobra.Command {
	var (
		rangeSpec, at string
		targets       targetFlags
		cutover       bool
	)
	use, example := "split --range RANGE --at BOUND --to LOWER --to UPPER", `  shardgate reshard split -c .sandbox/shardgate.yaml --range 80- --at c0 --to s2 --to s3 --proxy postgres://postgres@127.0.0.1:6432/shardgate`
	short := "Split a shard's range in two at BOUND onto two new shards; the source retires at cutover"
	if verb == "move" {
		use, example = "move --range RANGE --to NAME", `  shardgate reshard move -c .sandbox/shardgate.yaml --range 80- --to s2 --proxy postgres://postgres@127.0.0.1:6432/shardgate`
		short = "Move a shard's range onto a new shard; the source retires at cutover"
	}
	cmd := &cobra.Command{
		Use: use, Short: short, Example: example, Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := o.start(cmd, verb, rangeSpec, at, &targets)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if len(o.proxies) == 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning: no --proxy: DDL through the proxies is not refused during the reshard, and cutover will need them")
			}
			bars := copyProgress(out, r)
			if err := r.Copy(cmd.Context()); err != nil {
				return err
			}
			bars.finish()
			took, err := r.CatchUp(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "copied; caught up in %s\n", took.Round(time.Millisecond))
			if !cutover {
				fmt.Fprintf(out, "next: shardgate reshard verify, then cutover (same -c and --proxy)\n")
				return nil
			}
			return runCutover(cmd, r)
		},
	}
	planFlags(cmd, &rangeSpec, &at, &targets)
	cmd.Flags().BoolVar(&cutover, "cutover-when-ready", false, "switch the proxies as soon as the targets have caught up")
	return cmd
}

// start makes the reshard's state after a preflight, or takes the one in
// progress when it is the same reshard.
func (o *reshardOpts) start(cmd *cobra.Command, verb, rangeSpec, at string, t *targetFlags) (*reshard.Runner, error) {
	st, ok, err := reshard.LoadState(o.config)
	if err != nil {
		return nil, err
	}
	if ok {
		if st.From != rangeSpecCanonical(rangeSpec) {
			return nil, fmt.Errorf("a reshard of %s (%s) is in progress: see reshard status, or abort it", st.From, st.ID)
		}
		cfg, err := topology.LoadConfig(o.config)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "continuing reshard %s (%s)\n", st.ID, st.Phase)
		return o.newRunner(cfg, st)
	}
	cfg, err := topology.LoadConfig(o.config)
	if err != nil {
		return nil, err
	}
	p, err := o.plan(cfg, verb, rangeSpec, at, t)
	if err != nil {
		return nil, err
	}
	if err := preflight(cmd, cfg, p); err != nil {
		return nil, err
	}
	st, err = reshard.Begin(o.config, cfg, p, time.Now())
	if err != nil {
		return nil, err
	}
	return o.newRunner(cfg, st)
}

// errNoProxy refuses a switch without the proxies: one left on the old
// layout would write to the retired source, and complete would lose it.
var errNoProxy = errors.New("name every proxy serving this config with --proxy ADMIN_DSN: they switch layouts together")

func rangeSpecCanonical(spec string) string {
	r, err := topology.ParseKeyRange(spec)
	if err != nil {
		return spec
	}
	return r.String()
}

func runCutover(cmd *cobra.Command, r *reshard.Runner) error {
	if len(r.Proxies) == 0 {
		return errNoProxy
	}
	rep, err := r.Cutover(cmd.Context())
	if err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "switched: writes to %s paused %s (final catch-up %s); next: shardgate reshard complete (or abort)\n",
		r.State.Source, rep.WritePause.Round(time.Millisecond), rep.FinalApply.Round(time.Millisecond))
	return nil
}

// bars draws a progress bar per part on a terminal; elsewhere the log's
// "table copied" lines say as much.
type bars struct{ bars []*progressbar.ProgressBar }

func copyProgress(w io.Writer, r *reshard.Runner) *bars {
	b := &bars{}
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return b
	}
	last := map[string]int64{}
	for _, part := range r.State.Parts {
		b.bars = append(b.bars, progressbar.NewOptions64(-1,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription("copy to "+part.Target.Name),
			progressbar.OptionShowCount(),
			progressbar.OptionSetItsString("rows"),
			progressbar.OptionShowIts(),
			progressbar.OptionThrottle(100*time.Millisecond)))
	}
	r.OnCopy = func(part int, table string, rows int64) {
		key := fmt.Sprint(part, table)
		b.bars[part].Add64(rows - last[key])
		last[key] = rows
	}
	return b
}

func (b *bars) finish() {
	for _, bar := range b.bars {
		bar.Finish()
	}
}

func reshardStepCmd(o *reshardOpts, verb string) *cobra.Command {
	short := map[string]string{
		"cutover":  "Catch up, pause writes to the source on every --proxy, switch them to the new layout, resume",
		"abort":    "Return to the layout before the reshard with nothing lost (before or after cutover)",
		"complete": "After cutover: drop the slots and publications and delete the moved rows from the retired source",
	}[verb]
	var batch int
	cmd := &cobra.Command{
		Use: verb, Short: short, Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := o.runner()
			if err != nil {
				return err
			}
			switch verb {
			case "cutover":
				return runCutover(cmd, r)
			case "abort":
				if r.State.Phase == reshard.PhaseSwitched && len(r.Proxies) == 0 {
					return errNoProxy
				}
				if err := r.Abort(cmd.Context()); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "aborted: the layout before reshard %s serves\n", r.State.ID)
			default:
				if err := r.Complete(cmd.Context(), batch); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "complete: reshard %s is done; shard %s is retired and empty\n", r.State.ID, r.State.Source)
			}
			return nil
		},
	}
	if verb == "complete" {
		cmd.Flags().IntVar(&batch, "batch", 5000, "rows deleted per transaction on the source")
	}
	return cmd
}

func reshardStatusCmd(o *reshardOpts) *cobra.Command {
	return &cobra.Command{
		Use: "status [--json]", Short: "Show the phase, the copy per table (rows, rate, ETA) and the stream lag", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := o.runner()
			if err != nil {
				return err
			}
			s, err := r.Status(cmd.Context())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if o.json {
				return writeJSON(out, s)
			}
			fmt.Fprintf(out, "reshard %s: %s, range %s of shard %s, started %s\n", s.ID, s.Phase, s.From, s.Source, s.Started.Format(time.RFC3339))
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TARGET\tRANGE\tTABLE\tROWS\tESTIMATE\tROWS/S\tETA")
			for _, p := range s.Parts {
				for _, t := range p.Tables {
					eta := "done"
					if !t.Done {
						eta = fmt.Sprintf("%.0fs", t.ETASecs)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%.0f\t%s\n", p.Target, p.Range, t.Table, t.Rows, t.Estimate, t.Rate, eta)
				}
			}
			tw.Flush()
			for _, p := range s.Parts {
				fmt.Fprintf(out, "stream %s: applied %s, lag %d bytes, %.1fs\n", p.Slot, p.Applied, p.LagBytes, p.LagSecs)
			}
			return nil
		},
	}
}

func reshardVerifyCmd(o *reshardOpts) *cobra.Command {
	return &cobra.Command{
		Use: "verify [--json]", Short: "Compare each moved table, source against target, at one consistent point; exit 1 on a difference", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := o.runner()
			if err != nil {
				return err
			}
			parts, err := r.Verify(cmd.Context())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			ok := true
			for _, p := range parts {
				for _, t := range p.Tables {
					ok = ok && t.OK()
				}
			}
			if o.json {
				if err := writeJSON(out, map[string]any{"ok": ok, "parts": parts}); err != nil {
					return err
				}
			} else {
				for _, p := range parts {
					for _, t := range p.Tables {
						verdict := "ok"
						if !t.OK() {
							verdict = fmt.Sprintf("DIFFERENT %v", t.Mismatched)
						}
						fmt.Fprintf(out, "%s at %s: %s: source %d rows %s, target %d rows %s: %s\n", p.Target, p.Point, t.Table, t.Source, t.SourceSum, t.Target, t.TargetSum, verdict)
					}
				}
			}
			if !ok {
				return exitError(1)
			}
			return nil
		},
	}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
