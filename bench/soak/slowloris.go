package main

import (
	"context"
	"sync"
	"time"
)

// slowloris opens waves of -slowloris connections that each send half a
// startup packet and then nothing. A new wave starts once the proxy closed
// every connection of the last one, or -slowloris-every after it started,
// whichever comes first: a proxy that ends unfinished logins within that
// time never holds more than one wave, one that keeps them accumulates
// waves until it reaches max_client_conn and locks legitimate clients out.
func (h *hostile) slowloris(ctx context.Context) {
	var all sync.WaitGroup
	defer all.Wait()
	for ctx.Err() == nil {
		began := time.Now()
		var wave sync.WaitGroup
		for range h.o.slowloris {
			wave.Add(1)
			all.Go(func() {
				defer wave.Done()
				if out := h.halfLogin(ctx); ctx.Err() == nil || !cutShort(out) {
					h.count("slowloris", out)
				}
			})
		}
		closed := make(chan struct{})
		go func() { wave.Wait(); close(closed) }()
		select {
		case <-ctx.Done():
		case <-closed:
		case <-time.After(h.o.waveEvery):
		}
		// Not faster than one wave a second, whatever the proxy does.
		sleep(ctx, time.Second-time.Since(began))
	}
}

// halfLogin sends half a startup packet and waits, until ctx ends, for the
// proxy to answer or close.
func (h *hostile) halfLogin(ctx context.Context) string {
	c, closeConn, err := h.dial(ctx)
	if err != nil {
		return "dial failed"
	}
	defer closeConn()
	msg := startupMessage(h.db)
	if err := c.send(msg[:len(msg)/2]); err != nil {
		return "write failed"
	}
	began := time.Now()
	h.halfOpen(+1)
	_, err = c.rd.ReadByte()
	h.halfOpen(-1)
	if ctx.Err() != nil {
		return "still open at the end of the phase"
	}
	verb := "closed by the proxy"
	if err == nil {
		verb = "answered by the proxy"
	}
	return verb + " " + ageBucket(time.Since(began))
}

func (h *hostile) halfOpen(delta int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.half += delta
	h.peakHalf = max(h.peakHalf, h.half)
}

// ageBucket puts how long a half-open login lasted in a few ranges.
func ageBucket(d time.Duration) string {
	for _, b := range []struct {
		below time.Duration
		label string
	}{
		{time.Second, "within 1s"},
		{10 * time.Second, "after 1-10s"},
		{30 * time.Second, "after 10-30s"},
		{60 * time.Second, "after 30-60s"},
	} {
		if d < b.below {
			return b.label
		}
	}
	return "after more than 60s"
}
