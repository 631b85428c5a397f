package proxy_test

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardgate/shardgate/proxy"
	"github.com/shardgate/shardgate/sandbox"
	"github.com/shardgate/shardgate/topology"
)

// Distinctive secrets: none is part of another, so a hit names its leak.
const (
	leakPlainPw   = "plainPw-R4nd0m7"   // user leak_plain, configured in plain
	leakMD5Pw     = "md5Pw-Q8vL2x"      // user leak_md5, configured as its md5 hash
	leakSCRAMPw   = "scramPw-Z3kT9w"    // user leak_scram, configured as a SCRAM secret
	leakAdminPw   = "adminPw-H6yB1c"    // admin user leak_admin, in plain
	leakFilePw    = "filePw-N5sD4f"     // user leak_file, in the auth file
	leakDSNPw     = "dsnPw-J7mW3e"      // the servers' role sg_leak_dsn
	leakDSNWrong  = "dsnWrong-K2pX8r"   // a DSN password the servers refuse
	leakDSNUnrch  = "dsnUnreach-V9gC6t" // in the DSN of a server that is not there
	leakRole      = "sg_leak_dsn"
	leakSCRAMSalt = "leak-test-salt16"
)

// scramSecret is what PostgreSQL stores for password with salt, and the
// pieces of it that must not leak either.
func scramSecret(password, salt string) (secret string, pieces []string) {
	salted, err := pbkdf2.Key(sha256.New, password, []byte(salt), 4096, sha256.Size)
	if err != nil {
		panic(err)
	}
	mac := func(key []byte, msg string) []byte {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(msg))
		return m.Sum(nil)
	}
	stored := sha256.Sum256(mac(salted, "Client Key"))
	server := mac(salted, "Server Key")
	b64 := base64.StdEncoding.EncodeToString
	secret = fmt.Sprintf("SCRAM-SHA-256$4096:%s$%s:%s", b64([]byte(salt)), b64(stored[:]), b64(server))
	return secret, []string{secret, b64([]byte(salt)), b64(stored[:]), b64(server), hex.EncodeToString(stored[:]), hex.EncodeToString(server), hex.EncodeToString(salted)}
}

// leakSecrets maps a description to every form of each secret.
func leakSecrets() map[string][]string {
	_, scramPieces := scramSecret(leakSCRAMPw, leakSCRAMSalt)
	return map[string][]string{
		"plain password":           {leakPlainPw, md5hex(leakPlainPw + "leak_plain")},
		"md5 user's password/hash": {leakMD5Pw, md5hex(leakMD5Pw + "leak_md5")},
		"SCRAM user's secret":      append([]string{leakSCRAMPw}, scramPieces...),
		"admin password":           {leakAdminPw, md5hex(leakAdminPw + "leak_admin")},
		"auth file password":       {leakFilePw, md5hex(leakFilePw + "leak_file")},
		"DSN password":             {leakDSNPw},
		"refused DSN password":     {leakDSNWrong},
		"unreachable DSN password": {leakDSNUnrch},
	}
}

// Generic shapes of secrets: any verifier or md5 hash, whoever's.
var leakShapes = regexp.MustCompile(`SCRAM-SHA-256\$[0-9]|md5[0-9a-f]{32}`)

