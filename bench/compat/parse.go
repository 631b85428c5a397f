package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"
)

// outcome is how a top-level test ended.
type outcome string

const (
	pass outcome = "pass"
	fail outcome = "fail"
	skip outcome = "skip"
	// hung: the test started but its binary ended (timeout, a panic in
	// another goroutine, os.Exit) before the test reported an end.
	hung outcome = "never ended"
)

// testEvent is one line of `go test -json` (cmd/test2json's TestEvent).
type testEvent struct {
	Action  string
	Package string
	Test    string
	Output  string
}

// testResult is one top-level test of one package.
type testResult struct {
	Outcome  outcome
	Panicked bool   // its output shows a panic: it took its test binary down
	Reason   string // for fail and hung: the most telling line of its output
}

// binaryRun is what one run of a package's test binary reported. Only
// top-level tests count: subtests are parts of their parent, and the
// parent fails when one of them fails.
type binaryRun struct {
	Tests   map[string]*testResult
	Crashed bool   // the binary died with tests unfinished or panicking
	Note    string // why it died: the timeout or panic line of its output
	output  map[string]*strings.Builder
	pkgOut  strings.Builder
	started map[string]bool // run and not yet ended
}

// maxOutput bounds the output kept per test: the reason is near its start
// for testify failures and the panic line fits easily.
const maxOutput = 64 << 10

// parseEvents reads a `go test -json` stream of one package.
func parseEvents(r io.Reader) (*binaryRun, error) {
	b := &binaryRun{Tests: map[string]*testResult{}, output: map[string]*strings.Builder{}, started: map[string]bool{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] != '{' {
			// go test writes build failures as plain text.
			b.pkgOut.Write(line)
			b.pkgOut.WriteByte('\n')
			continue
		}
		var ev testEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			return nil, fmt.Errorf("go test -json line %q: %w", truncate(string(line), 120), err)
		}
		b.add(ev)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading go test -json: %w", err)
	}
	b.finish()
	return b, nil
}

func (b *binaryRun) add(ev testEvent) {
	if ev.Test == "" {
		if ev.Action == "output" {
			b.pkgOut.WriteString(ev.Output)
		}
		return
	}
	top, _, sub := strings.Cut(ev.Test, "/")
	switch ev.Action {
	case "output":
		out := b.output[top]
		if out == nil {
			out = &strings.Builder{}
			b.output[top] = out
		}
		if out.Len() < maxOutput {
			out.WriteString(ev.Output)
		}
	case "run":
		if !sub {
			b.started[top] = true
		}
	case "pass", "fail", "skip":
		if !sub {
			delete(b.started, top)
			b.Tests[top] = &testResult{Outcome: outcome(ev.Action)}
		}
	}
}

// finish decides the tests that started and never ended and extracts the
// reasons. A binary's last words (the timeout or panic) are attributed by
// test2json to the test that was running, so they are looked for there too.
// A started test counts as never ended only when it is to blame: named as
// running by the timeout, or when nothing says who was. Parallel tests
// paused behind the culprit stay unresolved, so they run again.
func (b *binaryRun) finish() {
	last := b.pkgOut.String()
	panicked := false
	for name, t := range b.Tests {
		out := b.outputOf(name)
		if t.Outcome == fail && panicRE.MatchString(out) {
			t.Panicked, panicked = true, true
			last += out
		}
		if t.Outcome == fail || t.Outcome == skip {
			t.Reason = reason(out)
		}
	}
	for name := range b.started {
		last += b.outputOf(name)
	}
	running := runningAtTimeout(last)
	for name := range b.started {
		switch {
		case running != nil && !running[name], running == nil && panicked:
			continue
		}
		b.Tests[name] = &testResult{Outcome: hung}
	}
	b.Crashed = len(b.started) > 0 || panicked || crashRE.MatchString(b.pkgOut.String())
	if !b.Crashed {
		return
	}
	b.Note = crashNote(last)
	for _, t := range b.Tests {
		if t.Outcome == hung {
			t.Reason = "its test binary ended first: " + b.Note
		}
	}
}

func (b *binaryRun) outputOf(name string) string {
	if o := b.output[name]; o != nil {
		return o.String()
	}
	return ""
}

// runningAtTimeout returns the top-level tests go test's timeout panic
// lists as running (paused parallel tests are not), or nil if the binary
// did not time out.
func runningAtTimeout(out string) map[string]bool {
	_, after, ok := strings.Cut(out, "panic: test timed out after ")
	if !ok {
		return nil
	}
	_, list, ok := strings.Cut(after, "running tests:\n")
	if !ok {
		return nil
	}
	running := map[string]bool{}
	for line := range strings.Lines(list) {
		name, _, ok := strings.Cut(strings.TrimSpace(line), " (")
		if !ok || name == "" {
			break
		}
		top, _, _ := strings.Cut(name, "/")
		running[top] = true
	}
	return running
}

var (
	panicRE     = regexp.MustCompile(`(?m)^panic: `)
	crashRE     = regexp.MustCompile(`(?m)^panic: |^FAIL\s.*\[build failed\]|^FAIL\s.*\[setup failed\]`)
	sqlstateRE  = regexp.MustCompile(`[^\t\n]*\(SQLSTATE [0-9A-Z]{5}\)`)
	errorLineRE = regexp.MustCompile(`(?m)^\s*Error:\s+(.*)$`)
	goPosRE     = regexp.MustCompile(`^\s*\S+\.go:\d+: `)
	goLineRE    = regexp.MustCompile(`(?m)^\s+\S+\.go:\d+: (.+)$`)
)

// crashNote is the line of a dead binary's output that says why it died.
func crashNote(pkgOut string) string {
	for _, line := range strings.Split(pkgOut, "\n") {
		if strings.HasPrefix(line, "panic: ") || strings.Contains(line, "[build failed]") ||
			strings.Contains(line, "[setup failed]") {
			return truncate(strings.TrimSpace(line), 160)
		}
	}
	return "no panic or timeout message (os.Exit, or killed)"
}

// reason picks the line of a failed test's output that best says why:
// a server error with its SQLSTATE, a panic, testify's Error: and the line
// after it, or the first t.Error/t.Fatal message.
func reason(out string) string {
	if m := sqlstateRE.FindString(out); m != "" {
		return truncate(strings.TrimSpace(goPosRE.ReplaceAllString(m, "")), 200)
	}
	if i := strings.Index(out, "panic: "); i >= 0 {
		line, _, _ := strings.Cut(out[i:], "\n")
		return truncate(line, 200)
	}
	if m := errorLineRE.FindStringSubmatchIndex(out); m != nil {
		msg := strings.TrimSpace(out[m[2]:m[3]])
		// testify puts the interesting half on the next line(s).
		if rest := out[m[1]:]; strings.HasPrefix(rest, "\n") {
			next, _, _ := strings.Cut(strings.TrimLeft(rest[1:], " \t"), "\n")
			if next = strings.TrimSpace(next); next != "" && !strings.Contains(next, ":\t") {
				msg += " " + next
			}
		}
		return truncate(msg, 200)
	}
	if m := goLineRE.FindStringSubmatch(out); m != nil {
		return truncate(strings.TrimSpace(m[1]), 200)
	}
	return "no message"
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// counts is a row of the table.
type counts struct{ Pass, Fail, Skip, Hung int }

func (c *counts) add(o outcome) {
	switch o {
	case pass:
		c.Pass++
	case fail:
		c.Fail++
	case skip:
		c.Skip++
	case hung:
		c.Hung++
	}
}
