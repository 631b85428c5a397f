package proxy_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardgate/shardgate/proxy"
	"github.com/shardgate/shardgate/topology"
)

const pgShadowQuery = "SELECT usename, passwd FROM pg_shadow WHERE usename = $1"

// createAuthQueryRoles creates, on the primary of the shared cluster's
// first shard, a role with a SCRAM secret, one with an md5 hash, one with
// no password, and one the proxy's static list also names with another
// password; all dropped when the test ends.
func createAuthQueryRoles(t *testing.T) {
	t.Helper()
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, cluster.Shards[0].Primary.DSN(cluster.Database))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	roles := []string{"aq_scram", "aq_md5", "aq_nopw", "aq_static"}
	for _, stmt := range []string{
		"SET password_encryption = 'scram-sha-256'",
		"CREATE ROLE aq_scram LOGIN PASSWORD 'scram-pw'",
		"CREATE ROLE aq_static LOGIN PASSWORD 'server-pw'",
		"SET password_encryption = 'md5'",
		"CREATE ROLE aq_md5 LOGIN PASSWORD 'md5-pw'",
		"CREATE ROLE aq_nopw LOGIN",
	} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, cluster.Shards[0].Primary.DSN(cluster.Database))
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP ROLE IF EXISTS "+strings.Join(roles, ", ")); err != nil {
			t.Error(err)
		}
	})
	// The secrets are stored as the test means them to be.
	var scram, md5 string
	if err := conn.QueryRow(ctx, "SELECT (SELECT passwd FROM pg_shadow WHERE usename = 'aq_scram'), (SELECT passwd FROM pg_shadow WHERE usename = 'aq_md5')").Scan(&scram, &md5); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(scram, "SCRAM-SHA-256$") || !strings.HasPrefix(md5, "md5") {
		t.Fatalf("secrets stored as %.14s… and %.3s…", scram, md5)
	}
}

// loginAs logs in through the proxy at addr and runs a query.
func loginAs(ctx context.Context, addr, user, password string) error {
	conn, err := pgx.Connect(ctx, "postgres://"+user+":"+password+"@"+addr+"/app?sslmode=disable")
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var one int
	return conn.QueryRow(ctx, "SELECT 1").Scan(&one)
}

