package topology

import (
	"bufio"
	"bytes"
	"cmp"
	"fmt"
	"maps"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// FromPgBouncer converts a pgbouncer.ini that serves one database into an
// equivalent shardgate config: one shard holding every table (the
// database's server as its primary, default_shard so nothing needs a shard
// key), with the pool, timeout, auth and TLS settings carried over under
// their PgBouncer names. It returns the YAML and one note per setting that
// has no equivalent, so that nothing is dropped silently. Relative file
// paths are resolved against the ini file's directory.
func FromPgBouncer(file string, data []byte) (yamlText []byte, notes []string, err error) {
	ini, err := parseINI(file, data)
	if err != nil {
		return nil, nil, err
	}
	c := &pgbConverter{dir: filepath.Dir(file), root: newMapping()}
	if err := c.database(ini.section("databases")); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", file, err)
	}
	c.settings(ini.section("pgbouncer"))
	c.users(ini.section("users"))
	for _, name := range ini.order {
		if !slices.Contains([]string{"databases", "pgbouncer", "users"}, name) {
			c.notef("[%s] section: no equivalent (shardgate has no peers)", name)
		}
	}
	out, err := c.encode(file)
	return out, c.notes, err
}

// ini is a parsed pgbouncer.ini: sections of key = value lines, in order.
type ini struct {
	sections map[string][]iniEntry
	order    []string
}

type iniEntry struct {
	key, value string
	line       int
}

func (f *ini) section(name string) []iniEntry { return f.sections[name] }

// parseINI reads PgBouncer's ini dialect: [section] headers, key = value
// lines, and comment lines starting with ';' or '#' (only at the start of a
// line, as PgBouncer reads them). Keys are case-insensitive.
func parseINI(file string, data []byte) (*ini, error) {
	f := &ini{sections: map[string][]iniEntry{}}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == ';' || line[0] == '#':
		case strings.HasPrefix(line, "%include"):
			return nil, fmt.Errorf("%s:%d: %%include is not supported: concatenate the files first", file, n)
		case line[0] == '[':
			if !strings.HasSuffix(line, "]") {
				return nil, fmt.Errorf("%s:%d: unterminated section header %q", file, n, line)
			}
			section = strings.ToLower(strings.TrimSpace(line[1 : len(line)-1]))
			if _, seen := f.sections[section]; !seen {
				f.order = append(f.order, section)
				f.sections[section] = nil
			}
		default:
			key, value, ok := strings.Cut(line, "=")
			if !ok {
				return nil, fmt.Errorf("%s:%d: want key = value, got %q", file, n, line)
			}
			if section == "" {
				return nil, fmt.Errorf("%s:%d: setting outside any [section]", file, n)
			}
			key = strings.TrimSpace(key)
			if section != "databases" && section != "users" {
				key = strings.ToLower(key) // database and user names keep their case
			}
			f.sections[section] = append(f.sections[section], iniEntry{key, strings.TrimSpace(value), n})
		}
	}
	return f, sc.Err()
}

// pgbConverter builds the shardgate config as a YAML mapping, in the
// order a reader expects: listen, database, shards, then settings.
type pgbConverter struct {
	dir   string
	root  *yaml.Node
	notes []string
	// listen_addr and listen_port are one setting in shardgate.
	listenAddr, listenPort string
	// The database entry's connect string, whose pool settings override
	// [pgbouncer]'s as they do in PgBouncer.
	db        map[string]string
	dbLine    int
	usersNode *yaml.Node // the users section, once a user has settings
}

func (c *pgbConverter) notef(format string, args ...any) {
	c.notes = append(c.notes, fmt.Sprintf(format, args...))
}

