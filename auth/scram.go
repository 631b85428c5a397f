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

const (
	scramMechanism     = "SCRAM-SHA-256"
	scramPlusMechanism = "SCRAM-SHA-256-PLUS" // with channel binding
)

// scramExchange is the server side of SCRAM-SHA-256 as PostgreSQL speaks it
// (RFC 5802/7677 inside SASL messages). cbind is the connection's
// tls-server-end-point data, nil when it has none (not TLS); with it,
// SCRAM-SHA-256-PLUS is offered before SCRAM-SHA-256, as PostgreSQL does, and
// a client that selects it must prove it sees the same server certificate,
// so a man in the middle that terminates TLS cannot relay the exchange.
// known=false runs the exchange with the fake keys and then fails.
func scramExchange(c Conn, user string, keys *scramKeys, known bool, cbind []byte) error {
	// AuthenticationSASL: the list of mechanisms, each NUL-terminated, then NUL.
	mechanisms := scramMechanism + "\x00\x00"
	if cbind != nil {
		mechanisms = scramPlusMechanism + "\x00" + mechanisms
	}
	if err := c.WriteMessage(msgTypeAuthentication, authMessage(authCodeSASL, []byte(mechanisms))); err != nil {
		return err
	}
	body, err := readPassword(c)
	if err != nil {
		return err
	}
	mechanism, clientFirst, err := parseSASLInitialResponse(body, cbind != nil)
	if err != nil {
		return err
	}
	plus := mechanism == scramPlusMechanism
	gs2Header, clientFirstBare, clientNonce, err := parseClientFirst(clientFirst, plus, cbind != nil)
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
	var bound []byte // what c= must carry after the GS2 header
	if plus {
		bound = cbind
	}
	finalWithoutProof, proof, err := parseClientFinal(string(clientFinal), gs2Header, bound, nonce)
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
// SCRAM-SHA-256-PLUS is valid only when it was offered.
func parseSASLInitialResponse(body []byte, plusOffered bool) (mechanism, clientFirst string, err error) {
	mech, rest, ok := bytes.Cut(body, []byte{0})
	if !ok {
		return "", "", protocolError("malformed SASLInitialResponse: missing mechanism name")
	}
	if string(mech) != scramMechanism && (string(mech) != scramPlusMechanism || !plusOffered) {
		return "", "", protocolError("client selected an invalid SASL authentication mechanism %q", mech)
	}
	if len(rest) < 4 {
		return "", "", protocolError("malformed SASLInitialResponse: missing length")
	}
	n := int32(binary.BigEndian.Uint32(rest))
	data := rest[4:]
	if n < 0 || int(n) != len(data) {
		return "", "", protocolError("malformed SASLInitialResponse: length %d, but %d bytes follow", n, len(data))
	}
	return string(mech), string(data), nil
}

// parseClientFirst splits client-first-message = gs2-header client-first-bare
// where gs2-header = cbind-flag "," [authzid] "," and client-first-bare =
// [reserved-mext ","] "n=" saslname "," "r=" nonce ["," extensions].
// plus tells whether the client selected SCRAM-SHA-256-PLUS, plusOffered
// whether the server offered it (see checkCbindFlag).
// The user name in "n=" is ignored, as PostgreSQL does: libpq sends it empty
// and the startup packet's user is the one authenticated.
func parseClientFirst(msg string, plus, plusOffered bool) (gs2Header, bare, nonce string, err error) {
	flag, rest, ok := strings.Cut(msg, ",")
	if !ok {
		return "", "", "", protocolError("malformed SCRAM message: bad GS2 header")
	}
	if err := checkCbindFlag(flag, plus, plusOffered); err != nil {
		return "", "", "", err
	}
	authzid, bare, ok := strings.Cut(rest, ",")
	switch {
	case strings.HasPrefix(authzid, "a="):
		return "", "", "", &Error{codeFeatureNotSupported, "client uses authorization identity, but it is not supported"}
	case !ok || authzid != "":
		return "", "", "", protocolError("malformed SCRAM message: bad GS2 header")
	}
	gs2Header = msg[:len(flag)+2]
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

// checkCbindFlag applies PostgreSQL's rules to the GS2 channel-binding flag:
// "p=tls-server-end-point" goes with SCRAM-SHA-256-PLUS and only with it;
// "n" (no binding) is fine unless PLUS was selected; "y" (the client could
// bind but believes the server cannot) is refused when the server offered
// PLUS, because then someone removed PLUS from the list on the way: the
// downgrade attack RFC 5802 section 6 has "y" detect.
func checkCbindFlag(flag string, plus, plusOffered bool) error {
	switch {
	case flag == "n", flag == "y":
		if plus {
			return protocolError("malformed SCRAM message: the client selected SCRAM-SHA-256-PLUS, but the SCRAM message does not include channel binding data")
		}
		if flag == "y" && plusOffered {
			return &Error{codeInvalidAuthorization, "SCRAM channel binding negotiation error: the client supports channel binding but thinks the server does not, yet this server offered SCRAM-SHA-256-PLUS"}
		}
		return nil
	case strings.HasPrefix(flag, "p="):
		if !plus {
			return protocolError("malformed SCRAM message: the client requested channel binding without selecting SCRAM-SHA-256-PLUS (offered only over TLS)")
		}
		if flag[2:] != cbindType {
			return protocolError("unsupported SCRAM channel-binding type %q", flag[2:])
		}
		return nil
	}
	return protocolError("malformed SCRAM message: unexpected channel-binding flag")
}

// parseClientFinal splits client-final-message = "c=" base64(gs2-header
// cbind-data) "," "r=" nonce ["," extensions] "," "p=" base64(ClientProof),
// checking the channel binding and the combined nonce. cbind is the
// connection's binding data when the client selected SCRAM-SHA-256-PLUS, nil
// otherwise.
func parseClientFinal(msg, gs2Header string, cbind []byte, nonce string) (withoutProof string, proof []byte, err error) {
	i := strings.LastIndex(msg, ",p=")
	if i < 0 {
		return "", nil, protocolError("malformed SCRAM message: missing proof")
	}
	withoutProof = msg[:i]
	attrs := strings.Split(withoutProof, ",")
	// Without binding, c= echoes the GS2 header ("biws" for "n,,", "eSws"
	// for "y,,"); with it, the header and the certificate hash the client
	// saw, which differs when someone else terminated its TLS.
	if attrs[0] != "c="+base64.StdEncoding.EncodeToString(append([]byte(gs2Header), cbind...)) {
		if cbind != nil {
			return "", nil, &Error{codeInvalidAuthorization, "SCRAM channel binding check failed"}
		}
		return "", nil, protocolError("unexpected SCRAM channel-binding attribute in client-final-message")
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
