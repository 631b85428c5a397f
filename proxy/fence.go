package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shardgate/shardgate/backend"
	"github.com/shardgate/shardgate/pgerr"
	"github.com/shardgate/shardgate/router"
	"github.com/shardgate/shardgate/topology"
)

// The proxy's side of a reshard cutover (issue 16, notes/reshard-design.md):
// RESHARD FENCE stops new write work on a shard's primary and waits for the
// work already there to end, RESHARD SWITCH swaps shards and keyspace at
// runtime, RESHARD UNFENCE lets the queued work go.
//
// The gate sits between routing and running: every unit a client sends is
// routed, then admitted. A unit that would start using a fenced shard's
// primary for something that may write (the first statement of a
// transaction, an autocommit write, a fan-out write, a new 2PC branch)
// queues there, and once woken is routed again from its SQL, so a statement
// routed before a switch never runs against the new layout with the old
// plan. A client admitted to a shard holds it until its transaction ends;
// FENCE returns once no client holds the shard. Autocommit reads are never
// queued.

const (
	codeObjectNotInPrerequisiteState = "55000"
	codeUndefinedObject              = "42704"
	defaultFenceTimeout              = 10 * time.Second
	// defaultFenceLease bounds how long fences stand when no one lifts
	// them: a reshard tool killed mid-cutover must not leave writes
	// queued for good.
	defaultFenceLease = time.Minute
)

// fences is a server's write gate, by shard index. Indices are stable
// across a switch (a replaced shard keeps its index), so state kept by
// index stays meaningful.
type fences struct {
	mu      sync.Mutex
	fenced  map[int]bool
	holders map[int]int   // clients admitted to write on the shard's primary, until their transaction ends
	queued  map[int]int   // clients waiting behind the shard's fence
	lifted  chan struct{} // closed (and replaced) when a fence lifts or the layout switches
	drained chan struct{} // closed (and replaced) when a fenced shard's last holder leaves

	// epoch counts layout switches twice: odd while one is being made, so
	// a client that routed under an even epoch that is still current
	// routed against one consistent topology.
	epoch atomic.Uint64
	// gens is, by shard index, the epoch that last put new servers at the
	// index (0: the starting ones); state a client keeps by index from an
	// older generation names the retired servers.
	gens      atomic.Pointer[[]uint64]
	ddlLocked atomic.Bool
	lease     *time.Timer // lifts every fence when it fires; reset by each FENCE
}

func newFences(shards int) *fences {
	f := &fences{fenced: map[int]bool{}, holders: map[int]int{}, queued: map[int]int{},
		lifted: make(chan struct{}), drained: make(chan struct{})}
	gens := make([]uint64, shards)
	f.gens.Store(&gens)
	return f
}

// stable is the current epoch once no switch is being made.
func (f *fences) stable() uint64 {
	for {
		if e := f.epoch.Load(); e%2 == 0 {
			return e
		}
		time.Sleep(50 * time.Microsecond) // a switch is a few pointer stores
	}
}

func (f *fences) gen(shard int) uint64 {
	if g := *f.gens.Load(); shard < len(g) {
		return g[shard]
	}
	return 0
}

// wakeLocked wakes every queued client to route again.
func (f *fences) wakeLocked() {
	close(f.lifted)
	f.lifted = make(chan struct{})
}

// enter admits c to shards, routed at epoch. If one is fenced it returns
// the channel to wait on and the fenced shards, counted as queued; again
// means the layout changed since routing.
func (f *fences) enter(c *client, shards []int, epoch uint64) (wait <-chan struct{}, blocked []int, again bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.epoch.Load() != epoch {
		return nil, nil, true
	}
	for _, s := range shards {
		if f.fenced[s] {
			blocked = append(blocked, s)
			f.queued[s]++
		}
	}
	if blocked != nil {
		return f.lifted, blocked, false
	}
	for _, s := range shards {
		f.holders[s]++
	}
	c.fence.held = append(c.fence.held, shards...)
	return nil, nil, false
}