// prepareLeakRole gives every server of c a role that must log in with a
// password (scram-sha-256 in pg_hba.conf for that role alone, so other
// tests' trust logins are untouched) and waits until each server enforces
// it: the DSN passwords below are really checked.
func prepareLeakRole(t *testing.T, c *sandbox.Cluster) {
	t.Helper()
	ctx := t.Context()
	const hbaLine = "host all " + leakRole + " 127.0.0.1/32 scram-sha-256\n"
	var servers []*sandbox.Server
	for _, sh := range c.Shards {
		servers = append(servers, sh.Primary)
		servers = append(servers, sh.Replicas...)
	}
	// Not t.Context(): the cleanups reload too, after it is done.
	reload := func(s *sandbox.Server) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, s.DSN(c.Database))
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
			t.Error(err)
		}
	}
	for _, s := range servers {
		hba := filepath.Join(s.DataDir, "pg_hba.conf")
		orig, err := os.ReadFile(hba)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(orig), hbaLine) {
			if err := os.WriteFile(hba, append([]byte(hbaLine), orig...), 0o600); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				os.WriteFile(hba, orig, 0o600)
				reload(s)
			})
		}
		reload(s)
	}
	for _, sh := range c.Shards {
		conn, err := pgx.Connect(ctx, sh.Primary.DSN(c.Database))
		if err != nil {
			t.Fatal(err)
		}
		_, err = conn.Exec(ctx, `DO $$ BEGIN
			CREATE ROLE `+leakRole+` LOGIN SUPERUSER;
		EXCEPTION WHEN duplicate_object THEN NULL; END $$`)
		if err == nil {
			_, err = conn.Exec(ctx, "ALTER ROLE "+leakRole+" PASSWORD '"+leakDSNPw+"'")
		}
		conn.Close(context.Background())
		if err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for _, s := range servers {
		for {
			good := pingAs(ctx, s, c.Database, leakDSNPw)
			bad := pingAs(ctx, s, c.Database, leakDSNWrong)
			if good == nil && sqlState(bad) == "28P01" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s does not enforce %s's password: right one %v, wrong one %v", s.Name, leakRole, good, bad)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func pingAs(ctx context.Context, s *sandbox.Server, db, password string) error {
	conn, err := pgconn.Connect(ctx, leakDSN(s.Port, db, password))
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

func leakDSN(port int, db, password string) string {
	return fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/%s?sslmode=disable", leakRole, password, port, db)
}

// leakConfig is a config over c whose servers are reached as the leak role,
// with dsn choosing each server's DSN, plus extra YAML.
func leakConfig(c *sandbox.Cluster, dsn func(s *sandbox.Server) string, extra string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "listen: 127.0.0.1:0\ndatabase: %s\npool: {mode: transaction, size: 4}\nhealth_check_interval: 200ms\nadmin_users: [leak_admin]\nshards:\n", c.Database)
	for _, sh := range c.Shards {
		fmt.Fprintf(&b, "  - name: %s\n    primary: %q\n    replicas: [", sh.Name, dsn(sh.Primary))
		for j, r := range sh.Replicas {
			if j > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%q", dsn(r))
		}
		b.WriteString("]\n")
	}
	base := string(c.ConfigYAML("127.0.0.1:0"))
	b.WriteString(base[strings.Index(base, "keyspace:"):])
	b.WriteString(extra)
	return b.String()
}

// leakUsers is the auth section: a user per kind of secret, and the file.
func leakUsers(authType string) string {
	scram, _ := scramSecret(leakSCRAMPw, leakSCRAMSalt)
	return fmt.Sprintf(`auth:
  type: %s
  file: userlist.txt
  users:
    - {name: leak_plain, password: %q}
    - {name: leak_md5, password: %q}
    - {name: leak_scram, password: %q}
    - {name: leak_admin, password: %q}
`, authType, leakPlainPw, "md5"+md5hex(leakMD5Pw+"leak_md5"), scram, leakAdminPw)
}

// leakCapture collects everything a client or an operator can see.
type leakCapture struct {
	logs    *syncBuffer
	seen    map[string]*strings.Builder // "SHOW output", "metrics", "client errors"
	srv     *proxy.Server
	addr    string
	reloads int
}

func (lc *leakCapture) add(where, text string) {
	if lc.seen[where] == nil {
		lc.seen[where] = &strings.Builder{}
	}
	lc.seen[where].WriteString(text + "\n")
}

// clientError records everything an error carries to a client.
func (lc *leakCapture) clientError(err error) {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		lc.add("client errors", fmt.Sprintf("%s %s | %s | %s | %s", pgErr.Severity, pgErr.Code, pgErr.Message, pgErr.Detail, pgErr.Hint))
	}
	if err != nil {
		lc.add("client errors", err.Error())
	}
}

// login connects as user to database db and returns the error, recorded.
func (lc *leakCapture) login(t *testing.T, user, password, db string) (*pgx.Conn, error) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), "postgres://"+user+":"+password+"@"+lc.addr+"/"+db+"?sslmode=disable")
	lc.clientError(err)
	if err == nil {
		t.Cleanup(func() { conn.Close(context.Background()) })
	}
	return conn, err
}

