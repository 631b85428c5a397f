package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shardgate/shardgate/topology"
)

const cbindPassword = "cb-Pass-4Kz"

// writeCertFor writes a self-signed certificate for 127.0.0.1 signed by key
// with alg, and its key, and returns their paths and the pair.
func writeCertFor(t *testing.T, key crypto.Signer, alg x509.SignatureAlgorithm) (certPath, keyPath string, pair tls.Certificate) {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:       big.NewInt(time.Now().UnixNano()),
		Subject:            pkix.Name{CommonName: "shardgate cbind test"},
		NotBefore:          time.Now().Add(-time.Hour),
		NotAfter:           time.Now().Add(time.Hour),
		IPAddresses:        []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage:        []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		SignatureAlgorithm: alg,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	dir := t.TempDir()
	certPath, keyPath = filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	writeFile(t, certPath, string(certPEM))
	writeFile(t, keyPath, string(keyPEM))
	if pair, err = tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath, pair
}

// startTLSProxy runs a proxy that requires TLS with the given certificate
// and authenticates user app with SCRAM.
func startTLSProxy(t *testing.T, certPath, keyPath string) string {
	t.Helper()
	return serveOver(t, cluster, func(c *topology.Config) {
		c.TLS = topology.TLSConfig{Mode: "require", Cert: certPath, Key: keyPath}
		c.Auth = topology.AuthConfig{Type: "scram-sha-256", Users: []topology.UserConfig{{Name: "app", Password: cbindPassword}}}
	})
}

// pgxLogin connects as app with pgx (sslmode=require: encrypted, not
// verified, which is what channel binding protects) and runs SELECT 1.
func pgxLogin(t *testing.T, addr, password, channelBinding string) error {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), "postgres://app:"+password+"@"+addr+"/app?sslmode=require&channel_binding="+channelBinding)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, ok := conn.PgConn().Conn().(*tls.Conn); !ok {
		t.Fatal("connection is not TLS")
	}
	var one int
	if err := conn.QueryRow(t.Context(), "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("SELECT 1 after login: %d, %v", one, err)
	}
	return nil
}

// psqlLogin runs SELECT 1 through psql (libpq) as app; it returns psql's
// output and whether it succeeded.
func psqlLogin(t *testing.T, addr, password, channelBinding string) (string, bool) {
	t.Helper()
	psql, err := exec.LookPath("psql")
	if err != nil {
		psql = "/usr/lib/postgresql/15/bin/psql"
	}
	host, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, psql, "-X", "-A", "-t", "-w",
		"host="+host+" port="+port+" user=app dbname=app sslmode=require channel_binding="+channelBinding, "-c", "SELECT 1")
	cmd.Env = append(os.Environ(), "PGPASSWORD="+password, "PGPASSFILE=/dev/null", "PGCONNECT_TIMEOUT=5")
	out, err := cmd.CombinedOutput()
	if _, exited := errors.AsType[*exec.ExitError](err); err != nil && !exited {
		t.Fatalf("running psql: %v", err)
	}
	return strings.TrimSpace(string(out)), err == nil
}

