package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// writePidfile writes this process's id to path, as PgBouncer's pidfile:
// a file that names a live process means another shardgate runs with this
// config, and the start is refused; one naming a dead process is stale and
// replaced. The returned function removes the file if it is still ours.
func writePidfile(path string) (remove func(), err error) {
	pid := os.Getpid()
	// O_EXCL settles two starts at once: only one creates the file. A
	// stale file is removed and the create tried again.
	for range 3 {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, fs.ErrExist) {
			if err := removeStalePidfile(path); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("pidfile: %w", err)
		}
		_, err = fmt.Fprintf(f, "%d\n", pid)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
			return nil, fmt.Errorf("pidfile: %w", err)
		}
		return func() {
			if owner, _ := readPidfile(path); owner == pid {
				os.Remove(path)
			}
		}, nil
	}
	return nil, fmt.Errorf("pidfile %s: another process keeps creating it", path)
}

// removeStalePidfile removes the pidfile at path unless it names a live
// process other than this one (after a container restart, this process
// may have the pid a dead one wrote).
func removeStalePidfile(path string) error {
	pid, err := readPidfile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err == nil && pid != os.Getpid() && processAlive(pid) {
		return fmt.Errorf("pidfile %s names process %d, which is running: is shardgate already started?", path, pid)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("pidfile: removing stale %s: %w", path, err)
	}
	return nil
}

// readPidfile returns the pid in the file at path; a file without one
// reads as pid 0 with an error.
func readPidfile(path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pidfile %s holds no process id", path)
	}
	return pid, nil
}

// processAlive reports whether a process with id pid exists; EPERM means it
// does, under another user.
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
