package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// workload is the well-behaved clients: keyed reads and writes,
// transactions, cross-shard and reference-table reads over the extended
// protocol (pgx's prepared statements) and the simple one, some clients
// keeping their connection and some reconnecting all the time.
type workload struct {
	dsn     string
	o       options
	shardOf []int // by user id
	ledger  *ledger
	postID  atomic.Int64
}

// op is one well-behaved request (errors of a request of several
// statements say which failed); client is the caller's index, so that
// each client writes only its own users and can check it reads its writes.
type op struct {
	name   string
	weight int
	run    func(w *workload, ctx context.Context, conn *pgx.Conn, r *rand.Rand, client int) (shardSet, error)
}

var ops = []op{
	{"keyed read (prepared)", 30, (*workload).keyedRead},
	{"keyed read (simple protocol)", 10, (*workload).keyedReadSimple},
	{"keyed write, read back", 20, (*workload).writeReadBack},
	{"transaction", 15, (*workload).transaction},
	{"cross-shard select", 15, (*workload).crossShard},
	{"reference table read", 10, (*workload).referenceRead},
}

// start runs the clients until ctx ends; the returned channel is closed
// when all of them have closed their connections.
func (w *workload) start(ctx context.Context) <-chan struct{} {
	var wg sync.WaitGroup
	for i := range w.o.workers + w.o.churners {
		wg.Go(func() { w.client(ctx, i, i >= w.o.workers) })
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	return done
}

// client loops requests; a churning client reconnects after 1-3 of them,
// any client after its connection broke. Requests cut short by the end of
// ctx are not counted.
func (w *workload) client(ctx context.Context, i int, churn bool) {
	r := rand.New(rand.NewPCG(uint64(i), 7))
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	left := 0
	for ctx.Err() == nil {
		if conn == nil {
			var err error
			began := time.Now()
			octx, cancel := context.WithTimeout(ctx, w.o.opTimeout)
			conn, err = pgx.Connect(octx, w.dsn)
			cancel()
			if ctx.Err() != nil {
				return
			}
			w.ledger.record("connect", allShards, began, err)
			if err != nil {
				conn = nil
				sleep(ctx, 200*time.Millisecond)
				continue
			}
			left = 1 + r.IntN(3)
		}
		o := pick(r)
		began := time.Now()
		octx, cancel := context.WithTimeout(ctx, w.o.opTimeout)
		shards, err := o.run(w, octx, conn, r, i)
		cancel()
		if ctx.Err() != nil {
			return
		}
		w.ledger.record(o.name, shards, began, err)
		left--
		if conn.IsClosed() || (churn && left <= 0) {
			conn.Close(context.Background())
			conn = nil
		}
		if w.o.think > 0 {
			sleep(ctx, rand.N(w.o.think))
		}
	}
}

func pick(r *rand.Rand) op {
	total := 0
	for _, o := range ops {
		total += o.weight
	}
	n := r.IntN(total)
	for _, o := range ops {
		if n < o.weight {
			return o
		}
		n -= o.weight
	}
	return ops[0]
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// anyUser is a user any client may read; ownUser one that only client
// writes, so that its read-back sees its own write.
func (w *workload) anyUser(r *rand.Rand) int { return 1 + r.IntN(w.o.users) }

func (w *workload) ownUser(r *rand.Rand, client int) int {
	clients := w.o.workers + w.o.churners
	n := (w.o.users - client - 1) / clients // the ids with id-1 ≡ client (mod clients) are 1+client+clients*[0, n]
	return 1 + client + clients*r.IntN(n+1)
}

func (w *workload) keyedRead(ctx context.Context, conn *pgx.Conn, r *rand.Rand, _ int) (shardSet, error) {
	id := w.anyUser(r)
	var name string
	err := conn.QueryRow(ctx, "SELECT name FROM users WHERE id = $1", id).Scan(&name)
	return oneShard(w.shardOf[id]), noRowIsWrong(err, id)
}

func (w *workload) keyedReadSimple(ctx context.Context, conn *pgx.Conn, r *rand.Rand, _ int) (shardSet, error) {
	id := w.anyUser(r)
	var got int64
	err := noRowIsWrong(conn.QueryRow(ctx, "SELECT id FROM users WHERE id = $1", pgx.QueryExecModeSimpleProtocol, id).Scan(&got), id)
	if err == nil && got != int64(id) {
		err = errWrongResult{fmt.Sprintf("user %d read as %d", id, got)}
	}
	return oneShard(w.shardOf[id]), err
}

// noRowIsWrong turns "no rows" for a seeded user into a wrong result:
// users are never deleted.
func noRowIsWrong(err error, id int) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return errWrongResult{fmt.Sprintf("user %d not found", id)}
	}
	return err
}

