package auth

import (
	"bytes"
	"crypto/md5"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
)

func md5Hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

// md5Exchange sends AuthenticationMD5Password with a fresh salt and checks the
// PasswordMessage "md5" + hex(md5(storedHash + salt)), where storedHash is
// hex(md5(password + user)). known=false runs the exchange and then fails.
func md5Exchange(c Conn, user, storedHash string, known bool) error {
	var salt [4]byte
	rand.Read(salt[:])
	if err := c.WriteMessage(msgTypeAuthentication, authMessage(authCodeMD5Password, salt[:])); err != nil {
		return err
	}
	body, err := readPassword(c)
	if err != nil {
		return err
	}
	// PasswordMessage is one NUL-terminated string.
	resp, ok := bytes.CutSuffix(body, []byte{0})
	if !ok || bytes.IndexByte(resp, 0) >= 0 {
		return protocolError("invalid password message: want one NUL-terminated string")
	}
	want := "md5" + md5Hex(storedHash+string(salt[:]))
	if subtle.ConstantTimeCompare(resp, []byte(want)) != 1 || !known {
		return passwordFailed(user)
	}
	return nil
}
