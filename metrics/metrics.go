// Package metrics defines shardgate's Prometheus series and the HTTP
// listener that serves them (and pprof, when asked).
//
// Per-request measurements (latencies, bytes, errors) are pushed on the hot
// path through series bound to their labels once per server, so recording
// one costs a few atomic adds and no map lookup. Everything that is state
// rather than events (pool gauges, replica lag, bans, plan cache counters)
// is read at scrape time by collectors the proxy registers, so it costs
// nothing between scrapes.
package metrics

import (
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// LatencyBuckets spans 100 µs to 10 s in steps of about 1.5x (1, 1.5, 2,
// 3, 5, 7.5 per decade), fine enough for p50/p95/p99 of a proxy whose
// queries take a fraction of a millisecond and whose users' target is p95
// under 200 ms, which is a bucket boundary.
var LatencyBuckets = []float64{
	0.0001, 0.00015, 0.0002, 0.0003, 0.0005, 0.00075,
	0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075,
	0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
	0.1, 0.15, 0.2, 0.3, 0.5, 0.75,
	1, 1.5, 2, 3, 5, 7.5, 10,
}

// errorClasses are the SQLSTATE classes an ErrorResponse can carry
// (PostgreSQL's Appendix A less 00 success, 01 warning and 02 no data),
// and Class's "unknown". errors_total starts at zero for each of them,
// so that rate() sees the first error of a class and dashboards grouping
// by class show zeros rather than "No data".
var errorClasses = [...]string{
	"03", "08", "09", "0A", "0B", "0F", "0L", "0P", "0Z", "20", "21", "22", "23", "24", "25", "26", "27", "28",
	"2B", "2D", "2F", "34", "38", "39", "3B", "3D", "3F", "40", "42", "44", "53", "54", "55", "57", "58", "72",
	"F0", "HV", "P0", "XX", "unknown",
}

// ErrorClasses lists the class label values errors_total starts with.
func ErrorClasses() []string { return slices.Clone(errorClasses[:]) }

// Metrics is one proxy's registry and its event series.
type Metrics struct {
	reg *prometheus.Registry

	queries, xacts            *prometheus.CounterVec   // shard, role
	toServer, fromServer      *prometheus.CounterVec   // shard, role
	queryTime, xactTime, wait *prometheus.HistogramVec // shard, role
	errors                    *prometheus.CounterVec   // shard, role, class
	bans                      *prometheus.CounterVec   // shard, role, server

	ClientsAccepted     prometheus.Counter
	ClientBytesReceived prometheus.Counter
	ClientBytesSent     prometheus.Counter
	ScatterQueries      prometheus.Counter
	SlowQueries         prometheus.Counter
	ReadRetries         prometheus.Counter
	// FenceWait is the time statements waited behind a reshard fence.
	FenceWait prometheus.Histogram
}

// New builds a registry with the Go runtime and process collectors and
// shardgate's event series.
func New() *Metrics {
	serverLabels := []string{"shard", "role"}
	m := &Metrics{
		reg:        prometheus.NewRegistry(),
		queries:    counterVec("queries_total", "Statements (client round trips) run on servers.", serverLabels),
		xacts:      counterVec("transactions_total", "Transactions run on servers: server connection leases, each one transaction in transaction pooling.", serverLabels),
		toServer:   counterVec("server_bytes_sent_total", "Bytes the proxy sent to servers.", serverLabels),
		fromServer: counterVec("server_bytes_received_total", "Bytes the proxy received from servers.", serverLabels),
		queryTime:  histogramVec("query_duration_seconds", "Time from sending a statement to a server to its last answer.", serverLabels),
		xactTime:   histogramVec("transaction_duration_seconds", "Time a client held a server connection: one transaction in transaction pooling.", serverLabels),
		wait:       histogramVec("pool_wait_duration_seconds", "Time clients waited for a server connection, connecting included.", serverLabels),
		errors: counterVec("errors_total", "Errors sent to clients, by SQLSTATE class; role \"proxy\" counts those the proxy raised itself.",
			[]string{"shard", "role", "class"}),
		bans: counterVec("server_bans_total", "Times a server was banned after a failed health check or connection error.",
			[]string{"shard", "role", "server"}),
		ClientsAccepted:     counter("client_connections_total", "Client connections accepted."),
		ClientBytesReceived: counter("client_bytes_received_total", "Bytes received from clients."),
		ClientBytesSent:     counter("client_bytes_sent_total", "Bytes sent to clients."),
		ScatterQueries:      counter("scatter_queries_total", "Queries fanned out to several shards and merged."),
		SlowQueries:         counter("slow_queries_total", "Client requests slower than log_min_duration."),
		ReadRetries:         counter("read_retries_total", "Reads sent to another server after their replica failed before answering."),
		FenceWait: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "shardgate", Name: "fence_wait_duration_seconds",
			Help: "Time statements waited behind a reshard fence (RESHARD FENCE) before running.", Buckets: LatencyBuckets}),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.queries, m.xacts, m.toServer, m.fromServer, m.queryTime, m.xactTime, m.wait, m.errors, m.bans,
		m.ClientsAccepted, m.ClientBytesReceived, m.ClientBytesSent, m.ScatterQueries, m.SlowQueries, m.ReadRetries, m.FenceWait,
	)
	for _, class := range errorClasses {
		m.errors.WithLabelValues("", "proxy", class)
	}
	return m
}

