package proxy_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shardgate/shardgate/topology"
)

// onReplica runs a keyed read through conn and reports whether a replica
// (a server in recovery) answered it.
func onReplica(t *testing.T, conn *pgx.Conn, key int64) bool {
	t.Helper()
	rec, _ := readKey(t, conn, key)
	return rec
}

// readKey reads key's row count and whether a replica answered.
func readKey(t *testing.T, conn *pgx.Conn, key int64) (replica bool, rows int64) {
	t.Helper()
	if err := conn.QueryRow(t.Context(), "SELECT pg_is_in_recovery(), count(*) FROM users WHERE id = $1", key).Scan(&replica, &rows); err != nil {
		t.Fatal(err)
	}
	return replica, rows
}

func dialPlain(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// waitReplicaRead retries a read until a replica serves it: the monitor's
// first probes must mark the replicas healthy.
func waitReplicaRead(t *testing.T, conn *pgx.Conn, key int64) {
	t.Helper()
	waitRead(t, conn, key, false)
}

// waitReplicaRow is waitReplicaRead for a key whose row the replica must
// also have replayed.
func waitReplicaRow(t *testing.T, conn *pgx.Conn, key int64) {
	t.Helper()
	waitRead(t, conn, key, true)
}

func waitRead(t *testing.T, conn *pgx.Conn, key int64, needRow bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		replica, rows := readKey(t, conn, key)
		if replica && (rows > 0 || !needRow) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no read of key %d reached a replica that has its row (need row: %v) within 10s", key, needRow)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func fastHealth(c *topology.Config) {
	c.HealthCheckInterval = topology.Duration(50 * time.Millisecond)
}

// TestReplicaReads: keyed SELECTs outside transactions go to the shard's
// replica with consistency eventual, and never with consistency primary;
// SELECTs inside a transaction block and writes stay on the primary.
func TestReplicaReads(t *testing.T) {
	keys := keysBy(t, 31_000_000, 50)
	t.Run("eventual", func(t *testing.T) {
		dsn := proxyWith(t, func(c *topology.Config) { fastHealth(c); c.Consistency = "eventual" })
		for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
			cfg, _ := pgx.ParseConfig(dsn)
			cfg.DefaultQueryExecMode = mode
			conn, err := pgx.ConnectConfig(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(context.Background())
			waitReplicaRead(t, conn, keys[0][0])
			waitReplicaRead(t, conn, keys[1][0])
			replica := 0
			for shard := range 2 {
				for _, k := range keys[shard] {
					if onReplica(t, conn, k) {
						replica++
					}
				}
			}
			t.Logf("%s: %d of 100 keyed reads served by replicas", mode, replica)
			if replica != 100 {
				t.Fatalf("%s: only %d of 100 reads went to replicas", mode, replica)
			}
			tx, err := conn.Begin(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			var rec bool
			var n int64
			if err := tx.QueryRow(t.Context(), "SELECT pg_is_in_recovery(), count(*) FROM users WHERE id = $1", keys[0][1]).Scan(&rec, &n); err != nil {
				t.Fatal(err)
			}
			tx.Rollback(t.Context())
			if rec {
				t.Fatal("a read inside a transaction block went to a replica")
			}
		}
	})
	t.Run("primary", func(t *testing.T) {
		dsn := proxyWith(t, func(c *topology.Config) { fastHealth(c); c.Consistency = "primary" })
		conn := dialPlain(t, dsn)
		time.Sleep(200 * time.Millisecond) // replicas healthy by now
		for shard := range 2 {
			for _, k := range keys[shard] {
				if onReplica(t, conn, k) {
					t.Fatalf("consistency primary: read of key %d went to a replica", k)
				}
			}
		}
	})
}

// TestReadYourWrites pauses WAL replay on every replica, then writes and
// immediately reads rows through one client: every read must see its write
// (so none may go to a replica that has not replayed it). Once replay
// resumes and catches up, the client's reads go to replicas again.
func TestReadYourWrites(t *testing.T) {
	ctx := t.Context()
	dsn := proxyWith(t, fastHealth)
	conn := dialPlain(t, dsn)
	keys := keysBy(t, 32_000_000, 10)
	waitReplicaRead(t, conn, keys[0][0])
	waitReplicaRead(t, conn, keys[1][0])

	resume := pauseReplay(t)

	onReplicaCount, onPrimary := 0, 0
	all := append(append([]int64{}, keys[0]...), keys[1]...)
	for i := range 1000 {
		k := all[i%len(all)]
		name := fmt.Sprintf("v%d", i)
		if i%2 == 0 || i < len(all) {
			_, err := conn.Exec(ctx, "INSERT INTO users (id, name) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET name = excluded.name", k, name)
			if err != nil {
				t.Fatal(err)
			}
		} else if _, err := conn.Exec(ctx, "UPDATE users SET name = $2 WHERE id = $1", k, name); err != nil {
			t.Fatal(err)
		}
		var got string
		var rec bool
		if err := conn.QueryRow(ctx, "SELECT name, pg_is_in_recovery() FROM users WHERE id = $1", k).Scan(&got, &rec); err != nil {
			t.Fatalf("cycle %d: read of key %d: %v", i, k, err)
		}
		if got != name {
			t.Fatalf("cycle %d: read %q after writing %q (replica: %v)", i, got, name, rec)
		}
		if rec {
			onReplicaCount++
		} else {
			onPrimary++
		}
	}
	t.Logf("replay paused: 1000 write+read cycles, reads on replicas %d, on primaries %d", onReplicaCount, onPrimary)

	// A client that wrote nothing still reads from the (stale) replicas.
	other := dialPlain(t, dsn)
	if !onReplica(t, other, keys[0][0]) {
		t.Fatal("a client without writes was not served by a replica")
	}

	resume()
	for i, sh := range cluster.Shards {
		p := connectShard(t, i)
		var target string
		if err := p.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&target); err != nil {
			t.Fatal(err)
		}
		replica := dialPlain(t, sh.Replicas[0].DSN("app"))
		deadline := time.Now().Add(10 * time.Second)
		for {
			var caught bool
			if err := replica.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", target).Scan(&caught); err != nil {
				t.Fatal(err)
			}
			if caught {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("replica of %s did not catch up", sh.Name)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// The monitor notices within a few intervals; then reads go to replicas
	// again and still see the writes.
	for shard := range 2 {
		k := keys[shard][len(keys[shard])-1]
		deadline := time.Now().Add(5 * time.Second)
		for {
			var got string
			var rec bool
			if err := conn.QueryRow(ctx, "SELECT name, pg_is_in_recovery() FROM users WHERE id = $1", k).Scan(&got, &rec); err != nil {
				t.Fatal(err)
			}
			if got == "" {
				t.Fatalf("key %d lost its row", k)
			}
			if rec {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("shard %d: reads did not return to the replica after replay caught up", shard)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	replicaAfter := 0
	for _, k := range all {
		if onReplica(t, conn, k) {
			replicaAfter++
		}
	}
	t.Logf("replay resumed and caught up: %d of %d reads on replicas", replicaAfter, len(all))
	if replicaAfter != len(all) {
		t.Fatalf("after catching up only %d of %d reads went to replicas", replicaAfter, len(all))
	}
}

// TestReplayTracking: a client that writes often still reads from replicas
// once they have replayed its writes, within milliseconds rather than at
// the next health probe (here a minute away): a read that had to go to the
// primary makes the monitor poll the replica's replay position. With
// ryw_wait, the read itself waits those milliseconds for the replica.
func TestReplayTracking(t *testing.T) {
	ctx := t.Context()
	slowProbes := func(c *topology.Config) { c.HealthCheckInterval = topology.Duration(time.Minute) }
	keys := keysBy(t, 33_000_000, 5)
	all := append(append([]int64{}, keys[0]...), keys[1]...)
	cycle := func(conn *pgx.Conn, i int) bool {
		k := all[i%len(all)]
		if _, err := conn.Exec(ctx, "INSERT INTO users (id, name) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET name = excluded.name", k, fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
		var got string
		var rec bool
		if err := conn.QueryRow(ctx, "SELECT name, pg_is_in_recovery() FROM users WHERE id = $1", k).Scan(&got, &rec); err != nil {
			t.Fatal(err)
		}
		if got != fmt.Sprint(i) {
			t.Fatalf("cycle %d: read %q after writing %d (replica: %v)", i, got, i, rec)
		}
		return rec
	}

	t.Run("later reads", func(t *testing.T) {
		conn := dialPlain(t, proxyWith(t, slowProbes))
		onReplicas := 0
		for i := range 40 {
			cycle(conn, i) // the first read after a write asks for the replica's position
			time.Sleep(30 * time.Millisecond)
			if onReplica(t, conn, all[i%len(all)]) {
				onReplicas++
			}
		}
		t.Logf("reads 30 ms after a write: %d of 40 on replicas", onReplicas)
		if onReplicas < 36 {
			t.Errorf("only %d of 40 reads 30 ms after a write went to a replica", onReplicas)
		}
	})
	t.Run("ryw_wait", func(t *testing.T) {
		conn := dialPlain(t, proxyWith(t, func(c *topology.Config) {
			slowProbes(c)
			c.RYWWait = topology.Duration(200 * time.Millisecond)
		}))
		onReplicas, began := 0, time.Now()
		for i := range 40 {
			if cycle(conn, i) {
				onReplicas++
			}
		}
		if took := time.Since(began); took > 2*time.Second {
			t.Errorf("40 write+read cycles took %v: reads waited for replay far longer than it takes", took)
		}
		t.Logf("reads right after a write, ryw_wait 200ms: %d of 40 on replicas", onReplicas)
		if onReplicas < 36 {
			t.Errorf("only %d of 40 reads right after a write waited for a replica", onReplicas)
		}
	})
}

// TestReplicaReadRetry: a read whose replica connections were terminated
// while they sat in the pool does not fail: the pool does not lend them
// (were one lent, the read would be retried on another server, as
// TestReplicaBan's stopped replica shows).
func TestReplicaReadRetry(t *testing.T) {
	ctx := t.Context()
	const app = "shardgate-retry-test"
	srv, addr, stop, err := startServer(func(c *topology.Config) {
		c.Consistency = "eventual"
		c.HealthCheckInterval = topology.Duration(time.Minute) // only the read may find the failure
		for i := range c.Shards {
			for j, dsn := range c.Shards[i].Replicas {
				sep := "?"
				if strings.Contains(dsn, "?") {
					sep = "&"
				}
				c.Shards[i].Replicas[j] = dsn + sep + "application_name=" + app
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	conn := dialPlain(t, "postgres://postgres@"+addr+"/app?sslmode=disable")
	key := keysBy(t, 34_000_000, 1)[0][0]
	waitReplicaRead(t, conn, key)

	replica := dialPlain(t, cluster.Shards[0].Replicas[0].DSN("app"))
	var killed int
	if err := replica.QueryRow(ctx, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1", app).Scan(&killed); err != nil || killed == 0 {
		t.Fatalf("terminated %d of the proxy's replica connections: %v", killed, err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var left int
		if err := replica.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app).Scan(&left); err != nil {
			t.Fatal(err)
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d terminated connections still there", left)
		}
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM users WHERE id = $1", key).Scan(&n); err != nil {
		t.Fatalf("read after the replica's connections died: %v", err)
	}
	// The pool saw the terminated connections' FATALs waiting before
	// lending one: no read had to be retried, nor the replica banned.
	if got := series(t, srv, "shardgate_read_retries_total", nil); got != 0 {
		t.Errorf("shardgate_read_retries_total = %v, want 0", got)
	}
	if banned := series(t, srv, "shardgate_server_banned", map[string]string{"server": "s0/replica0"}); banned != 0 {
		t.Errorf("the replica with the terminated connections is banned (%v)", banned)
	}
}

// TestReplicaLagBytes: with max_replica_lag_bytes, a replica whose replay
// falls further behind than that gets no reads until it catches up.
func TestReplicaLagBytes(t *testing.T) {
	ctx := t.Context()
	conn := dialPlain(t, proxyWith(t, func(c *topology.Config) {
		fastHealth(c)
		c.Consistency = "eventual"
		c.MaxReplicaLagBytes = 64 << 10
	}))
	key := keysBy(t, 35_000_000, 1)[0][0]
	waitReplicaRead(t, conn, key)

	resume := pauseReplay(t)
	primary := connectShard(t, 0)
	if _, err := primary.Exec(ctx, "CREATE TABLE lag_bytes_scratch AS SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 5000) g"); err != nil {
		t.Fatal(err)
	}
	defer primary.Exec(context.Background(), "DROP TABLE IF EXISTS lag_bytes_scratch")
	for deadline := time.Now().Add(5 * time.Second); onReplica(t, conn, key); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("reads still go to a replica over 500 kB behind with max_replica_lag_bytes 64 kB")
		}
	}
	resume()
	waitReplicaRead(t, conn, key)
}

// TestUnreachableReplica: a replica on a closed port never gets reads; with
// primary_reads fallback they succeed on the primary, with never they fail
// with 08006.
func TestUnreachableReplica(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := fmt.Sprintf("postgres://postgres@%s/app", ln.Addr())
	ln.Close()
	keys := keysBy(t, 33_000_000, 20)
	edit := func(reads string) func(*topology.Config) {
		return func(c *topology.Config) {
			fastHealth(c)
			c.Consistency, c.PrimaryReads = "eventual", reads
			for i := range c.Shards {
				c.Shards[i].Replicas = []string{dead}
			}
		}
	}
	conn := dialPlain(t, proxyWith(t, edit("fallback")))
	time.Sleep(200 * time.Millisecond) // several failed probes
	served := 0
	for shard := range 2 {
		for _, k := range keys[shard] {
			if onReplica(t, conn, k) {
				t.Fatalf("key %d read from a replica", k)
			}
			served++
		}
	}
	t.Logf("fallback: %d reads served by primaries, replica down", served)

	never := dialPlain(t, proxyWith(t, edit("never")))
	var one int
	err = never.QueryRow(t.Context(), "SELECT 1 FROM users WHERE id = $1", keys[0][0]).Scan(&one)
	if sqlState(err) != "08006" {
		t.Fatalf("primary_reads never without a usable replica: %v, want 08006", err)
	}
	if _, err := never.Exec(t.Context(), "INSERT INTO users (id, name) VALUES ($1, 'w') ON CONFLICT (id) DO NOTHING", keys[0][0]); err != nil {
		t.Fatalf("write with primary_reads never: %v", err)
	}
}

// pauseReplay pauses WAL replay on every replica of the shared cluster
// until the returned function (also run at cleanup) resumes it.
func pauseReplay(t *testing.T) (resume func()) {
	t.Helper()
	var replicas []*pgx.Conn
	for _, sh := range cluster.Shards {
		r := dialPlain(t, sh.Replicas[0].DSN("app"))
		if _, err := r.Exec(t.Context(), "SELECT pg_wal_replay_pause()"); err != nil {
			t.Fatal(err)
		}
		replicas = append(replicas, r)
	}
	resume = func() {
		for _, r := range replicas {
			r.Exec(context.Background(), "SELECT pg_wal_replay_resume()")
		}
	}
	t.Cleanup(resume)
	return resume
}
