package main

import (
	"bytes"
	"strings"
	"testing"
)

// The plan is printed and refused before any server is contacted: these
// configs name servers nobody listens on.
func TestReshardPreflightPlans(t *testing.T) {
	run := func(args ...string) (string, error) {
		root := rootCmd()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append([]string{"reshard", "preflight", "-c", "../../testdata/config/valid.yaml", "--to-primary", "postgres://x@127.0.0.1:1/app"}, args...))
		err := root.ExecuteContext(t.Context())
		return out.String(), err
	}
	out, err := run("--range", "80-", "--at", "c0", "--to", "s2")
	if err == nil || !strings.Contains(out, "after : -80=s0 80-c0=s1 c0-=s2") || !strings.Contains(err.Error(), "connect to the primary of source shard s1") {
		t.Errorf("split: %v\n%s", err, out)
	}
	out, err = run("--range", "40-80", "--to", "s2")
	if err == nil || !strings.Contains(err.Error(), "range 40-80 is not in the keyspace") || strings.Contains(out, "after") {
		t.Errorf("a range that does not exist: %v\n%s", err, out)
	}
}
