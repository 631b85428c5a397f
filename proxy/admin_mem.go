package proxy

import (
	"runtime/metrics"
	"unsafe"

	"github.com/shardgate/shardgate/pool"
)

// SHOW MEM has PgBouncer's layout (src/admin.c: name, size, used, free,
// memtotal; doc/usage.md "SHOW MEM"), where PgBouncer has a row per slab.
// Go has no slabs and keeps no free objects, so free is 0 for the proxy's
// objects, whose size is what each costs at least: the struct and the
// read buffer it holds (a client's TLS state and buffers grown by large
// messages come on top; a parked client holds no read buffer, nor a
// goroutine). The go_* rows are the Go runtime's own
// accounting in bytes (size 1): used is in use, free is held but unused.

// memRuntime are the runtime/metrics samples the go_* rows read.
var memRuntime = []string{
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/free:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/heap/stacks:bytes",
}

func (c *client) showMem() ([]string, [][]string) {
	s := c.srv
	nodes := s.rt.Load().backends.Nodes()
	servers := 0
	for _, n := range nodes {
		servers += n.Pool().Stats().Open
	}
	s.clientsMu.Lock()
	clients := len(s.clients)
	s.clientsMu.Unlock()
	parked := min(s.park.parkedCount(), clients)
	objects := func(name string, size uintptr, used int) []string {
		return []string{name, itoa(int(size)), itoa(used), "0", itoa(int(size) * used)}
	}
	rows := [][]string{
		objects("client", unsafe.Sizeof(client{})+clientReadBuffer, clients-parked),
		// A parked client (park.go) has let go of its read buffer.
		objects("parked_client", unsafe.Sizeof(client{}), parked),
		objects("server", unsafe.Sizeof(pool.Conn{})+pool.ReadBufferSize, servers),
		objects("pool", unsafe.Sizeof(pool.Pool{}), len(nodes)),
	}
	samples := make([]metrics.Sample, len(memRuntime))
	for i, name := range memRuntime {
		samples[i].Name = name
	}
	metrics.Read(samples)
	v := func(i int) uint64 {
		if samples[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return samples[i].Value.Uint64()
	}
	bytes := func(name string, used, free uint64) []string {
		return []string{name, "1", u64(used), u64(free), u64(used + free)}
	}
	rows = append(rows,
		bytes("go_heap", v(0), v(1)+v(2)),
		bytes("go_stacks", v(3), 0),
	)
	return []string{"name", "size", "used", "free", "memtotal"}, rows
}
