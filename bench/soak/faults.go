package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/shardgate/shardgate/sandbox"
)

// Which servers the faults hit: different shards, so that an error on the
// other shard during a fault is not put down to it.
const (
	restartShard = 0
	stallShard   = 1
)

// injectFaults restarts shard restartShard's primary a quarter into the
// main phase and stalls shard stallShard's replica (SIGSTOP, then SIGCONT)
// at 60 % of it, each inside a fault window of the ledger.
func injectFaults(ctx context.Context, c *sandbox.Cluster, o options, l *ledger, log *slog.Logger) error {
	began := time.Now()
	at := func(frac float64) {
		sleep(ctx, time.Duration(frac*float64(o.duration))-time.Since(began))
	}
	if o.restart {
		at(0.25)
		if ctx.Err() != nil {
			return nil
		}
		if err := restartPrimary(ctx, c, l, log); err != nil {
			return err
		}
	}
	if o.stall > 0 {
		at(0.6)
		if ctx.Err() != nil {
			return nil
		}
		if err := stallReplica(ctx, c, o.stall, l, log); err != nil {
			return err
		}
	}
	return nil
}

// restartPrimary stops a primary (fast shutdown: its sessions end with
// 57P01), leaves it down for 2 s and starts it again.
func restartPrimary(ctx context.Context, c *sandbox.Cluster, l *ledger, log *slog.Logger) error {
	s := c.Shards[restartShard].Primary
	end := l.beginFault("restart of "+s.Name, restartShard)
	defer end()
	log.Info("fault: stopping " + s.Name)
	if err := c.StopServer(ctx, s); err != nil {
		return err
	}
	sleep(ctx, 2*time.Second)
	// Started even when ctx ended, so that the sandbox stops cleanly.
	if err := c.StartServer(context.WithoutCancel(ctx), s); err != nil {
		return err
	}
	log.Info("fault: started " + s.Name + " again")
	return nil
}

// stallReplica freezes every process of a replica (SIGSTOP), so that it
// accepts TCP connections but answers nothing, as a server that hangs does,
// and thaws it after d, or at once when ctx ends.
func stallReplica(ctx context.Context, c *sandbox.Cluster, d time.Duration, l *ledger, log *slog.Logger) error {
	s := c.Shards[stallShard].Replicas[0]
	end := l.beginFault(fmt.Sprintf("SIGSTOP of %s for %s", s.Name, d), stallShard)
	defer end()
	log.Info("fault: SIGSTOP " + s.Name)
	thaw, err := s.Freeze()
	if err != nil {
		return err
	}
	sleep(ctx, d)
	if err := thaw(); err != nil {
		return err
	}
	log.Info("fault: SIGCONT " + s.Name)
	return nil
}
