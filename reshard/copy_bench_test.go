package reshard

import (
	"context"
	"io"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/shardgate/shardgate/topology"
)

// BenchmarkCopy compares the reshard's copy (every row through the Go
// filter) with a plain COPY TO | COPY FROM of the same rows between the
// same servers: the goal is at least half the plain rate.
//
//	go test -run '^$' -bench Copy -benchtime 5x ./reshard/
func BenchmarkCopy(b *testing.B) {
	src := cluster.Shards[1].Primary.DSN(cluster.Database)
	dst := cluster.Shards[2].Primary.DSN(cluster.Database)
	const create = "CREATE TABLE IF NOT EXISTS bench_copy (id bigint PRIMARY KEY, name text, score int, at timestamptz DEFAULT now())"
	exec(b, src, create, "TRUNCATE bench_copy",
		"INSERT INTO bench_copy (id, name, score) SELECT i, 'user number ' || i, i % 1000 FROM generate_series(1, 200000) i")
	exec(b, dst, create)
	const rows = 200000
	b.Run("plain", func(b *testing.B) {
		for b.Loop() {
			exec(b, dst, "TRUNCATE bench_copy")
			plainCopy(b, src, dst)
		}
		b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	})
	all, _ := topology.ParseKeyRange("-")
	b.Run("reshard", func(b *testing.B) {
		for b.Loop() {
			exec(b, dst, "TRUNCATE bench_copy")
			snap, err := OpenSnapshot(context.Background(), src, "bench_copy")
			if err != nil {
				b.Fatal(err)
			}
			n, err := CopyTable(context.Background(), snap, src, dst, all, "bench_copy", topology.TableConfig{ShardKey: "id"}, nil)
			snap.Close(context.Background())
			exec(b, src, "SELECT pg_drop_replication_slot('bench_copy')")
			if err != nil || n != rows {
				b.Fatalf("copied %d rows: %v", n, err)
			}
		}
		b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	})
}

func plainCopy(b *testing.B, src, dst string) {
	ctx := context.Background()
	from, err := pgx.Connect(ctx, src)
	if err != nil {
		b.Fatal(err)
	}
	defer from.Close(ctx)
	to, err := pgx.Connect(ctx, dst)
	if err != nil {
		b.Fatal(err)
	}
	defer to.Close(ctx)
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := to.PgConn().CopyFrom(ctx, pr, "COPY bench_copy FROM STDIN")
		pr.CloseWithError(err)
		done <- err
	}()
	_, err = from.PgConn().CopyTo(ctx, pw, "COPY bench_copy TO STDOUT")
	pw.CloseWithError(err)
	if err2 := <-done; err == nil {
		err = err2
	}
	if err != nil {
		b.Fatal(err)
	}
}