func (f *fences) unqueue(shards []int) {
	f.mu.Lock()
	for _, s := range shards {
		if f.queued[s]--; f.queued[s] <= 0 {
			delete(f.queued, s)
		}
	}
	f.mu.Unlock()
}

// leave ends c's holds.
func (f *fences) leave(held []int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	drained := false
	for _, s := range held {
		if f.holders[s]--; f.holders[s] <= 0 {
			delete(f.holders, s)
			drained = drained || f.fenced[s]
		}
	}
	if drained {
		close(f.drained)
		f.drained = make(chan struct{})
	}
}

// fenceState is a client's part in the gate.
type fenceState struct {
	held     []int  // shards the client is admitted to (fences.holders)
	rywEpoch uint64 // the epoch its read-your-writes positions were checked at
}

// admit runs the gate for a unit routed at epoch: it reports whether the
// unit may run; if not, again says to route it again, else the client has
// been answered (err is the answer's error). It may pin a TargetAny plan to
// an unfenced shard.
func (c *client) admit(plan *router.Plan, u unit, epoch uint64) (ok, again bool, err error) {
	f := c.srv.fences
	if f.ddlLocked.Load() {
		if e := c.ddlRefusal(plan); e != nil {
			return false, false, c.refuse(e)
		}
	}
	shards := c.writeShards(plan, u)
	if len(shards) == 0 {
		same := f.epoch.Load() == epoch
		return same, !same, nil
	}
	wait, blocked, again := f.enter(c, shards, epoch)
	if again {
		return false, true, nil
	}
	if wait == nil {
		return true, false, nil
	}
	return false, true, c.queue(wait, blocked)
}

// queue waits behind a fence until it lifts or the layout switches (nil:
// route again), the client sends a cancel request (errFenceCanceled) or
// the server stops.
func (c *client) queue(wait <-chan struct{}, blocked []int) error {
	f := c.srv.fences
	began := time.Now()
	canceled := c.target.queue()
	defer func() {
		c.target.dequeue()
		f.unqueue(blocked)
		c.srv.metrics.FenceWait.Observe(time.Since(began).Seconds())
	}()
	select {
	case <-wait:
		return nil
	case <-canceled:
		return errFenceCanceled
	case <-c.ctx.Done():
		return c.ctx.Err()
	}
}

var errFenceCanceled = &pgerr.Error{Code: pgerr.CodeQueryCanceled, Message: "canceling statement due to user request"}

// gated runs route (which routes a unit and returns its plan and unit, or
// done when it answered the client itself) and the unit, routing again
// while the gate asks to.
func (c *client) gated(route func() (plan router.Plan, u unit, done bool, err error)) error {
	for {
		epoch := c.srv.fences.stable()
		plan, u, done, err := route()
		if done {
			return err
		}
		ok, again, err := c.admit(&plan, u, epoch)
		switch {
		case ok:
			return c.execute(plan, u)
		case again && err == nil:
			continue
		case errors.Is(err, errFenceCanceled):
			return c.refuse(errFenceCanceled)
		}
		return err
	}
}

// ddlRefusal refuses DDL naming a sharded or reference table while RESHARD
// DDL LOCK holds.
func (c *client) ddlRefusal(plan *router.Plan) *pgerr.Error {
	topo := c.srv.topo()
	for _, t := range plan.DDLTables {
		if _, ok := topo.Tables[t]; ok || topo.Reference[t] {
			return &pgerr.Error{Code: pgerr.CodeFeatureNotSupported,
				Message: fmt.Sprintf("table %q is being resharded: DDL waits until the reshard completes or is aborted", t)}
		}
	}
	return nil
}

