package sandbox

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// runLockFile is held, for as long as it runs, by the process that owns the
// sandbox's servers (shardgate dev): another owner would stop servers that
// are not its own. It is not the layout lock of AddShard (sandbox.lock),
// which any process takes briefly to change sandbox.json.
const runLockFile = "run.lock"

// InUseError is Lock's error when another process holds the sandbox.
type InUseError struct {
	Dir    string // as given to Lock
	PID    int    // 0 if the holder has not written it yet
	Holder string // what the holder called itself in Lock
}

func (e *InUseError) Error() string {
	who := cmp.Or(e.Holder, "another process")
	if e.PID == 0 {
		return fmt.Sprintf("sandbox %s is in use by %s", e.Dir, who)
	}
	return fmt.Sprintf("sandbox %s is in use by %s (pid %d)", e.Dir, who, e.PID)
}

// Lock takes the sandbox in dir for this process, creating dir if needed,
// and fails at once with an *InUseError if another process holds it. holder
// (e.g. "shardgate dev") and the pid are written to the lock file so that
// the error of the next one names them. The lock is an flock(2): the kernel
// releases it when the process ends, however it ends, so it never goes
// stale; and as Go opens files close-on-exec, the PostgreSQL servers the
// holder starts do not inherit it.
func Lock(dir, holder string) (unlock func() error, err error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	cred, err := PostgresCred()
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	if err := prepareDir(abs, cred); err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	path := filepath.Join(abs, runLockFile)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, inUse(dir, path)
		}
		return nil, fmt.Errorf("sandbox: locking %s: %w", path, err)
	}
	if err := writeHolder(f, holder); err != nil {
		f.Close()
		return nil, fmt.Errorf("sandbox: %s: %w", path, err)
	}
	return f.Close, nil
}

func writeHolder(f *os.File, holder string) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err := f.WriteAt([]byte(fmt.Sprintf("%d\n%s\n", os.Getpid(), holder)), 0)
	return err
}

// inUse reads who holds the lock file at path. The holder may not have
// written it yet, so a short or empty file is no error.
func inUse(dir, path string) *InUseError {
	e := &InUseError{Dir: dir}
	data, _ := os.ReadFile(path)
	pid, holder, _ := strings.Cut(string(data), "\n")
	e.PID, _ = strconv.Atoi(strings.TrimSpace(pid))
	e.Holder = strings.TrimSpace(holder)
	return e
}
