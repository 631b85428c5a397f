package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Server is one PostgreSQL server, listening on 127.0.0.1:Port only.
type Server struct {
	Name    string `json:"name"` // e.g. "s0-primary", "s0-replica1"
	Port    int    `json:"port"`
	DataDir string `json:"data_dir"`
}

// DSN returns a URL for connecting to database on s.
func (s *Server) DSN(database string) string {
	return s.url(database) + "?sslmode=disable"
}

func (s *Server) url(database string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s", s.Port, url.PathEscape(database))
}

func (s *Server) logFile() string { return filepath.Join(s.DataDir, "server.log") }

// runner runs PostgreSQL programs, as the postgres OS user when we are root.
type runner struct {
	bin  string
	cred *syscall.Credential // nil: run as ourselves
	dir  string              // working directory, one the programs can access
	env  []string
}

func newRunner(binDir, dir string) (*runner, error) {
	r := &runner{bin: binDir, dir: dir}
	if r.bin == "" {
		r.bin = findBinDir()
	}
	if _, err := os.Stat(filepath.Join(r.bin, "pg_ctl")); err != nil {
		return nil, fmt.Errorf("PostgreSQL binaries not found (set Options.BinDir): %w", err)
	}
	// Stray PGDATA, PGPORT, ... from the environment must not redirect the tools.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			r.env = append(r.env, kv)
		}
	}
	cred, err := PostgresCred()
	if err != nil {
		return nil, err
	}
	r.cred = cred
	return r, nil
}

// PostgresCred is who runs PostgreSQL programs (and PgBouncer in the
// benchmarks): nil for ourselves, the OS user postgres when we are root
// (both refuse to run as root).
func PostgresCred() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root needs an OS user named postgres to run PostgreSQL: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func findBinDir() string {
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dir := strings.TrimSpace(string(out))
		if _, err := os.Stat(filepath.Join(dir, "pg_ctl")); err == nil {
			return dir
		}
	}
	const debian = "/usr/lib/postgresql/15/bin"
	if _, err := os.Stat(filepath.Join(debian, "pg_ctl")); err == nil {
		return debian
	}
	if path, err := exec.LookPath("pg_ctl"); err == nil {
		return filepath.Dir(path)
	}
	return debian
}

func (r *runner) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(r.bin, name), args...)
	cmd.Dir = r.dir
	cmd.Env = r.env
	if r.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: r.cred}
	}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// exec runs a program; its error carries the tail of the program's output.
func (r *runner) exec(ctx context.Context, name string, args ...string) error {
	cmd := r.command(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil && !errors.Is(err, ctx.Err()) { // "signal: killed" alone would hide why
			err = fmt.Errorf("%w (%w)", context.Cause(ctx), err)
		}
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, tail(out.String()))
	}
	return nil
}

func (r *runner) running(ctx context.Context, s *Server) bool {
	return r.command(ctx, "pg_ctl", "status", "-D", s.DataDir).Run() == nil
}

// prepareDir creates dir and, as root, hands it to the postgres user.
func prepareDir(dir string, cred *syscall.Credential) error {
	created := map[string]bool{}
	for p := dir; ; p = filepath.Dir(p) {
		if _, err := os.Stat(p); err == nil || filepath.Dir(p) == p {
			break
		}
		created[p] = true
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if cred == nil {
		return nil
	}
	if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
		return err
	}
	tmp := filepath.Clean(os.TempDir()) + string(filepath.Separator)
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		if !traversable(st, cred) {
			if !created[p] && !strings.HasPrefix(p, tmp) {
				return fmt.Errorf("the postgres user cannot traverse %s (mode %#o); chmod o+x it or choose another Dir", p, st.Mode().Perm())
			}
			if err := os.Chmod(p, st.Mode().Perm()|0o011); err != nil {
				return err
			}
		}
		if filepath.Dir(p) == p {
			return nil
		}
	}
}

func traversable(st os.FileInfo, cred *syscall.Credential) bool {
	mode := st.Mode().Perm()
	sys, ok := st.Sys().(*syscall.Stat_t)
	switch {
	case mode&0o001 != 0:
		return true
	case !ok:
		return false
	case sys.Uid == cred.Uid:
		return mode&0o100 != 0
	case sys.Gid == cred.Gid:
		return mode&0o010 != 0
	}
	return false
}

