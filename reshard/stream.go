package reshard

// This file is the catch-up: it reads a logical replication slot on the
// source (pgoutput, decoded by pglogrepl) and applies the changes of the
// moving range to the target, each source transaction exactly once.
// stream_apply.go turns decoded changes into statements on the target.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/shardgate/shardgate/topology"
)

// Stream applies the changes that one slot on the source decodes to the
// target: the rows of Tables whose shard key is in Range, and every row of
// the Reference tables.
//
// Exactly once: the target keeps, per slot, a position P such that every
// source transaction whose commit LSN is below P has been applied (or had
// nothing to apply), written in the same target transaction as the changes
// it covers. A Run resumes from P and skips what is below it, so a stream
// killed anywhere and run again applies each source transaction once. It
// reads P only after the target has ended the session of the slot's
// previous Run, whose last batch may commit after that Run returned.
type Stream struct {
	Slot, Publication    string
	SourceDSN, TargetDSN string                          // plain DSNs
	Tables               map[string]topology.TableConfig // sharded tables: only rows whose key is in Range
	Range                topology.KeyRange
	Reference            []string // tables applied in full
	Log                  *slog.Logger
	OnProgress           func(Progress) // optional, after each applied batch and keepalive
}

// Progress is where a Run stands.
type Progress struct {
	Applied   pglogrepl.LSN // every source commit below it is applied on the target
	SourceEnd pglogrepl.LSN // the source's WAL position (asked at most every 500 ms) or the slot's, if further
	LagBytes  uint64        // SourceEnd - Applied
	// Lag is the age of the commit of the oldest source transaction
	// received but not applied; in the report after a batch, of the
	// batch's oldest (the delay it was applied with). 0 when caught up.
	Lag time.Duration
	// Txns and Changes count, for this Run, the source transactions with
	// a change to apply and the row changes applied.
	Txns, Changes int64
}

const (
	// A target transaction collects source transactions for up to
	// batchWindow or batchChanges changes: one commit and one round trip
	// for many small source transactions.
	batchWindow  = 50 * time.Millisecond
	batchChanges = 2000
	// A large source transaction goes to the target in round trips of
	// chunkStatements, inside one target transaction.
	chunkStatements = 2000
	// A quiet stream is asked for the decoder's position this often (when
	// Run has a stop position, so it notices reaching it), and acknowledged
	// at least every statusEvery (wal_sender_timeout is 60 s by default).
	probeUntil  = 100 * time.Millisecond
	probeIdle   = time.Second
	statusEvery = 10 * time.Second
	// A slot stays active for a moment after the previous Run's connection
	// closes, and so does its lock on the target (lockSlot); a new Run
	// waits that long for them.
	slotBusyWait = 10 * time.Second
	slotLockPoll = 20 * time.Millisecond
	// How often a Run with OnProgress asks the source for its WAL position.
	sourceEndEvery = 500 * time.Millisecond
)

// textSettings make the text forms the source sends and the target parses
// independent of either server's configuration, as PostgreSQL's own
// subscriber does.
var textSettings = map[string]string{"DateStyle": "ISO", "IntervalStyle": "postgres", "extra_float_digits": "3"}

func connectConfig(dsn string, replication bool) (*pgconn.Config, error) {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	for k, v := range textSettings {
		cfg.RuntimeParams[k] = v
	}
	if replication {
		cfg.RuntimeParams["replication"] = "database"
	}
	return cfg, nil
}

func connect(ctx context.Context, dsn string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	for k, v := range textSettings {
		cfg.RuntimeParams[k] = v
	}
	return pgx.ConnectConfig(ctx, cfg)
}

// closeConn closes without waiting long for a server that went away.
func closeConn(c interface{ Close(context.Context) error }) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = c.Close(ctx)
}

