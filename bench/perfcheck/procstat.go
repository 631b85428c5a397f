package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"time"
)

// defaultClockTicks is USER_HZ, the unit of utime and stime in
// /proc/PID/stat: 100 on every architecture Go runs Linux on. It is used
// only when the auxiliary vector does not say.
const defaultClockTicks = 100

// atClkTck is AT_CLKTCK, the auxiliary vector entry that carries
// sysconf(_SC_CLK_TCK), which Go cannot call without cgo.
const atClkTck = 17

// cpuClock reads processes' CPU time from /proc.
type cpuClock struct {
	ticksPerSecond int64
}

// newCPUClock learns the tick length from /proc/self/auxv (whose entries
// are 64-bit only on 64-bit platforms).
func newCPUClock() cpuClock {
	auxv, err := os.ReadFile("/proc/self/auxv")
	if err != nil || strconv.IntSize != 64 {
		return cpuClock{defaultClockTicks}
	}
	if hz, ok := parseAuxvClkTck(auxv); ok {
		return cpuClock{hz}
	}
	return cpuClock{defaultClockTicks}
}

// processCPU is the user+system CPU time pid has used so far, all its
// threads together.
func (c cpuClock) processCPU(pid int) (time.Duration, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	ticks, err := parseStatCPUTicks(stat)
	if err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return time.Duration(ticks) * time.Second / time.Duration(c.ticksPerSecond), nil
}

// parseStatCPUTicks returns utime+stime, in clock ticks, from the contents
// of /proc/PID/stat. The second field, the command name in parentheses, may
// itself hold spaces and parentheses (a process may name itself anything),
// so the fields are counted from the last ')' rather than split from the
// start.
func parseStatCPUTicks(stat []byte) (uint64, error) {
	end := bytes.LastIndexByte(stat, ')')
	if end < 0 {
		return 0, fmt.Errorf("no ')' closing the command name in %q", stat)
	}
	// After the name: state (field 3), ..., utime (14), stime (15).
	const utime, stime = 14 - 3, 15 - 3
	f := bytes.Fields(stat[end+1:])
	if len(f) <= stime {
		return 0, fmt.Errorf("%d fields after the command name, want at least %d", len(f), stime+1)
	}
	u, err := strconv.ParseUint(string(f[utime]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("utime: %w", err)
	}
	s, err := strconv.ParseUint(string(f[stime]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stime: %w", err)
	}
	return u + s, nil
}

// parseAuxvClkTck finds AT_CLKTCK in an auxiliary vector of 64-bit
// native-endian (type, value) pairs.
func parseAuxvClkTck(auxv []byte) (int64, bool) {
	for i := 0; i+16 <= len(auxv); i += 16 {
		typ := binary.NativeEndian.Uint64(auxv[i:])
		val := binary.NativeEndian.Uint64(auxv[i+8:])
		switch {
		case typ == 0: // AT_NULL ends the vector
			return 0, false
		case typ == atClkTck && val > 0:
			return int64(val), true
		}
	}
	return 0, false
}