// database converts the single [databases] entry into the shard.
func (c *pgbConverter) database(entries []iniEntry) error {
	var named []iniEntry
	for _, e := range entries {
		switch e.key {
		case "*":
			c.notef("[databases] line %d: the fallback database * has no equivalent: shardgate serves the one database named in the config", e.line)
		case "pgbouncer":
			c.notef("[databases] line %d: the console is always database \"shardgate\"", e.line)
		default:
			named = append(named, e)
		}
	}
	if len(named) != 1 {
		return fmt.Errorf("[databases] has %d databases besides * and pgbouncer; a converted config serves exactly one (convert one file per database, or reshard)", len(named))
	}
	db := named[0]
	params, err := parseConnString(db.value)
	if err != nil {
		return fmt.Errorf("[databases] line %d: %w", db.line, err)
	}
	dsn, err := c.serverDSN(strings.Trim(db.key, `"`), params)
	if err != nil {
		return fmt.Errorf("[databases] line %d: %w", db.line, err)
	}
	setKey(c.root, "database", scalar(strings.Trim(db.key, `"`)))
	shard := newMapping()
	setKey(shard, "name", scalar("s0"))
	setKey(shard, "primary", scalar(dsn))
	setKey(c.root, "shards", sequence(shard))
	rng := newMapping()
	setKey(rng, "range", scalar("-"))
	setKey(rng, "shard", scalar("s0"))
	rng.Style = yaml.FlowStyle
	setKey(c.root, "keyspace", sequence(rng))
	setKey(c.root, "default_shard", scalar("s0"))
	c.db, c.dbLine = params, db.line
	for _, k := range []string{"client_encoding", "datestyle", "timezone", "application_name", "connect_query"} {
		if _, ok := params[k]; ok {
			c.notef("[databases] line %d: %s=: not carried over (clients set their own session parameters)", db.line, k)
		}
	}
	for _, k := range []string{"auth_user", "auth_dbname", "auth_query", "load_balance_hosts", "server_lifetime"} {
		if _, ok := params[k]; ok {
			c.notef("[databases] line %d: %s=: not carried over (set it in [pgbouncer]; auth.query runs as the DSN's user)", db.line, k)
		}
	}
	return nil
}

