package auth

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"strconv"
	"strings"
)

const scramMechanism = "SCRAM-SHA-256"

// scramExchange is the server side of SCRAM-SHA-256 as PostgreSQL speaks it
// (RFC 5802/7677 inside SASL messages). Only SCRAM-SHA-256 is offered, never
// SCRAM-SHA-256-PLUS, so channel binding is not supported: a client that asks
// for it ("p=") is refused, and "y,," (client could bind but thinks the server
// can't) is accepted because that is true. known=false runs the exchange with
// the fake keys and then fails.
func scramExchange(c Conn, user string, keys *scramKeys, known bool) error {
	// AuthenticationSASL: the list of mechanisms, each NUL-terminated, then NUL.
	if err := c.WriteMessage(msgTypeAuthentication, authMessage(authCodeSASL, []byte(scramMechanism+"\x00\x00"))); err != nil {
		return err
	}
	body, err := readPassword(c)
	if err != nil {
		return err
	}
	clientFirst, err := parseSASLInitialResponse(body)
	if err != nil {
		return err
	}
	gs2Header, clientFirstBare, clientNonce, err := parseClientFirst(clientFirst)
	if err != nil {
		return err
	}

	// 18 random bytes, as PostgreSQL uses; base64 is printable and has no ','.
	var sn [18]byte
	rand.Read(sn[:])
	nonce := clientNonce + base64.StdEncoding.EncodeToString(sn[:])
	serverFirst := "r=" + nonce + ",s=" + base64.StdEncoding.EncodeToString(keys.salt) + ",i=" + strconv.Itoa(keys.iterations)
	if err := c.WriteMessage(msgTypeAuthentication, authMessage(authCodeSASLContinue, []byte(serverFirst))); err != nil {
		return err
	}

	// SASLResponse: the body is the client-final-message itself.
	clientFinal, err := readPassword(c)
	if err != nil {
		return err
	}
	finalWithoutProof, proof, err := parseClientFinal(string(clientFinal), gs2Header, nonce)
	if err != nil {
		return err
	}
	authMsg := clientFirstBare + "," + serverFirst + "," + finalWithoutProof
	serverSignature, ok := scramVerify(keys, authMsg, proof)
	if !ok || !known {
		return passwordFailed(user)
	}
	return c.WriteMessage(msgTypeAuthentication, authMessage(authCodeSASLFinal, []byte("v="+base64.StdEncoding.EncodeToString(serverSignature))))
}

// scramVerify checks a ClientProof (RFC 5802 section 3): ClientKey =
// ClientProof XOR HMAC(StoredKey, AuthMessage) must hash to StoredKey. It
// returns the ServerSignature = HMAC(ServerKey, AuthMessage) to send back.
func scramVerify(keys *scramKeys, authMsg string, proof []byte) (serverSignature []byte, ok bool) {
	clientSignature := hmacSHA256(keys.storedKey, authMsg)
	clientKey := make([]byte, len(clientSignature))
	subtle.XORBytes(clientKey, proof, clientSignature)
	h := sha256.Sum256(clientKey)
	ok = len(proof) == sha256.Size && subtle.ConstantTimeCompare(h[:], keys.storedKey) == 1
	return hmacSHA256(keys.serverKey, authMsg), ok
}

// parseSASLInitialResponse reads mechanism NUL, int32 length, client-first.
func parseSASLInitialResponse(body []byte) (string, error) {
	mech, rest, ok := bytes.Cut(body, []byte{0})
	if !ok {
		return "", protocolError("malformed SASLInitialResponse: missing mechanism name")
	}
	if string(mech) != scramMechanism {
		return "", protocolError("client selected an invalid SASL authentication mechanism %q", mech)
	}
	if len(rest) < 4 {
		return "", protocolError("malformed SASLInitialResponse: missing length")
	}
	n := int32(binary.BigEndian.Uint32(rest))
	data := rest[4:]
	if n < 0 || int(n) != len(data) {
		return "", protocolError("malformed SASLInitialResponse: length %d, but %d bytes follow", n, len(data))
	}
	return string(data), nil
}

// parseClientFirst splits client-first-message = gs2-header client-first-bare
// where gs2-header = cbind-flag "," [authzid] "," and client-first-bare =
// [reserved-mext ","] "n=" saslname "," "r=" nonce ["," extensions].
// The user name in "n=" is ignored, as PostgreSQL does: libpq sends it empty
// and the startup packet's user is the one authenticated.
func parseClientFirst(msg string) (gs2Header, bare, nonce string, err error) {
	switch {
	case strings.HasPrefix(msg, "n,"), strings.HasPrefix(msg, "y,"):
	case strings.HasPrefix(msg, "p="):
		return "", "", "", protocolError("SCRAM channel binding is not supported: the server did not offer SCRAM-SHA-256-PLUS")
	default:
		return "", "", "", protocolError("malformed SCRAM message: unexpected channel-binding flag")
	}
	if strings.HasPrefix(msg[2:], "a=") {
		return "", "", "", &Error{codeFeatureNotSupported, "client uses authorization identity, but it is not supported"}
	}
	if !strings.HasPrefix(msg[2:], ",") {
		return "", "", "", protocolError("malformed SCRAM message: bad GS2 header")
	}
	gs2Header, bare = msg[:3], msg[3:]
	attrs := strings.Split(bare, ",")
	if strings.HasPrefix(attrs[0], "m=") {
		return "", "", "", &Error{codeFeatureNotSupported, "client requires an unsupported SCRAM extension"}
	}
	if len(attrs) < 2 || !strings.HasPrefix(attrs[0], "n=") || !strings.HasPrefix(attrs[1], "r=") {
		return "", "", "", protocolError("malformed SCRAM message: want n=<user>,r=<nonce>")
	}
	nonce = attrs[1][2:]
	if nonce == "" || !printable(nonce) {
		return "", "", "", protocolError("malformed SCRAM message: invalid client nonce")
	}
	return gs2Header, bare, nonce, nil
}

// parseClientFinal splits client-final-message = "c=" base64(gs2-header)
// "," "r=" nonce ["," extensions] "," "p=" base64(ClientProof), checking the
// channel binding echo and the combined nonce.
func parseClientFinal(msg, gs2Header, nonce string) (withoutProof string, proof []byte, err error) {
	i := strings.LastIndex(msg, ",p=")
	if i < 0 {
		return "", nil, protocolError("malformed SCRAM message: missing proof")
	}
	withoutProof = msg[:i]
	attrs := strings.Split(withoutProof, ",")
	// With no channel binding, c= must echo the GS2 header exactly ("biws" for
	// "n,,", "eSws" for "y,,"); anything else means client and server disagree.
	if attrs[0] != "c="+base64.StdEncoding.EncodeToString([]byte(gs2Header)) {
		return "", nil, protocolError("SCRAM channel binding check failed")
	}
	if len(attrs) < 2 || attrs[1] != "r="+nonce {
		return "", nil, protocolError("SCRAM nonce mismatch")
	}
	proof, err = base64.StdEncoding.DecodeString(msg[i+3:])
	if err != nil || len(proof) != sha256.Size {
		return "", nil, protocolError("malformed SCRAM message: invalid proof")
	}
	return withoutProof, proof, nil
}

// printable reports whether s has only printable ASCII other than ',', the
// characters RFC 5802 allows in a nonce.
func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e || s[i] == ',' {
			return false
		}
	}
	return true
}
