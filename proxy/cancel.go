package proxy

import (
	"encoding/binary"
	"net"
	"sync"
	"time"

	"github.com/shardgate/shardgate/pool"
)

// Cancel requests arrive on a new connection carrying the BackendKeyData the
// proxy gave the client; the proxy forwards them, with the server's own key,
// to whatever server connection runs that client's statement now.

type backendKey struct{ pid, secret uint32 }

// cancelRegistry finds clients by the key they were given.
type cancelRegistry struct {
	mu      sync.Mutex
	clients map[backendKey]*client
}

func (r *cancelRegistry) add(k backendKey, c *client) {
	r.mu.Lock()
	if r.clients == nil {
		r.clients = make(map[backendKey]*client)
	}
	r.clients[k] = c
	r.mu.Unlock()
}

func (r *cancelRegistry) remove(k backendKey) {
	r.mu.Lock()
	delete(r.clients, k)
	r.mu.Unlock()
}

func (r *cancelRegistry) lookup(k backendKey) *client {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.clients[k]
}

// cancelTarget is the server connection a client is using now, guarded
// because cancel requests come from other goroutines.
type cancelTarget struct {
	mu sync.Mutex
	sc *pool.Conn
}

func (t *cancelTarget) set(sc *pool.Conn) {
	t.mu.Lock()
	t.sc = sc
	t.mu.Unlock()
}

// cancel sends a CancelRequest for the server connection in use, if any.
func (t *cancelTarget) cancel() error {
	t.mu.Lock()
	sc := t.sc
	var addr string
	var pid uint32
	var secret []byte
	if sc != nil {
		addr, pid, secret = sc.ServerAddr, sc.PID, sc.SecretKey
	}
	t.mu.Unlock()
	if sc == nil {
		return nil
	}
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	msg := make([]byte, 0, 12+len(secret))
	msg = binary.BigEndian.AppendUint32(msg, uint32(12+len(secret)))
	msg = binary.BigEndian.AppendUint32(msg, cancelRequestCode)
	msg = binary.BigEndian.AppendUint32(msg, pid)
	msg = append(msg, secret...)
	if _, err := conn.Write(msg); err != nil {
		return err
	}
	// Postgres closes the connection when done; wait for that so the
	// cancel has been delivered before the proxy answers anything else.
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [1]byte
	conn.Read(b[:])
	return nil
}