// serverDSN turns a PgBouncer connect string into the shard's URL.
// Without user=, PgBouncer logs into the server as each client; shardgate
// logs in with the one user in the URL, so a note asks for it.
func (c *pgbConverter) serverDSN(name string, p map[string]string) (string, error) {
	u := url.URL{Scheme: "postgres", Path: "/" + name}
	if db, ok := p["dbname"]; ok {
		u.Path = "/" + db
	}
	host, port := p["host"], p["port"]
	q := url.Values{}
	switch {
	case strings.Contains(host, ","):
		return "", fmt.Errorf("host=%s: several hosts: give the primary's (replicas go in shards[0].replicas)", host)
	case host == "" || strings.HasPrefix(host, "/"):
		// A Unix socket directory, as libpq's host= means.
		if host == "" {
			host = "/tmp"
		}
		q.Set("host", host)
		if port != "" {
			q.Set("port", port)
		}
	case port != "":
		u.Host = net.JoinHostPort(host, port)
	default:
		u.Host = host
	}
	switch user, pw := p["user"], p["password"]; {
	case user == "":
		c.notef("[databases] %s has no user=: PgBouncer logs into the server as each client, shardgate as the one user in shards[0].primary; add user (and password) there", name)
	case pw != "":
		u.User = url.UserPassword(user, pw)
	default:
		u.User = url.User(user)
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// parseConnString reads a libpq key=value connect string, with values
// optionally in single quotes (backslash escapes inside).
func parseConnString(s string) (map[string]string, error) {
	out := map[string]string{}
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimSpace(s) {
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return nil, fmt.Errorf("connect string: want key=value at %q", s)
		}
		key := strings.ToLower(strings.TrimSpace(s[:eq]))
		s = strings.TrimLeft(s[eq+1:], " \t")
		var val strings.Builder
		if strings.HasPrefix(s, "'") {
			i := 1
			for ; i < len(s) && s[i] != '\''; i++ {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				val.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, fmt.Errorf("connect string: unterminated quote in %s=", key)
			}
			s = s[i+1:]
		} else {
			end := strings.IndexAny(s, " \t")
			if end < 0 {
				end = len(s)
			}
			val.WriteString(s[:end])
			s = s[end:]
		}
		out[key] = val.String()
	}
	return out, nil
}

// A pgbSetting says where a [pgbouncer] setting goes in shardgate's config
// and how its value is written there.
type pgbSetting struct {
	path string // "pool.default_pool_size"; "" means no equivalent
	kind valueKind
	why  string // for settings with no equivalent: why nothing is lost
}

type valueKind int

const (
	kindString valueKind = iota
	kindInt
	kindSeconds // PgBouncer's seconds, written as a duration
	kindBool    // PgBouncer's 0/1
	kindList    // comma-separated
	kindPath    // a file, resolved against the ini's directory
)

// pgbSettings maps PgBouncer's settings to shardgate's. Pool settings keep
// their PgBouncer names, which shardgate accepts as aliases.
var pgbSettings = map[string]pgbSetting{
	"pool_mode":                {"pool.pool_mode", kindString, ""},
	"default_pool_size":        {"pool.default_pool_size", kindInt, ""},
	"pool_size":                {"pool.default_pool_size", kindInt, ""},
	"min_pool_size":            {"pool.min_pool_size", kindInt, ""},
	"reserve_pool_size":        {"pool.reserve_pool_size", kindInt, ""},
	"reserve_pool":             {"pool.reserve_pool_size", kindInt, ""},
	"reserve_pool_timeout":     {"pool.reserve_pool_timeout", kindSeconds, ""},
	"max_client_conn":          {"pool.max_client_conn", kindInt, ""},
	"query_wait_timeout":       {"pool.query_wait_timeout", kindSeconds, ""},
	"query_timeout":            {"pool.query_timeout", kindSeconds, ""},
	"server_connect_timeout":   {"pool.server_connect_timeout", kindSeconds, ""},
	"server_idle_timeout":      {"pool.server_idle_timeout", kindSeconds, ""},
	"server_lifetime":          {"pool.server_lifetime", kindSeconds, ""},
	"server_check_delay":       {"pool.server_check_delay", kindSeconds, ""},
	"idle_transaction_timeout": {"pool.idle_transaction_timeout", kindSeconds, ""},
	"client_idle_timeout":      {"pool.client_idle_timeout", kindSeconds, ""},
	"client_login_timeout":     {"pool.client_login_timeout", kindSeconds, ""},
	"max_packet_size":          {"pool.max_packet_size", kindInt, ""},
	"max_prepared_statements":  {"pool.max_prepared_statements", kindInt, ""},
	"tcp_keepalive":            {"pool.tcp_keepalive", kindBool, ""},
	"tcp_keepidle":             {"pool.tcp_keepidle", kindSeconds, ""},
	"tcp_keepintvl":            {"pool.tcp_keepintvl", kindSeconds, ""},
	"tcp_keepcnt":              {"pool.tcp_keepcnt", kindInt, ""},

	"auth_type":            {"auth.auth_type", kindString, ""},
	"auth_file":            {"auth.auth_file", kindPath, ""},
	"auth_query":           {"auth.auth_query", kindString, ""},
	"auth_user":            {"", 0, "auth.query runs as the user in the shard's DSN"},
	"auth_dbname":          {"", 0, "auth.query runs in the shard's DSN database"},
	"admin_users":          {"admin_users", kindList, ""},
	"pidfile":              {"pidfile", kindPath, ""},
	"log_connections":      {"log_connections", kindBool, ""},
	"log_disconnections":   {"log_disconnections", kindBool, ""},
	"stats_period":         {"stats_period", kindSeconds, ""},
	"client_tls_sslmode":   {"tls.client_tls_sslmode", kindString, ""},
	"client_tls_cert_file": {"tls.client_tls_cert_file", kindPath, ""},
	"client_tls_key_file":  {"tls.client_tls_key_file", kindPath, ""},
	"server_tls_sslmode":   {"server_tls.server_tls_sslmode", kindString, ""},
	"server_tls_ca_file":   {"server_tls.server_tls_ca_file", kindPath, ""},

	"logfile":                   {"", 0, "shardgate logs to stderr (log_format: json for collectors)"},
	"syslog":                    {"", 0, "shardgate logs to stderr"},
	"syslog_ident":              {"", 0, "shardgate logs to stderr"},
	"syslog_facility":           {"", 0, "shardgate logs to stderr"},
	"verbose":                   {"", 0, "use log_level: debug"},
	"user":                      {"", 0, "run shardgate as the user you want"},
	"stats_users":               {"", 0, "the console has no read-only users: add them to admin_users to let them in"},
	"server_reset_query":        {"", 0, "session pooling resets with DISCARD ALL, transaction pooling needs no reset"},
	"server_reset_query_always": {"", 0, "transaction pooling needs no reset"},
	"server_check_query":        {"", 0, "the check is an empty query"},
	"ignore_startup_parameters": {"", 0, "shardgate accepts every startup parameter"},
	"track_extra_parameters":    {"", 0, "shardgate tracks every parameter a client sets"},
	"application_name_add_host": {"", 0, "no equivalent"},
	"server_round_robin":        {"", 0, "one primary per shard; replicas are balanced"},
	"server_login_retry":        {"", 0, "a failed server is banned for ban_time"},
	"server_fast_close":         {"", 0, "no equivalent"},
	"disable_pqexec":            {"", 0, "no equivalent"},
	"pkt_buf":                   {"", 0, "buffers are sized per message"},
	"sbuf_loopcnt":              {"", 0, "not needed"},
	"so_reuseport":              {"", 0, "one process serves every core"},
	"tcp_defer_accept":          {"", 0, "not needed"},
	"tcp_socket_buffer":         {"", 0, "the kernel's defaults are kept"},
	"tcp_user_timeout":          {"", 0, "no equivalent: keepalives find dead peers"},
	"dns_max_ttl":               {"", 0, "servers are resolved on connect"},
	"dns_nxdomain_ttl":          {"", 0, "servers are resolved on connect"},
	"dns_zone_check_period":     {"", 0, "servers are resolved on connect"},
	"resolv_conf":               {"", 0, "servers are resolved on connect"},
	"auth_hba_file":             {"", 0, "no pg_hba-style rules: one auth_type for every client"},
	"auth_ident_file":           {"", 0, "no ident authentication"},
	"client_tls_ca_file":        {"", 0, "no client certificates"},
	"client_tls_protocols":      {"", 0, "TLS 1.2 and later"},
	"client_tls_ciphers":        {"", 0, "Go's default cipher suites"},
	"client_tls_ecdhcurve":      {"", 0, "Go's default curves"},
	"client_tls_dheparams":      {"", 0, "Go's default key exchange"},
	"server_tls_cert_file":      {"", 0, "no client certificates towards servers"},
	"server_tls_key_file":       {"", 0, "no client certificates towards servers"},
	"server_tls_protocols":      {"", 0, "TLS 1.2 and later"},
	"server_tls_ciphers":        {"", 0, "Go's default cipher suites"},
	"max_db_connections":        {"", 0, "pool sizes bound server connections"},
	"max_user_connections":      {"", 0, "pool_size in the users section caps each pool instead"},
	"log_pooler_errors":         {"", 0, "errors are always logged"},
	"log_stats":                 {"", 0, "stats_period: 0 turns the stats line off"},
	"peer_id":                   {"", 0, "no peers"},
	"listen_backlog":            {"", 0, "the kernel's somaxconn applies"},
	"unix_socket_dir":           {"unix_socket_dir", kindPath, ""},
	"unix_socket_mode":          {"unix_socket_mode", kindString, ""},
	"unix_socket_group":         {"unix_socket_group", kindString, ""},
}

func (c *pgbConverter) settings(entries []iniEntry) {
	for _, e := range entries {
		switch e.key {
		case "listen_addr":
			c.listenAddr = e.value
			continue
		case "listen_port":
			c.listenPort = e.value
			continue
		}
		c.setting(e.key, e.value, e.line, "[pgbouncer]")
	}
	if !slices.ContainsFunc(entries, func(e iniEntry) bool { return e.key == "unix_socket_dir" }) {
		c.notef("[pgbouncer] unix_socket_dir is unset, which PgBouncer takes as /tmp: shardgate opens no socket unless unix_socket_dir names a directory")
	}
	c.listen()
	// With one database, its pool settings are the pool's.
	for _, k := range []string{"pool_size", "min_pool_size", "reserve_pool", "reserve_pool_size", "pool_mode", "max_db_connections"} {
		if v, ok := c.db[k]; ok {
			c.setting(k, v, c.dbLine, "[databases]")
		}
	}
}

// setting writes one PgBouncer setting where shardgate keeps it.
func (c *pgbConverter) setting(key, value string, line int, section string) {
	s, known := pgbSettings[key]
	switch {
	case !known:
		c.notef("%s line %d: %s: unknown to the converter, not carried over", section, line, key)
		return
	case s.path == "" && value == "":
		return // unset or off, as it is in shardgate
	case s.path == "":
		c.notef("%s line %d: %s: not carried over (%s)", section, line, key, s.why)
		return
	}
	node, err := c.value(s, key, value)
	if err != nil {
		c.notef("%s line %d: %s = %s: not carried over: %v", section, line, key, value, err)
		return
	}
	setPath(c.root, s.path, node)
}

func (c *pgbConverter) value(s pgbSetting, key, value string) (*yaml.Node, error) {
	switch s.kind {
	case kindInt:
		if _, err := strconv.Atoi(value); err != nil {
			return nil, fmt.Errorf("want an integer")
		}
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: value}, nil
	case kindSeconds:
		if _, err := ParseDuration(value); err != nil {
			return nil, err
		}
		if _, err := strconv.ParseFloat(value, 64); err == nil {
			value += "s" // as written, with the unit PgBouncer implies
		}
		return scalar(value), nil
	case kindBool:
		b := value == "1" || strings.EqualFold(value, "true") || strings.EqualFold(value, "on") || strings.EqualFold(value, "yes")
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(b)}, nil
	case kindList:
		var items []*yaml.Node
		for item := range strings.SplitSeq(value, ",") {
			if item = strings.TrimSpace(item); item != "" {
				items = append(items, scalar(item))
			}
		}
		list := sequence(items...)
		list.Style = yaml.FlowStyle
		return list, nil
	case kindPath:
		if value != "" && !filepath.IsAbs(value) {
			value = filepath.Join(c.dir, value)
		}
		if abs, err := filepath.Abs(value); err == nil && value != "" {
			value = abs
		}
		return scalar(value), nil
	}
	if key == "auth_type" && !slices.Contains([]string{"trust", "md5", "scram-sha-256"}, value) {
		return nil, fmt.Errorf("auth_type %s has no equivalent: use trust, md5 or scram-sha-256", value)
	}
	return scalar(value), nil
}