// EnsurePublication creates publication name on the server at dsn FOR
// TABLE tables, or adds the tables it lacks. Create it before the slot:
// the slot's decoder looks the publication up as of each change it decodes.
func EnsurePublication(ctx context.Context, dsn, name string, tables []string) error {
	if !validSlotName(name) { // it is spliced into START_REPLICATION's options
		return fmt.Errorf("publication name %q: want 1 to 63 lower-case letters, digits or underscores", name)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("connect for publication %s: %w", name, err)
	}
	defer closeConn(conn)
	var exists, all bool
	if err := conn.QueryRow(ctx, "SELECT count(*) > 0, coalesce(bool_or(puballtables), false) FROM pg_publication WHERE pubname = $1", name).Scan(&exists, &all); err != nil {
		return fmt.Errorf("publication %s: %w", name, err)
	}
	if all {
		return nil
	}
	idents := make([]string, len(tables))
	for i, t := range tables {
		idents[i] = pgx.Identifier{t}.Sanitize()
	}
	if !exists {
		sql := "CREATE PUBLICATION " + pgx.Identifier{name}.Sanitize()
		if len(idents) > 0 {
			sql += " FOR TABLE " + strings.Join(idents, ", ")
		}
		_, err := conn.Exec(ctx, sql)
		if err == nil {
			return nil
		}
		if pgErr := (*pgconn.PgError)(nil); !errors.As(err, &pgErr) || pgErr.Code != "42710" { // duplicate_object: another run made it
			return fmt.Errorf("create publication %s: %w", name, err)
		}
	}
	var missing []string
	for i, t := range idents {
		var in bool
		const q = `SELECT EXISTS (SELECT 1 FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid
	WHERE p.pubname = $1 AND r.prrelid = to_regclass($2))`
		if err := conn.QueryRow(ctx, q, name, t).Scan(&in); err != nil {
			return fmt.Errorf("publication %s: is %s in it: %w", name, tables[i], err)
		}
		if !in {
			missing = append(missing, t)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if _, err := conn.Exec(ctx, "ALTER PUBLICATION "+pgx.Identifier{name}.Sanitize()+" ADD TABLE "+strings.Join(missing, ", ")); err != nil {
		return fmt.Errorf("add tables to publication %s: %w", name, err)
	}
	return nil
}

// EnsureSlot creates the logical slot slot (pgoutput) on the server at dsn
// if it is missing, without a snapshot (a reverse stream starts from what
// the target holds at cutover, not from a copy), and returns its position:
// the slot decodes every transaction that commits from there on.
func EnsureSlot(ctx context.Context, dsn, slot string) (pglogrepl.LSN, error) {
	if !validSlotName(slot) {
		return 0, fmt.Errorf("slot name %q: want 1 to 63 lower-case letters, digits or underscores", slot)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, fmt.Errorf("connect for slot %s: %w", slot, err)
	}
	defer closeConn(conn)
	if lsn, ok, err := slotPosition(ctx, conn, slot); ok || err != nil {
		return lsn, err
	}
	var lsn string
	err = conn.QueryRow(ctx, "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')", slot).Scan(&lsn)
	if pgErr := (*pgconn.PgError)(nil); errors.As(err, &pgErr) && pgErr.Code == "42710" { // made meanwhile
		lsn, _, err := slotPosition(ctx, conn, slot)
		return lsn, err
	}
	if err != nil {
		return 0, fmt.Errorf("create slot %s: %w", slot, err)
	}
	return pglogrepl.ParseLSN(lsn)
}

// slotPosition returns the confirmed position of slot, checking it is one
// a Stream can read.
func slotPosition(ctx context.Context, conn *pgx.Conn, slot string) (pglogrepl.LSN, bool, error) {
	var (
		plugin, kind string
		db           bool
		lsn          *string
	)
	const q = `SELECT coalesce(plugin, ''), slot_type, database = current_database(), confirmed_flush_lsn::text
FROM pg_replication_slots WHERE slot_name = $1`
	err := conn.QueryRow(ctx, q, slot).Scan(&plugin, &kind, &db, &lsn)
	switch {
	case err == pgx.ErrNoRows:
		return 0, false, nil
	case err != nil:
		return 0, false, fmt.Errorf("slot %s: %w", slot, err)
	case kind != "logical" || plugin != "pgoutput" || !db:
		return 0, true, fmt.Errorf("slot %s exists but is not a pgoutput logical slot of this database (type %s, plugin %q)", slot, kind, plugin)
	case lsn == nil:
		return 0, true, fmt.Errorf("slot %s has no confirmed position yet", slot)
	}
	p, err := pglogrepl.ParseLSN(*lsn)
	return p, true, err
}

// Applied returns the applied position stored on the target for slot (0
// if none): every source transaction whose commit LSN is below it is applied.
func Applied(ctx context.Context, targetDSN, slot string) (pglogrepl.LSN, error) {
	conn, err := pgx.Connect(ctx, targetDSN)
	if err != nil {
		return 0, fmt.Errorf("connect to the target: %w", err)
	}
	defer closeConn(conn)
	return appliedOn(ctx, conn, slot)
}

func appliedOn(ctx context.Context, conn *pgx.Conn, slot string) (pglogrepl.LSN, error) {
	var lsn *string
	err := conn.QueryRow(ctx, `SELECT CASE WHEN to_regclass('shardgate_reshard.applied') IS NOT NULL
	THEN (SELECT lsn::text FROM shardgate_reshard.applied WHERE slot = $1) END`, slot).Scan(&lsn)
	if err != nil {
		return 0, fmt.Errorf("applied position of slot %s: %w", slot, err)
	}
	if lsn == nil {
		return 0, nil
	}
	return pglogrepl.ParseLSN(*lsn)
}

// ensureAppliedTable creates the table of applied positions. Streams of
// several reshards may start on one target at once: a lock orders them.
func ensureAppliedTable(ctx context.Context, conn *pgx.Conn) error {
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass('shardgate_reshard.applied') IS NOT NULL").Scan(&exists); err != nil || exists {
		return err
	}
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		for _, sql := range []string{
			"SELECT pg_advisory_xact_lock(hashtext('shardgate_reshard.applied'))",
			"CREATE SCHEMA IF NOT EXISTS shardgate_reshard",
			"CREATE TABLE IF NOT EXISTS shardgate_reshard.applied (slot text PRIMARY KEY, lsn pg_lsn NOT NULL, at timestamptz NOT NULL)",
		} {
			if _, err := tx.Exec(ctx, sql); err != nil {
				return fmt.Errorf("create shardgate_reshard.applied: %w", err)
			}
		}
		return nil
	})
}