// showAll runs every SHOW command that SHOW HELP lists.
func (lc *leakCapture) showAll(t *testing.T, admin *pgconn.PgConn) {
	t.Helper()
	help := adminRows(t, admin, "SHOW HELP")
	list, ok := strings.CutPrefix(help[0]["command"], "SHOW ")
	if !ok {
		t.Fatalf("SHOW HELP's first row: %v", help[0])
	}
	cmds := append(strings.Split(list, "|"), "HELP")
	if len(cmds) < 9 {
		t.Fatalf("SHOW HELP lists %v", cmds)
	}
	for _, what := range cmds {
		for _, row := range adminRows(t, admin, "SHOW "+what) {
			lc.add("SHOW output", fmt.Sprintf("SHOW %s: %v", what, row))
		}
	}
}

func (lc *leakCapture) scrape() {
	rec := httptest.NewRecorder()
	lc.srv.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	lc.add("metrics", rec.Body.String())
}

// reload runs RELOAD on the console; it returns the error, recorded.
func (lc *leakCapture) reload(t *testing.T, admin *pgconn.PgConn) error {
	t.Helper()
	_, err := admin.Exec(t.Context(), "RELOAD").ReadAll()
	lc.clientError(err)
	if err == nil {
		lc.reloads++
	}
	return err
}

