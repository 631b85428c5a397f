package proxy

import (
	"time"

	"github.com/shardgate/shardgate/backend"
	"github.com/shardgate/shardgate/pool"
)

// transaction is the client's transaction as the proxy runs it: the server
// connection that holds it, the other shards it reached (two_phase_commit)
// and what a shard reached later must be sent first. Session pooling keeps
// the client's connections here too, since they outlive transactions.
type transaction struct {
	state        txState
	held         *pool.Conn // server connection for the current transaction
	heldShard    int
	heldPool     *pool.Pool
	heldNode     *backend.Node // replica node the held connection came from, nil for a primary
	started      time.Time
	sessionConns map[int]sessionConn // session mode: the client's connections by shard
	midBatch     bool                // extended batch flushed but not yet synced: keep held
	skipping     bool                // midBatch after an error: the server ignores all up to Sync
	srvStatus    byte                // server's last ReadyForQuery status while held
	pending      []byte              // deferred transaction start, a simple query text
	begin        []byte              // the transaction's BEGIN, for shards it reaches later
	branches     []branch            // the transaction's other shards (two_phase_commit)
	savepoint    bool                // the transaction has made a savepoint
	// ranOnReplica: the current request was served by a replica (slow-query log).
	ranOnReplica bool
}
