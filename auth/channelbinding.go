package auth

import (
	"crypto"
	"crypto/x509"
	"fmt"

	_ "crypto/sha256" // crypto.SHA256.New
	_ "crypto/sha512" // crypto.SHA384.New, crypto.SHA512.New
)

// cbindType is the one channel binding type PostgreSQL (and so every client
// of it) uses: RFC 5929's tls-server-end-point, a hash of the server's
// certificate. It needs no access to TLS internals, only to the certificate.
const cbindType = "tls-server-end-point"

// TLSServerEndPoint returns the tls-server-end-point channel binding data of
// a server certificate (RFC 5929 section 4.1): the hash of its DER encoding
// with the hash function of its signature algorithm, except that MD5 and
// SHA-1 are replaced by SHA-256. For signatures without a single hash
// function (Ed25519) the binding is undefined and an error is returned; the
// proxy then does not offer SCRAM-SHA-256-PLUS.
func TLSServerEndPoint(cert *x509.Certificate) ([]byte, error) {
	if cert == nil {
		return nil, fmt.Errorf("tls-server-end-point: no certificate")
	}
	var h crypto.Hash
	switch cert.SignatureAlgorithm {
	case x509.MD5WithRSA, x509.SHA1WithRSA, x509.DSAWithSHA1, x509.ECDSAWithSHA1,
		x509.SHA256WithRSA, x509.SHA256WithRSAPSS, x509.DSAWithSHA256, x509.ECDSAWithSHA256:
		h = crypto.SHA256
	case x509.SHA384WithRSA, x509.SHA384WithRSAPSS, x509.ECDSAWithSHA384:
		h = crypto.SHA384
	case x509.SHA512WithRSA, x509.SHA512WithRSAPSS, x509.ECDSAWithSHA512:
		h = crypto.SHA512
	default:
		return nil, fmt.Errorf("tls-server-end-point is undefined for certificates signed with %v", cert.SignatureAlgorithm)
	}
	d := h.New()
	d.Write(cert.Raw)
	return d.Sum(nil), nil
}
