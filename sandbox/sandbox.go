// Package sandbox runs real local PostgreSQL clusters for shardgate: N shards,
// each a primary plus streaming replicas, on free loopback ports. It backs
// `shardgate dev` (a sandbox the user keeps across runs) and integration
// tests (throwaway clusters with Options.Fast). A process that runs a
// sandbox for its user, as dev does, holds it with Lock so that a second
// one cannot stop its servers.
//
// When the process runs as root, every PostgreSQL program is run as the OS
// user "postgres" (PostgreSQL refuses to run as root). Options.Dir is then
// chowned to that user, and any parent directory of Dir that the user cannot
// traverse is made traversable (mode |= 0o011) if it was created by Start or
// lies under os.TempDir(), as the 0700 directories made by t.TempDir and
// os.MkdirTemp are; any other untraversable parent is an error.
package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// NoReplicas as Options.Replicas starts shards without replicas (0 means the
// default of 1).
const NoReplicas = -1

// Options configures Start. Zero values get the documented defaults.
type Options struct {
	Dir      string // where clusters live; created if missing; reused if it holds a sandbox
	Shards   int    // default 2
	Replicas int    // replicas per shard; 0 means 1, NoReplicas (any negative) means none
	Database string // default "app": created on every primary
	Schema   string // SQL run in Database on every primary when the database is first created
	// Fast trades durability for speed (fsync=off, ...): for throwaway test
	// clusters only, never for a sandbox a user keeps.
	Fast bool
	// BasePort, if set, gives a new sandbox's servers consecutive ports from
	// it: s0's primary, its replicas, then s1's and so on; shards added later
	// take the ports after the highest. 0: free ports the kernel picks.
	BasePort int
	Logger   *slog.Logger // nil = discard
	BinDir   string       // PostgreSQL binaries; default: pg_config --bindir, /usr/lib/postgresql/15/bin, PATH
}

// Shard is one primary and its streaming replicas.
type Shard struct {
	Name     string    `json:"name"`
	Primary  *Server   `json:"primary"`
	Replicas []*Server `json:"replicas"`
}

// Cluster is a running sandbox; its layout is also kept in Dir/sandbox.json.
type Cluster struct {
	Dir      string `json:"dir"`
	Database string `json:"database"`
	// Fast is Options.Fast of the Start that created the sandbox; shards
	// added later get the same server settings.
	Fast bool `json:"fast,omitempty"`
	// BasePort is Options.BasePort of the Start that created the sandbox.
	BasePort int      `json:"base_port,omitempty"`
	Shards   []*Shard `json:"shards"`

	run     *runner
	log     *slog.Logger
	started startedSet // by Start, for StopStarted
}

const stateFile = "sandbox.json"

// Start creates the sandbox in opts.Dir, or starts the existing one again.
// On failure it stops the servers it started; on a fresh Dir it also removes
// the data directories it created so that a retry starts clean.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	began := time.Now()
	if opts.Shards == 0 {
		opts.Shards = 2
	}
	if opts.Shards < 0 || opts.Shards > 256 {
		return nil, fmt.Errorf("sandbox: %d shards: want 1..256", opts.Shards)
	}
	switch {
	case opts.Replicas == 0:
		opts.Replicas = 1
	case opts.Replicas < 0:
		opts.Replicas = 0
	}
	if opts.Database == "" {
		opts.Database = "app"
	}
	c, err := newCluster(opts)
	if err != nil {
		return nil, err
	}
	if err := prepareDir(c.Dir, c.run.cred); err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	err = c.load()
	switch {
	case err == nil:
		if len(c.Shards) != opts.Shards || len(c.Shards[0].Replicas) != opts.Replicas || c.Database != opts.Database ||
			opts.BasePort != 0 && opts.BasePort != c.BasePort {
			c.log.Info("reusing existing sandbox; ignoring Shards, Replicas, Database and BasePort options",
				"dir", c.Dir, "shards", len(c.Shards), "replicas", len(c.Shards[0].Replicas), "database", c.Database,
				"first_port", c.Shards[0].Primary.Port)
		}
		err = c.restart(ctx)
	case errors.Is(err, fs.ErrNotExist):
		err = c.create(ctx, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	c.log.Info("sandbox ready", "dir", c.Dir, "shards", len(c.Shards), "took", time.Since(began).Round(time.Millisecond))
	return c, nil
}

// Open loads the existing sandbox in opts.Dir without starting or stopping
// any server, e.g. to add a shard to a sandbox another process runs. Only
// Dir, Logger and BinDir of opts matter.
func Open(opts Options) (*Cluster, error) {
	c, err := newCluster(opts)
	if err != nil {
		return nil, err
	}
	if err := c.load(); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("sandbox: no sandbox in %s (start one with shardgate dev --dir %[1]s)", c.Dir)
		}
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	return c, nil
}