// Run streams from the applied position stored on the target (or the
// slot's confirmed position if none) and applies changes until ctx ends
// (it returns ctx.Err()) or, when until != 0, until every source
// transaction whose commit LSN is below until is applied and none at or
// after it (it returns nil). Any other error leaves the target as of a
// whole number of source transactions: run again to continue.
func (s *Stream) Run(ctx context.Context, until pglogrepl.LSN) error {
	err := s.run(ctx, until)
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	// A dial times out at the context's deadline, a moment before the
	// context itself says so.
	if d, ok := ctx.Deadline(); err != nil && ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return err
}

func (s *Stream) run(ctx context.Context, until pglogrepl.LSN) error {
	if !validSlotName(s.Slot) || !validSlotName(s.Publication) {
		return fmt.Errorf("slot %q, publication %q: want 1 to 63 lower-case letters, digits or underscores", s.Slot, s.Publication)
	}
	r := &runner{s: s, until: until, log: s.Log, rels: map[uint32]*relation{}, prepared: map[string]*pgconn.StatementDescription{}}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.log = r.log.With("slot", s.Slot)
	defer r.close()
	if err := r.openTarget(ctx); err != nil {
		return err
	}
	if until != 0 && r.stored >= until {
		return nil
	}
	if err := r.startReplication(ctx); err != nil {
		return err
	}
	r.log.Debug("catch-up stream started", "from", r.handled, "until", until)
	return r.loop(ctx)
}

