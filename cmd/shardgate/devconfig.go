package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/shardgate/shardgate/sandbox"
	"github.com/shardgate/shardgate/topology"
)

const devConfigHeader = `# Written by shardgate dev at the sandbox's first start. From then on dev reads it
# as you leave it; it rewrites only shard DSN ports that point at no server of
# the sandbox (see shardgate dev --help). Delete this file to get a fresh one.
`

// loadDevConfig reads the sandbox's config file, or returns nil if there is
// none yet. A file that does not parse fails here, before any server starts.
func loadDevConfig(path string) (*topology.Config, error) {
	cfg, err := topology.LoadConfig(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w\n(fix %s, or delete it to have shardgate dev write a new one)", err, path)
	}
	return cfg, nil
}

// devConfig returns the config dev serves: the file at path, written first
// if there is none, with stale sandbox ports corrected in the file and the
// listen flags given on the command line applied over it.
func devConfig(cluster *sandbox.Cluster, path string, o devOptions, log *slog.Logger) (*topology.Config, error) {
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		data = generateDevConfig(cluster, o.listen, o.metricsListen)
		if err := writeFileAtomic(path, data); err != nil {
			return nil, err
		}
		log.Info("wrote config", "path", path)
	case err != nil:
		return nil, err
	default:
		if data, err = fixDevConfig(path, data, cluster, log); err != nil {
			return nil, err
		}
	}
	cfg, err := topology.ParseConfig(path, data)
	if err != nil {
		return nil, err
	}
	if o.listenSet && cfg.Listen != o.listen {
		log.Info("--listen overrides the config's listen", "config", cfg.Listen, "listen", o.listen)
		cfg.Listen = o.listen
	}
	if o.metricsSet && cfg.MetricsListen != o.metricsListen {
		log.Info("--metrics-listen overrides the config's metrics_listen", "config", cfg.MetricsListen, "metrics_listen", o.metricsListen)
		cfg.MetricsListen = o.metricsListen
	}
	return cfg, nil
}

// generateDevConfig is the config of a new sandbox. The sandbox trusts
// every user, so its postgres user may as well open the admin console.
func generateDevConfig(cluster *sandbox.Cluster, listen, metricsListen string) []byte {
	text := append([]byte(devConfigHeader), cluster.ConfigYAML(listen)...)
	if metricsListen != "" {
		text = fmt.Appendf(text, "metrics_listen: %s\npprof: true\n", metricsListen)
	}
	// A read after a write waits for the replica to replay it rather than
	// go to the primary, so the sandbox shows reads on its replicas.
	text = append(text, "ryw_wait: 1s\n"...)
	return append(text, "admin_users: [postgres]\n"...)
}

// fixDevConfig points shard DSNs whose port is no server of the sandbox at
// the sandbox's server, rewriting only those DSNs in the file, and warns of
// shards the sandbox lacks.
func fixDevConfig(path string, data []byte, cluster *sandbox.Cluster, log *slog.Logger) ([]byte, error) {
	cfg, err := topology.ParseConfig(path, data)
	if err != nil {
		return nil, err
	}
	fixes, missing := staleDSNs(cfg, cluster)
	for _, name := range missing {
		log.Warn("a shard of the config is not in the sandbox; dev starts no server for it", "config", path, "shard", name)
	}
	if len(fixes) == 0 {
		return data, nil
	}
	text := string(data)
	for _, f := range fixes {
		if !strings.Contains(text, f.old) {
			return nil, fmt.Errorf("%s: shard %s's %s %s is not on a port of the sandbox: its server listens on %d; fix the DSN", path, f.shard, f.role, f.old, f.port)
		}
		text = strings.ReplaceAll(text, f.old, f.new)
		log.Warn("config DSN pointed at no sandbox server; rewrote its port", "config", path, "shard", f.shard, "role", f.role, "was", f.old, "now", f.new)
	}
	if err := writeFileAtomic(path, []byte(text)); err != nil {
		return nil, err
	}
	return []byte(text), nil
}

// dsnFix is one shard DSN to point at its sandbox server.
type dsnFix struct {
	shard, role string
	old, new    string
	port        int
}

// staleDSNs lists the loopback DSNs of cfg's shards whose port is not the
// port of any sandbox server, with the DSN of the sandbox server of the
// same shard and role. A DSN on another sandbox port is left alone: the
// user may mean it.
func staleDSNs(cfg *topology.Config, cluster *sandbox.Cluster) (fixes []dsnFix, missing []string) {
	ports := map[int]bool{}
	for _, sh := range cluster.Shards {
		ports[sh.Primary.Port] = true
		for _, r := range sh.Replicas {
			ports[r.Port] = true
		}
	}
	check := func(shard, role, dsn string, s *sandbox.Server) {
		if fixed, ok := repoint(dsn, s.Port, ports); ok {
			fixes = append(fixes, dsnFix{shard: shard, role: role, old: dsn, new: fixed, port: s.Port})
		}
	}
	for _, sc := range cfg.Shards {
		sh := cluster.Shard(sc.Name)
		if sh == nil {
			missing = append(missing, sc.Name)
			continue
		}
		check(sc.Name, "primary", sc.Primary, sh.Primary)
		for i, dsn := range sc.Replicas {
			if i < len(sh.Replicas) {
				check(sc.Name, fmt.Sprintf("replica %d", i+1), dsn, sh.Replicas[i])
			}
		}
	}
	return fixes, missing
}

// repoint returns dsn with its port made port, if dsn is a postgres URL on
// a loopback host with a port not in sandboxPorts.
func repoint(dsn string, port int, sandboxPorts map[int]bool) (string, bool) {
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || strings.Contains(u.Host, ",") {
		return "", false
	}
	host := u.Hostname()
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return "", false
	}
	old := 5432
	if p := u.Port(); p != "" {
		if old, err = strconv.Atoi(p); err != nil {
			return "", false
		}
	}
	if sandboxPorts[old] {
		return "", false
	}
	return strings.Replace(dsn, u.Host, net.JoinHostPort(host, strconv.Itoa(port)), 1), true
}

// writeFileAtomic replaces path so that a reader (a RELOAD, a reshard) never
// sees half a file.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return errors.Join(err, os.Remove(tmp))
	}
	return nil
}