func newCluster(opts Options) (*Cluster, error) {
	if opts.Dir == "" {
		return nil, errors.New("sandbox: Options.Dir is required")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	run, err := newRunner(opts.BinDir, dir)
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	return &Cluster{Dir: dir, run: run, log: log}, nil
}

// load fills c from Dir/sandbox.json; the error wraps fs.ErrNotExist when
// there is none.
func (c *Cluster) load() error {
	saved, err := readState(c.Dir)
	if err != nil {
		return err
	}
	c.Database, c.Fast, c.BasePort, c.Shards = saved.Database, saved.Fast, saved.BasePort, saved.Shards
	return nil
}

// readState reads the layout saved in dir, which another process may have
// extended (AddShard) since this one started.
func readState(dir string) (*Cluster, error) {
	path := filepath.Join(dir, stateFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c Cluster
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if len(c.Shards) == 0 {
		return nil, fmt.Errorf("%s lists no shards", path)
	}
	// The directory may have moved since.
	for _, sh := range c.Shards {
		sh.Primary.DataDir = filepath.Join(dir, sh.Primary.Name)
		for _, r := range sh.Replicas {
			r.DataDir = filepath.Join(dir, r.Name)
		}
	}
	return &c, nil
}

// mergeShards returns ours followed by the shards of saved that ours lacks.
func mergeShards(ours, saved []*Shard) []*Shard {
	merged := slices.Clone(ours)
	for _, sh := range saved {
		if !slices.ContainsFunc(ours, func(o *Shard) bool { return o.Name == sh.Name }) {
			merged = append(merged, sh)
		}
	}
	return merged
}

func (c *Cluster) create(ctx context.Context, opts Options) (err error) {
	c.Database, c.Fast, c.BasePort = opts.Database, opts.Fast, opts.BasePort
	perShard := 1 + opts.Replicas
	var ports []int
	if c.BasePort != 0 {
		ports, err = fixedPorts(c.BasePort, opts.Shards*perShard)
	} else {
		ports, err = freePorts(opts.Shards*perShard, nil)
	}
	if err != nil {
		return err
	}
	for i := range opts.Shards {
		sh, err := c.newShard(fmt.Sprintf("s%d", i), ports[i*perShard:(i+1)*perShard])
		if err != nil {
			return err
		}
		c.Shards = append(c.Shards, sh)
	}

	started := &c.started
	defer func() {
		if err != nil {
			started.stop(c)
			removeData(c.Shards)
		}
	}()

	// initdb is CPU-bound; everything else mostly waits on PostgreSQL.
	initdbSlots := make(chan struct{}, 2)
	err = each(ctx, len(c.Shards), func(ctx context.Context, i int) error {
		return c.initShard(ctx, c.Shards[i], opts.Schema, initdbSlots, started)
	})
	if err != nil {
		return err
	}
	return c.saveState()
}

// newShard lays out shard name on ports: the primary on the first, one
// replica on each of the others.
func (c *Cluster) newShard(name string, ports []int) (*Shard, error) {
	newServer := func(name string, port int) (*Server, error) {
		s := &Server{Name: name, Port: port, DataDir: filepath.Join(c.Dir, name)}
		if _, err := os.Lstat(s.DataDir); !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s exists but %s does not list it; remove it or pick another name or Dir", s.DataDir, filepath.Join(c.Dir, stateFile))
		}
		return s, nil
	}
	sh := &Shard{Name: name}
	var err error
	if sh.Primary, err = newServer(name+"-primary", ports[0]); err != nil {
		return nil, err
	}
	for j, port := range ports[1:] {
		r, err := newServer(fmt.Sprintf("%s-replica%d", name, j+1), port)
		if err != nil {
			return nil, err
		}
		sh.Replicas = append(sh.Replicas, r)
	}
	return sh, nil
}

// initShard creates sh's servers and starts them: initdb and the primary
// (holding a slot of initdbSlots meanwhile), the Database with schema (if
// any) on it, then a base backup of it for each replica.
func (c *Cluster) initShard(ctx context.Context, sh *Shard, schema string, initdbSlots chan struct{}, started *startedSet) error {
	p := sh.Primary
	initdbSlots <- struct{}{}
	err := c.initPrimary(ctx, p)
	<-initdbSlots
	if err != nil {
		return err
	}
	if err := c.start(ctx, p, started); err != nil {
		return err
	}
	// Before the base backups, so replicas start with the database and schema.
	if err := c.createDatabase(ctx, p, schema); err != nil {
		return err
	}
	return each(ctx, len(sh.Replicas), func(ctx context.Context, j int) error {
		r := sh.Replicas[j]
		if err := c.initReplica(ctx, p, r); err != nil {
			return err
		}
		if err := c.start(ctx, r, started); err != nil {
			return err
		}
		return waitRecovery(ctx, r)
	})
}

func removeData(shards []*Shard) {
	for _, s := range append(primaries(shards), replicas(shards)...) {
		os.RemoveAll(s.DataDir)
	}
}

// restart starts the servers of an existing sandbox that are not running.
func (c *Cluster) restart(ctx context.Context) (err error) {
	started := &c.started
	defer func() {
		if err != nil {
			started.stop(c)
		}
	}()
	bring := func(ctx context.Context, s *Server) error {
		if c.run.running(ctx, s) {
			c.log.Info("already running", "server", s.Name, "port", s.Port)
			return ping(ctx, s)
		}
		if !portFree(s.Port) {
			return fmt.Errorf("%s: port %d is taken by another process; stop it (the sandbox does not move servers to new ports)", s.Name, s.Port)
		}
		return c.start(ctx, s, started)
	}
	if err := each(ctx, len(c.Shards), func(ctx context.Context, i int) error {
		return bring(ctx, c.Shards[i].Primary)
	}); err != nil {
		return err
	}
	list := replicas(c.Shards)
	return each(ctx, len(list), func(ctx context.Context, i int) error {
		if err := bring(ctx, list[i]); err != nil {
			return err
		}
		return waitRecovery(ctx, list[i])
	})
}

// StartTemp starts a throwaway sandbox (see Start) in a new directory
// under the system's temp dir, named after prefix, for tests and
// benchmarks; remove stops it and deletes the directory. Start itself lets
// the postgres user into the directory when run as root.
func StartTemp(ctx context.Context, prefix string, opts Options) (c *Cluster, remove func() error, err error) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return nil, nil, fmt.Errorf("sandbox: %w", err)
	}
	opts.Dir = dir
	if c, err = Start(ctx, opts); err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	return c, func() error { return errors.Join(c.Stop(), os.RemoveAll(dir)) }, nil
}

