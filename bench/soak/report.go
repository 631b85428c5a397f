package main

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// bounds are how much the proxy may grow between the start and the end
// sample. Start and end both have the same well-behaved clients
// connected; what may differ is server connections the pools opened for
// the faults and hostile queries (at most 20 per server, one fd each and a
// goroutine or two), and heap the Go runtime has not yet given back. The
// peak bound is for memory a client only claimed: a proxy that allocates
// a 1 GB message header's size shows there even if it frees it later,
// while the largest real hostile query (the 100,000-value IN list) takes
// about 60 MiB.
type bounds struct {
	rssFactor   float64 // end RSS <= max(rssFactor x start, start + rssSlackMiB)
	rssSlackMiB int64
	rssPeakMiB  int64 // peak RSS <= start + rssPeakMiB
	goroutines  int   // end <= start + goroutines
	fds         int   // end <= start + fds
}

func defaultBounds() bounds {
	return bounds{rssFactor: 2, rssSlackMiB: 64, rssPeakMiB: 512, goroutines: 50, fds: 50}
}

func (b bounds) validate() error {
	if b.rssFactor < 1 || b.rssSlackMiB < 0 || b.rssPeakMiB < 0 || b.goroutines < 0 || b.fds < 0 {
		return errors.New("-max-rss-factor must be at least 1, the other bounds not negative")
	}
	return nil
}

func (b bounds) maxRSS(start int64) int64 {
	return max(int64(b.rssFactor*float64(start)), start+b.rssSlackMiB<<20)
}

// check is one line of the verdict.
type check struct {
	name, start, peak, end, bound string
	ok                            bool
}

func (r *result) checks(o options) []check {
	b := o.bounds
	alive := check{name: "proxy process alive", end: "yes", ok: r.proxyDied == ""}
	if !alive.ok {
		alive.end = "died"
	}
	cs := []check{alive}
	if r.ended {
		cs = append(cs,
			check{"RSS MiB", fmt.Sprintf("%.1f", mib(r.start.rss)), fmt.Sprintf("%.1f", mib(r.peak.rss)), fmt.Sprintf("%.1f", mib(r.end.rss)),
				fmt.Sprintf("<= %.1f", mib(b.maxRSS(r.start.rss))), r.end.rss <= b.maxRSS(r.start.rss)},
			check{"RSS MiB, peak", "", fmt.Sprintf("%.1f", mib(r.peak.rss)), "",
				fmt.Sprintf("<= %.1f", mib(r.start.rss+b.rssPeakMiB<<20)), r.peak.rss <= r.start.rss+b.rssPeakMiB<<20},
			check{"goroutines", fmt.Sprint(r.start.goroutines), fmt.Sprint(r.peak.goroutines), fmt.Sprint(r.end.goroutines),
				fmt.Sprintf("<= %d", r.start.goroutines+b.goroutines), r.end.goroutines <= r.start.goroutines+b.goroutines},
			check{"open files", fmt.Sprint(r.start.fds), fmt.Sprint(r.peak.fds), fmt.Sprint(r.end.fds),
				fmt.Sprintf("<= %d", r.start.fds+b.fds), r.end.fds <= r.start.fds+b.fds},
		)
	} else {
		cs = append(cs, check{name: "resources sampled at start and end", end: "no", ok: false})
	}
	t := r.totals
	cs = append(cs, check{name: "well-behaved errors no fault explains", end: fmt.Sprint(t.failures), bound: "0", ok: t.failures == 0})
	final := check{name: "new client after the run", end: "ok", ok: r.finalCheck == nil && r.ended}
	switch {
	case !r.ended:
		final.end = "not run"
	case r.finalCheck != nil:
		final.end = "failed: " + firstLine(r.finalCheck.Error(), 80)
	}
	return append(cs, final)
}

func (r *result) passed(o options) bool {
	for _, c := range r.checks(o) {
		if !c.ok {
			return false
		}
	}
	return true
}