// writeShards lists the shards whose primary the unit would start using for
// work that may write and that the client does not hold yet: the gate's
// business. Autocommit reads, reads fanned out outside a transaction and
// batches that execute nothing need none.
func (c *client) writeShards(plan *router.Plan, u unit) []int {
	if c.tx.state == txFailed || (u.query == nil && !c.ext.batch.executes()) {
		return nil
	}
	inTx := c.inTransactionBlock()
	var want []int
	switch {
	case plan.Target == router.TargetError, plan.Target == router.TargetNone:
		return nil
	case plan.CopyIn != nil, plan.Target == router.TargetAll:
		want = allShards(c.srv.rt.Load().backends.Shards())
	case plan.Target == router.TargetMulti:
		if (plan.Err == nil && !plan.Split && !inTx) || (plan.Err != nil && !plan.Split && !plan.Broadcast) {
			return nil // a scatter read, or refused
		}
		want = plan.Shards.Slice()
	case plan.Target == router.TargetAny:
		if c.tx.held != nil || (!inTx && plan.Role == router.RoleReplica) {
			return nil
		}
		plan.Target, plan.Shard = router.TargetShard, c.srv.unfencedShard()
		want = []int{plan.Shard}
	case plan.Target == router.TargetShard:
		if !inTx && plan.Role == router.RoleReplica {
			return nil
		}
		want = []int{plan.Shard}
	}
	return slices.DeleteFunc(want, func(s int) bool { return slices.Contains(c.fence.held, s) })
}

func allShards(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// unfencedShard is anyShard passing over fenced shards, so a statement any
// shard can run does not wait for one.
func (s *Server) unfencedShard() int {
	first := s.anyShard()
	n := s.rt.Load().backends.Shards()
	f := s.fences
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range n {
		if shard := (first + i) % n; !f.fenced[shard] {
			return shard
		}
	}
	return first
}

// leaveFences ends the client's holds once its transaction has ended (or,
// with force, because it disconnects).
func (c *client) leaveFences(force bool) {
	if len(c.fence.held) == 0 || (!force && (c.tx.held != nil || len(c.tx.branches) > 0)) {
		return
	}
	c.srv.fences.leave(c.fence.held)
	c.fence.held = c.fence.held[:0]
}

// dropRetiredSession lets go of a session-mode connection kept for shard
// if a switch has put new servers at its index since: a write on it would
// land on the retired server.
func (c *client) dropRetiredSession(shard int) {
	s, ok := c.tx.sessionConns[shard]
	if !ok || s.gen == c.srv.fences.gen(shard) {
		return
	}
	s.sc.MarkBroken()
	s.pool.Release(s.sc)
	delete(c.tx.sessionConns, shard)
}

// dropSwitchedRYW forgets the client's read-your-writes positions on shards
// a switch has put new servers at since it last looked: they are positions
// in the retired servers' WAL. The new shard's read floor stands in.
func (c *client) dropSwitchedRYW() {
	f := c.srv.fences
	e := f.epoch.Load()
	if e == c.fence.rywEpoch {
		return
	}
	gens := *f.gens.Load()
	for i := range c.sess.ryw {
		if i < len(gens) && gens[i] > c.fence.rywEpoch {
			c.sess.ryw[i] = 0
		}
	}
	c.fence.rywEpoch = e
}

// forget drops every token's positions on shards.
func (s *tokenStore) forget(shards []int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for el := s.lru.Front(); el != nil; el = el.Next() {
		e := el.Value.(*tokenEntry)
		for _, i := range shards {
			if i < len(e.lsns) {
				e.lsns[i] = 0
			}
		}
	}
}

// queue makes a cancel request for the client wake it from a fence wait.
func (t *cancelTarget) queue() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.waiting = make(chan struct{})
	return t.waiting
}

func (t *cancelTarget) dequeue() {
	t.mu.Lock()
	t.waiting = nil
	t.mu.Unlock()
}

// wakeWaiting ends a fence wait on a cancel request; t.mu is held.
func (t *cancelTarget) wakeWaiting() {
	if t.waiting != nil {
		close(t.waiting)
		t.waiting = nil
	}
}

