package proxy

import "github.com/shardgate/shardgate/router"

// sessionState is what a client's session keeps across transactions:
// settings, hints, named prepared statements and read-your-writes
// positions. Transaction pooling replays it onto whichever server
// connection the client gets next.
type sessionState struct {
	// Session settings: what the client has SET (and started with), the
	// SETs of the open transaction, and whether it ended in ROLLBACK.
	// baseline, the startup settings, is shared with other clients and
	// read-only; so is settings, the same map, until ownSettings.
	settings    map[string]string
	baseline    map[string]string
	ownSettings bool // settings is the client's own copy
	txSettings  []*router.Setting
	rolledBack  bool
	syncBuf     []byte

	norm        router.Scratch // simple-query normalisation buffers
	sessionHint *router.Hint   // SET shardgate.*
	txHint      *router.Hint   // SET LOCAL shardgate.*, until the transaction ends

	stmts map[string]*prepared

	// Read-your-writes.
	ryw      []uint64 // by shard: WAL position of the client's last write (rywNone: unknown)
	capture  captureMode
	captured uint64 // LSN read by a capture op in the last send
}