// Registry is where the proxy adds its scrape-time collectors, and what
// tests gather from.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Server binds the per-server series to one shard and role, and creates
// at zero those that count events by class or by server: a series that
// appears with its first event hides that event from rate(). Servers of
// one shard and role share their series but for bans.
func (m *Metrics) Server(shard, role, server string) *Server {
	m.bans.WithLabelValues(shard, role, server)
	s := &Server{
		queries:    m.queries.WithLabelValues(shard, role),
		xacts:      m.xacts.WithLabelValues(shard, role),
		toServer:   m.toServer.WithLabelValues(shard, role),
		fromServer: m.fromServer.WithLabelValues(shard, role),
		queryTime:  m.queryTime.WithLabelValues(shard, role),
		xactTime:   m.xactTime.WithLabelValues(shard, role),
		wait:       m.wait.WithLabelValues(shard, role),
		errors:     m.errors.MustCurryWith(prometheus.Labels{"shard": shard, "role": role}),
	}
	for _, class := range errorClasses {
		s.errors.WithLabelValues(class)
	}
	return s
}

// ProxyError counts an error the proxy raised itself (a refusal, a failed
// login), not one a server sent.
func (m *Metrics) ProxyError(sqlstate string) {
	m.errors.WithLabelValues("", "proxy", Class(sqlstate)).Inc()
}

// Ban counts one ban of a server.
func (m *Metrics) Ban(shard, role, server string) {
	m.bans.WithLabelValues(shard, role, server).Inc()
}

// Server is the series of one shard and role, bound once so that the hot
// path records without label lookups. It implements pool.Observer.
type Server struct {
	queries, xacts            prometheus.Counter
	toServer, fromServer      prometheus.Counter
	queryTime, xactTime, wait prometheus.Observer
	errors                    *prometheus.CounterVec // curried: class only
}

// Query records one round trip and its bytes each way.
func (s *Server) Query(d time.Duration, toServer, fromServer int) {
	s.queries.Inc()
	s.toServer.Add(float64(toServer))
	s.fromServer.Add(float64(fromServer))
	s.queryTime.Observe(d.Seconds())
}

// Xact records one finished lease of a server connection.
func (s *Server) Xact(d time.Duration) {
	s.xacts.Inc()
	s.xactTime.Observe(d.Seconds())
}

// Wait records how long one Acquire took.
func (s *Server) Wait(d time.Duration) { s.wait.Observe(d.Seconds()) }

// Error counts one ErrorResponse the server sent.
func (s *Server) Error(sqlstate string) { s.errors.WithLabelValues(Class(sqlstate)).Inc() }

// Class is a SQLSTATE's class, its first two characters ("23" for
// 23505), which is what dashboards group errors by without exploding the
// number of series.
func Class(sqlstate string) string {
	if len(sqlstate) != 5 {
		return "unknown"
	}
	return sqlstate[:2]
}

func counter(name, help string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "shardgate", Name: name, Help: help})
}

func counterVec(name, help string, labels []string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "shardgate", Name: name, Help: help}, labels)
}

func histogramVec(name, help string, labels []string) *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "shardgate", Name: name, Help: help, Buckets: LatencyBuckets}, labels)
}
