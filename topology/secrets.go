package topology

import (
	"net/url"
	"strings"
)

// Secrets in a config: client passwords and their hashes (auth.users, the
// auth file) and the servers' passwords inside the shards' DSNs. They may
// reach the proxy's memory, never its messages: errors about those fields
// describe values without quoting them, and DSNs are shown redacted.

// dsnPasswordParams are the libpq URL parameters that carry a secret.
var dsnPasswordParams = [...]string{"password", "sslpassword"}

// redacted replaces a secret wherever one is shown, as url.URL.Redacted does.
const redacted = "xxxxx"

// RedactDSN returns dsn with its passwords masked: the one in the userinfo
// and libpq's password and sslpassword parameters. A DSN that does not parse
// is not shown at all, since where its password lies is unknown.
func RedactDSN(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparsable DSN)"
	}
	if q := u.Query(); hasPasswordParam(q) {
		for _, k := range dsnPasswordParams {
			if q.Has(k) {
				q.Set(k, redacted)
			}
		}
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

func hasPasswordParam(q url.Values) bool {
	for _, k := range dsnPasswordParams {
		if q.Has(k) {
			return true
		}
	}
	return false
}

// secretPath reports whether the config value at path (as decode names
// fields) may be or contain a secret, so that errors about it must not quote
// it: anything under auth or shards, or a document that is not a mapping.
func secretPath(path string) bool {
	for _, root := range [...]string{"auth", "shards"} {
		if rest, ok := strings.CutPrefix(path, root); ok && (rest == "" || rest[0] == '.' || rest[0] == '[') {
			return true
		}
	}
	return path == ""
}

// unquoted drops the quoted pieces of a message (Go's %q, as net/url's
// errors quote the part of a URL they reject), which may be secrets. An
// unterminated quote drops the rest.
func unquoted(msg string) string {
	var b strings.Builder
	inQuote := false
	for i := 0; i < len(msg); i++ {
		switch ch := msg[i]; {
		case ch == '"':
			inQuote = !inQuote
		case inQuote && ch == '\\':
			i++ // an escaped character, maybe a quote
		case !inQuote:
			b.WriteByte(ch)
		}
	}
	return strings.Join(strings.Fields(b.String()), " ")
}