// Stop stops every server, replicas first so they do not log lost
// connections to their primaries. Servers that are not running are skipped,
// so Stop is safe to call twice. Shards that another process added to Dir
// (AddShard) since this Cluster was loaded are stopped too: Stop reads
// sandbox.json again.
func (c *Cluster) Stop() error {
	ctx := context.Background()
	shards := c.Shards
	saved, err := readState(c.Dir)
	switch {
	case err == nil:
		shards = mergeShards(shards, saved.Shards)
	case !errors.Is(err, fs.ErrNotExist):
		c.log.Warn("stopping only the servers this process knows of", "err", err)
	}
	stopAll := func(list []*Server) error {
		return each(ctx, len(list), func(ctx context.Context, i int) error {
			return c.stop(ctx, list[i])
		})
	}
	return errors.Join(stopAll(replicas(shards)), stopAll(primaries(shards)))
}

// StopStarted stops exactly the servers that Start started, replicas
// first, and none that it found already running (servers another process
// runs, or a crashed one left behind): what to undo when a start-up fails
// after Start.
func (c *Cluster) StopStarted() error {
	return c.started.stopAll(c)
}

// Shard returns the shard named name, or nil if there is none.
func (c *Cluster) Shard(name string) *Shard {
	for _, sh := range c.Shards {
		if sh.Name == name {
			return sh
		}
	}
	return nil
}

