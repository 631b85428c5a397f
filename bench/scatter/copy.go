package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shardgate/shardgate/bench/loadgen"
	"github.com/shardgate/shardgate/sandbox"
	"github.com/shardgate/shardgate/topology"
)

// copyStep streams the same generated rows with COPY ... FROM STDIN into
// one PostgreSQL database and through a `shardgate serve` process over the
// shards, samples that process's RSS while it splits the stream, and checks
// every row reached the shard its key names.
func copyStep(ctx context.Context, c *sandbox.Cluster, topo *topology.Topology, bin, dir string, rows int) (string, error) {
	addr, err := loadgen.FreeAddr()
	if err != nil {
		return "", err
	}
	cfgPath := filepath.Join(dir, "shardgate.yaml")
	if err := os.WriteFile(cfgPath, c.ConfigYAML(addr), 0o644); err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, bin, "serve", "--config", cfgPath)
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start %s: %w", bin, err)
	}
	defer func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() }()
	if err := loadgen.WaitListening(ctx, addr, nil); err != nil {
		return "", err
	}
	proxyDSN := "postgres://postgres@" + addr + "/" + c.Database + "?sslmode=disable"
	flatDSN := c.Shards[0].Primary.DSN("flat")
	const sql = "COPY posts (user_id, id, body, likes) FROM STDIN"

	logf("COPY of %d rows straight into database flat", rows)
	direct, err := timedCopy(ctx, flatDSN, sql, rows)
	if err != nil {
		return "", fmt.Errorf("direct COPY: %w", err)
	}
	logf("COPY of %d rows through shardgate (pid %d)", rows, cmd.Process.Pid)
	before := rss(cmd.Process.Pid)
	sampler := sampleRSS(cmd.Process.Pid)
	through, err := timedCopy(ctx, proxyDSN, sql, rows)
	peak := sampler()
	if err != nil {
		return "", fmt.Errorf("COPY through shardgate: %w", err)
	}
	after := rss(cmd.Process.Pid)
	if err := checkPlacement(ctx, c, topo, rows); err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "## COPY FROM STDIN split across shards\n\n")
	fmt.Fprintf(&b, "%d rows of `posts (user_id, id, body, likes)` (text format, about %d MB) streamed by one pgx CopyFrom, "+
		"straight into one database and through a `shardgate serve` process that splits them over %d shards "+
		"(each shard COPYs in a transaction; all commit at the end). Every row was then found on the shard its key names. "+
		"RSS is the proxy process's VmRSS, sampled every 20 ms.\n\n", rows, dataSize(rows)>>20, shards)
	b.WriteString("| target | seconds | rows/s | MB/s | ratio to direct |\n|---|---:|---:|---:|---:|\n")
	for _, r := range []struct {
		name string
		d    time.Duration
	}{{"postgres (flat)", direct}, {"shardgate (3 shards)", through}} {
		fmt.Fprintf(&b, "| %s | %.2f | %.0f | %.1f | %.2f |\n", r.name, r.d.Seconds(), float64(rows)/r.d.Seconds(),
			float64(dataSize(rows))/(1<<20)/r.d.Seconds(), direct.Seconds()/r.d.Seconds())
	}
	fmt.Fprintf(&b, "\nshardgate RSS: %.1f MiB before the COPY, %.1f MiB peak during it, %.1f MiB after.\n\n",
		mib(before), mib(peak), mib(after))
	return b.String(), nil
}

// copyRows writes the benchmark's rows: 50,000 users' posts.
func copyRows(w io.Writer, rows int) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	var line []byte
	for i := range rows {
		line = strconv.AppendInt(line[:0], int64(i%50000+1), 10)
		line = append(line, '\t')
		line = strconv.AppendInt(line, int64(i), 10)
		line = append(line, "\tpost number "...)
		line = strconv.AppendInt(line, int64(i), 10)
		line = append(line, '\t')
		line = strconv.AppendInt(line, int64(i%100), 10)
		line = append(line, '\n')
		if _, err := bw.Write(line); err != nil {
			return err
		}
	}
	return bw.Flush()
}

func dataSize(rows int) int64 {
	n, _ := io.Copy(io.Discard, genReader(rows))
	return n
}

func genReader(rows int) io.Reader {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(copyRows(pw, rows)) }()
	return pr
}

func timedCopy(ctx context.Context, dsn, sql string, rows int) (time.Duration, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	start := time.Now()
	tag, err := conn.PgConn().CopyFrom(ctx, genReader(rows), sql)
	if err != nil {
		return 0, err
	}
	if tag.RowsAffected() != int64(rows) {
		return 0, fmt.Errorf("%q, want COPY %d", tag, rows)
	}
	return time.Since(start), nil
}

// checkPlacement counts the shards' posts and checks each user's shard.
func checkPlacement(ctx context.Context, c *sandbox.Cluster, topo *topology.Topology, rows int) error {
	total := 0
	for i, sh := range c.Shards {
		conn, err := pgx.Connect(ctx, sh.Primary.DSN(c.Database))
		if err != nil {
			return err
		}
		r, err := conn.Query(ctx, "SELECT user_id, count(*) FROM posts GROUP BY user_id")
		if err != nil {
			conn.Close(ctx)
			return err
		}
		for r.Next() {
			var user, n int64
			if err := r.Scan(&user, &n); err != nil {
				conn.Close(ctx)
				return err
			}
			at, _ := topo.Place(topology.KeyBigint, strconv.FormatInt(user, 10))
			if owner := at.Shard; owner != i {
				conn.Close(ctx)
				return fmt.Errorf("posts of user %d are on shard %s, the key says %s", user, sh.Name, c.Shards[owner].Name)
			}
			total += int(n)
		}
		conn.Close(ctx)
		if err := r.Err(); err != nil {
			return err
		}
	}
	if total != rows {
		return fmt.Errorf("the shards hold %d posts, want %d", total, rows)
	}
	return nil
}

// rss is a process's resident set in bytes, from /proc.
func rss(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// sampleRSS polls rss until the returned function is called, which stops
// it and returns the peak.
func sampleRSS(pid int) func() int64 {
	var peak int64 // written by the poller, read after it stopped
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			peak = max(peak, rss(pid))
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() int64 {
		close(done)
		<-stopped
		return peak
	}
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
