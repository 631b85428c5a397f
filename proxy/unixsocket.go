package proxy

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"time"

	"github.com/shardgate/shardgate/topology"
)

// UnixSocketPath is where a proxy listening on port has its Unix socket in
// dir: libpq's name for it, so that `psql -h dir -p port` finds it.
func UnixSocketPath(dir string, port int) string {
	return filepath.Join(dir, ".s.PGSQL."+strconv.Itoa(port))
}

// listenUnix opens the Unix socket of cfg for port, with its mode and
// group. A socket file left by a process that died is replaced; one that
// still answers is another proxy's, and is left alone. Closing the
// listener removes the file.
func listenUnix(cfg *topology.Config, port int) (net.Listener, error) {
	path := UnixSocketPath(cfg.UnixSocketDir, port)
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("unix_socket_dir: %w", err)
	}
	if err := setSocketOwnership(path, cfg); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// removeStaleSocket removes the socket file at path if nothing accepts
// connections on it.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("unix_socket_dir: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("unix_socket_dir: %s exists and is not a socket", path)
	}
	if conn, err := net.DialTimeout("unix", path, time.Second); err == nil {
		conn.Close()
		return fmt.Errorf("unix_socket_dir: %s is in use: is another shardgate running on this port?", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("unix_socket_dir: removing stale socket: %w", err)
	}
	return nil
}

func setSocketOwnership(path string, cfg *topology.Config) error {
	if err := os.Chmod(path, fs.FileMode(cfg.UnixSocketMode)); err != nil {
		return fmt.Errorf("unix_socket_mode: %w", err)
	}
	if cfg.UnixSocketGroup == "" {
		return nil
	}
	g, err := user.LookupGroup(cfg.UnixSocketGroup)
	if err != nil {
		return fmt.Errorf("unix_socket_group: %w", err)
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return fmt.Errorf("unix_socket_group %s: gid %q: %w", cfg.UnixSocketGroup, g.Gid, err)
	}
	if err := os.Chown(path, -1, gid); err != nil {
		return fmt.Errorf("unix_socket_group: %w", err)
	}
	return nil
}
