package proxy

import (
	"net"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardgate/shardgate/metrics"
)

// Metrics is the server's registry and event series; see package metrics.
func (s *Server) Metrics() *metrics.Metrics { return s.metrics }

// MetricsHandler serves /metrics, /healthz, /readyz (see Ready), and
// /debug/pprof/ when the config (as the server started with it) says
// pprof: true.
func (s *Server) MetricsHandler() http.Handler {
	return s.metrics.Handler(s.rt.Load().cfg.PProf, s.Ready)
}

// registerStateMetrics adds the series read at scrape time: they describe
// state the proxy keeps anyway, so they cost nothing between scrapes.
func (s *Server) registerStateMetrics() {
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "shardgate", Name: name, Help: help}, f)
	}
	counter := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "shardgate", Name: name, Help: help}, f)
	}
	s.metrics.Registry().MustRegister(
		gauge("client_connections", "Client connections open now.", func() float64 { return float64(s.clientCount.Load()) }),
		gauge("pinned_clients", "Transaction-mode clients keeping their server connections for session state (LISTEN, temporary tables, cursors WITH HOLD).",
			func() float64 { return float64(s.pinned.Load()) }),
		gauge("parked_clients", "Idle client connections parked: without a goroutine or read buffer until they speak.",
			func() float64 { return float64(s.park.parkedCount()) }),
		gauge("client_logins", "Client connections still logging in (not counted by max_client_conn).", func() float64 { return float64(s.logins.len()) }),
		counter("plan_cache_hits_total", "Statements whose routing analysis came from the plan cache.",
			func() float64 { return float64(s.router.CacheStats().Hits) }),
		counter("plan_cache_misses_total", "Statements parsed because the plan cache did not hold them.",
			func() float64 { return float64(s.router.CacheStats().Misses) }),
		nodeCollector{s},
	)
}

// nodeCollector reports every server's pool and health as of the scrape.
type nodeCollector struct{ s *Server }

var (
	nodeLabels    = []string{"shard", "role", "server"}
	descPoolConns = prometheus.NewDesc("shardgate_pool_connections", "Server connections by state: active (lent to a client) or idle.",
		append(nodeLabels, "state"), nil)
	descPoolWaiting = prometheus.NewDesc("shardgate_pool_waiting_clients", "Clients waiting for a server connection.", nodeLabels, nil)
	descServerUp    = prometheus.NewDesc("shardgate_server_up", "1 when the server's last health check succeeded.", nodeLabels, nil)
	descBanned      = prometheus.NewDesc("shardgate_server_banned", "1 while the server is banned (no new work).", nodeLabels, nil)
	descLagSeconds  = prometheus.NewDesc("shardgate_replica_lag_seconds", "Replica replay lag as of its last health check.", []string{"shard", "server"}, nil)
	descLagBytes    = prometheus.NewDesc("shardgate_replica_lag_bytes", "WAL bytes the replica has yet to replay, as of its last health check.", []string{"shard", "server"}, nil)
)

func (nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPoolConns, descPoolWaiting, descServerUp, descBanned, descLagSeconds, descLagBytes} {
		ch <- d
	}
}

func (nc nodeCollector) Collect(ch chan<- prometheus.Metric) {
	rt := nc.s.rt.Load()
	for _, n := range rt.backends.Nodes() {
		shard := rt.cfg.Shards[n.Shard()].Name
		st := n.Pool().Stats()
		gauge := func(d *prometheus.Desc, v float64, extra ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{shard, n.Role(), n.Name()}, extra...)...)
		}
		gauge(descPoolConns, float64(st.Active), "active")
		gauge(descPoolConns, float64(st.Idle), "idle")
		gauge(descPoolWaiting, float64(st.Waiting))
		gauge(descServerUp, boolValue(n.Healthy()))
		gauge(descBanned, boolValue(n.Banned()))
		if n.Replica() {
			ch <- prometheus.MustNewConstMetric(descLagSeconds, prometheus.GaugeValue, n.LagSeconds(), shard, n.Name())
			ch <- prometheus.MustNewConstMetric(descLagBytes, prometheus.GaugeValue, float64(n.LagBytes()), shard, n.Name())
		}
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// countingConn counts a client connection's bytes into the metrics: one
// atomic add per read or write system call.
type countingConn struct {
	net.Conn
	in, out prometheus.Counter
}

func (c countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.in.Add(float64(n))
	return n, err
}

func (c countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.out.Add(float64(n))
	return n, err
}
