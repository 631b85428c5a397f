package auth

import (
	"context"
	"errors"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// testStore has a plain-password user, a SCRAM-only user and an md5-only
// user; the latter two use secrets PostgreSQL itself generated.
func testStore(t *testing.T) *Store {
	t.Helper()
	st, err := NewStore(map[string]string{
		"alice":     "alice-pw",
		pgSCRAMUser: pgSCRAMSecret,
		pgMD5User:   pgMD5Secret,
		// Computed by the independent reference implementation.
		"bob": refSCRAMSecret("bob-pw", []byte("sixteen byte slt"), 4096),
	}, "")
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// pgconnect connects with pgx's pgconn; password "" means none in the URL.
func pgconnect(t *testing.T, addr, user, password string) error {
	t.Helper()
	u := url.URL{Scheme: "postgres", Host: addr, Path: "/db", RawQuery: "sslmode=disable&connect_timeout=5"}
	u.User = url.User(user)
	if password != "" {
		u.User = url.UserPassword(user, password)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, u.String())
	if err != nil {
		return err
	}
	// The greeting made it through: check pgconn saw our ParameterStatus.
	if v := conn.ParameterStatus("server_version"); v != "15.0" {
		t.Errorf("server_version = %q, want 15.0", v)
	}
	return conn.Close(ctx)
}

func wantPgError(t *testing.T, err error, code, msg string) {
	t.Helper()
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		t.Fatalf("got %v, want *pgconn.PgError %s", err, code)
	}
	if pgErr.Code != code || pgErr.Severity != "FATAL" {
		t.Errorf("got %s %s %q, want FATAL %s", pgErr.Severity, pgErr.Code, pgErr.Message, code)
	}
	if msg != "" && pgErr.Message != msg {
		t.Errorf("message = %q, want %q", pgErr.Message, msg)
	}
}

func TestPgconn(t *testing.T) {
	st := testStore(t)
	servers := map[string]*testServer{
		"scram-sha-256": startServer(t, "scram-sha-256", st),
		"md5":           startServer(t, "md5", st),
		"trust":         startServer(t, "trust", st),
	}
	failed := func(user string) string { return `password authentication failed for user "` + user + `"` }
	tests := []struct {
		method, user, password string
		code, msg              string // "" code: success
	}{
		{"scram-sha-256", "alice", "alice-pw", "", ""},
		{"scram-sha-256", "alice", "wrong", "28P01", failed("alice")},
		{"scram-sha-256", pgSCRAMUser, pgSCRAMPassword, "", ""},
		{"scram-sha-256", pgSCRAMUser, "wrong", "28P01", failed(pgSCRAMUser)},
		{"scram-sha-256", "bob", "bob-pw", "", ""},
		{"scram-sha-256", pgMD5User, pgMD5Password, "28000", ""},
		{"scram-sha-256", "nobody", "alice-pw", "28P01", failed("nobody")},
		{"md5", "alice", "alice-pw", "", ""},
		{"md5", "alice", "wrong", "28P01", failed("alice")},
		{"md5", pgMD5User, pgMD5Password, "", ""},
		{"md5", pgMD5User, "wrong", "28P01", failed(pgMD5User)},
		{"md5", pgSCRAMUser, pgSCRAMPassword, "28000", ""},
		{"md5", "bob", "bob-pw", "28000", ""},
		{"md5", "nobody", "alice-pw", "28P01", failed("nobody")},
		{"trust", "alice", "", "", ""},
		{"trust", "nobody", "", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.method+"/"+tc.user+"/"+tc.password, func(t *testing.T) {
			err := pgconnect(t, servers[tc.method].addr, tc.user, tc.password)
			if tc.code == "" {
				if err != nil {
					t.Fatalf("connect: %v", err)
				}
				return
			}
			wantPgError(t, err, tc.code, tc.msg)
		})
	}
}

// An unknown user must see the same flow as a known one: same SCRAM salt
// and iteration count on every attempt, and the same error.
func TestUnknownUserLooksKnown(t *testing.T) {
	st := testStore(t)
	first := func(user string) string {
		c, _ := rawStartup(t, startServer(t, "scram-sha-256", st).addr, user)
		c.expectAuth(t, authCodeSASL)
		c.send(t, 'p', saslInitial("n,,n=,r=abc"))
		sf := string(c.expectAuth(t, authCodeSASLContinue))
		_, saltIter, _ := strings.Cut(sf, ",s=")
		return saltIter
	}
	a, b := first("ghost"), first("ghost")
	if a != b || !strings.HasSuffix(a, ",i=4096") {
		t.Errorf("unknown user's salt/iterations vary or look odd: %q vs %q", a, b)
	}
	if first("ghost2") == a {
		t.Errorf("two unknown users got the same salt %q", a)
	}
}

// psql uses libpq, a second, independent SCRAM and md5 client.
func TestPsql(t *testing.T) {
	psql, err := exec.LookPath("psql")
	if err != nil {
		t.Skip("psql not installed")
	}
	st := testStore(t)
	for _, tc := range []struct {
		method, user, password string
		ok                     bool
	}{
		{"scram-sha-256", "alice", "alice-pw", true},
		{"scram-sha-256", "alice", "wrong", false},
		{"scram-sha-256", pgSCRAMUser, pgSCRAMPassword, true},
		{"scram-sha-256", "nobody", "x", false},
		{"md5", "alice", "alice-pw", true},
		{"md5", "alice", "wrong", false},
		{"md5", pgMD5User, pgMD5Password, true},
		{"trust", "alice", "", true},
	} {
		t.Run(tc.method+"/"+tc.user+"/"+tc.password, func(t *testing.T) {
			srv := startServer(t, tc.method, st)
			host, port, _ := strings.Cut(srv.addr, ":")
			cmd := exec.Command(psql, "-X", "-w", "-h", host, "-p", port, "-U", tc.user, "-d", "db", "-c", "")
			// sslmode stays at libpq's default (prefer) so the SSLRequest path runs too.
			cmd.Env = append(os.Environ(), "PGPASSWORD="+tc.password, "PGPASSFILE=/dev/null", "PGCONNECT_TIMEOUT=5")
			out, err := cmd.CombinedOutput()
			if tc.ok && err != nil {
				t.Fatalf("psql failed: %v\n%s", err, out)
			}
			if !tc.ok {
				if err == nil {
					t.Fatalf("psql succeeded with a wrong password\n%s", out)
				}
				if !strings.Contains(string(out), `password authentication failed for user "`+tc.user+`"`) {
					t.Errorf("psql output lacks the auth failure:\n%s", out)
				}
			}
			// The server side agrees with the client on the outcome.
			errs := srv.authErrors()
			if len(errs) != 1 || (errs[0] == nil) != tc.ok {
				t.Errorf("server-side Authenticate results %v, want one with ok=%v", errs, tc.ok)
			}
		})
	}
}