// runner is one Run's state.
type runner struct {
	s     *Stream
	until pglogrepl.LSN
	log   *slog.Logger
	repl  *pgconn.PgConn
	dst   *pgx.Conn
	src   *pgx.Conn // opened on first need
	rels  map[uint32]*relation
	batch batch
	// prepared holds the target's prepared statements by their SQL.
	prepared map[string]*pgconn.StatementDescription

	// Positions: every source commit below processed is applied, queued in
	// the batch or needs nothing; below handled, applied on the target or
	// needs nothing (what may be acknowledged to the slot); stored is the
	// position the target holds.
	processed, handled, stored pglogrepl.LSN
	sourceEnd                  pglogrepl.LSN

	inTxn, skipTxn bool
	txnCommit      pglogrepl.LSN // commit LSN of the transaction being received, for errors
	txnKept        int           // its changes queued
	pendingSince   time.Time     // commit time of the oldest source transaction not yet applied
	lastRecv       time.Time     // last message received or probe sent
	lastStatus     time.Time
	endAsked       time.Time // when the source was last asked for its WAL position
	txns, changes  int64
}

func (r *runner) close() {
	if r.repl != nil {
		closeConn(r.repl)
	}
	if r.dst != nil {
		closeConn(r.dst)
	}
	if r.src != nil {
		closeConn(r.src)
	}
}

// openTarget connects to the target and reads where the stream stands.
func (r *runner) openTarget(ctx context.Context) error {
	dst, err := connect(ctx, r.s.TargetDSN)
	if err != nil {
		return fmt.Errorf("connect to the target: %w", err)
	}
	r.dst = dst
	// The session holds the slot's lock (lockSlot) until it ends. Should
	// this process vanish without closing it, the target is to notice in
	// about 25 s, before the slot's walsender does (wal_sender_timeout),
	// not after the OS's default of over two hours.
	const keepalives = "SELECT set_config('tcp_keepalives_idle', '10', false), set_config('tcp_keepalives_interval', '5', false), set_config('tcp_keepalives_count', '3', false)"
	if _, err := dst.Exec(ctx, keepalives); err != nil {
		return fmt.Errorf("target: %w", err)
	}
	// As PostgreSQL's subscriber does: the target's triggers and foreign
	// keys already acted on the source; running them again would change
	// or refuse replicated rows. It needs a superuser.
	if _, err := dst.Exec(ctx, "SET session_replication_role = replica"); err != nil {
		if pgErr := (*pgconn.PgError)(nil); !errors.As(err, &pgErr) || pgErr.Code != "42501" {
			return fmt.Errorf("target: %w", err)
		}
		r.log.Warn("target user may not set session_replication_role: triggers on the target fire for replicated rows", "err", err)
	}
	if err := ensureAppliedTable(ctx, dst); err != nil {
		return err
	}
	if err := r.lockSlot(ctx); err != nil {
		return err
	}
	if r.stored, err = appliedOn(ctx, dst, r.s.Slot); err != nil {
		return err
	}
	src, err := r.source(ctx)
	if err != nil {
		return err
	}
	confirmed, ok, err := slotPosition(ctx, src, r.s.Slot)
	if err == nil && !ok {
		err = fmt.Errorf("slot %s does not exist on the source", r.s.Slot)
	}
	// The slot is ahead of the target when this stream acknowledged
	// transactions with nothing to apply without storing their position;
	// starting behind the slot would move it back.
	r.processed = max(r.stored, confirmed)
	r.handled = r.processed
	return err
}

