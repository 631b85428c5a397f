package topology

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeMode(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}

func TestExposedSecrets(t *testing.T) {
	dir := t.TempDir()
	base := "database: app\nkeyspace: [{range: \"-\", shard: s0}]\n"
	shard := func(dsn string) string { return "shards: [{name: s0, primary: \"" + dsn + "\"}]\n" }
	plainDSN := shard("postgres://u@h:1/app")
	writeMode(t, filepath.Join(dir, "userlist.txt"), "\"app\" \"pw\"\n", 0o604)
	writeMode(t, filepath.Join(dir, "userlist-private.txt"), "\"app\" \"pw\"\n", 0o600)
	writeMode(t, filepath.Join(dir, "server.key"), "key", 0o644)
	for _, tc := range []struct {
		name string
		yaml string
		mode os.FileMode
		want []string // base names of the files warned about, with what they hold
	}{
		{"no secrets, world-readable", base + plainDSN, 0o644, nil},
		{"user password, world-readable", base + plainDSN + "auth: {type: md5, users: [{name: app, password: zq7Pw}]}\n", 0o644,
			[]string{"shardgate.yaml client passwords (auth.users)"}},
		{"user password, owner only", base + plainDSN + "auth: {type: md5, users: [{name: app, password: zq7Pw}]}\n", 0o600, nil},
		{"DSN password, group-readable", base + shard("postgres://u:zq7Pw@h:1/app"), 0o640,
			[]string{"shardgate.yaml server passwords (shard DSNs)"}},
		{"DSN password parameter, other-readable", base + shard("postgres://u@h:1/app?password=zq7Pw"), 0o604,
			[]string{"shardgate.yaml server passwords (shard DSNs)"}},
		{"DSN password, writable but not readable by others", base + shard("postgres://u:zq7Pw@h:1/app"), 0o622, nil},
		{"auth file readable, config not secret", base + plainDSN + "auth: {type: md5, file: userlist.txt}\n", 0o644,
			[]string{"userlist.txt client passwords (auth.file)"}},
		{"private auth file", base + plainDSN + "auth: {type: md5, file: userlist-private.txt}\n", 0o644, nil},
		{"both", base + shard("postgres://u:zq7Pw@h:1/app") + "auth: {type: md5, file: userlist.txt, users: [{name: b, password: zq7Pw}]}\n", 0o644,
			[]string{"shardgate.yaml client passwords (auth.users) and server passwords (shard DSNs)", "userlist.txt client passwords (auth.file)"}},
		{"TLS key", base + plainDSN + "tls: {mode: require, cert: server.crt, key: server.key}\n", 0o600,
			[]string{"server.key the TLS private key (tls.key)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "shardgate.yaml")
			writeMode(t, path, tc.yaml, tc.mode)
			cfg, err := LoadConfig(path)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, f := range ExposedSecrets(path, cfg) {
				if f.Mode&0o044 == 0 {
					t.Errorf("%s reported with mode %v", f.Path, f.Mode)
				}
				got = append(got, filepath.Base(f.Path)+" "+f.Holds)
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("exposed:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			// One warning per exposed file, naming it, and no secret in it.
			var logs bytes.Buffer
			WarnExposedSecrets(slog.New(slog.NewTextHandler(&logs, nil)), path, cfg)
			lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
			if logs.Len() == 0 {
				lines = nil
			}
			if len(lines) != len(tc.want) {
				t.Fatalf("%d warnings, want %d:\n%s", len(lines), len(tc.want), logs.String())
			}
			for i, l := range lines {
				if !strings.Contains(l, "level=WARN") || !strings.Contains(l, strings.Fields(tc.want[i])[0]) || strings.Contains(l, "zq7Pw") {
					t.Errorf("warning %q, want a WARN about %s without the password", l, strings.Fields(tc.want[i])[0])
				}
			}
		})
	}
}
