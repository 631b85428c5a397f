package proxy_test

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestPythonClients runs psycopg2 and psycopg 3 (Debian's packages, with the
// system interpreter) through the proxy.
func TestPythonClients(t *testing.T) {
	script, _ := filepath.Abs("testdata/psycopg_clients.py")
	out, err := exec.CommandContext(t.Context(), "/usr/bin/python3", script, proxyDSN, "6000000").CombinedOutput()
	if err != nil {
		t.Fatalf("psycopg clients failed: %v\n%s", err, out)
	}
	for _, want := range []string{"ok psycopg2", "ok psycopg3 prepare_threshold=None", "ok psycopg3 prepare_threshold=0"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("missing %q in output:\n%s", want, out)
		}
	}
}

// TestPgbench runs pgbench's own protocol handling (simple and extended)
// against a users-by-id script and requires zero failed transactions.
func TestPgbench(t *testing.T) {
	ctx := t.Context()
	for _, mode := range []string{"simple", "extended", "prepared"} {
		t.Run(mode, func(t *testing.T) {
			script := filepath.Join(t.TempDir(), "select.sql")
			writeFile(t, script, "\\set id random(1000000, 1000999)\nSELECT id, name FROM users WHERE id = :id;\n")
			cmd := exec.CommandContext(ctx, "pgbench", "-n", "-T", "2", "-c", "4", "-M", mode, "-f", script, proxyDSN)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("pgbench -M %s: %v\n%s", mode, err, out)
			}
			processed := regexp.MustCompile(`number of transactions actually processed: (\d+)`).FindSubmatch(out)
			failed := regexp.MustCompile(`number of failed transactions: (\d+)`).FindSubmatch(out)
			if processed == nil || string(processed[1]) == "0" || failed == nil || string(failed[1]) != "0" {
				t.Fatalf("pgbench -M %s: want transactions and zero failures:\n%s", mode, out)
			}
			t.Logf("pgbench -M %s: %s transactions", mode, processed[1])
		})
	}
}
