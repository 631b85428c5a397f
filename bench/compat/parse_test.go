package main

import (
	"strings"
	"testing"
)

// ev is a go test -json line.
func ev(action, test, output string) string {
	s := `{"Action":"` + action + `","Package":"p"`
	if test != "" {
		s += `,"Test":"` + test + `"`
	}
	if output != "" {
		s += `,"Output":` + quoteJSON(output)
	}
	return s + "}\n"
}

func quoteJSON(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\t", `\t`)
	return `"` + r.Replace(s) + `"`
}

func TestParseEventsCountsTopLevelTests(t *testing.T) {
	stream := ev("start", "", "") +
		ev("run", "TestA", "") + ev("pass", "TestA", "") +
		ev("run", "TestB", "") + ev("run", "TestB/sub", "") + ev("fail", "TestB/sub", "") +
		ev("output", "TestB/sub", "    b_test.go:9: query: ERROR: table \"t\" is not sharded (SQLSTATE 0A000)\n") +
		ev("fail", "TestB", "") +
		ev("run", "TestC", "") + ev("output", "TestC", "    c_test.go:3: needs PGX_TEST_TLS_CONN_STRING\n") + ev("skip", "TestC", "") +
		ev("run", "TestD", "") +
		ev("output", "TestD", "        \tError:      \tReceived unexpected error:\n        \t            \tconn closed\n") +
		ev("fail", "TestD", "") +
		ev("output", "", "FAIL\tp\t0.1s\n") + ev("fail", "", "")
	run, err := parseEvents(strings.NewReader(stream))
	if err != nil {
		t.Fatal(err)
	}
	var c counts
	for _, r := range run.Tests {
		c.add(r.Outcome)
	}
	if want := (counts{Pass: 1, Fail: 2, Skip: 1}); c != want {
		t.Errorf("counts %+v, want %+v (subtests must not count)", c, want)
	}
	if run.Crashed {
		t.Errorf("a binary that reported every test as ended counts as crashed: %q", run.Note)
	}
	if got := run.Tests["TestB"].Reason; got != `query: ERROR: table "t" is not sharded (SQLSTATE 0A000)` {
		t.Errorf("TestB's reason %q: want its subtest's server error", got)
	}
	if got := run.Tests["TestD"].Reason; got != "Received unexpected error: conn closed" {
		t.Errorf("TestD's reason %q: want testify's Error: with the line after it", got)
	}
	if got := run.Tests["TestC"].Reason; got != "needs PGX_TEST_TLS_CONN_STRING" {
		t.Errorf("TestC's skip reason %q", got)
	}
}

func TestParseEventsTimeoutLeavesTestNeverEnded(t *testing.T) {
	stream := ev("run", "TestA", "") + ev("pass", "TestA", "") +
		ev("run", "TestHang", "") +
		ev("output", "TestHang", "panic: test timed out after 3s\n\trunning tests:\n\t\tTestHang (3s)\n") +
		ev("output", "", "FAIL\tp\t3.0s\n") + ev("fail", "", "")
	run, err := parseEvents(strings.NewReader(stream))
	if err != nil {
		t.Fatal(err)
	}
	h := run.Tests["TestHang"]
	if h == nil || h.Outcome != hung {
		t.Fatalf("TestHang: %+v, want never ended", h)
	}
	if !run.Crashed || run.Note != "panic: test timed out after 3s" {
		t.Errorf("crashed %v, note %q: want the timeout line", run.Crashed, run.Note)
	}
	if !strings.Contains(h.Reason, "timed out") {
		t.Errorf("TestHang's reason %q does not say it timed out", h.Reason)
	}
}

func TestParseEventsPanicCrashesBinary(t *testing.T) {
	stream := ev("run", "TestBoom", "") +
		ev("output", "TestBoom", "--- FAIL: TestBoom (0.00s)\n") +
		ev("output", "TestBoom", "panic: runtime error: index out of range [3] with length 0 [recovered, repanicked]\n") +
		ev("fail", "TestBoom", "") + ev("fail", "", "")
	run, err := parseEvents(strings.NewReader(stream))
	if err != nil {
		t.Fatal(err)
	}
	b := run.Tests["TestBoom"]
	if b == nil || b.Outcome != fail || !b.Panicked {
		t.Fatalf("TestBoom: %+v, want a failure that panicked", b)
	}
	if !run.Crashed || !strings.HasPrefix(run.Note, "panic: runtime error: index out of range") {
		t.Errorf("crashed %v, note %q: the panic ends the binary, the tests after it must run again", run.Crashed, run.Note)
	}
}

func TestParseEventsBuildFailureIsPlainText(t *testing.T) {
	stream := "# p\nx.go:1: syntax error\n" + "FAIL\tp [build failed]\n"
	run, err := parseEvents(strings.NewReader(stream))
	if err != nil {
		t.Fatal(err)
	}
	if len(run.Tests) != 0 || !run.Crashed || run.Note != "FAIL\tp [build failed]" {
		t.Errorf("tests %d, crashed %v, note %q: want no tests and the build failure", len(run.Tests), run.Crashed, run.Note)
	}
}

func TestRunPatternMatchesOnlyTheNamedTests(t *testing.T) {
	if got, want := runPattern([]string{"TestA", "TestB"}), "^(TestA|TestB)$"; got != want {
		t.Errorf("runPattern = %q, want %q", got, want)
	}
}

func TestTestEnvKeepsOnlyTheDatabaseVariable(t *testing.T) {
	env := testEnv([]string{"PATH=/bin", "PGHOST=x", "PGX_TEST_TLS_CONN_STRING=y", "HOME=/root"}, "postgres://db")
	want := []string{"PATH=/bin", "HOME=/root", "PGX_TEST_DATABASE=postgres://db"}
	if strings.Join(env, " ") != strings.Join(want, " ") {
		t.Errorf("env %q, want %q", env, want)
	}
}

func TestParseEventsPausedParallelTestsRunAgain(t *testing.T) {
	// TestP is a parallel test paused when TestBoom panics: not to blame.
	stream := ev("run", "TestP", "") + ev("output", "TestP", "=== PAUSE TestP\n") +
		ev("run", "TestBoom", "") +
		ev("output", "TestBoom", "panic: runtime error: index out of range [0] with length 0\n") +
		ev("fail", "TestBoom", "") + ev("fail", "", "")
	run, err := parseEvents(strings.NewReader(stream))
	if err != nil {
		t.Fatal(err)
	}
	if run.Tests["TestP"] != nil || !run.Crashed {
		t.Errorf("TestP %+v, crashed %v: want TestP unresolved so that it runs again", run.Tests["TestP"], run.Crashed)
	}
	// A timeout names the tests really running; paused ones are not.
	stream = ev("run", "TestP", "") + ev("run", "TestHang", "") +
		ev("output", "TestHang", "panic: test timed out after 3m0s\n\trunning tests:\n\t\tTestHang (3m0s)\n\t\tTestHang/sub (3m0s)\n\ngoroutine 5 [running]:\n") +
		ev("fail", "", "")
	if run, err = parseEvents(strings.NewReader(stream)); err != nil {
		t.Fatal(err)
	}
	if run.Tests["TestP"] != nil || run.Tests["TestHang"] == nil || run.Tests["TestHang"].Outcome != hung {
		t.Errorf("tests %v: want only TestHang never ended", run.Tests)
	}
}
