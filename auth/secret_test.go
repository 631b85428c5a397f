package auth

import (
	"bytes"
	"strings"
	"testing"
)

func TestParseSecret(t *testing.T) {
	// A plain password serves both methods, with a fresh 16-byte salt.
	p1, err := ParseSecret("alice", "alice-pw")
	if err != nil {
		t.Fatal(err)
	}
	p2, _ := ParseSecret("alice", "alice-pw")
	if p1.md5 != refMD5Secret("alice-pw", "alice")[3:] {
		t.Errorf("md5 = %q", p1.md5)
	}
	if p1.scram == nil || len(p1.scram.salt) != 16 || p1.scram.iterations != 4096 {
		t.Fatalf("scram keys = %+v", p1.scram)
	}
	if bytes.Equal(p1.scram.salt, p2.scram.salt) {
		t.Error("two parses share a salt")
	}
	// Keys match the independent reference for the same salt.
	ref, err := ParseSecret("alice", refSCRAMSecret("alice-pw", p1.scram.salt, 4096))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ref.scram.storedKey, p1.scram.storedKey) || !bytes.Equal(ref.scram.serverKey, p1.scram.serverKey) {
		t.Error("derived keys differ from the reference implementation")
	}
	// PostgreSQL's own secrets parse into the kinds they are, and agree
	// with the reference implementation.
	s, err := ParseSecret(pgSCRAMUser, pgSCRAMSecret)
	if err != nil || s.md5 != "" || s.scram == nil || s.scram.iterations != 4096 {
		t.Fatalf("SCRAM secret: %+v, %v", s, err)
	}
	if got := refSCRAMSecret(pgSCRAMPassword, s.scram.salt, 4096); got != pgSCRAMSecret {
		t.Errorf("reference SCRAM secret %q, PostgreSQL made %q", got, pgSCRAMSecret)
	}
	m, err := ParseSecret(pgMD5User, "md5"+strings.ToUpper(pgMD5Secret[3:]))
	if err != nil || m.scram != nil || "md5"+m.md5 != pgMD5Secret || refMD5Secret(pgMD5Password, pgMD5User) != pgMD5Secret {
		t.Fatalf("md5 secret: %+v, %v", m, err)
	}
	if got := s.String(); strings.Contains(got, "Uq") || got != "auth.Secret(redacted)" {
		t.Errorf("String() = %q", got)
	}

	const storedServer = "$4foOIFbySumquSLflLaCNVSqn6vhgoYACUw2Qoxq/sI=:wWjw9T3wOUtTMN1j0RQjNkTRMgrhjWD6fMJfzasTFGk="
	for _, bad := range []string{
		"",
		"md5b5c1a71356e98ead2d304e1c5c32b01z", // not hex
		"SCRAM-SHA-256$",                      // empty
		"SCRAM-SHA-256$4096:UqYVXcpDSROKPNL5Ft6Wng==",               // no keys
		"SCRAM-SHA-256$4096UqYVXcpDSROKPNL5Ft6Wng==" + storedServer, // no ':'
		"SCRAM-SHA-256$0:UqYVXcpDSROKPNL5Ft6Wng==" + storedServer,
		"SCRAM-SHA-256$-1:UqYVXcpDSROKPNL5Ft6Wng==" + storedServer,
		"SCRAM-SHA-256$x:UqYVXcpDSROKPNL5Ft6Wng==" + storedServer,
		"SCRAM-SHA-256$4096:" + storedServer, // empty salt
		"SCRAM-SHA-256$4096:not base64!" + storedServer,
		"SCRAM-SHA-256$4096:UqYVXcpDSROKPNL5Ft6Wng==$4foOIFbySumquSLflLaCNVSqn6vhgoYACUw2Qoxq/sI=",      // one key
		"SCRAM-SHA-256$4096:UqYVXcpDSROKPNL5Ft6Wng==$4foO:wWjw9T3wOUtTMN1j0RQjNkTRMgrhjWD6fMJfzasTFGk=", // short StoredKey
		"SCRAM-SHA-256$4096:UqYVXcpDSROKPNL5Ft6Wng==$4foOIFbySumquSLflLaCNVSqn6vhgoYACUw2Qoxq/sI=:AAAA", // short ServerKey
	} {
		if _, err := ParseSecret("u", bad); err == nil {
			t.Errorf("ParseSecret(%q) succeeded", bad)
		} else if len(bad) > 20 && strings.Contains(err.Error(), bad) {
			t.Errorf("error quotes the secret: %v", err)
		}
	}
	// Not 32 hex digits after "md5": a plain password, as in PgBouncer.
	if s, err := ParseSecret("u", "md5abc"); err != nil || s.scram == nil || s.md5 == "" {
		t.Errorf("md5abc: %+v, %v", s, err)
	}
}

// TestSecretServes: a secret serves the methods whose proof it can check.
func TestSecretServes(t *testing.T) {
	secret := func(s string) Secret {
		t.Helper()
		sec, err := ParseSecret("u", s)
		if err != nil {
			t.Fatal(err)
		}
		return sec
	}
	for _, tt := range []struct {
		name       string
		sec        Secret
		md5, scram bool
	}{
		{"plain", secret("pw"), true, true},
		{"md5", secret(pgMD5Secret), true, false},
		{"scram", secret(pgSCRAMSecret), false, true},
		{"none", Secret{}, false, false},
	} {
		if got := tt.sec.Serves("md5"); got != tt.md5 {
			t.Errorf("%s: Serves(md5) = %v", tt.name, got)
		}
		if got := tt.sec.Serves("scram-sha-256"); got != tt.scram {
			t.Errorf("%s: Serves(scram-sha-256) = %v", tt.name, got)
		}
		if !tt.sec.Serves("trust") || tt.sec.Serves("ldap") {
			t.Errorf("%s: trust must always be served, unknown methods never", tt.name)
		}
	}
}
