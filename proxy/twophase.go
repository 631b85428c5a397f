package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/shardgate/shardgate/pool"
	"github.com/shardgate/shardgate/router"
)

// Writes that need several shards (UPDATE/DELETE without a key, with
// allow_broadcast_writes) run inside a transaction on each shard. With
// two_phase_commit they are atomic: every shard PREPAREs, the decision to
// commit is appended (and fsynced) to the decision log, then every shard
// COMMITs PREPARED. At start-up Recover commits the in-doubt transactions
// the log says were decided and rolls back the rest. Without it, a shard
// failing during COMMIT can leave the others committed: the README says so.

// gidPrefix marks shardgate's prepared transactions.
const gidPrefix = "shardgate_"

// decisionLog is an append-only file of committed transaction ids.
type decisionLog struct {
	mu   sync.Mutex
	path string
}

func (l *decisionLog) commit(gid string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, err := os.OpenFile(l.path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(gid + "\n"); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil { // durable before any shard commits
		f.Close()
		return err
	}
	return f.Close()
}

func (l *decisionLog) committed() (map[string]bool, error) {
	f, err := os.Open(l.path)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]bool{}, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		out[strings.TrimSpace(sc.Text())] = true
	}
	return out, sc.Err()
}

// broadcastAllowed reports whether a multi-shard plan is a write the
// config lets run on each of its shards.
func (c *client) broadcastAllowed(plan router.Plan) bool {
	return plan.Broadcast && c.srv.rt.Load().cfg.AllowBroadcastWrites
}

// broadcastWrite runs a write on every shard of plan.Shards.
func (c *client) broadcastWrite(plan router.Plan, u unit) error {
	inTx := c.inTransactionBlock()
	if inTx && !c.canSpread() {
		return c.refuse(errWriteInTransaction)
	}
	shards, reqs, rerr := c.requestPerShard(plan, &router.ScatterSpec{}, u)
	if rerr != nil {
		return c.refuse(rerr)
	}
	if inTx {
		return c.writeInTransaction(shards, reqs, u, plan.Target == router.TargetAll)
	}
	return c.writeOnShards(shards, reqs, u, plan.Target == router.TargetAll)
}

// writeOnShards runs reqs[i] on shards[i], each in its own transaction,
// commits them all or none, and answers with the summed command tag and
// the gathered RETURNING rows (one shard's, when every shard did the same).
func (c *client) writeOnShards(shards []int, reqs [][]byte, u unit, same bool) error {
	rt := c.srv.rt.Load()
	conns, pools, aerr := c.acquireAll(rt, shards)
	if aerr != nil {
		return c.refuse(aerr)
	}
	defer releaseAll(pools, conns)
	begun := make([]request, len(conns))
	for i, sc := range conns {
		begun[i] = withSettings(c, sc, []byte("BEGIN"), reqs[i])
	}
	answers, errMsg, lost := c.executor().write(shardConns(conns), begun)
	if lost != nil {
		return c.serverLost(lost)
	}
	if errMsg != nil {
		c.out = append(c.out, errMsg...)
		c.out = appendReadyForQuery(c.out, 'I')
		return c.flush()
	}
	if same {
		answers = answers[:1]
	}
	return c.answerWrite(answers, u)
}

func firstFailure(answers []shardAnswer) *shardAnswer {
	for i := range answers {
		if answers[i].err != nil || answers[i].errMsg != nil {
			return &answers[i]
		}
	}
	return nil
}

// parallel runs fn on every connection at once and waits for all.
func (c *client) parallel(conns []*pool.Conn, fn func(int, *pool.Conn)) {
	parallel(len(conns), func(i int) { fn(i, conns[i]) })
}

// parallel runs fn(0) to fn(n-1) at once and waits for all: the fan-out
// of every cross-shard exchange.
func parallel(n int, fn func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { fn(i) })
	}
	wg.Wait()
}

func releaseAll(pools []*pool.Pool, conns []*pool.Conn) {
	for i, sc := range conns {
		if sc != nil {
			pools[i].Release(sc)
		}
	}
}

// answerWrite answers a write on several shards as one (sumWrites).
func (c *client) answerWrite(answers []shardAnswer, u unit) error {
	return c.answerShard(sumWrites(answers), u)
}

// Recover resolves shardgate's in-doubt prepared transactions on every
// shard: those the decision log records as committed are committed, the
// rest rolled back. serve calls it at start-up when two_phase_commit is on.
func (s *Server) Recover(ctx context.Context) error {
	rt := s.rt.Load()
	decided, err := s.decisions.committed()
	if err != nil {
		return fmt.Errorf("read decision log: %w", err)
	}
	for i := range rt.backends.Shards() {
		p, err := rt.primaryPool(i)
		if err != nil {
			return err
		}
		sc, err := p.Acquire(ctx)
		if err != nil {
			return err
		}
		shard := rt.cfg.Shards[i].Name
		err = resolveInDoubt(asShard(sc), decided, func(gid, action string) {
			s.log.Info("resolved in-doubt transaction", "shard", shard, "gid", gid, "action", action)
		})
		p.Release(sc)
		if err != nil {
			return fmt.Errorf("shard %s: %w", shard, err)
		}
	}
	return nil
}

// resolveInDoubt commits the shard's prepared transactions that decided
// holds, rolls back its other ones, and calls resolved after each.
func resolveInDoubt(sc shardConn, decided map[string]bool, resolved func(gid, action string)) error {
	a := sc.exchange(appendMessage(nil, 'Q', []byte("SELECT gid FROM pg_prepared_xacts WHERE gid LIKE '"+gidPrefix+"%' AND database = current_database()\x00")), false)
	for _, row := range a.rows {
		gid := string(row[0])
		action := "ROLLBACK PREPARED"
		if decided[gid] {
			action = "COMMIT PREPARED"
		}
		if msg := simple(sc, action+" '"+gid+"'"); msg != nil {
			return fmt.Errorf("%s %s failed", action, gid)
		}
		resolved(gid, action)
	}
	if a.err != nil || a.errMsg != nil {
		return errors.New("cannot list prepared transactions")
	}
	return nil
}