// markdown is the summary: the verdict's table, then what the clients did.
func (r *result) markdown(o options) string {
	var b strings.Builder
	verdict := "PASS"
	if !r.passed(o) {
		verdict = "FAIL"
	}
	fmt.Fprintf(&b, "## Soak: %s\n\n", verdict)
	fmt.Fprintf(&b, "%s, %s at commit %s. ", r.began.UTC().Format("2006-01-02 15:04 UTC"), o.bin, cmp.Or(r.commit, "?"))
	fmt.Fprintf(&b, "`shardgate serve` (pid %d) on 2 shards, each a primary and a streaming replica; max_client_conn %d. "+
		"Main phase %s (of %s asked) after %s warm-up, %s settling; %d well-behaved clients (%d reconnecting after 1-3 requests); "+
		"probes: %s.\n\n", r.pid, o.maxClientConn, r.elapsed.Round(time.Second), o.duration, o.warmup, o.settle,
		o.workers+o.churners, o.churners, cmp.Or(strings.Join(o.probes, ", "), "none"))
	b.WriteString("| check | start | peak | end | bound | result |\n|---|---:|---:|---:|---:|---|\n")
	for _, c := range r.checks(o) {
		res := "ok"
		if !c.ok {
			res = "**FAIL**"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", c.name, c.start, c.peak, c.end, c.bound, res)
	}
	if r.proxyDied != "" {
		fmt.Fprintf(&b, "\nThe proxy died: %s\n", codeBlock(r.proxyDied))
	}
	r.writeRequests(&b)
	r.writeFaults(&b, o)
	r.writeHostile(&b)
	return b.String()
}

func codeBlock(s string) string {
	first, rest, _ := strings.Cut(s, "\n")
	if rest == "" {
		return first
	}
	return first + "\n\n```\n" + rest + "\n```"
}

func (r *result) writeRequests(b *strings.Builder) {
	t := r.totals
	var all int64
	for _, n := range t.ops {
		all += n
	}
	fmt.Fprintf(b, "\nWell-behaved requests: %d, errors %d excused by a fault, %d not; slowest %s.\n\n",
		all, t.tolerated, t.failures, t.maxLat.Round(time.Millisecond))
	b.WriteString("| request | count |\n|---|---:|\n")
	for _, op := range slices.Sorted(maps.Keys(t.ops)) {
		fmt.Fprintf(b, "| %s | %d |\n", op, t.ops[op])
	}
	if len(t.errs) == 0 {
		return
	}
	b.WriteString("\n| error | put down to a fault | count |\n|---|---|---:|\n")
	keys := slices.SortedFunc(maps.Keys(t.errs), func(a, b errKey) int {
		return cmp.Or(cmp.Compare(t.errs[b], t.errs[a]), strings.Compare(a.class, b.class))
	})
	for _, k := range keys {
		excused := cmp.Or(k.excuse, "no: **fails**")
		fmt.Fprintf(b, "| %s | %s | %d |\n", k.class, excused, t.errs[k])
	}
	if len(t.examples) > 0 {
		b.WriteString("\nFirst errors no fault explains:\n\n")
		for _, e := range t.examples {
			fmt.Fprintf(b, "- `%s`\n", strings.ReplaceAll(e, "`", "'"))
		}
	}
}

func (r *result) writeFaults(b *strings.Builder, o options) {
	if len(r.totals.faults) == 0 {
		b.WriteString("\nNo fault was injected.\n")
		return
	}
	fmt.Fprintf(b, "\n| fault | shard | at | lasted | errors excused until |\n|---|---|---:|---:|---:|\n")
	for _, f := range r.totals.faults {
		lasted, until := "(not over)", "end"
		if !f.end.IsZero() {
			lasted = f.end.Sub(f.start).Round(100 * time.Millisecond).String()
			until = fmt.Sprintf("+%s", f.end.Add(o.grace).Sub(r.began).Round(time.Second))
		}
		fmt.Fprintf(b, "| %s | s%d | +%s | %s | %s |\n", f.name, f.shard, f.start.Sub(r.began).Round(time.Second), lasted, until)
	}
}

func (r *result) writeHostile(b *strings.Builder) {
	if len(r.hostile) == 0 {
		return
	}
	fmt.Fprintf(b, "\nHostile clients (the proxy's reaction; most half-open logins held at once: %d):\n\n", r.peakHalfOpen)
	b.WriteString("| probe | runs | outcomes |\n|---|---:|---|\n")
	for _, name := range probeNames() {
		outs, ok := r.hostile[name]
		if !ok {
			continue
		}
		total := 0
		var parts []string
		for _, out := range slices.SortedFunc(maps.Keys(outs), func(a, b string) int {
			return cmp.Or(cmp.Compare(outs[b], outs[a]), strings.Compare(a, b))
		}) {
			total += outs[out]
			parts = append(parts, fmt.Sprintf("%s ×%d", strings.ReplaceAll(out, "|", "/"), outs[out]))
		}
		fmt.Fprintf(b, "| %s | %d | %s |\n", name, total, strings.Join(parts, "; "))
	}
}
