package main

import (
	"encoding/binary"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A real line (bash, PID 4242) with utime 1500 and stime 250 in fields 14
// and 15.
const statTail = " S 4000 4242 4000 34816 4242 4194560 2714 0 0 0 1500 250 0 0 20 0 1 0 12345 10850304 1290 18446744073709551615 1 1 0 0 0 0 65536 3686404 1266761467 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n"

func TestParseStatCPUTicks(t *testing.T) {
	for name, comm := range map[string]string{
		"plain":              "(bash)",
		"spaces":             "(my proxy 2)",
		"parens and spaces":  "(a) 1 2 (b) S 9 9)",
		"empty name":         "()",
		"digits like fields": "(14 15 16)",
	} {
		t.Run(name, func(t *testing.T) {
			got, err := parseStatCPUTicks([]byte("4242 " + comm + statTail))
			if err != nil || got != 1750 {
				t.Errorf("got %d, %v; want 1500+250 = 1750", got, err)
			}
		})
	}
}

func TestParseStatCPUTicksRejects(t *testing.T) {
	for name, c := range map[string]struct{ stat, want string }{
		"no closing paren": {"4242 (bash S 1 2 3", "no ')'"},
		"truncated":        {"4242 (bash) S 4000 4242 4000 34816 4242 4194560 2714 0 0 0 1500", "fields after the command name"},
		"not a number":     {"4242 (bash)" + strings.Replace(statTail, " 1500 ", " x ", 1), "utime"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := parseStatCPUTicks([]byte(c.stat))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}

func auxv(pairs ...uint64) []byte {
	b := make([]byte, 0, 8*len(pairs))
	for _, p := range pairs {
		b = binary.NativeEndian.AppendUint64(b, p)
	}
	return b
}

func TestParseAuxvClkTck(t *testing.T) {
	for name, c := range map[string]struct {
		auxv []byte
		hz   int64
		ok   bool
	}{
		"found":             {auxv(6, 4096, atClkTck, 100, 0, 0), 100, true},
		"other value":       {auxv(atClkTck, 250, 0, 0), 250, true},
		"after AT_NULL":     {auxv(6, 4096, 0, 0, atClkTck, 100), 0, false},
		"absent":            {auxv(6, 4096, 0, 0), 0, false},
		"zero is no answer": {auxv(atClkTck, 0, 0, 0), 0, false},
		"truncated entry":   {auxv(6, 4096, atClkTck)[:20], 0, false},
	} {
		t.Run(name, func(t *testing.T) {
			hz, ok := parseAuxvClkTck(c.auxv)
			if hz != c.hz || ok != c.ok {
				t.Errorf("got %d, %v; want %d, %v", hz, ok, c.hz, c.ok)
			}
		})
	}
}

// TestProcessCPU: /proc/self/stat, read through the tick length from the
// auxiliary vector, agrees with getrusage on the CPU this test burns.
func TestProcessCPU(t *testing.T) {
	clock := newCPUClock()
	if clock.ticksPerSecond != 100 {
		t.Logf("clock ticks per second: %d", clock.ticksPerSecond)
	}
	before, err := clock.processCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	ruBefore := rusageCPU(t)
	deadline := time.Now().Add(10 * time.Second)
	for rusageCPU(t)-ruBefore < 300*time.Millisecond {
		if time.Now().After(deadline) {
			t.Fatal("could not burn 300 ms of CPU in 10 s")
		}
		for i := 0; i < 1e6; i++ {
			_ = i * i
		}
	}
	after, err := clock.processCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	ru := rusageCPU(t) - ruBefore
	got := after - before
	// Ticks are 10 ms, and other goroutines (the GC) count on both sides.
	if got < ru*3/4 || got > ru*5/4+20*time.Millisecond {
		t.Errorf("/proc/self/stat says %v of CPU, getrusage %v", got, ru)
	}
}

func rusageCPU(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
