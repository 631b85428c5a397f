package topology

import (
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"strings"
)

// Files holding secrets should be readable by their owner only, as libpq
// insists for ~/.pgpass and PostgreSQL for its key file: the proxy warns
// about those that are not rather than refusing them, since a config
// managed by deployment tools may be shared with a group on purpose.

// ExposedFile is a file holding secrets that its group or others can read.
type ExposedFile struct {
	Path  string
	Mode  fs.FileMode
	Holds string // what secrets it holds, for the warning
}

// ExposedSecrets lists the files holding cfg's secrets that group or others
// can read (mode & 0o044), as libpq checks ~/.pgpass: the config file at
// configPath if it has passwords (auth.users or a DSN's), the auth file and
// the client TLS key. Files that cannot be stat'ed are left out; reading
// them reports why.
func ExposedSecrets(configPath string, cfg *Config) []ExposedFile {
	var out []ExposedFile
	check := func(path, holds string) {
		if path == "" {
			return
		}
		st, err := os.Stat(path)
		if err == nil && st.Mode().Perm()&0o044 != 0 {
			out = append(out, ExposedFile{Path: path, Mode: st.Mode().Perm(), Holds: holds})
		}
	}
	if holds := configSecrets(cfg); holds != "" {
		check(configPath, holds)
	}
	check(cfg.Auth.File, "client passwords (auth.file)")
	if cfg.TLS.Mode != "disable" {
		check(cfg.TLS.Key, "the TLS private key (tls.key)")
	}
	return out
}

// configSecrets names the kinds of secret written in cfg itself, "" if none.
func configSecrets(cfg *Config) string {
	var kinds []string
	for _, u := range cfg.Auth.Users {
		if u.Password != "" {
			kinds = append(kinds, "client passwords (auth.users)")
			break
		}
	}
dsns:
	for _, s := range cfg.Shards {
		for _, dsn := range append([]string{s.Primary}, s.Replicas...) {
			if dsnHasPassword(dsn) {
				kinds = append(kinds, "server passwords (shard DSNs)")
				break dsns
			}
		}
	}
	return strings.Join(kinds, " and ")
}

// WarnExposedSecrets logs a warning for each file of ExposedSecrets; the
// proxy calls it whenever it loads a config file (start and RELOAD).
func WarnExposedSecrets(log *slog.Logger, configPath string, cfg *Config) {
	for _, f := range ExposedSecrets(configPath, cfg) {
		log.Warn("file holding secrets is readable by group or others; chmod go-rwx it",
			"file", f.Path, "mode", f.Mode.String(), "holds", f.Holds)
	}
}

// dsnHasPassword reports whether dsn carries a password anywhere.
func dsnHasPassword(dsn string) bool {
	u, err := url.Parse(dsn)
	if err != nil {
		return true // unknown, so assume the worst
	}
	_, ok := u.User.Password()
	return ok || hasPasswordParam(u.Query())
}