// Fence fences shard's primary (RESHARD FENCE) and waits, up to timeout,
// until no client holds it; past the timeout (or ctx) it lifts the fence
// again and fails. Unless lifted first, every fence lifts itself lease
// after the latest FENCE.
func (s *Server) Fence(ctx context.Context, shard string, timeout, lease time.Duration) error {
	f := s.fences
	f.mu.Lock()
	idx, ok := s.topo().ShardIndex(shard)
	if !ok {
		f.mu.Unlock()
		return &pgerr.Error{Code: codeUndefinedObject, Message: fmt.Sprintf("shard %q does not exist", shard)}
	}
	f.fenced[idx] = true
	if f.lease != nil {
		f.lease.Stop()
	}
	f.lease = time.AfterFunc(lease, func() {
		s.log.Warn("reshard: fence lease expired: lifting every fence (did the reshard command die?)", "lease", lease)
		s.Unfence()
	})
	s.log.Info("reshard: shard fenced", "shard", shard, "holders", f.holders[idx])
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for f.holders[idx] > 0 {
		drained := f.drained
		f.mu.Unlock()
		var why error
		select {
		case <-drained:
		case <-timer.C:
			why = errors.New("timeout")
		case <-ctx.Done():
			why = ctx.Err()
		}
		f.mu.Lock()
		if why != nil && f.holders[idx] > 0 {
			n := f.holders[idx]
			delete(f.fenced, idx)
			f.wakeLocked()
			f.mu.Unlock()
			s.log.Warn("reshard: fence lifted: transactions did not finish", "shard", shard, "transactions", n, "timeout", timeout)
			return &pgerr.Error{Code: pgerr.CodeQueryCanceled,
				Message: fmt.Sprintf("RESHARD FENCE %s: %d transactions still ran on the shard after %s (%v); fence lifted", shard, n, timeout, why)}
		}
	}
	f.mu.Unlock()
	return nil
}

// Unfence lifts every fence (RESHARD UNFENCE): queued clients route again.
func (s *Server) Unfence() {
	f := s.fences
	f.mu.Lock()
	clear(f.fenced)
	if f.lease != nil {
		f.lease.Stop()
	}
	f.wakeLocked()
	f.mu.Unlock()
	s.log.Info("reshard: fences lifted")
}

// LockDDL refuses (or, with false, allows again) DDL on sharded and
// reference tables (RESHARD DDL LOCK / UNLOCK).
func (s *Server) LockDDL(locked bool) { s.fences.ddlLocked.Store(locked) }

// SwitchSpec is RESHARD SWITCH's JSON: the shards and keyspace to serve,
// and per shard the LSN its replicas must have replayed to serve reads.
type SwitchSpec struct {
	Shards    []topology.ShardConfig `json:"shards"`
	Keyspace  []topology.RangeConfig `json:"keyspace"`
	ReadFloor map[string]string      `json:"read_floor"`
}

// Switch replaces the running config's shards and keyspace (RESHARD
// SWITCH). A shard may be replaced at its index (new name and servers),
// shards appended, and the last shards removed (an abort after a split
// switches back); every existing shard whose servers or ranges change, or
// that goes, must be fenced and drained. Queued clients route again; fences on
// replaced shards carry over to the shards replacing them and to appended
// ones, until UNFENCE. Switching to the layout already served does
// nothing.
func (s *Server) Switch(spec SwitchSpec) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	old := s.rt.Load()
	cfg := *old.cfg
	cfg.Shards, cfg.Keyspace = spec.Shards, spec.Keyspace
	topo, err := topology.New(&cfg)
	if err != nil {
		return err
	}
	floors, err := readFloors(spec.ReadFloor, topo)
	if err != nil {
		return err
	}
	renewed, affected := layoutChanges(old.cfg, &cfg)
	if len(affected) == 0 && len(renewed) == 0 {
		return nil // already served: a repeated SWITCH
	}
	if err := s.checkDrained(affected); err != nil {
		return err
	}
	set, err := backend.New(&cfg, old.backends, s.backendDeps())
	if err != nil {
		return err
	}
	for shard, lsn := range floors {
		set.SetReadFloor(shard, lsn)
	}
	rt := *old
	rt.cfg, rt.backends = &cfg, set
	s.commitSwitch(topo, &rt, renewed)
	set.Start()
	old.backends.CloseExcept(set)
	s.log.Info("reshard: layout switched", "shards", len(cfg.Shards), "renewed", renewed)
	return nil
}

