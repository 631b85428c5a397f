package auth

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "userlist.txt")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAuthFile(t *testing.T) {
	file := writeFile(t, strings.Join([]string{
		`; PgBouncer-style comment`,
		`# another comment`,
		``,
		`   `,
		`"alice" "from-file"`,
		`"quo""te" "pa""ss"  trailing stuff is ignored`,
		"\t\"" + pgMD5User + "\" \"" + pgMD5Secret + "\"\r", // leading tab, CRLF
		`"` + pgSCRAMUser + `"   "` + pgSCRAMSecret + `"`,
		`"spaced user" "pass word"`,
	}, "\n"))
	st, err := NewStore(map[string]string{"alice": "from-config", "carol": "carol-pw"}, file)
	if err != nil {
		t.Fatal(err)
	}
	check := func(user, wantMD5 string) {
		t.Helper()
		s, ok := st.Lookup(user)
		if !ok {
			t.Fatalf("user %q missing", user)
		}
		if s.md5 != wantMD5 {
			t.Errorf("user %q: md5 %q, want %q", user, s.md5, wantMD5)
		}
	}
	check("alice", refMD5Secret("from-config", "alice")[3:]) // config wins
	check("carol", refMD5Secret("carol-pw", "carol")[3:])
	check(`quo"te`, refMD5Secret(`pa"ss`, `quo"te`)[3:])
	check(pgMD5User, pgMD5Secret[3:])
	check(pgSCRAMUser, "")
	check("spaced user", refMD5Secret("pass word", "spaced user")[3:])
	if _, ok := st.Lookup("nobody"); ok {
		t.Error("nobody found")
	}
	if _, ok := (*Store)(nil).Lookup("alice"); ok {
		t.Error("nil store found a user")
	}
}

func TestAuthFileErrors(t *testing.T) {
	for _, tc := range []struct{ content, want string }{
		{"\"a\" \"x\"\n\"b\" \"unterminated\n", ":2: secret: unterminated quoted field"},
		{"# c\nalice \"x\"\n", ":2: user name: want a double-quoted field"},
		{"\"alice\"\n", ":1: secret: want a double-quoted field"},
		{"\"alice\" x\n", ":1: secret: want a double-quoted field"},
		{"\"\" \"x\"\n", ":1: empty user name"},
		{"\"a\" \"x\"\n\n\"a\" \"y\"\n", `:3: duplicate user "a"`},
		{"\n\n\n\"a\" \"SCRAM-SHA-256$4096:bad\"\n", `:4: user "a": malformed SCRAM-SHA-256 secret`},
		{"\"a\" \"\"\n", `:1: user "a": empty secret`},
	} {
		file := writeFile(t, tc.content)
		_, err := NewStore(nil, file)
		if err == nil || !strings.Contains(err.Error(), file+tc.want) {
			t.Errorf("content %q: error %v, want it to contain %q", tc.content, err, file+tc.want)
		}
	}
	if _, err := NewStore(nil, filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("missing auth file accepted")
	}
	if _, err := NewStore(map[string]string{"bob": "md5zz"}, ""); err != nil {
		t.Errorf("short md5-looking plain password refused: %v", err)
	}
	if _, err := NewStore(map[string]string{"bob": "SCRAM-SHA-256$1:x"}, ""); err == nil || !strings.Contains(err.Error(), `user "bob"`) {
		t.Errorf("bad config secret: %v", err)
	}
}