func (c *Cluster) initPrimary(ctx context.Context, s *Server) error {
	c.log.Info("initdb " + s.Name)
	args := []string{"-D", s.DataDir, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"}
	if c.Fast {
		args = append(args, "-N")
	}
	if err := c.run.exec(ctx, "initdb", args...); err != nil {
		return err
	}
	conf := fmt.Sprintf(`
# shardgate sandbox
listen_addresses = '127.0.0.1'
port = %d
unix_socket_directories = ''
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
# Concurrent base backups each checkpoint: keep the WAL the others still need
# before their slots exist.
wal_keep_size = 64MB
hot_standby = on
max_connections = 200
max_prepared_transactions = 20
`, s.Port)
	// synchronous_commit stays on even when fast: with fsync off a commit
	// costs only a write, and off would hold WAL back from the replicas for
	// up to wal_writer_delay (200 ms), far from how replicas lag in production.
	if c.Fast {
		conf += `fsync = off
full_page_writes = off
shared_buffers = 16MB
`
	}
	return appendConf(s, conf)
}

func (c *Cluster) initReplica(ctx context.Context, primary, s *Server) error {
	c.log.Info("pg_basebackup "+s.Name, "from", primary.Name)
	// A slot keeps the primary's WAL for the replica while it is stopped.
	slot := strings.ReplaceAll(s.Name, "-", "_")
	args := []string{"-h", "127.0.0.1", "-p", strconv.Itoa(primary.Port), "-U", "postgres",
		"-D", s.DataDir, "-R", "-X", "stream", "-c", "fast", "-C", "-S", slot}
	if c.Fast {
		args = append(args, "-N")
	}
	if err := c.run.exec(ctx, "pg_basebackup", args...); err != nil {
		return err
	}
	// The backup copied the primary's log along with its data.
	if err := os.Remove(s.logFile()); err != nil && !os.IsNotExist(err) {
		return err
	}
	// Later settings win, so this overrides the primary's port copied above.
	return appendConf(s, fmt.Sprintf("port = %d\n", s.Port))
}

func appendConf(s *Server, text string) error {
	f, err := os.OpenFile(filepath.Join(s.DataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(text)
	return errors.Join(err, f.Close())
}

func (c *Cluster) start(ctx context.Context, s *Server, started *startedSet) error {
	if err := c.run.exec(ctx, "pg_ctl", "-D", s.DataDir, "-l", s.logFile(), "-w", "-t", "60", "start"); err != nil {
		// pg_ctl may give up while the server keeps starting.
		c.stop(context.WithoutCancel(ctx), s)
		return fmt.Errorf("starting %s: %w\n%s:\n%s", s.Name, err, s.logFile(), logTail(s))
	}
	started.add(s)
	c.log.Info(fmt.Sprintf("started %s on 127.0.0.1:%d", s.Name, s.Port))
	return nil
}

func (c *Cluster) stop(ctx context.Context, s *Server) error {
	if !c.run.running(ctx, s) {
		return nil
	}
	if err := c.run.exec(ctx, "pg_ctl", "-D", s.DataDir, "-m", "fast", "-w", "-t", "60", "stop"); err != nil {
		return fmt.Errorf("stopping %s: %w", s.Name, err)
	}
	c.log.Info("stopped " + s.Name)
	return nil
}

func (c *Cluster) createDatabase(ctx context.Context, s *Server, schema string) error {
	conn, err := connect(ctx, s, "postgres")
	if err != nil {
		return err
	}
	exists, err := queryBool(ctx, conn, fmt.Sprintf("SELECT count(*) > 0 FROM pg_database WHERE datname = '%s'",
		strings.ReplaceAll(c.Database, "'", "''")))
	if err == nil && !exists {
		c.log.Info("creating database", "server", s.Name, "database", c.Database)
		_, err = conn.Exec(ctx, `CREATE DATABASE "`+strings.ReplaceAll(c.Database, `"`, `""`)+`"`).ReadAll()
	}
	conn.Close(ctx)
	if err != nil || strings.TrimSpace(schema) == "" {
		return wrapSQL(s, err)
	}
	if conn, err = connect(ctx, s, c.Database); err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, schema).ReadAll()
	if err != nil {
		return fmt.Errorf("%s: running schema: %w", s.Name, err)
	}
	return nil
}

func waitRecovery(ctx context.Context, s *Server) error {
	conn, err := connect(ctx, s, "postgres")
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	recovering, err := queryBool(ctx, conn, "SELECT pg_is_in_recovery()")
	if err == nil && !recovering {
		err = errors.New("pg_is_in_recovery() is false: not a standby")
	}
	return wrapSQL(s, err)
}

func ping(ctx context.Context, s *Server) error {
	conn, err := connect(ctx, s, "postgres")
	if err == nil {
		conn.Close(ctx)
	}
	return err
}

// connect retries for a while: a server reported as running may still be
// starting up, e.g. one a previous Start left behind.
func connect(ctx context.Context, s *Server, database string) (*pgconn.PgConn, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		conn, err := pgconn.Connect(ctx, s.DSN(database)+"&connect_timeout=5")
		if err == nil {
			return conn, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connecting to %s: %w\n%s:\n%s", s.Name, err, s.logFile(), logTail(s))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func queryBool(ctx context.Context, conn *pgconn.PgConn, sql string) (bool, error) {
	results, err := conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		return false, err
	}
	if len(results) != 1 || len(results[0].Rows) != 1 || len(results[0].Rows[0]) != 1 {
		return false, fmt.Errorf("%s: want one value", sql)
	}
	return string(results[0].Rows[0][0]) == "t", nil
}

func wrapSQL(s *Server, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w\n%s:\n%s", s.Name, err, s.logFile(), logTail(s))
	}
	return nil
}

// freePorts reserves n distinct free loopback ports, none in avoid (ports
// of stopped servers, free now but taken again when they start). Holding
// all listeners until the end keeps the kernel from handing out the same
// port twice.
func freePorts(n int, avoid map[int]bool) ([]int, error) {
	var ports []int
	for len(ports) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		if port := l.Addr().(*net.TCPAddr).Port; !avoid[port] {
			ports = append(ports, port)
		}
	}
	return ports, nil
}

