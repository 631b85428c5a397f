package main

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/shardgate/shardgate/sandbox"
)

// xactQuery counts the transactions a server ran in the app database. Every
// statement the proxy relays outside a transaction block is one; the proxy's
// health probes add about one per server and second, and each snapshot one.
const xactQuery = "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"

// serverCounters reads pg_stat_database on every server over connections of
// its own (not through the proxy), to measure where the queries really ran.
type serverCounters struct {
	names [][]string    // by shard: primary first, then replicas
	conns [][]*pgx.Conn // same layout
}

// counts is a snapshot: transactions by shard and server.
type counts [][]int64

func openCounters(ctx context.Context, c *sandbox.Cluster) (*serverCounters, error) {
	sc := &serverCounters{}
	for _, sh := range c.Shards {
		var names []string
		var conns []*pgx.Conn
		for _, s := range append([]*sandbox.Server{sh.Primary}, sh.Replicas...) {
			conn, err := pgx.Connect(ctx, s.DSN(c.Database))
			if err != nil {
				sc.close()
				return nil, fmt.Errorf("%s: %w", s.Name, err)
			}
			names = append(names, s.Name)
			conns = append(conns, conn)
		}
		sc.names = append(sc.names, names)
		sc.conns = append(sc.conns, conns)
	}
	return sc, nil
}

func (sc *serverCounters) snapshot(ctx context.Context) (counts, error) {
	out := make(counts, len(sc.conns))
	for i, conns := range sc.conns {
		out[i] = make([]int64, len(conns))
		for j, conn := range conns {
			if err := conn.QueryRow(ctx, xactQuery).Scan(&out[i][j]); err != nil {
				return nil, fmt.Errorf("%s: %w", sc.names[i][j], err)
			}
		}
	}
	return out, nil
}

func (sc *serverCounters) close() {
	for _, conns := range sc.conns {
		for _, c := range conns {
			c.Close(context.Background())
		}
	}
}

// sub returns c - before, server by server.
func (c counts) sub(before counts) counts {
	out := make(counts, len(c))
	for i := range c {
		out[i] = make([]int64, len(c[i]))
		for j := range c[i] {
			out[i][j] = c[i][j] - before[i][j]
		}
	}
	return out
}

// perShard sums each shard's servers.
func (c counts) perShard() []int64 {
	out := make([]int64, len(c))
	for i, servers := range c {
		for _, n := range servers {
			out[i] += n
		}
	}
	return out
}