// layoutChanges lists the indices whose servers are new (replaced or
// appended) and the existing indices whose servers or ranges change or
// that are removed.
func layoutChanges(old, cfg *topology.Config) (renewed, affected []int) {
	for i := len(cfg.Shards); i < len(old.Shards); i++ {
		affected = append(affected, i)
	}
	oldRanges, newRanges := rangesByIndex(old), rangesByIndex(cfg)
	for i, sh := range cfg.Shards {
		switch {
		case i >= len(old.Shards):
			renewed = append(renewed, i)
		case !sameShard(old.Shards[i], sh):
			renewed = append(renewed, i)
			affected = append(affected, i)
		case !slices.Equal(oldRanges[i], newRanges[i]):
			affected = append(affected, i)
		}
	}
	return renewed, affected
}

func sameShard(a, b topology.ShardConfig) bool {
	return a.Name == b.Name && a.Primary == b.Primary && slices.Equal(a.Replicas, b.Replicas)
}

// rangesByIndex is each shard's ranges, sorted, by shard index.
func rangesByIndex(cfg *topology.Config) [][]string {
	out := make([][]string, len(cfg.Shards))
	for _, r := range cfg.Keyspace {
		for i, sh := range cfg.Shards {
			if sh.Name == r.Shard {
				out[i] = append(out[i], r.Range)
			}
		}
	}
	for _, r := range out {
		slices.Sort(r)
	}
	return out
}

// checkDrained refuses a switch touching a shard that is not fenced, or
// that a client still holds: a write could land on the retired layout.
func (s *Server) checkDrained(affected []int) error {
	f := s.fences
	f.mu.Lock()
	defer f.mu.Unlock()
	names := s.topo().Shards
	for _, i := range affected {
		if !f.fenced[i] || f.holders[i] > 0 {
			return &pgerr.Error{Code: codeObjectNotInPrerequisiteState,
				Message: fmt.Sprintf("RESHARD SWITCH changes shard %s, which is not fenced and drained: run RESHARD FENCE '%s' first", names[i].Name, names[i].Name)}
		}
	}
	return nil
}

// commitSwitch makes topo and rt the served layout, as one step for
// clients: it holds the gate's lock with the epoch odd throughout.
func (s *Server) commitSwitch(topo *topology.Topology, rt *config, renewed []int) {
	f := s.fences
	f.mu.Lock()
	defer f.mu.Unlock()
	epoch := f.epoch.Add(1) + 1
	gens := slices.Clone(*f.gens.Load())
	for len(gens) < len(rt.cfg.Shards) {
		gens = append(gens, 0)
	}
	carry := false
	for _, i := range renewed {
		gens[i] = epoch
		carry = carry || f.fenced[i]
	}
	// A removed index keeps its generation slot: were a later switch to
	// append a shard there, what clients kept by index is from before.
	for i := len(rt.cfg.Shards); i < len(gens); i++ {
		if f.fenced[i] {
			gens[i] = epoch
			delete(f.fenced, i)
		}
	}
	if carry {
		for _, i := range renewed {
			f.fenced[i] = true // the targets stay fenced until UNFENCE
		}
	}
	if s.tokens != nil {
		s.tokens.forget(renewed) // before the epoch moves: see dropSwitchedRYW
	}
	f.gens.Store(&gens)
	s.router.SetTopology(topo)
	s.rt.Store(rt)
	f.epoch.Store(epoch)
	f.wakeLocked()
}

// readFloors parses read_floor, by shard index.
func readFloors(spec map[string]string, topo *topology.Topology) (map[int]uint64, error) {
	out := make(map[int]uint64, len(spec))
	for name, text := range spec {
		idx, ok := topo.ShardIndex(name)
		if !ok {
			return nil, fmt.Errorf("read_floor names shard %q, which is not in the new layout", name)
		}
		lsn, err := backend.ParseLSN(text)
		if err != nil {
			return nil, fmt.Errorf("read_floor of shard %s: %w", name, err)
		}
		out[idx] = lsn
	}
	return out, nil
}