func (w *workload) writeReadBack(ctx context.Context, conn *pgx.Conn, r *rand.Rand, client int) (shardSet, error) {
	id := w.ownUser(r, client)
	shards := oneShard(w.shardOf[id])
	name := fmt.Sprintf("user %d v%d", id, r.Uint32())
	tag, err := conn.Exec(ctx, "UPDATE users SET name = $2 WHERE id = $1", id, name)
	if err != nil {
		return shards, fmt.Errorf("UPDATE: %w", err)
	}
	if tag.RowsAffected() != 1 {
		return shards, errWrongResult{fmt.Sprintf("UPDATE of user %d: %s", id, tag)}
	}
	var got string
	if err := conn.QueryRow(ctx, "SELECT name FROM users WHERE id = $1", id).Scan(&got); err != nil {
		return shards, fmt.Errorf("SELECT: %w", noRowIsWrong(err, id))
	}
	if got != name {
		return shards, errWrongResult{fmt.Sprintf("user %d read back %q after writing %q", id, got, name)}
	}
	return shards, nil
}

func (w *workload) transaction(ctx context.Context, conn *pgx.Conn, r *rand.Rand, client int) (shardSet, error) {
	id := w.ownUser(r, client)
	shards := oneShard(w.shardOf[id])
	post := w.postID.Add(1)
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO posts (user_id, id, body) VALUES ($1, $2, $3)", id, post, "soak"); err != nil {
			return fmt.Errorf("INSERT: %w", err)
		}
		if _, err := tx.Exec(ctx, "UPDATE users SET email = $2 WHERE id = $1", id, fmt.Sprintf("p%d@example.com", post)); err != nil {
			return fmt.Errorf("UPDATE: %w", err)
		}
		var n int64
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM posts WHERE user_id = $1 AND id = $2", id, post).Scan(&n); err != nil {
			return fmt.Errorf("SELECT: %w", err)
		}
		if n != 1 {
			return errWrongResult{fmt.Sprintf("post %d of user %d not visible in its own transaction", post, id)}
		}
		return nil
	})
	return shards, err
}

func (w *workload) crossShard(ctx context.Context, conn *pgx.Conn, r *rand.Rand, _ int) (shardSet, error) {
	if r.IntN(2) == 0 {
		var n int64
		err := conn.QueryRow(ctx, "SELECT count(*) FROM users").Scan(&n)
		if err == nil && n != int64(w.o.users) {
			err = errWrongResult{fmt.Sprintf("count(*) of users is %d, want %d", n, w.o.users)}
		}
		return allShards, err
	}
	rows, err := conn.Query(ctx, "SELECT id FROM users ORDER BY id LIMIT 5")
	if err != nil {
		return allShards, err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err == nil && fmt.Sprint(ids) != "[1 2 3 4 5]" {
		err = errWrongResult{fmt.Sprintf("first users by id %v, want [1 2 3 4 5]", ids)}
	}
	return allShards, err
}

func (w *workload) referenceRead(ctx context.Context, conn *pgx.Conn, _ *rand.Rand, _ int) (shardSet, error) {
	var name string
	err := conn.QueryRow(ctx, "SELECT name FROM countries WHERE code = $1", "jp").Scan(&name)
	if err == nil && name != "Japan" {
		err = errWrongResult{fmt.Sprintf("country jp is %q", name)}
	}
	// A reference table is read on one shard, which one is the proxy's choice.
	return allShards, err
}