// listen joins listen_addr and listen_port. PgBouncer's "*" is every
// address; of a list, the first is kept.
func (c *pgbConverter) listen() {
	host, port := c.listenAddr, cmp.Or(c.listenPort, "6432")
	switch {
	case host == "":
		c.notef("[pgbouncer] listen_addr is unset (Unix socket only): shardgate listens on 127.0.0.1")
		host = "127.0.0.1"
	case host == "*":
		host = "0.0.0.0"
	case strings.Contains(host, ","):
		first, _, _ := strings.Cut(host, ",")
		c.notef("[pgbouncer] listen_addr lists several addresses: shardgate listens on the first, %s", strings.TrimSpace(first))
		host = strings.TrimSpace(first)
	}
	// First, as a config is read: where clients connect.
	c.root.Content = append([]*yaml.Node{scalar("listen"), scalar(net.JoinHostPort(host, port))}, c.root.Content...)
}

// users converts the [users] section: each user's pool_mode, pool_size
// and max_user_client_connections go to shardgate's users section.
func (c *pgbConverter) users(entries []iniEntry) {
	for _, e := range entries {
		params, err := parseConnString(e.value)
		if err != nil {
			c.notef("[users] line %d: %s: not carried over: %v", e.line, e.key, err)
			continue
		}
		u := newMapping()
		for _, k := range []string{"pool_mode", "pool_size", "max_user_client_connections"} {
			v, ok := params[k]
			if !ok {
				continue
			}
			node := scalar(v)
			if k != "pool_mode" {
				if _, err := strconv.Atoi(v); err != nil {
					c.notef("[users] line %d: %s=%s: not carried over: want an integer", e.line, k, v)
					continue
				}
				node = &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: v}
			}
			setKey(u, k, node)
		}
		for _, k := range slices.Sorted(maps.Keys(params)) {
			if !slices.Contains([]string{"pool_mode", "pool_size", "max_user_client_connections"}, k) {
				c.notef("[users] line %d: %s %s=: not carried over (pool_size caps the user's connections in each pool)", e.line, e.key, k)
			}
		}
		if len(u.Content) > 0 {
			u.Style = yaml.FlowStyle
			users := c.usersNode
			if users == nil {
				users = newMapping()
				setKey(c.root, "users", users)
				c.usersNode = users
			}
			setKey(users, strings.Trim(e.key, `"`), u)
		}
	}
}