// FenceStatus is one shard's row of SHOW FENCES.
type FenceStatus struct {
	Shard        string
	Fenced       bool
	Transactions int // clients holding the shard's primary in a transaction or write
	Queued       int // clients waiting behind the fence
}

// Fences reports the gate's state per shard, and whether DDL is locked.
func (s *Server) Fences() ([]FenceStatus, bool) {
	f := s.fences
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []FenceStatus
	for i, sh := range s.topo().Shards {
		out = append(out, FenceStatus{Shard: sh.Name, Fenced: f.fenced[i], Transactions: f.holders[i], Queued: f.queued[i]})
	}
	return out, f.ddlLocked.Load()
}

func (c *client) showFences() ([]string, [][]string) {
	st, ddl := c.srv.Fences()
	cols := []string{"shard", "fenced", "transactions", "queued", "ddl_locked"}
	var rows [][]string
	for _, f := range st {
		rows = append(rows, []string{f.Shard, strconv.FormatBool(f.Fenced), itoa(f.Transactions), itoa(f.Queued), strconv.FormatBool(ddl)})
	}
	return cols, rows
}

var (
	reFence  = regexp.MustCompile(`(?is)^RESHARD\s+FENCE\s+'([^']*)'(?:\s+TIMEOUT\s+(\d+))?(?:\s+LEASE\s+(\d+))?$`)
	reSwitch = regexp.MustCompile(`(?is)^RESHARD\s+SWITCH\s+'(.*)'$`)
	reOther  = regexp.MustCompile(`(?is)^RESHARD\s+(UNFENCE|DDL\s+LOCK|DDL\s+UNLOCK)$`)
)

// millis reads a count of milliseconds, def when empty.
func millis(text string, def time.Duration) (time.Duration, error) {
	if text == "" {
		return def, nil
	}
	ms, err := strconv.ParseInt(text, 10, 32)
	if err != nil {
		return 0, err
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// adminReshard runs a RESHARD console command.
func (c *client) adminReshard(sql string) error {
	sql = strings.TrimRight(strings.TrimSpace(sql), "; \n\t")
	if m := reFence.FindStringSubmatch(sql); m != nil {
		timeout, err := millis(m[2], defaultFenceTimeout)
		if err != nil {
			return fmt.Errorf("RESHARD FENCE: bad TIMEOUT: %w", err)
		}
		lease, err := millis(m[3], defaultFenceLease)
		if err != nil {
			return fmt.Errorf("RESHARD FENCE: bad LEASE: %w", err)
		}
		if err := c.srv.Fence(c.ctx, m[1], timeout, lease); err != nil {
			return err
		}
		c.out = appendCommandComplete(c.out, "RESHARD FENCE")
		return nil
	}
	if m := reSwitch.FindStringSubmatch(sql); m != nil {
		var spec SwitchSpec
		dec := json.NewDecoder(bytes.NewReader([]byte(strings.ReplaceAll(m[1], "''", "'"))))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&spec); err != nil {
			return fmt.Errorf("RESHARD SWITCH: invalid JSON: %w", err)
		}
		if err := c.srv.Switch(spec); err != nil {
			var pe *pgerr.Error
			if errors.As(err, &pe) {
				return err
			}
			return &pgerr.Error{Code: pgerr.CodeInvalidParameterValue, Message: "RESHARD SWITCH refused, layout unchanged: " + err.Error()}
		}
		c.out = appendCommandComplete(c.out, "RESHARD SWITCH")
		return nil
	}
	m := reOther.FindStringSubmatch(sql)
	if m == nil {
		return errors.New("unknown RESHARD command: RESHARD FENCE 'shard' [TIMEOUT ms] [LEASE ms] | SWITCH 'json' | UNFENCE | DDL LOCK | DDL UNLOCK")
	}
	switch verb := strings.Join(strings.Fields(strings.ToUpper(m[1])), " "); verb {
	case "UNFENCE":
		c.srv.Unfence()
	case "DDL LOCK":
		c.srv.LockDDL(true)
	case "DDL UNLOCK":
		c.srv.LockDDL(false)
	}
	c.out = appendCommandComplete(c.out, "RESHARD")
	return nil
}