// ConfigYAML returns a shardgate config for this cluster, listening on listen.
// The tables section matches schema.sql.
func (c *Cluster) ConfigYAML(listen string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "listen: %s\ndatabase: %s\npool: {mode: transaction, size: 20}\nshards:\n", listen, c.Database)
	for _, sh := range c.Shards {
		b.WriteString(c.ShardYAML(sh))
	}
	b.WriteString("keyspace:\n")
	for i, r := range keyRanges(len(c.Shards)) {
		fmt.Fprintf(&b, "  - {range: %q, shard: %s}\n", r, c.Shards[i].Name)
	}
	b.WriteString(`tables:
  users: {shard_key: id, key_type: bigint}
  posts: {shard_key: user_id, key_type: bigint}
  follows: {shard_key: user_id, key_type: bigint}
reference_tables: [countries]
`)
	return []byte(b.String())
}

// ShardYAML returns sh as an entry of a shardgate config's shards list.
func (c *Cluster) ShardYAML(sh *Shard) string {
	var replicas []string
	for _, r := range sh.Replicas {
		replicas = append(replicas, r.url(c.Database))
	}
	return fmt.Sprintf("  - name: %s\n    primary: %s\n    replicas: [%s]\n",
		sh.Name, sh.Primary.url(c.Database), strings.Join(replicas, ", "))
}

// keyRanges splits the keyspace evenly in Vitess notation, shard i starting
// at the 8-bit prefix floor(i*256/n): 2 shards are "-80", "80-".
func keyRanges(n int) []string {
	bound := func(i int) string {
		if i == 0 || i == n {
			return ""
		}
		return fmt.Sprintf("%02x", i*256/n)
	}
	ranges := make([]string, n)
	for i := range n {
		ranges[i] = bound(i) + "-" + bound(i+1)
	}
	return ranges
}

func primaries(shards []*Shard) []*Server {
	var list []*Server
	for _, sh := range shards {
		list = append(list, sh.Primary)
	}
	return list
}

func replicas(shards []*Shard) []*Server {
	var list []*Server
	for _, sh := range shards {
		list = append(list, sh.Replicas...)
	}
	return list
}

func (c *Cluster) servers() []*Server { return append(primaries(c.Shards), replicas(c.Shards)...) }

func (c *Cluster) saveState() error {
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(c.Dir, stateFile+".tmp")
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(c.Dir, stateFile))
}

// StopServer stops one server of the cluster (fast shutdown: sessions are
// terminated), e.g. to test failures; StartServer starts it again.
func (c *Cluster) StopServer(ctx context.Context, s *Server) error {
	return c.stop(ctx, s)
}

// StartServer starts a server stopped with StopServer and waits until it
// accepts connections.
func (c *Cluster) StartServer(ctx context.Context, s *Server) error {
	var started startedSet
	return c.start(ctx, s, &started)
}

// PromoteServer promotes a replica to a primary (pg_ctl promote) and waits
// until it accepts writes, e.g. to test failover.
func (c *Cluster) PromoteServer(ctx context.Context, s *Server) error {
	return c.run.exec(ctx, "pg_ctl", "-D", s.DataDir, "-w", "-t", "60", "promote")
}