func (c *pgbConverter) encode(file string) ([]byte, error) {
	var out bytes.Buffer
	fmt.Fprintf(&out, "# Converted from %s by shardgate import-pgbouncer.\n", filepath.Base(file))
	fmt.Fprintf(&out, "# One shard holds every table (default_shard); add tables with a shard_key and reshard to spread them.\n")
	for _, n := range c.notes {
		fmt.Fprintf(&out, "# note: %s\n", n)
	}
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(c.root); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// The YAML is built as nodes so that keys come out in the order written
// (yaml.v3 sorts the keys of a Go map).

func newMapping() *yaml.Node { return &yaml.Node{Kind: yaml.MappingNode} }

func scalar(v string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v}
}

func sequence(items ...*yaml.Node) *yaml.Node {
	return &yaml.Node{Kind: yaml.SequenceNode, Content: items}
}

// setKey puts key: v in mapping m, replacing an earlier value.
func setKey(m *yaml.Node, key string, v *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content[i+1] = v
			return
		}
	}
	m.Content = append(m.Content, scalar(key), v)
}

// setPath puts v at a dotted path ("pool.default_pool_size"), making the
// mappings on the way.
func setPath(m *yaml.Node, path string, v *yaml.Node) {
	head, rest, nested := strings.Cut(path, ".")
	if !nested {
		setKey(m, head, v)
		return
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == head {
			setPath(m.Content[i+1], rest, v)
			return
		}
	}
	child := newMapping()
	m.Content = append(m.Content, scalar(head), child)
	setPath(child, rest, v)
}