// waitLog waits until a log line contains every one of parts.
func (lc *leakCapture) waitLog(t *testing.T, parts ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, line := range strings.Split(lc.logs.String(), "\n") {
			found := true
			for _, p := range parts {
				found = found && strings.Contains(line, p)
			}
			if found {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q:\n%s", parts, lc.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSecretsStayHidden configures a secret of every kind, drives the proxy
// through what makes it talk (logins that work and fail, md5 and SCRAM, every
// SHOW, /metrics, servers that refuse the DSN password or are not there,
// RELOADs that succeed and fail, debug logging) and then looks for each
// secret and each piece of it in everything it said.
func TestSecretsStayHidden(t *testing.T) {
	prepareLeakRole(t, cluster)
	ctx := t.Context()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "userlist.txt"), `"leak_file" "`+leakFilePw+`"`+"\n")
	path := filepath.Join(dir, "shardgate.yaml")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	absent := ln.Addr().(*net.TCPAddr).Port // nothing listens here once closed
	ln.Close()
	s0, s1 := cluster.Shards[0], cluster.Shards[1]
	// The DSN's password, in the userinfo or (libpq style) as a parameter.
	good := func(s *sandbox.Server) string {
		if s == s0.Replicas[0] {
			return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?password=%s", leakRole, s.Port, cluster.Database, leakDSNPw)
		}
		return leakDSN(s.Port, cluster.Database, leakDSNPw)
	}
	dsns := func(refused, gone *sandbox.Server) func(*sandbox.Server) string {
		return func(s *sandbox.Server) string {
			switch s {
			case refused:
				return leakDSN(s.Port, cluster.Database, leakDSNWrong)
			case gone:
				return leakDSN(absent, cluster.Database, leakDSNUnrch)
			}
			return good(s)
		}
	}
	writeConfig := func(text string) {
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// Phase 1, md5: s0's primary refuses the DSN password, s1's replica is gone.
	writeConfig(leakConfig(cluster, dsns(s0.Primary, s1.Replicas[0]), leakUsers("md5")))
	cfg, err := topology.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	lc := &leakCapture{logs: &syncBuffer{}, seen: map[string]*strings.Builder{}}
	log := slog.New(slog.NewJSONHandler(lc.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, addr, stop, err := startLogged(cluster, func(c *topology.Config) { *c = *cfg }, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	srv.SetConfigFile(path)
	lc.srv, lc.addr = srv, addr

	if _, err := lc.login(t, "leak_plain", leakPlainPw, "app"); sqlState(err) != "08006" {
		t.Fatalf("login while s0's primary refuses the DSN password: %v, want 08006", err)
	}
	for _, login := range [][2]string{{"leak_md5", "wrong"}, {"leak_plain", leakMD5Pw}, {"nobody", leakPlainPw}} {
		if _, err := lc.login(t, login[0], login[1], "app"); sqlState(err) != "28P01" {
			t.Fatalf("md5 login %s: %v, want 28P01", login[0], err)
		}
	}
	admin, err := pgconn.Connect(ctx, "postgres://leak_admin:"+leakAdminPw+"@"+addr+"/shardgate?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	lc.waitLog(t, "health check failed", "s0/primary", "28P01")
	lc.waitLog(t, "health check failed", "s1/replica0")
	lc.showAll(t, admin)
	lc.scrape()

	// Phase 2, RELOAD to SCRAM with every server reachable but s1's replica.
	writeConfig(leakConfig(cluster, dsns(nil, s1.Replicas[0]), leakUsers("scram-sha-256")))
	if err := lc.reload(t, admin); err != nil {
		t.Fatal(err)
	}
	for _, login := range [][2]string{{"leak_plain", leakPlainPw}, {"leak_scram", leakSCRAMPw}, {"leak_file", leakFilePw}} {
		conn, err := lc.login(t, login[0], login[1], "app")
		if err != nil {
			t.Fatalf("SCRAM login %s: %v", login[0], err)
		}
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM users WHERE id = 42 OR id = 7").Scan(&n); err != nil {
			t.Fatalf("query as %s: %v", login[0], err)
		}
	}
	for _, tc := range []struct{ user, password, code string }{
		{"leak_scram", leakPlainPw, "28P01"},
		{"nobody", leakSCRAMPw, "28P01"},
		{"leak_md5", leakMD5Pw, "28000"}, // its md5 hash cannot serve SCRAM
	} {
		if _, err := lc.login(t, tc.user, tc.password, "app"); sqlState(err) != tc.code {
			t.Fatalf("SCRAM login %s: %v, want %s", tc.user, err, tc.code)
		}
	}
	lc.showAll(t, admin)
	lc.scrape()

	// Phase 3: RELOADs that fail on a secret in the wrong place.
	scram, _ := scramSecret(leakSCRAMPw, leakSCRAMSalt)
	for _, broken := range []string{
		// A DSN where a list belongs.
		strings.Replace(leakConfig(cluster, good, leakUsers("md5")), "replicas: [", "replicas: "+good(s0.Primary)+"\n    x: [", 1),
		// A password with an unescaped '/', which cuts the URL short.
		leakConfig(cluster, func(s *sandbox.Server) string {
			return fmt.Sprintf("postgres://%s:%s/tail@127.0.0.1:%d/app", leakRole, leakDSNPw, s.Port)
		}, leakUsers("md5")),
		// A SCRAM secret cut short, and users given as a string.
		strings.Replace(leakConfig(cluster, good, leakUsers("md5")), scram, scram[:len(scram)-8], 1),
		leakConfig(cluster, good, "auth: {type: md5, users: \"leak_plain:"+leakPlainPw+"\"}\n"),
	} {
		writeConfig(broken)
		if err := lc.reload(t, admin); err == nil {
			t.Fatalf("RELOAD accepted a broken config:\n%s", broken)
		}
	}

	// Phase 4: s1's primary now refuses the DSN password; a write needs it.
	writeConfig(leakConfig(cluster, dsns(s1.Primary, s1.Replicas[0]), leakUsers("scram-sha-256")))
	if err := lc.reload(t, admin); err != nil {
		t.Fatal(err)
	}
	conn, err := lc.login(t, "leak_scram", leakSCRAMPw, "app")
	if err != nil {
		t.Fatal(err)
	}
	_, err = conn.Exec(ctx, "SELECT * FROM users WHERE id = 42 FOR UPDATE") // key 42 is s1's
	lc.clientError(err)
	if sqlState(err) != "08006" {
		t.Fatalf("statement for a primary that refuses the DSN password: %v, want 08006", err)
	}
	lc.waitLog(t, "health check failed", "s1/primary", "28P01")
	lc.showAll(t, admin)
	lc.scrape()

	// What was seen is what the test meant to provoke, so finding no secret
	// in it means something.
	lc.add("logs", lc.logs.String())
	for where, want := range map[string][]string{
		"logs":          {`"level":"DEBUG"`, "authentication failed", "configuration reloaded", leakRole},
		"SHOW output":   {leakRole + ":xxxxx@", "password=xxxxx", "banned"},
		"metrics":       {"shardgate_server_up"},
		"client errors": {"08006", "28P01", "28000", "42601", "shards[0].replicas", "invalid DSN"},
	} {
		if lc.seen[where] == nil {
			t.Fatalf("nothing seen in %s", where)
		}
		for _, w := range want {
			if !strings.Contains(lc.seen[where].String(), w) {
				t.Errorf("%s lack %q: the test did not exercise what it meant to", where, w)
			}
		}
	}
	// Every ban series exists from start: the scrape must show this one counted.
	if !regexp.MustCompile(`shardgate_server_bans_total\{[^}]*server="s1/primary"[^}]*\} [1-9]`).MatchString(lc.seen["metrics"].String()) {
		t.Errorf("metrics show no ban of s1/primary: the test did not exercise what it meant to")
	}
	if lc.reloads != 2 {
		t.Errorf("%d RELOADs succeeded, want 2", lc.reloads)
	}
	for where, b := range lc.seen {
		text := b.String()
		for name, forms := range leakSecrets() {
			for _, form := range forms {
				if i := strings.Index(text, form); i >= 0 {
					t.Errorf("%s leaked into %s: ...%s...", name, where, text[max(0, i-200):min(len(text), i+len(form)+50)])
				}
			}
		}
		if loc := leakShapes.FindStringIndex(text); loc != nil {
			t.Errorf("something shaped like a password hash leaked into %s: ...%s...", where, text[max(0, loc[0]-200):min(len(text), loc[1]+50)])
		}
	}
}

// TestReloadWarnsAboutExposedSecrets: each RELOAD warns once about a file
// holding secrets that others can read, and stops once it is private.
func TestReloadWarnsAboutExposedSecrets(t *testing.T) {
	logs := &syncBuffer{}
	srv, _, stop, err := startLogged(cluster, func(*topology.Config) {}, slog.New(slog.NewJSONHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	dir := t.TempDir()
	path, users := filepath.Join(dir, "shardgate.yaml"), filepath.Join(dir, "userlist.txt")
	writeFile(t, users, "\"app\" \"Reload-Pw-3q\"\n") // 0644
	if err := os.WriteFile(path, append(cluster.ConfigYAML("127.0.0.1:0"), "auth: {type: md5, file: userlist.txt}\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	srv.SetConfigFile(path)
	warnings := func() int {
		n := 0
		for _, l := range logs.lines(t) {
			if l["level"] == "WARN" && strings.Contains(l["msg"].(string), "readable by group or others") && l["file"] == users {
				n++
			}
		}
		return n
	}
	for i, mode := range []os.FileMode{0o644, 0o604, 0o600} {
		if err := os.Chmod(users, mode); err != nil {
			t.Fatal(err)
		}
		if err := srv.Reload(); err != nil {
			t.Fatal(err)
		}
		if got, want := warnings(), min(i+1, 2); got != want {
			t.Fatalf("after RELOAD with the auth file at %v: %d warnings in all, want %d\n%s", mode, got, want, logs.String())
		}
	}
	if strings.Contains(logs.String(), "Reload-Pw-3q") {
		t.Errorf("the password reached the log:\n%s", logs.String())
	}
}
