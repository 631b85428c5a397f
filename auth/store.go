package auth

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
)

// Store maps user names to secrets. Immutable after construction, so it may
// be shared by all client goroutines and swapped whole on reload.
type Store struct {
	secrets map[string]Secret
}

// NewStore builds a Store from config users (name → secret) and an optional
// auth file in PgBouncer's userlist.txt format ("" for none). Users from the
// config win over the file. Every secret is validated, including file entries
// the config overrides, so a bad file is reported rather than hidden.
func NewStore(users map[string]string, authFile string) (*Store, error) {
	s := &Store{secrets: make(map[string]Secret)}
	if authFile != "" {
		if err := s.loadAuthFile(authFile); err != nil {
			return nil, err
		}
	}
	names := make([]string, 0, len(users))
	for name := range users {
		names = append(names, name)
	}
	sort.Strings(names) // deterministic: the first bad user is always the same one
	for _, name := range names {
		if name == "" {
			return nil, errors.New("auth: empty user name in config")
		}
		sec, err := ParseSecret(name, users[name])
		if err != nil {
			return nil, fmt.Errorf("auth: user %q: %w", name, err)
		}
		s.secrets[name] = sec
	}
	return s, nil
}

// Lookup returns user's secret. A nil Store has no users.
func (s *Store) Lookup(user string) (Secret, bool) {
	if s == nil {
		return Secret{}, false
	}
	sec, ok := s.secrets[user]
	return sec, ok
}

func (s *Store) loadAuthFile(name string) error {
	f, err := os.Open(name)
	if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f) // drops a trailing \r, so CRLF files work
	sc.Buffer(nil, 1<<20)
	line := 0
	for sc.Scan() {
		line++
		user, secret, ok, err := parseAuthLine(sc.Text())
		if err == nil && ok {
			if _, dup := s.secrets[user]; dup {
				err = fmt.Errorf("duplicate user %q", user)
			} else {
				var sec Secret
				if sec, err = ParseSecret(user, secret); err == nil {
					s.secrets[user] = sec
				} else {
					err = fmt.Errorf("user %q: %w", user, err)
				}
			}
		}
		if err != nil {
			return fmt.Errorf("auth: %s:%d: %w", name, line, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("auth: %s:%d: %w", name, line+1, err)
	}
	return nil
}

// parseAuthLine reads one userlist.txt line: `"user" "secret"`, where "" in a
// field is a literal quote. Blank lines and lines starting with ';' or '#'
// give ok=false. As in PgBouncer, anything after the second field is ignored.
func parseAuthLine(line string) (user, secret string, ok bool, err error) {
	rest := strings.TrimLeft(line, " \t")
	if rest == "" || rest[0] == ';' || rest[0] == '#' {
		return "", "", false, nil
	}
	if user, rest, err = quotedField(rest); err != nil {
		return "", "", false, fmt.Errorf("user name: %w", err)
	}
	if user == "" {
		return "", "", false, errors.New("empty user name")
	}
	if secret, _, err = quotedField(strings.TrimLeft(rest, " \t")); err != nil {
		return "", "", false, fmt.Errorf("secret: %w", err)
	}
	return user, secret, true, nil
}

// quotedField reads a double-quoted field at the start of s.
func quotedField(s string) (val, rest string, err error) {
	if s == "" || s[0] != '"' {
		return "", "", errors.New(`want a double-quoted field`)
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		if s[i] != '"' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == '"' { // "" is a literal quote
			b.WriteByte('"')
			i++
			continue
		}
		return b.String(), s[i+1:], nil
	}
	return "", "", errors.New("unterminated quoted field")
}
