package sandbox

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"syscall"
)

// shardName keeps a shard's name usable in its servers' directory names
// and, with "-" made "_", in their replication slot names (at most 63
// bytes of [a-z0-9_]).
var shardName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,39}$`)

// AddShard adds an empty shard named name beside the others in Dir, e.g. as
// the target of a reshard: a primary with the settings of the others (Fast
// included), the Database but no schema (a reshard copies it), and as many
// streaming replicas as the first shard has. Its servers are left running
// and it is saved in sandbox.json, so Start starts it again and Stop, even
// a Stop of another process's Cluster on the same Dir, stops it.
//
// AddShard may run while another process runs the sandbox; it must not
// run concurrently with other methods of the same Cluster.
func (c *Cluster) AddShard(ctx context.Context, name string) (sh *Shard, err error) {
	if !shardName.MatchString(name) {
		return nil, fmt.Errorf("sandbox: shard name %q: want 1 to 40 of a-z, 0-9, _ and -, starting with a letter or digit", name)
	}
	unlock, err := c.lock()
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	defer unlock()
	// Under the lock, so two processes adding shards do not lose one.
	saved, err := readState(c.Dir)
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	c.Shards = mergeShards(c.Shards, saved.Shards)
	if c.Shard(name) != nil {
		return nil, fmt.Errorf("sandbox: shard %s exists in %s", name, c.Dir)
	}

	used := map[int]bool{}
	for _, s := range c.servers() {
		used[s.Port] = true
	}
	ports, err := c.newShardPorts(1+len(c.Shards[0].Replicas), used)
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	if sh, err = c.newShard(name, ports); err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	var started startedSet
	defer func() {
		if err != nil {
			started.stop(c)
			removeData([]*Shard{sh})
		}
	}()
	if err := c.initShard(ctx, sh, "", make(chan struct{}, 1), &started); err != nil {
		return nil, fmt.Errorf("sandbox: adding shard %s: %w", name, err)
	}
	c.Shards = append(c.Shards, sh)
	if err := c.saveState(); err != nil {
		c.Shards = c.Shards[:len(c.Shards)-1]
		return nil, fmt.Errorf("sandbox: adding shard %s: %w", name, err)
	}
	c.log.Info("added shard", "shard", name, "dir", c.Dir)
	return sh, nil
}

// newShardPorts picks n ports for a new shard: the ports after the highest
// in use when the sandbox has fixed ports, else free ones.
func (c *Cluster) newShardPorts(n int, used map[int]bool) ([]int, error) {
	if c.BasePort == 0 {
		return freePorts(n, used)
	}
	return fixedPorts(slices.Max(slices.Collect(maps.Keys(used)))+1, n)
}

// Running reports whether server s is running.
func (c *Cluster) Running(ctx context.Context, s *Server) bool {
	return c.run.running(ctx, s)
}

// lock takes an exclusive lock on the sandbox's layout, held until unlock;
// the kernel drops it if the process dies.
func (c *Cluster) lock() (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(c.Dir, "sandbox.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return nil, errors.Join(fmt.Errorf("locking %s: %w", f.Name(), err), f.Close())
	}
	return func() { f.Close() }, nil
}