// TestChannelBinding: over TLS the proxy offers SCRAM-SHA-256-PLUS, and
// libpq and pgx, told to require channel binding, log in with certificates
// whose binding hashes differ (SHA-256, SHA-384, SHA-512, RFC 5929 4.1).
func TestChannelBinding(t *testing.T) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key crypto.Signer
		alg x509.SignatureAlgorithm
	}{
		{p256, x509.ECDSAWithSHA256},
		{p384, x509.ECDSAWithSHA384},
		{rsaKey, x509.SHA512WithRSA},
	} {
		t.Run(tc.alg.String(), func(t *testing.T) {
			certPath, keyPath, _ := writeCertFor(t, tc.key, tc.alg)
			addr := startTLSProxy(t, certPath, keyPath)
			if err := pgxLogin(t, addr, cbindPassword, "require"); err != nil {
				t.Fatalf("pgx, channel_binding=require: %v", err)
			}
			if out, ok := psqlLogin(t, addr, cbindPassword, "require"); !ok || out != "1" {
				t.Fatalf("psql, channel_binding=require: %s", out)
			}
		})
	}

	certPath, keyPath, _ := writeCertFor(t, p256, x509.ECDSAWithSHA256)
	addr := startTLSProxy(t, certPath, keyPath)
	t.Run("wrong password", func(t *testing.T) {
		if err := pgxLogin(t, addr, "wrong", "require"); sqlState(err) != "28P01" {
			t.Fatalf("pgx: %v, want 28P01", err)
		}
		if out, ok := psqlLogin(t, addr, "wrong", "require"); ok || !strings.Contains(out, `password authentication failed for user "app"`) {
			t.Fatalf("psql: %s", out)
		}
	})
	t.Run("client without binding", func(t *testing.T) {
		// "n": the client chose not to bind; nothing was downgraded.
		if err := pgxLogin(t, addr, cbindPassword, "disable"); err != nil {
			t.Fatalf("pgx, channel_binding=disable: %v", err)
		}
		if out, ok := psqlLogin(t, addr, cbindPassword, "disable"); !ok || out != "1" {
			t.Fatalf("psql, channel_binding=disable: %s", out)
		}
	})

	// A man in the middle with its own certificate, which sslmode=require
	// does not check: binding exposes it even though it relays the exchange
	// faithfully, and the same relay works for a client that does not bind.
	_, _, mitmCert := writeCertFor(t, p256, x509.ECDSAWithSHA256)
	t.Run("man in the middle", func(t *testing.T) {
		relay := startMITM(t, addr, mitmCert, false)
		if err := pgxLogin(t, relay, cbindPassword, "disable"); err != nil {
			t.Fatalf("through the relay without binding: %v (the relay itself is broken)", err)
		}
		err := pgxLogin(t, relay, cbindPassword, "prefer")
		if sqlState(err) != "28000" || !strings.Contains(err.Error(), "SCRAM channel binding check failed") {
			t.Fatalf("pgx through the relay: %v, want 28000 channel binding check failed", err)
		}
		if out, ok := psqlLogin(t, relay, cbindPassword, "prefer"); ok || !strings.Contains(out, "SCRAM channel binding check failed") {
			t.Fatalf("psql through the relay: %s", out)
		}
	})
	t.Run("downgrade", func(t *testing.T) {
		// The relay also hides SCRAM-SHA-256-PLUS: clients answer "y"
		// (could bind, server can't), which the proxy knows is false.
		relay := startMITM(t, addr, mitmCert, true)
		err := pgxLogin(t, relay, cbindPassword, "prefer")
		if sqlState(err) != "28000" || !strings.Contains(err.Error(), "channel binding negotiation error") {
			t.Fatalf("pgx through the downgrading relay: %v, want 28000 negotiation error", err)
		}
		if out, ok := psqlLogin(t, relay, cbindPassword, "prefer"); ok || !strings.Contains(out, "channel binding negotiation error") {
			t.Fatalf("psql through the downgrading relay: %s", out)
		}
	})
}

// startMITM listens for Postgres clients, answers their SSLRequest with
// cert, and relays each over its own TLS connection to the proxy at target.
// With strip it removes SCRAM-SHA-256-PLUS from the proxy's mechanism list.
func startMITM(t *testing.T, target string, cert tls.Certificate, strip bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go relayMITM(c, target, cert, strip)
		}
	}()
	return ln.Addr().String()
}

func relayMITM(client net.Conn, target string, cert tls.Certificate, strip bool) {
	defer client.Close()
	var sslRequest [8]byte
	if _, err := io.ReadFull(client, sslRequest[:]); err != nil {
		return
	}
	server, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer server.Close()
	var answer [1]byte
	if _, err := server.Write(sslRequest[:]); err != nil {
		return
	}
	if _, err := io.ReadFull(server, answer[:]); err != nil || answer[0] != 'S' {
		return
	}
	if _, err := client.Write(answer[:]); err != nil {
		return
	}
	tc := tls.Server(client, &tls.Config{Certificates: []tls.Certificate{cert}})
	ts := tls.Client(server, &tls.Config{InsecureSkipVerify: true})
	go func() {
		io.Copy(ts, tc)
		ts.Close()
	}()
	if !strip {
		io.Copy(tc, ts)
		return
	}
	r := bufio.NewReader(ts)
	for {
		var hdr [5]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return
		}
		body := make([]byte, binary.BigEndian.Uint32(hdr[1:])-4)
		if _, err := io.ReadFull(r, body); err != nil {
			return
		}
		if hdr[0] == 'R' && binary.BigEndian.Uint32(body) == 10 { // AuthenticationSASL
			body = bytes.Replace(body, []byte("SCRAM-SHA-256-PLUS\x00"), nil, 1)
			binary.BigEndian.PutUint32(hdr[1:], uint32(len(body)+4))
		}
		if _, err := tc.Write(append(hdr[:], body...)); err != nil {
			return
		}
	}
}
