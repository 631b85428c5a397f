package auth

import (
	"bufio"
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// rawClient speaks the protocol by hand, to send what real clients don't.
type rawClient struct {
	nc net.Conn
	c  *sockConn
}

func rawStartup(t *testing.T, addr, user string) (*rawClient, net.Conn) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	body := binary.BigEndian.AppendUint32(nil, 196608)
	body = append(body, "user\x00"+user+"\x00database\x00db\x00\x00"...)
	if _, err := nc.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(body)+4)), body...)); err != nil {
		t.Fatal(err)
	}
	return &rawClient{nc: nc, c: &sockConn{r: bufio.NewReader(nc), w: nc}}, nc
}

func (c *rawClient) send(t *testing.T, typ byte, body []byte) {
	t.Helper()
	if err := c.c.WriteMessage(typ, body); err != nil {
		t.Fatal(err)
	}
}

// expectAuth reads an 'R' message with the given code and returns its data.
func (c *rawClient) expectAuth(t *testing.T, code uint32) []byte {
	t.Helper()
	typ, body, err := c.c.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	if typ == 'E' {
		var e pgproto3.ErrorResponse
		e.Decode(body)
		t.Fatalf("got error %s %q, want R %d", e.Code, e.Message, code)
	}
	if typ != 'R' || len(body) < 4 || binary.BigEndian.Uint32(body) != code {
		t.Fatalf("got %q %x, want R %d", typ, body, code)
	}
	return body[4:]
}

// expectError reads a FATAL ErrorResponse with the given SQLSTATE.
func (c *rawClient) expectError(t *testing.T, code string) string {
	t.Helper()
	typ, body, err := c.c.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	var e pgproto3.ErrorResponse
	if typ != 'E' || e.Decode(body) != nil {
		t.Fatalf("got %q %q, want ErrorResponse %s", typ, body, code)
	}
	if e.Code != code || e.Severity != "FATAL" {
		t.Fatalf("got %s %s %q, want FATAL %s", e.Severity, e.Code, e.Message, code)
	}
	return e.Message
}

func saslInitial(clientFirst string) []byte {
	return saslInitialFor(scramMechanism, clientFirst)
}

func saslInitialFor(mechanism, clientFirst string) []byte {
	b := append([]byte(mechanism), 0)
	b = binary.BigEndian.AppendUint32(b, uint32(len(clientFirst)))
	return append(b, clientFirst...)
}

// scramClient runs a hand-written client up to the client-final message;
// final lets a test tamper with what is sent. It returns the expected
// server-final "v=..." for the message actually sent.
func scramClient(t *testing.T, c *rawClient, gs2, password string, final func(withoutProof string, proof []byte) string) string {
	t.Helper()
	c.expectAuth(t, authCodeSASL)
	return scramClientBound(t, c, scramMechanism, gs2, nil, password, final)
}

// scramClientBound is scramClient after AuthenticationSASL, selecting
// mechanism and sending cbind (the certificate hash it claims to see) in c=.
func scramClientBound(t *testing.T, c *rawClient, mechanism, gs2 string, cbind []byte, password string, final func(withoutProof string, proof []byte) string) string {
	t.Helper()
	clientFirstBare := "n=,r=fyko+d2lbbFgONRv9qkxdawL"
	c.send(t, 'p', saslInitialFor(mechanism, gs2+clientFirstBare))
	serverFirst := string(c.expectAuth(t, authCodeSASLContinue))
	attrs := strings.Split(serverFirst, ",")
	if len(attrs) != 3 || !strings.HasPrefix(attrs[0], "r=fyko+d2lbbFgONRv9qkxdawL") || len(attrs[0]) <= len("r=fyko+d2lbbFgONRv9qkxdawL") {
		t.Fatalf("bad server-first %q", serverFirst)
	}
	salt, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(attrs[1], "s="))
	if err != nil {
		t.Fatal(err)
	}
	iter, err := strconv.Atoi(strings.TrimPrefix(attrs[2], "i="))
	if err != nil {
		t.Fatal(err)
	}
	withoutProof := "c=" + base64.StdEncoding.EncodeToString(append([]byte(gs2), cbind...)) + "," + attrs[0]
	salted := refSaltedPassword(password, salt, iter)
	clientKey := refHMAC(salted, "Client Key")
	storedKey := sha256.Sum256(clientKey)
	// The proof signs the message as sent, so tampered fields get a valid proof.
	msg := final(withoutProof, make([]byte, sha256.Size))
	if i := strings.LastIndex(msg, ",p="); i >= 0 {
		msg = msg[:i]
	}
	authMsg := clientFirstBare + "," + serverFirst + "," + msg
	proof := refHMAC(storedKey[:], authMsg)
	for i := range proof {
		proof[i] ^= clientKey[i]
	}
	msg = final(withoutProof, proof)
	c.send(t, 'p', []byte(msg))
	return "v=" + base64.StdEncoding.EncodeToString(refHMAC(refHMAC(salted, "Server Key"), authMsg))
}

func honest(withoutProof string, proof []byte) string {
	return withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof)
}

