package proxy_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/md5"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shardgate/shardgate/topology"
)

func TestPasswordAuthentication(t *testing.T) {
	for _, method := range []string{"scram-sha-256", "md5"} {
		t.Run(method, func(t *testing.T) {
			logs := &syncBuffer{}
			srv, addr, stop, err := startLogged(cluster, func(c *topology.Config) {
				c.Auth = topology.AuthConfig{Type: method, Users: []topology.UserConfig{{Name: "app", Password: "s3cret"}}}
			}, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
			if err != nil {
				t.Fatal(err)
			}
			defer stop()
			ctx := t.Context()
			// The proxy's own server connections: its health checks, which
			// connect on their own schedule, are not in its pools.
			poolConns := func() float64 { return series(t, srv, "shardgate_pool_connections", nil) }
			before := poolConns()
			for _, dsn := range []string{
				"postgres://app:wr0ngPassw0rd@" + addr + "/app?sslmode=disable",
				"postgres://nobody:s3cret@" + addr + "/app?sslmode=disable",
			} {
				_, err := pgx.Connect(ctx, dsn)
				if sqlState(err) != "28P01" {
					t.Fatalf("%s: got %v, want 28P01", dsn, err)
				}
			}
			if after := poolConns(); after != before {
				t.Fatalf("failed logins opened server connections: %v before, %v after", before, after)
			}
			conn, err := pgx.Connect(ctx, "postgres://app:s3cret@"+addr+"/app?sslmode=disable")
			if err != nil {
				t.Fatalf("right password: %v", err)
			}
			defer conn.Close(context.Background())
			var one int
			if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
				t.Fatal(err)
			}
			if poolConns() == before {
				t.Fatal("a login and a query opened no server connection: the count above proves nothing")
			}
			// Failed logins are logged, with their connection, never with a password.
			failures := 0
			for _, l := range logs.lines(t) {
				if l["msg"] == "authentication failed" && l["conn"] != nil {
					failures++
				}
			}
			if failures != 2 {
				t.Errorf("%d failed logins logged with their conn id, want 2", failures)
			}
			if text := logs.String(); strings.Contains(text, "s3cret") || strings.Contains(text, "wr0ngPassw0rd") {
				t.Errorf("a password reached the log:\n%s", text)
			}
		})
	}
}

// TestAuthFile logs in with users from a PgBouncer-style auth file, one
// with a plain password and one with an md5 hash.
func TestAuthFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "userlist.txt")
	// md5 of "hashed-pw" + "hasher", as pg_authid stores it.
	writeFile(t, file, "; users\n\"plain\" \"pw1\"\n\"hasher\" \"md5"+md5hex("hashed-pwhasher")+"\"\n")
	addr, stop, err := startProxy(func(c *topology.Config) {
		c.Auth = topology.AuthConfig{Type: "md5", File: file}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	for _, login := range []string{"plain:pw1", "hasher:hashed-pw"} {
		conn, err := pgx.Connect(t.Context(), "postgres://"+login+"@"+addr+"/app?sslmode=disable")
		if err != nil {
			t.Fatalf("%s: %v", login, err)
		}
		conn.Close(t.Context())
	}
	if _, err := pgx.Connect(t.Context(), "postgres://hasher:wrong@"+addr+"/app?sslmode=disable"); sqlState(err) != "28P01" {
		t.Fatalf("wrong password: %v", err)
	}
}

func md5hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

// writeTestCert makes a self-signed CA-less server certificate for
// 127.0.0.1 and returns the cert and key paths.
func writeTestCert(t *testing.T) (certPath, keyPath string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "shardgate test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certPath, keyPath = filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	writeFile(t, certPath, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	writeFile(t, keyPath, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})))
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certPath, keyPath, pool
}

func TestClientTLS(t *testing.T) {
	certPath, keyPath, roots := writeTestCert(t)
	for _, mode := range []string{"require", "allow"} {
		t.Run(mode, func(t *testing.T) {
			addr, stop, err := startProxy(func(c *topology.Config) {
				c.TLS = topology.TLSConfig{Mode: mode, Cert: certPath, Key: keyPath}
			})
			if err != nil {
				t.Fatal(err)
			}
			defer stop()
			ctx := t.Context()
			cfg, _ := pgx.ParseConfig("postgres://postgres@" + addr + "/app?sslmode=verify-full")
			cfg.TLSConfig = &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}
			conn, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				t.Fatalf("TLS client: %v", err)
			}
			defer conn.Close(context.Background())
			if _, ok := conn.PgConn().Conn().(*tls.Conn); !ok {
				t.Fatal("connection is not TLS")
			}
			var one int
			if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
				t.Fatal(err)
			}
			plain, err := pgx.Connect(ctx, "postgres://postgres@"+addr+"/app?sslmode=disable")
			if mode == "require" {
				if sqlState(err) != "28000" {
					t.Fatalf("plain client with tls require: got %v, want 28000", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("plain client with tls allow: %v", err)
			}
			plain.Close(ctx)
		})
	}
}

// TestCancel cancels a long query through the proxy: the client gets 57014
// within a second, and another client's query is not touched.
func TestCancel(t *testing.T) {
	victim := connect(t, pgx.QueryExecModeCacheStatement)
	bystander := connect(t, pgx.QueryExecModeCacheStatement)
	done := make(chan error, 1)
	go func() {
		_, err := bystander.Exec(context.Background(), "SELECT pg_sleep(1.5)")
		done <- err
	}()
	// pgx sends a CancelRequest when the context ends during a query.
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	began := time.Now()
	_, err := victim.Exec(ctx, "SELECT pg_sleep(30)")
	if took := time.Since(began); took > 1500*time.Millisecond {
		t.Fatalf("cancel took %s", took)
	}
	if err == nil {
		t.Fatal("the query was not cancelled")
	}
	// pgx closes a connection whose context ended; a fresh one checks the
	// server side saw a cancel, not a disconnect.
	var one int
	if err := connect(t, pgx.QueryExecModeSimpleProtocol).QueryRow(t.Context(), "SELECT 1").Scan(&one); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("the other client's query was disturbed: %v", err)
	}
}

// TestCancelKeepsConnection cancels with a raw CancelRequest and checks the
// client sees 57014 and keeps its connection.
func TestCancelKeepsConnection(t *testing.T) {
	conn := connectLow(t)
	result := make(chan error, 1)
	go func() {
		_, err := conn.Exec(context.Background(), "SELECT pg_sleep(30)").ReadAll()
		result <- err
	}()
	time.Sleep(200 * time.Millisecond)
	began := time.Now()
	if err := conn.CancelRequest(t.Context()); err != nil {
		t.Fatal(err)
	}
	err := <-result
	if sqlState(err) != "57014" || time.Since(began) > time.Second {
		t.Fatalf("got %v after %s, want 57014 within a second", err, time.Since(began))
	}
	if res, err := conn.Exec(t.Context(), "SELECT 2").ReadAll(); err != nil || string(res[0].Rows[0][0]) != "2" {
		t.Fatalf("connection after cancel: %v", err)
	}
}