func TestAuthQuery(t *testing.T) {
	createAuthQueryRoles(t)
	for _, method := range []string{"scram-sha-256", "md5"} {
		t.Run(method, func(t *testing.T) {
			logs := &syncBuffer{}
			_, addr, stop, err := startLogged(cluster, func(c *topology.Config) {
				c.Auth = topology.AuthConfig{Type: method, Query: pgShadowQuery,
					Users: []topology.UserConfig{{Name: "aq_static", Password: "static-pw"}}}
			}, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
			if err != nil {
				t.Fatal(err)
			}
			defer stop()
			ctx := t.Context()
			good, mismatched := "aq_scram:scram-pw", "aq_md5:md5-pw"
			if method == "md5" {
				good, mismatched = mismatched, good
			}
			for _, login := range []string{good, "aq_static:static-pw"} {
				user, pw, _ := strings.Cut(login, ":")
				if err := loginAs(ctx, addr, user, pw); err != nil {
					t.Fatalf("%s: %v", login, err)
				}
			}
			goodUser, _, _ := strings.Cut(good, ":")
			for _, login := range []string{
				goodUser + ":wrong",   // wrong password
				"aq_nobody:scram-pw",  // no such role
				"aq_nopw:anything",    // NULL password
				"aq_static:server-pw", // the static list wins over the server's secret
				mismatched,            // a secret the method can't use: not revealed
			} {
				user, pw, _ := strings.Cut(login, ":")
				err := loginAs(ctx, addr, user, pw)
				var pgErr *pgconn.PgError
				if !errors.As(err, &pgErr) || pgErr.Code != "28P01" || pgErr.Message != `password authentication failed for user "`+user+`"` {
					t.Errorf("%s: got %v, want 28P01 password authentication failed", login, err)
				}
			}
			text := logs.String()
			for _, want := range []string{`"user":"aq_nopw","reason":"the user has no password (NULL or empty)"`, "auth.query: the user's secret cannot serve the auth type"} {
				if !strings.Contains(text, want) {
					t.Errorf("log lacks %s:\n%s", want, text)
				}
			}
			if strings.Contains(text, "SCRAM-SHA-256$") || strings.Contains(text, "md5-pw") || strings.Contains(text, "scram-pw") {
				t.Errorf("a secret reached the log:\n%s", text)
			}
		})
	}
}

// TestAuthQuerySeesPasswordChanges: results are not cached, so a new
// password works, and the old one fails, at the next login.
func TestAuthQuerySeesPasswordChanges(t *testing.T) {
	createAuthQueryRoles(t)
	addr, stop, err := startProxy(func(c *topology.Config) {
		c.Auth = topology.AuthConfig{Type: "scram-sha-256", Query: pgShadowQuery}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	ctx := t.Context()
	if err := loginAs(ctx, addr, "aq_scram", "scram-pw"); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, cluster.Shards[0].Primary.DSN(cluster.Database))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "SET password_encryption = 'scram-sha-256'; ALTER ROLE aq_scram PASSWORD 'new-pw'"); err != nil {
		t.Fatal(err)
	}
	if err := loginAs(ctx, addr, "aq_scram", "scram-pw"); sqlState(err) != "28P01" {
		t.Fatalf("old password after the change: got %v, want 28P01", err)
	}
	if err := loginAs(ctx, addr, "aq_scram", "new-pw"); err != nil {
		t.Fatalf("new password: %v", err)
	}
}

// closedPort is an address where nothing listens: a server that is down.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestAuthQueryServerDown: with the query's shard primary down or hung, a
// login fails with a clear error within its login time, many such logins
// at once all end in time, and users of the static list still log in.
func TestAuthQueryServerDown(t *testing.T) {
	tests := []struct {
		name                  string
		server                string
		loginTimeout, connect time.Duration
		wantCode, wantMsg     string
		within                time.Duration
	}{
		{"refused", closedPort(t), 10 * time.Second, 5 * time.Second,
			"08006", `shardgate could not look up user "%s": `, 2 * time.Second},
		{"hung, connect timeout first", proxy.Blackhole(t), 10 * time.Second, 300 * time.Millisecond,
			"08006", `shardgate could not look up user "%s": shard s1's primary did not answer auth.query within 300ms`, 2 * time.Second},
		{"hung, login timeout first", proxy.Blackhole(t), time.Second, 10 * time.Second,
			"57014", "canceling authentication due to timeout (client_login_timeout 1s)", 2500 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, stop, err := startProxy(func(c *topology.Config) {
				c.Shards[1].Primary = "postgres://postgres@" + tt.server + "/app?sslmode=disable"
				c.Pool.ClientLoginTimeout = topology.Duration(tt.loginTimeout)
				c.Pool.ServerConnectTimeout = topology.Duration(tt.connect)
				c.Auth = topology.AuthConfig{Type: "scram-sha-256", Query: pgShadowQuery, QueryShard: "s1",
					Users: []topology.UserConfig{{Name: "app", Password: "s3cret"}}}
			})
			if err != nil {
				t.Fatal(err)
			}
			defer stop()
			ctx := t.Context()
			// More logins than the lookups' connections, each for its own
			// user: those waiting for a connection end in time too.
			const logins = 6
			errs := make([]error, logins)
			took := make([]time.Duration, logins)
			var wg sync.WaitGroup
			for i := range logins {
				wg.Go(func() {
					began := time.Now()
					errs[i] = loginAs(ctx, addr, "aq_user"+string(rune('a'+i)), "pw")
					took[i] = time.Since(began)
				})
			}
			// Meanwhile the static list is served at once.
			time.Sleep(100 * time.Millisecond)
			began := time.Now()
			// Login alone: a query could go to s1, whose primary is out.
			if conn, err := pgx.Connect(ctx, "postgres://app:s3cret@"+addr+"/app?sslmode=disable"); err != nil {
				t.Errorf("static user during the outage: %v", err)
			} else {
				conn.Close(ctx)
				if d := time.Since(began); d > time.Second {
					t.Errorf("static user took %v to log in during the outage", d)
				}
			}
			wg.Wait()
			for i, err := range errs {
				user := "aq_user" + string(rune('a'+i))
				var pgErr *pgconn.PgError
				want := strings.ReplaceAll(tt.wantMsg, "%s", user)
				if !errors.As(err, &pgErr) || pgErr.Code != tt.wantCode || !strings.HasPrefix(pgErr.Message, want) {
					t.Errorf("login %s: got %v, want %s %q…", user, err, tt.wantCode, want)
				}
				if took[i] > tt.within {
					t.Errorf("login %s failed after %v, want within %v", user, took[i], tt.within)
				}
			}
			if tt.name != "refused" {
				return
			}
			// Once its health check has failed, the primary is known to
			// be down and the lookup does not try it.
			want := `shardgate could not look up user "aq_late": shard s1's primary is down`
			deadline := time.Now().Add(5 * time.Second)
			for {
				err := loginAs(ctx, addr, "aq_late", "pw")
				var pgErr *pgconn.PgError
				if errors.As(err, &pgErr) && pgErr.Code == "08006" && pgErr.Message == want {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("login while the primary is banned: got %v, want 08006 %q", err, want)
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}
