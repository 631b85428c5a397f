package main

import (
	"runtime"
	"testing"
)

// TestWorkersSet: an explicit count wins; 0 gives back the count the process
// started with, the GOMAXPROCS variable's when it set one, else the
// runtime's default, which never exceeds the CPUs.
func TestWorkersSet(t *testing.T) {
	procs := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(procs) })

	env := workers{startup: 3, fromEnv: true}
	if prev := env.set(1); prev != procs || runtime.GOMAXPROCS(0) != 1 {
		t.Fatalf("set(1): previous %d (want %d), now %d (want 1)", prev, procs, runtime.GOMAXPROCS(0))
	}
	if prev := env.set(0); prev != 1 || runtime.GOMAXPROCS(0) != 3 {
		t.Fatalf("set(0) with GOMAXPROCS=3 at start: previous %d (want 1), now %d (want 3)", prev, runtime.GOMAXPROCS(0))
	}

	// More workers than CPUs is never the runtime's default.
	over := runtime.NumCPU() + 3
	def := workers{startup: procs}
	if prev := def.set(over); prev != 3 || runtime.GOMAXPROCS(0) != over {
		t.Fatalf("set(%d): previous %d (want 3), now %d", over, prev, runtime.GOMAXPROCS(0))
	}
	if prev := def.set(0); prev != over || runtime.GOMAXPROCS(0) > runtime.NumCPU() {
		t.Fatalf("set(0) without GOMAXPROCS: previous %d (want %d), now %d, want the default (at most %d CPUs)",
			prev, over, runtime.GOMAXPROCS(0), runtime.NumCPU())
	}
}

func TestWorkersSource(t *testing.T) {
	for _, c := range []struct {
		w    workers
		n    int
		want string
	}{
		{workers{fromEnv: true}, 2, "config"},
		{workers{fromEnv: true}, 0, "GOMAXPROCS environment variable"},
		{workers{}, 0, "CPUs available"},
	} {
		if got := c.w.source(c.n); got != c.want {
			t.Errorf("%+v.source(%d) = %q, want %q", c.w, c.n, got, c.want)
		}
	}
}