// lockSlot takes the target's session lock of the slot, which a Run holds
// until its connection ends, waiting a moment for a previous Run's to end.
//
// A Run whose context ends while its batch is in flight gives up on the
// connection, but the target still has the batch, COMMIT included, in its
// socket (or a network buffer): that backend can commit it after the Run
// returned. Were the next Run to read the applied position before then, it
// would start from the older one and apply the batch's transactions again.
// The old backend holds the lock until it has executed all it received.
func (r *runner) lockSlot(ctx context.Context) error {
	began := time.Now()
	deadline := began.Add(slotBusyWait)
	for tries := 0; ; tries++ {
		var locked bool
		err := r.dst.QueryRow(ctx, "SELECT pg_try_advisory_lock(hashtext('shardgate_reshard.applied'), hashtext($1))", r.s.Slot).Scan(&locked)
		if err != nil {
			return fmt.Errorf("lock slot %s on the target: %w", r.s.Slot, err)
		}
		if locked {
			if tries > 0 {
				r.log.Debug("waited for the target session of a previous stream of the slot", "took", time.Since(began))
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("slot %s: another stream of it still applies to the target", r.s.Slot)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(slotLockPoll):
		}
	}
}

// source is a plain connection to the source, for what the slot does not
// send: its position, unchanged TOAST values.
func (r *runner) source(ctx context.Context) (*pgx.Conn, error) {
	if r.src != nil {
		return r.src, nil
	}
	src, err := connect(ctx, r.s.SourceDSN)
	if err != nil {
		return nil, fmt.Errorf("connect to the source: %w", err)
	}
	r.src = src
	return src, nil
}

// startReplication starts streaming the slot from r.handled, waiting a
// moment for a previous Run's connection to release it.
func (r *runner) startReplication(ctx context.Context) error {
	cfg, err := connectConfig(r.s.SourceDSN, true)
	if err != nil {
		return err
	}
	opts := pglogrepl.StartReplicationOptions{PluginArgs: []string{"proto_version '1'", "publication_names '" + r.s.Publication + "'"}}
	deadline := time.Now().Add(slotBusyWait)
	for {
		repl, err := pgconn.ConnectConfig(ctx, cfg)
		if err != nil {
			return fmt.Errorf("replication connection to the source: %w", err)
		}
		err = pglogrepl.StartReplication(ctx, repl, r.s.Slot, r.handled, opts)
		if err == nil {
			r.repl = repl
			r.lastRecv, r.lastStatus = time.Now(), time.Now()
			return nil
		}
		closeConn(repl)
		pgErr := (*pgconn.PgError)(nil)
		if !errors.As(err, &pgErr) || pgErr.Code != "55006" || time.Now().After(deadline) { // object_in_use: the slot is active
			return fmt.Errorf("start replication from slot %s at %s: %w", r.s.Slot, r.handled, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// loop receives and applies until done.
func (r *runner) loop(ctx context.Context) error {
	for {
		rctx, cancel := context.WithDeadline(ctx, r.wake())
		msg, err := r.repl.ReceiveMessage(rctx)
		cancel()
		if err != nil {
			if ctx.Err() == nil && pgconn.Timeout(err) {
				if err := r.timer(ctx); err != nil {
					return err
				}
				continue
			}
			return fmt.Errorf("receive from slot %s: %w", r.s.Slot, err)
		}
		r.lastRecv = time.Now()
		var done bool
		switch msg := msg.(type) {
		case *pgproto3.CopyData:
			done, err = r.copyData(ctx, msg.Data)
		case *pgproto3.ErrorResponse:
			err = fmt.Errorf("slot %s: %w", r.s.Slot, pgconn.ErrorResponseToPgError(msg))
		default:
			err = fmt.Errorf("slot %s: unexpected message %T", r.s.Slot, msg)
		}
		if err != nil {
			return err
		}
		if done {
			r.log.Debug("catch-up stream reached its stop position", "until", r.until, "applied", r.handled)
			return nil
		}
	}
}

// wake is when the loop must act without a message: commit a due batch,
// probe a quiet stream, send a status update.
func (r *runner) wake() time.Time {
	probe := probeIdle
	if r.until != 0 {
		probe = probeUntil
	}
	t := r.lastRecv.Add(probe)
	if s := r.lastStatus.Add(statusEvery); s.Before(t) {
		t = s
	}
	if b := r.batch.began.Add(batchWindow); r.batch.pending() && !r.inTxn && b.Before(t) {
		t = b
	}
	return t
}

func (r *runner) timer(ctx context.Context) error {
	now := time.Now()
	if r.batch.pending() && !r.inTxn && !now.Before(r.batch.began.Add(batchWindow)) {
		if err := r.flush(ctx); err != nil {
			return err
		}
	}
	probe := probeIdle
	if r.until != 0 {
		probe = probeUntil
	}
	switch {
	case !now.Before(r.lastRecv.Add(probe)):
		// The reply is a keepalive carrying the decoder's position: with
		// no transaction to commit, the only way to learn that the stream
		// has passed until.
		r.lastRecv = now
		return r.status(true)
	case !now.Before(r.lastStatus.Add(statusEvery)):
		return r.status(false)
	}
	return nil
}

// status acknowledges to the slot what the target has.
func (r *runner) status(reply bool) error {
	r.lastStatus = time.Now()
	err := pglogrepl.SendStandbyStatusUpdate(context.Background(), r.repl, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: r.handled, WALFlushPosition: r.handled, WALApplyPosition: r.handled, ReplyRequested: reply,
	})
	if err != nil {
		return fmt.Errorf("status update to slot %s: %w", r.s.Slot, err)
	}
	return nil
}

func (r *runner) copyData(ctx context.Context, data []byte) (bool, error) {
	if len(data) == 0 {
		return false, fmt.Errorf("slot %s: empty message", r.s.Slot)
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		k, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return false, fmt.Errorf("slot %s: %w", r.s.Slot, err)
		}
		return r.keepalive(ctx, k)
	case pglogrepl.XLogDataByteID:
		x, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return false, fmt.Errorf("slot %s: %w", r.s.Slot, err)
		}
		r.sourceEnd = max(r.sourceEnd, x.ServerWALEnd)
		m, err := pglogrepl.Parse(x.WALData)
		if err != nil {
			return false, fmt.Errorf("slot %s: decode at %s: %w", r.s.Slot, x.WALStart, err)
		}
		return r.message(ctx, m)
	}
	return false, nil
}

// keepalive: the decoder has sent every transaction that commits below
// its position, so outside a transaction that position is processed.
func (r *runner) keepalive(ctx context.Context, k pglogrepl.PrimaryKeepaliveMessage) (bool, error) {
	r.sourceEnd = max(r.sourceEnd, k.ServerWALEnd)
	if !r.inTxn {
		r.processed = max(r.processed, k.ServerWALEnd)
		if !r.batch.pending() {
			r.handled = r.processed
		}
		if r.until != 0 && r.processed >= r.until {
			return true, r.finish(ctx)
		}
	}
	if k.ReplyRequested {
		if err := r.status(false); err != nil {
			return false, err
		}
	}
	r.report(ctx, r.pendingSince)
	return false, nil
}

func (r *runner) message(ctx context.Context, m pglogrepl.Message) (bool, error) {
	switch m := m.(type) {
	case *pglogrepl.RelationMessage:
		return false, r.relation(ctx, m)
	case *pglogrepl.BeginMessage:
		return r.begin(ctx, m)
	case *pglogrepl.CommitMessage:
		return false, r.commit(ctx, m)
	}
	if r.skipTxn {
		return false, nil
	}
	switch m := m.(type) {
	case *pglogrepl.InsertMessage:
		return false, r.insert(ctx, m)
	case *pglogrepl.UpdateMessage:
		return false, r.update(ctx, m)
	case *pglogrepl.DeleteMessage:
		return false, r.delete(ctx, m)
	case *pglogrepl.TruncateMessage:
		return false, r.truncate(ctx, m)
	}
	return false, nil // type, origin and logical decoding messages
}

func (r *runner) begin(ctx context.Context, m *pglogrepl.BeginMessage) (bool, error) {
	if r.until != 0 && m.FinalLSN >= r.until {
		// Transactions arrive in commit order: every one below this
		// commit has been received.
		r.processed = max(r.processed, m.FinalLSN)
		return true, r.finish(ctx)
	}
	r.inTxn, r.txnCommit, r.txnKept = true, m.FinalLSN, 0
	r.skipTxn = m.FinalLSN < r.processed // applied by an earlier Run
	if !r.skipTxn && r.pendingSince.IsZero() {
		r.pendingSince = m.CommitTime
	}
	return false, nil
}

func (r *runner) commit(ctx context.Context, m *pglogrepl.CommitMessage) error {
	r.inTxn = false
	if r.skipTxn {
		r.skipTxn = false
		return nil
	}
	r.processed = max(r.processed, m.TransactionEndLSN)
	if r.txnKept > 0 {
		r.batch.txns++
	}
	if !r.batch.pending() { // nothing to apply: processed is as good as applied
		r.handled, r.pendingSince = r.processed, time.Time{}
		return nil
	}
	if r.batch.changes >= batchChanges || time.Since(r.batch.began) >= batchWindow {
		return r.flush(ctx)
	}
	return nil
}

// flush commits the batch on the target with the processed position, and
// acknowledges it to the slot.
func (r *runner) flush(ctx context.Context) error {
	if r.batch.pending() {
		txns, changes := r.batch.txns, r.batch.changes
		if err := r.batch.commit(ctx, r.dst, r.s.Slot, r.processed); err != nil {
			return err
		}
		r.stored = r.processed
		r.txns += int64(txns)
		r.changes += int64(changes)
		r.log.Debug("applied", "txns", txns, "changes", changes, "position", r.processed)
	}
	since := r.pendingSince
	r.handled, r.pendingSince = r.processed, time.Time{}
	if err := r.status(false); err != nil {
		return err
	}
	r.report(ctx, since)
	return nil
}

// finish applies everything below the stop position and stores it, so
// Applied shows the target has reached it.
func (r *runner) finish(ctx context.Context) error {
	if err := r.flush(ctx); err != nil {
		return err
	}
	if r.stored >= r.handled {
		return nil
	}
	if err := r.batch.commit(ctx, r.dst, r.s.Slot, r.handled); err != nil {
		return err
	}
	r.stored = r.handled
	r.report(ctx, time.Time{})
	return nil
}

// report tells OnProgress where the stream stands. Lag is measured from
// since: after a batch, the commit of its oldest transaction (the delay it
// was applied with); otherwise that of the oldest one pending.
func (r *runner) report(ctx context.Context, since time.Time) {
	if r.s.OnProgress == nil {
		return
	}
	// The slot reports positions it has decoded to; while it decodes a
	// backlog, only the source knows how much WAL lies ahead.
	if time.Since(r.endAsked) >= sourceEndEvery {
		r.endAsked = time.Now()
		var end string
		if err := r.src.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&end); err != nil {
			r.log.Debug("source WAL position", "err", err)
		} else if lsn, err := pglogrepl.ParseLSN(end); err == nil {
			r.sourceEnd = max(r.sourceEnd, lsn)
		}
	}
	p := Progress{Applied: r.handled, SourceEnd: max(r.sourceEnd, r.handled), Txns: r.txns, Changes: r.changes}
	p.LagBytes = uint64(p.SourceEnd - p.Applied)
	if !since.IsZero() {
		p.Lag = max(time.Since(since), 0)
	}
	r.s.OnProgress(p)
}
