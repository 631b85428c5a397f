package auth

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"testing"
	"time"
)

// selfSigned makes a certificate signed with alg by key.
func selfSigned(t *testing.T, key crypto.Signer, alg x509.SignatureAlgorithm) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:       big.NewInt(1),
		Subject:            pkix.Name{CommonName: "cbind test"},
		NotBefore:          time.Now().Add(-time.Hour),
		NotAfter:           time.Now().Add(time.Hour),
		SignatureAlgorithm: alg,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatalf("%v: %v", alg, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if cert.SignatureAlgorithm != alg {
		t.Fatalf("certificate signed with %v, want %v", cert.SignatureAlgorithm, alg)
	}
	return cert
}

// RFC 5929 section 4.1: the certificate's own signature hash, SHA-256 in
// place of SHA-1, and nothing for signatures without a single hash.
func TestTLSServerEndPoint(t *testing.T) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	sum256 := func(b []byte) []byte { s := sha256.Sum256(b); return s[:] }
	sum384 := func(b []byte) []byte { s := sha512.Sum384(b); return s[:] }
	sum512 := func(b []byte) []byte { s := sha512.Sum512(b); return s[:] }
	for _, tc := range []struct {
		key  crypto.Signer
		alg  x509.SignatureAlgorithm
		want func([]byte) []byte // nil: binding undefined
	}{
		{p256, x509.ECDSAWithSHA256, sum256},
		{p384, x509.ECDSAWithSHA384, sum384},
		{p256, x509.ECDSAWithSHA512, sum512},
		{rsaKey, x509.SHA256WithRSA, sum256},
		{rsaKey, x509.SHA384WithRSAPSS, sum384},
		{rsaKey, x509.SHA512WithRSA, sum512},
		{edKey, x509.PureEd25519, nil},
	} {
		t.Run(tc.alg.String(), func(t *testing.T) {
			cert := selfSigned(t, tc.key, tc.alg)
			got, err := TLSServerEndPoint(cert)
			if tc.want == nil {
				if err == nil {
					t.Fatalf("binding %x for a %v certificate, want an error", got, tc.alg)
				}
				return
			}
			if err != nil || !bytes.Equal(got, tc.want(cert.Raw)) {
				t.Fatalf("got %x, %v; want %x", got, err, tc.want(cert.Raw))
			}
		})
	}
	// SHA-1 is replaced by SHA-256. Go no longer signs with SHA-1, so the
	// algorithm is relabelled on a parsed certificate: only the label counts.
	cert := selfSigned(t, p256, x509.ECDSAWithSHA256)
	cert.SignatureAlgorithm = x509.ECDSAWithSHA1
	if got, err := TLSServerEndPoint(cert); err != nil || !bytes.Equal(got, sum256(cert.Raw)) {
		t.Fatalf("SHA-1 certificate: got %x, %v; want its SHA-256", got, err)
	}
	if _, err := TLSServerEndPoint(nil); err == nil {
		t.Fatal("no certificate: want an error")
	}
}

// TestSCRAMChannelBinding holds the GS2 header to PostgreSQL's rules on a
// connection with binding data (TLS), and on one without.
func TestSCRAMChannelBinding(t *testing.T) {
	cbind := bytes.Repeat([]byte{0xcb}, sha256.Size)
	bound := startBindingServer(t, "scram-sha-256", testStore(t), cbind)
	plain := startServer(t, "scram-sha-256", testStore(t))
	const p = "p=tls-server-end-point,,"
	tests := []struct {
		name      string
		srv       *testServer
		user      string
		mechanism string
		gs2       string
		cbind     []byte // what the client claims to see
		password  string
		code      string // "": success
	}{
		{"PLUS, binding matches", bound, "alice", scramPlusMechanism, p, cbind, "alice-pw", ""},
		{"PLUS, SCRAM secret from PostgreSQL", bound, pgSCRAMUser, scramPlusMechanism, p, cbind, pgSCRAMPassword, ""},
		{"PLUS, another certificate", bound, "alice", scramPlusMechanism, p, bytes.Repeat([]byte{1}, sha256.Size), "alice-pw", "28000"},
		{"PLUS, no binding data", bound, "alice", scramPlusMechanism, p, nil, "alice-pw", "28000"},
		{"PLUS, wrong password", bound, "alice", scramPlusMechanism, p, cbind, "wrong", "28P01"},
		{"PLUS, unknown user", bound, "nobody", scramPlusMechanism, p, cbind, "alice-pw", "28P01"},
		{"no binding, not needed", bound, "alice", scramMechanism, "n,,", nil, "alice-pw", ""},
		{"no binding, wrong password", bound, "alice", scramMechanism, "n,,", nil, "wrong", "28P01"},
		{"no binding over plain TCP", plain, "alice", scramMechanism, "n,,", nil, "alice-pw", ""},
		{"y over plain TCP: the client is right", plain, "alice", scramMechanism, "y,,", nil, "alice-pw", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := rawStartup(t, tc.srv.addr, tc.user)
			mechs := string(c.expectAuth(t, authCodeSASL))
			want := "SCRAM-SHA-256\x00\x00"
			if tc.srv == bound {
				want = "SCRAM-SHA-256-PLUS\x00" + want
			}
			if mechs != want {
				t.Fatalf("mechanisms %q, want %q", mechs, want)
			}
			wantFinal := scramClientBound(t, c, tc.mechanism, tc.gs2, tc.cbind, tc.password, honest)
			if tc.code != "" {
				c.expectError(t, tc.code)
				return
			}
			if got := string(c.expectAuth(t, authCodeSASLFinal)); got != wantFinal {
				t.Fatalf("server-final %q, want %q", got, wantFinal)
			}
		})
	}

	// Refused at the client-first message, whatever the password.
	firsts := []struct {
		name      string
		srv       *testServer
		mechanism string
		gs2       string
		code      string
	}{
		// A man in the middle removed -PLUS from the list: the client
		// would have bound but thinks the server cannot.
		{"y while PLUS offered: downgrade", bound, scramMechanism, "y,,", "28000"},
		{"PLUS with n", bound, scramPlusMechanism, "n,,", "08P01"},
		{"PLUS with y", bound, scramPlusMechanism, "y,,", "08P01"},
		{"p= without PLUS", bound, scramMechanism, p, "08P01"},
		{"PLUS, another binding type", bound, scramPlusMechanism, "p=tls-unique,,", "08P01"},
		{"PLUS, authzid", bound, scramPlusMechanism, "p=tls-server-end-point,a=bob,", "0A000"},
		{"p= over plain TCP", plain, scramMechanism, p, "08P01"},
		{"PLUS over plain TCP", plain, scramPlusMechanism, p, "08P01"},
	}
	for _, tc := range firsts {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := rawStartup(t, tc.srv.addr, "alice")
			c.expectAuth(t, authCodeSASL)
			c.send(t, 'p', saslInitialFor(tc.mechanism, tc.gs2+"n=,r=abc"))
			msg := c.expectError(t, tc.code)
			if tc.code == "28000" && !strings.Contains(msg, "channel binding") {
				t.Errorf("message %q does not name channel binding", msg)
			}
		})
	}
}
