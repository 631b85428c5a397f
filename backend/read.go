package backend

import (
	"fmt"
	"math"
	"time"

	"github.com/shardgate/shardgate/pgerr"
	"github.com/shardgate/shardgate/topology"
)

// UnknownLSN is a read's need after a write whose position was not
// captured (multi-shard writes): such reads go to the primary.
const UnknownLSN = math.MaxUint64

// ReadPolicy is what a client's settings allow its replica-eligible reads.
// The lag limits are how far behind a replica may be and still serve
// reads; zero is no limit.
type ReadPolicy struct {
	MaxLag       time.Duration // max_replica_lag
	MaxLagBytes  int64         // max_replica_lag_bytes
	PrimaryReads string        // primary_reads: "always" lets the primary compete; "never" refuses without a replica
	Wait         time.Duration // ryw_wait: how long a read waits for a replica to replay its need
}

// ReadPolicyOf is cfg's read policy.
func ReadPolicyOf(cfg *topology.Config) ReadPolicy {
	return ReadPolicy{MaxLag: time.Duration(cfg.MaxReplicaLag), MaxLagBytes: cfg.MaxReplicaLagBytes,
		PrimaryReads: cfg.PrimaryReads, Wait: time.Duration(cfg.RYWWait)}
}

// usable reports whether a replica may serve reads now.
func (n *Node) usable(p ReadPolicy) bool {
	if !n.healthy.Load() || n.Banned() || n.promoted.Load() {
		return false
	}
	return (p.MaxLag <= 0 || time.Duration(n.lagMicros.Load())*time.Microsecond <= p.MaxLag) &&
		(p.MaxLagBytes <= 0 || n.lagBytes.Load() <= p.MaxLagBytes)
}

// errNoReplica is what primary_reads: never answers when no replica is usable.
func errNoReplica(shard string) *pgerr.Error {
	return &pgerr.Error{Code: pgerr.CodeConnectionFailure, Message: fmt.Sprintf("shardgate: no usable replica for shard %s (primary_reads: never)", shard)}
}

// PickRead chooses the server for a replica-eligible read on shard that
// needs a replica to have replayed need (0: any position; UnknownLSN: only
// the primary will do): a replica node, or nil for the primary. A non-nil
// error refuses the read.
func (s *Set) PickRead(shard int, need uint64, p ReadPolicy) (*Node, *pgerr.Error) {
	reps := s.replicas[shard]
	need = max(need, s.floors[shard])
	var deadline time.Time
	for {
		best, anyUsable := s.bestReplica(reps, p, need)
		if best != nil {
			if pn := s.Primary(shard); p.PrimaryReads == "always" && !pn.Banned() {
				// The primary competes as one more server: by its lent
				// connections, ties shared round-robin.
				pa, ba := int32(pn.pool.Stats().Active), best.outstanding.Load()
				if pa < ba || (pa == ba && s.nextReplica.Load()%uint32(len(reps)+1) == 0) {
					return nil, nil
				}
			}
			return best, nil
		}
		switch {
		case !anyUsable && p.PrimaryReads == "never":
			return nil, errNoReplica(s.cfg.Shards[shard].Name)
		case !anyUsable, need == UnknownLSN, p.Wait <= 0:
			return nil, nil
		}
		// Replicas are up but behind the client's last write: wait for
		// replay up to ryw_wait, then use the primary.
		if deadline.IsZero() {
			deadline = time.Now().Add(p.Wait)
		} else if time.Now().After(deadline) {
			return nil, nil
		}
		time.Sleep(time.Millisecond)
	}
}

// bestReplica returns the usable replica past need with the fewest
// outstanding connections, ties broken round-robin, and whether any replica
// was usable at all (regardless of need).
func (s *Set) bestReplica(reps []*Node, p ReadPolicy, need uint64) (*Node, bool) {
	n := len(reps)
	if n == 0 {
		return nil, false
	}
	start := int(s.nextReplica.Add(1) % uint32(n))
	var best *Node
	anyUsable := false
	for i := range n {
		r := reps[(start+i)%n]
		if !r.usable(p) {
			continue
		}
		anyUsable = true
		if need != 0 && r.lsn.Load() < need {
			if need != UnknownLSN {
				r.wantReplay(need)
			}
			continue
		}
		if best == nil || r.outstanding.Load() < best.outstanding.Load() {
			best = r
		}
	}
	return best, anyUsable
}
