package main

import (
	"context"
	"flag"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

var updateReadme = flag.Bool("update-readme", false, "rewrite README.md's Try it session from what the sandbox really prints")

// The README's "Try it" session is run, as written, against a real
// `shardgate dev`: every command's output must be what the README shows, so
// the README cannot drift from the product. `go test ./cmd/shardgate -run
// TestReadme -update-readme` rewrites the outputs from a real run.

const readmePath = "../../README.md"

// readmeStep is one command of the session and the output shown after it.
type readmeStep struct {
	command string   // "$ ..." or "app=> ..." as written
	output  []string // the lines shown after it
	first   int      // index of the command's line in the README
}

// readmeSession finds the console block under "## Try it".
func readmeSession(t *testing.T, lines []string) (steps []readmeStep, start, end int) {
	t.Helper()
	start = -1
	for i, l := range lines {
		if l == "## Try it" {
			start = i
		}
		if start >= 0 && i > start && l == "```console" {
			start = i + 1
			break
		}
	}
	if start < 0 {
		t.Fatal("README has no ## Try it console block")
	}
	for end = start; end < len(lines) && lines[end] != "```"; end++ {
		l := lines[end]
		if strings.HasPrefix(l, "$ ") || strings.HasPrefix(l, "app=> ") {
			steps = append(steps, readmeStep{command: l, first: end})
			continue
		}
		if len(steps) == 0 {
			t.Fatalf("README line %d: output before any command: %q", end+1, l)
		}
		steps[len(steps)-1].output = append(steps[len(steps)-1].output, l)
	}
	return steps, start, end
}

func TestReadmeTryIt(t *testing.T) {
	text, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(text), "\n")
	steps, start, end := readmeSession(t, lines)
	if len(steps) < 5 {
		t.Fatalf("the Try it session has %d commands; it should show the product", len(steps))
	}

	dir := t.TempDir()
	listen, metricsAddr := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ready := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		root := rootCmd()
		root.SetOut(ready)
		root.SetErr(io.Discard)
		root.SetArgs([]string{"dev", "--dir", dir, "--listen", listen, "--metrics-listen", metricsAddr, "--log-level", "warn"})
		done <- root.ExecuteContext(ctx)
	}()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(90 * time.Second)
	for !strings.Contains(ready.String(), "ready") {
		if time.Now().After(deadline) {
			t.Fatalf("no ready line after 90s: %q", ready.String())
		}
		time.Sleep(100 * time.Millisecond)
	}

	waitServersUp(t, metricsAddr, 4)

	// The README's addresses and paths, as this run has them.
	ours := strings.NewReplacer("127.0.0.1:6432", listen, "127.0.0.1:9187", metricsAddr, ".sandbox/", dir+"/",
		"./bin/shardgate", "SHARDGATE_TEST_MAIN=1 "+os.Args[0])
	theirs := strings.NewReplacer(listen, "127.0.0.1:6432", metricsAddr, "127.0.0.1:9187", dir+"/", ".sandbox/", dir, ".sandbox")
	readyLine := regexp.MustCompile(`ready in [0-9.]+s`)

	got := make([][]string, len(steps))
	for i := 0; i < len(steps); i++ {
		s := steps[i]
		cmd := strings.TrimPrefix(s.command, "$ ")
		switch {
		case cmd == "make dev":
			got[i] = []string{readyLine.ReplaceAllString(theirs.Replace(strings.TrimSpace(ready.String())), "ready in 3.2s"), ""}
		case strings.HasPrefix(cmd, "psql ") && i+1 < len(steps) && strings.HasPrefix(steps[i+1].command, "app=> "):
			// One psql session runs every app=> line that follows, as a
			// user typing them would (read-your-writes holds per session).
			j := i + 1
			for j < len(steps) && strings.HasPrefix(steps[j].command, "app=> ") {
				j++
			}
			got[i] = s.output
			outs := psqlSession(t, ours.Replace(strings.TrimPrefix(cmd, "psql ")), steps[i+1:j])
			for k, out := range outs {
				got[i+1+k] = strings.Split(theirs.Replace(out), "\n")
			}
			i = j - 1
		default:
			out, err := exec.Command("bash", "-c", ours.Replace(cmd)).CombinedOutput()
			if err != nil {
				t.Errorf("README line %d: %s: %v\n%s", s.first+1, cmd, err, out)
			}
			got[i] = strings.Split(theirs.Replace(string(out)), "\n")
		}
	}

	var rewritten []string
	for i, s := range steps {
		want, have := trimBlank(s.output), trimBlank(got[i])
		if *updateReadme {
			rewritten = append(rewritten, s.command)
			rewritten = append(rewritten, have...)
			if i+1 < len(steps) && !strings.HasPrefix(steps[i+1].command, "app=> ") && !strings.HasPrefix(s.command, "$ psql") {
				rewritten = append(rewritten, "")
			}
			continue
		}
		if strings.Join(want, "\n") != strings.Join(have, "\n") {
			t.Errorf("README line %d: %s\nREADME shows:\n%s\nthe sandbox prints:\n%s\n(go test ./cmd/shardgate -run TestReadme -update-readme rewrites it)",
				s.first+1, s.command, strings.Join(want, "\n"), strings.Join(have, "\n"))
		}
	}
	if *updateReadme {
		out := append(append(append([]string{}, lines[:start]...), trimBlank(rewritten)...), lines[end:]...)
		if err := os.WriteFile(readmePath, []byte(strings.Join(out, "\n")), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// psqlSession runs the app=> statements in one psql process and returns
// what psql printed for each, errors included, as a terminal shows them.
func psqlSession(t *testing.T, dsn string, steps []readmeStep) []string {
	t.Helper()
	const mark = "@@readme@@"
	args := []string{"-X", dsn}
	for _, s := range steps {
		args = append(args, "-c", strings.TrimPrefix(s.command, "app=> "), "-c", `\echo `+mark)
	}
	cmd := exec.Command("psql", args...)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil && !strings.Contains(out.String(), "ERROR") {
		t.Fatalf("psql: %v\n%s", err, out.String())
	}
	parts := strings.Split(out.String(), mark+"\n")
	if len(parts) != len(steps)+1 {
		t.Fatalf("psql printed %d answers for %d statements:\n%s", len(parts)-1, len(steps), out.String())
	}
	return parts[:len(steps)]
}

// trimBlank drops trailing blank lines and the spaces psql pads its last
// column with, which editors strip from the README.
func trimBlank(lines []string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = strings.TrimRight(l, " ")
	}
	for len(out) > 0 && out[len(out)-1] == "" {
		out = out[:len(out)-1]
	}
	return out
}

// waitServersUp waits until the proxy's health checks have found n servers
// up, as they have by the time a user types the first command.
func waitServersUp(t *testing.T, metricsAddr string, n int) {
	t.Helper()
	up := regexp.MustCompile(`(?m)^shardgate_server_up\{.*\} 1$`)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + metricsAddr + "/metrics")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if len(up.FindAll(body, -1)) == n {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the proxy never saw %d servers up", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
