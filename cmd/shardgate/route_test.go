package main

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestRouteDeepStatementExits1 runs the built binary: a statement nested
// deeply enough to overflow the C parser's stack used to kill `shardgate
// route` with SIGSEGV from about 30,000 terms. It must exit 1 with
// SQLSTATE 54001 instead. 100,000 terms (200 KB) exceed what one argument
// may hold, so they come on standard input.
func TestRouteDeepStatementExits1(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "shardgate")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, terms := range []int{30_000, 100_000} {
		sql := "SELECT 1" + strings.Repeat("+1", terms-1)
		cmd := exec.Command(bin, "route", "-c", "../../testdata/config/valid.yaml", "-")
		cmd.Stdin = strings.NewReader(sql)
		if terms == 30_000 {
			cmd = exec.Command(bin, "route", "-c", "../../testdata/config/valid.yaml", sql)
		}
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			t.Fatalf("%d terms: want exit status 1, got %v\n%s", terms, err, out)
		}
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			t.Fatalf("%d terms: killed by %v\n%.300s", terms, ws.Signal(), out)
		}
		if exit.ExitCode() != 1 || !strings.Contains(string(out), "SQLSTATE 54001") ||
			!strings.Contains(string(out), "nested deeper than 1000 levels") || strings.Contains(string(out), "proto") {
			t.Fatalf("%d terms: exit %d\n%.300s", terms, exit.ExitCode(), out)
		}
	}
}

func TestRouteReadsStandardInput(t *testing.T) {
	root := rootCmd()
	var out strings.Builder
	root.SetOut(&out)
	root.SetIn(strings.NewReader("SELECT * FROM users WHERE id = 42"))
	root.SetArgs([]string{"route", "-c", "../../testdata/config/valid.yaml", "-"})
	if err := root.Execute(); err != nil || !strings.Contains(out.String(), "shards: s1") {
		t.Fatalf("%v\n%s", err, out.String())
	}
}