// fixedPorts checks that the n ports from first on are free, for servers
// that must take exactly those.
func fixedPorts(first, n int) ([]int, error) {
	if first < 1024 || first+n-1 > 65535 {
		return nil, fmt.Errorf("ports %d..%d: want ports within 1024..65535", first, first+n-1)
	}
	ports := make([]int, n)
	for i := range ports {
		ports[i] = first + i
		if !portFree(ports[i]) {
			return nil, fmt.Errorf("port %d (%d of the ports %d..%d the servers need) is in use by another process; stop it or choose other ports",
				ports[i], i+1, first, first+n-1)
		}
	}
	return ports, nil
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// startedSet records the servers a Start call started, to undo it on failure.
type startedSet struct {
	mu      sync.Mutex
	servers []*Server
}

func (ss *startedSet) add(s *Server) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.servers = append(ss.servers, s)
}

// stop stops in reverse start order, which puts replicas before their primaries.
func (ss *startedSet) stop(c *Cluster) {
	if err := ss.stopAll(c); err != nil {
		c.log.Warn("cleanup", "err", err)
	}
}

func (ss *startedSet) stopAll(c *Cluster) error {
	ss.mu.Lock()
	list := slices.Clone(ss.servers)
	ss.mu.Unlock()
	var errs []error
	for _, s := range slices.Backward(list) {
		errs = append(errs, c.stop(context.Background(), s))
	}
	return errors.Join(errs...)
}

// each runs fn for 0..n-1 concurrently; the first error cancels the others.
func each(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for i := range n {
		wg.Go(func() {
			if err := fn(ctx, i); err != nil {
				once.Do(func() { first = err; cancel() })
			}
		})
	}
	wg.Wait()
	return first
}

func logTail(s *Server) string {
	b, err := os.ReadFile(s.logFile())
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	return tail(string(b))
}

// tail returns the last lines of out, which is where the error usually is.
func tail(out string) string {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return strings.Join(lines, "\n")
}
