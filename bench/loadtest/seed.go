package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shardgate/shardgate/bench/loadgen"
	"github.com/shardgate/shardgate/sandbox"
)

// seedSize is how much data the test starts with.
type seedSize struct {
	users, postsPerUser, followsPerUser int
}

// countryCodes are the countries table's codes, two letters each.
const countryCodes = "defrjpusbrin"

func countryOf(id int) string {
	i := id % (len(countryCodes) / 2)
	return countryCodes[2*i : 2*i+2]
}

// seedEpoch is when the seeded posts were written; workload posts are newer.
func seedEpoch() time.Time { return time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC) }

// loadSeed COPYs the seed through the proxy, which puts every row on the
// shard its key names, then analyzes the shards and waits until every
// replica has replayed the seed, so that the first step measures reads on
// warm replicas rather than replication catching up.
func loadSeed(ctx context.Context, proxyDSN string, c *sandbox.Cluster, size seedSize, log *slog.Logger) error {
	conn, err := pgx.Connect(ctx, proxyDSN)
	if err != nil {
		return fmt.Errorf("connecting to the proxy: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "INSERT INTO countries (code, name) VALUES ('de', 'Germany'), ('fr', 'France'), "+
		"('jp', 'Japan'), ('us', 'United States'), ('br', 'Brazil'), ('in', 'India')"); err != nil {
		return fmt.Errorf("countries: %w", err)
	}
	copies := []struct {
		table string
		sql   string
		rows  int
		gen   func(*bufio.Writer) error
	}{
		{"users", "COPY users (id, name, email, country, created_at) FROM STDIN", size.users,
			func(w *bufio.Writer) error { return writeUsers(w, size.users) }},
		{"posts", "COPY posts (user_id, id, body, likes, created_at) FROM STDIN", size.users * size.postsPerUser,
			func(w *bufio.Writer) error { return writePosts(w, size.users, size.postsPerUser) }},
		{"follows", "COPY follows (user_id, followee_id, created_at) FROM STDIN", size.users * size.followsPerUser,
			func(w *bufio.Writer) error { return writeFollows(w, size.users, size.followsPerUser) }},
	}
	for _, cp := range copies {
		began := time.Now()
		if err := copyText(ctx, conn, cp.sql, cp.rows, cp.gen); err != nil {
			return err
		}
		log.Info("seeded", "table", cp.table, "rows", cp.rows, "took", time.Since(began).Round(time.Millisecond))
	}
	return settle(ctx, c)
}

// copyText streams rows produced by gen into sql (COPY ... FROM STDIN, text
// format) and checks the row count.
func copyText(ctx context.Context, conn *pgx.Conn, sql string, rows int, gen func(*bufio.Writer) error) error {
	pr, pw := io.Pipe()
	go func() {
		bw := bufio.NewWriterSize(pw, 64<<10)
		err := gen(bw)
		if err == nil {
			err = bw.Flush()
		}
		pw.CloseWithError(err)
	}()
	tag, err := conn.PgConn().CopyFrom(ctx, pr, sql)
	pr.Close() // unblocks the writer if the COPY failed early
	if err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	if tag.RowsAffected() != int64(rows) {
		return fmt.Errorf("%s: %q, want %d rows", sql, tag, rows)
	}
	return nil
}

func writeUsers(w *bufio.Writer, users int) error {
	for id := 1; id <= users; id++ {
		s := strconv.Itoa(id)
		ts := seedEpoch().Add(-time.Duration(users-id) * time.Minute).Format(pgTime)
		if _, err := fmt.Fprintf(w, "%s\tuser %s\tuser%s@example.com\t%s\t%s\n", s, s, s, countryOf(id), ts); err != nil {
			return err
		}
	}
	return nil
}

const pgTime = "2006-01-02 15:04:05-07"

// writePosts gives every user postsPerUser posts with ids 1..postsPerUser,
// an hour apart, so timelines have an order to sort by.
func writePosts(w *bufio.Writer, users, postsPerUser int) error {
	for id := 1; id <= users; id++ {
		for p := 1; p <= postsPerUser; p++ {
			ts := seedEpoch().Add(time.Duration(p-postsPerUser)*time.Hour - time.Duration(id)*time.Second).Format(pgTime)
			if _, err := fmt.Fprintf(w, "%d\t%d\tpost %d of user %d\t%d\t%s\n", id, p, p, id, (id*p)%100, ts); err != nil {
				return err
			}
		}
	}
	return nil
}

// writeFollows has every user follow followsPerUser distinct other users,
// drawn from a fixed seed so runs load the same graph.
func writeFollows(w *bufio.Writer, users, followsPerUser int) error {
	rnd := rand.New(rand.NewPCG(7, 7))
	ts := seedEpoch().Format(pgTime)
	for id := 1; id <= users; id++ {
		picked := make(map[int]bool, followsPerUser)
		for len(picked) < min(followsPerUser, users-1) {
			f := 1 + rnd.IntN(users)
			if f == id || picked[f] {
				continue
			}
			picked[f] = true
			if _, err := fmt.Fprintf(w, "%d\t%d\t%s\n", id, f, ts); err != nil {
				return err
			}
		}
	}
	return nil
}

// settle analyzes every primary and waits until its replicas replayed all
// its WAL so far.
func settle(ctx context.Context, c *sandbox.Cluster) error {
	for _, sh := range c.Shards {
		lsn, err := analyze(ctx, sh.Primary.DSN(c.Database))
		if err != nil {
			return fmt.Errorf("shard %s: %w", sh.Name, err)
		}
		for _, r := range sh.Replicas {
			if err := loadgen.WaitReplay(ctx, r.DSN(c.Database), lsn); err != nil {
				return fmt.Errorf("replica %s: %w", r.Name, err)
			}
		}
	}
	return nil
}

func analyze(ctx context.Context, dsn string) (lsn string, err error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "VACUUM ANALYZE"); err != nil {
		return "", err
	}
	err = conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn)
	return lsn, err
}
