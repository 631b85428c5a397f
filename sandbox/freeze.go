package sandbox

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Freeze stops server s with SIGSTOP, postmaster and backends alike, as a
// hung machine would look: its sockets stay open and its kernel still
// answers TCP, but nothing it runs makes progress. thaw resumes them.
func (s *Server) Freeze() (thaw func() error, err error) {
	pids, err := s.processes()
	if err != nil {
		return nil, err
	}
	// The postmaster first, so it forks no backend the loop would miss.
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			return nil, fmt.Errorf("freeze %s: pid %d: %w", s.Name, pid, err)
		}
	}
	return func() error {
		var first error
		for _, pid := range pids {
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil && first == nil {
				first = fmt.Errorf("thaw %s: pid %d: %w", s.Name, pid, err)
			}
		}
		return first
	}, nil
}

// processes lists the server's postmaster (from postmaster.pid) and then
// its children.
func (s *Server) processes() ([]int, error) {
	data, err := os.ReadFile(filepath.Join(s.DataDir, "postmaster.pid"))
	if err != nil {
		return nil, fmt.Errorf("%s is not running: %w", s.Name, err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	postmaster, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		return nil, fmt.Errorf("%s: bad postmaster.pid: %w", s.Name, err)
	}
	pids := []int{postmaster}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			continue // exited meanwhile
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		end := bytes.LastIndexByte(b, ')')
		fields := strings.Fields(string(b[end+1:]))
		if len(fields) < 2 {
			continue
		}
		if ppid, _ := strconv.Atoi(fields[1]); ppid == postmaster {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(path)))
			pids = append(pids, pid)
		}
	}
	return pids, nil
}