func TestSCRAMHandClient(t *testing.T) {
	srv := startServer(t, "scram-sha-256", testStore(t))
	b64 := base64.StdEncoding.EncodeToString
	for _, gs2 := range []string{"n,,", "y,,"} {
		t.Run("ok "+gs2, func(t *testing.T) {
			c, _ := rawStartup(t, srv.addr, "alice")
			wantFinal := scramClient(t, c, gs2, "alice-pw", honest)
			if got := string(c.expectAuth(t, authCodeSASLFinal)); got != wantFinal {
				t.Errorf("server-final %q, want %q", got, wantFinal)
			}
			c.expectAuth(t, 0) // the test server's AuthenticationOk
		})
	}
	finals := []struct {
		name, code string
		final      func(string, []byte) string
	}{
		{"wrong proof", "28P01", func(w string, p []byte) string {
			p[0] ^= 1
			return honest(w, p)
		}},
		{"short proof", "08P01", func(w string, p []byte) string { return w + ",p=" + b64([]byte("short")) }},
		{"no proof", "08P01", func(w string, p []byte) string { return w + ",x=" }},
		{"c= for y,,", "08P01", func(w string, p []byte) string { return honest(strings.Replace(w, "c=biws", "c=eSws", 1), p) }},
		{"nonce mismatch", "08P01", func(w string, p []byte) string { return honest(strings.Replace(w, ",r=fyko", ",r=fyk0", 1), p) }},
		{"extension ok", "", func(w string, p []byte) string { return honest(w+",x=ext", p) }},
	}
	for _, tc := range finals {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := rawStartup(t, srv.addr, "alice")
			scramClient(t, c, "n,,", "alice-pw", tc.final)
			if tc.code == "" {
				c.expectAuth(t, authCodeSASLFinal)
				return
			}
			c.expectError(t, tc.code)
		})
	}
	firsts := []struct{ name, body, code string }{
		{"channel binding requested", string(saslInitial("p=tls-server-end-point,,n=,r=abc")), "08P01"},
		{"authzid", string(saslInitial("n,a=bob,n=,r=abc")), "0A000"},
		{"mandatory extension", string(saslInitial("n,,m=x,n=,r=abc")), "0A000"},
		{"bad flag", string(saslInitial("x,,n=,r=abc")), "08P01"},
		{"no nonce", string(saslInitial("n,,n=")), "08P01"},
		{"nonce with space", string(saslInitial("n,,n=,r=a b")), "08P01"},
		{"PLUS mechanism", "SCRAM-SHA-256-PLUS\x00\x00\x00\x00\x03abc", "08P01"},
		{"length mismatch", "SCRAM-SHA-256\x00\x00\x00\x00\x0an,,n=,r=a", "08P01"},
	}
	for _, tc := range firsts {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := rawStartup(t, srv.addr, "alice")
			c.expectAuth(t, authCodeSASL)
			c.send(t, 'p', []byte(tc.body))
			c.expectError(t, tc.code)
		})
	}
	t.Run("not a password message", func(t *testing.T) {
		c, _ := rawStartup(t, srv.addr, "alice")
		c.expectAuth(t, authCodeSASL)
		c.send(t, 'Q', []byte("select 1\x00"))
		c.expectError(t, "08P01")
	})
}

func TestMD5HandClient(t *testing.T) {
	srv := startServer(t, "md5", testStore(t))
	respond := func(t *testing.T, user string, mangle func([]byte) []byte) *rawClient {
		c, _ := rawStartup(t, srv.addr, user)
		salt := c.expectAuth(t, authCodeMD5Password)
		if len(salt) != 4 {
			t.Fatalf("salt %x, want 4 bytes", salt)
		}
		inner := refMD5Secret("alice-pw", "alice")[3:]
		sum := md5.Sum(append([]byte(inner), salt...))
		c.send(t, 'p', mangle([]byte("md5"+hex.EncodeToString(sum[:])+"\x00")))
		return c
	}
	respond(t, "alice", func(b []byte) []byte { return b }).expectAuth(t, 0)
	respond(t, "alice", func(b []byte) []byte { return bytes.ToUpper(b) }).expectError(t, "28P01")
	respond(t, "alice", func(b []byte) []byte { return b[:len(b)-1] }).expectError(t, "08P01")
	// Another user with alice's password hash: the hash includes the user name.
	msg := respond(t, "nobody", func(b []byte) []byte { return b }).expectError(t, "28P01")
	if msg != `password authentication failed for user "nobody"` {
		t.Errorf("message %q", msg)
	}
}

// RFC 7677 section 3's SCRAM-SHA-256 example, end to end through the key
// derivation and verification code.
func TestSCRAMRFC7677Vector(t *testing.T) {
	salt, _ := base64.StdEncoding.DecodeString("W22ZaJ0SNY7soEsUEjb6gQ==")
	keys, err := scramKeysFromPassword("pencil", salt, 4096)
	if err != nil {
		t.Fatal(err)
	}
	const (
		clientFirstBare = "n=user,r=rOprNGfwEbeRWgbNEkqO"
		serverFirst     = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
		clientFinal     = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
		serverFinal     = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
	)
	gs2, bare, nonce, err := parseClientFirst("n,,"+clientFirstBare, false, false)
	if err != nil || gs2 != "n,," || bare != clientFirstBare || nonce != "rOprNGfwEbeRWgbNEkqO" {
		t.Fatalf("parseClientFirst = %q %q %q %v", gs2, bare, nonce, err)
	}
	withoutProof, proof, err := parseClientFinal(clientFinal, gs2, nil, "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
	if err != nil {
		t.Fatal(err)
	}
	sig, ok := scramVerify(keys, bare+","+serverFirst+","+withoutProof, proof)
	if !ok {
		t.Fatal("RFC 7677 proof rejected")
	}
	if got := "v=" + base64.StdEncoding.EncodeToString(sig); got != serverFinal {
		t.Errorf("server-final %q, want %q", got, serverFinal)
	}
	proof[5] ^= 0x80
	if _, ok := scramVerify(keys, bare+","+serverFirst+","+withoutProof, proof); ok {
		t.Error("tampered proof accepted")
	}
}
