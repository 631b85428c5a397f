package main

import (
	"log/slog"
	"os"
	"runtime"
	"strconv"
)

// workers applies the config's workers setting, the process's GOMAXPROCS.
// It belongs to serve rather than to the proxy package: GOMAXPROCS is the
// whole process's, and tests run several proxies in one process.
//
// Since Go 1.25 the runtime's own GOMAXPROCS is the CPUs the process may
// use (its CPU affinity and cgroup CPU limit) and follows that limit while
// running, unless the GOMAXPROCS environment variable or a call to
// runtime.GOMAXPROCS set it. So workers: 0 leaves the runtime's choice
// alone, and a reload back to 0 hands the choice back to the runtime.
type workers struct {
	startup int  // GOMAXPROCS when serve started, before workers changed it
	fromEnv bool // the GOMAXPROCS environment variable set startup
}

// startupWorkers records the worker count the process started with. Call
// it before anything sets GOMAXPROCS.
func startupWorkers() workers {
	// The runtime takes the variable only when it is a positive integer.
	n, err := strconv.Atoi(os.Getenv("GOMAXPROCS"))
	return workers{startup: runtime.GOMAXPROCS(0), fromEnv: err == nil && n > 0}
}

// set makes the worker count n, or with n == 0 the count the process
// started with (the GOMAXPROCS environment variable's, else the runtime's
// default, which then follows the CPU limit again), and returns the count
// before. An unchanged count costs nothing: the runtime stops the world
// only to change it.
func (w workers) set(n int) (prev int) {
	prev = runtime.GOMAXPROCS(0)
	switch {
	case n > 0:
		runtime.GOMAXPROCS(n)
	case w.fromEnv:
		runtime.GOMAXPROCS(w.startup)
	default:
		runtime.SetDefaultGOMAXPROCS()
	}
	return prev
}

// source says where a worker count of n, as configured, comes from, for
// the log.
func (w workers) source(n int) string {
	switch {
	case n > 0:
		return "config"
	case w.fromEnv:
		return "GOMAXPROCS environment variable"
	}
	return "CPUs available"
}

// reload applies n after a reload and logs a change.
func (w workers) reload(n int, log *slog.Logger) {
	if prev := w.set(n); prev != runtime.GOMAXPROCS(0) {
		log.Info("workers changed", "from", prev, "to", runtime.GOMAXPROCS(0), "source", w.source(n))
	}
}
