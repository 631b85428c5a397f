package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"time"
)

// suite runs a Go module's tests (pgx's, built with this module's
// dependency versions) against one DSN.
type suite struct {
	goBin   string
	dir     string // this module's root: go test resolves pgx from its go.mod
	timeout time.Duration
	log     *slog.Logger
}

// pkgResult is one package's tests over all the binary runs it took.
type pkgResult struct {
	Tests   map[string]*testResult
	Crashes []string // why each binary that died early died
	Listed  int      // tests `go test -list` named
	Runs    int
}

// maxRuns bounds the reruns after crashes: each run ends at least one
// test, so a package needs as many runs as it has crashing tests plus one.
const maxRuns = 12

// runPackage runs pkg's tests with PGX_TEST_DATABASE=dsn. When the binary
// dies (a panic, a hang past the timeout) the tests it did not reach run
// again in a new binary, so that one bad test costs one result, not the
// rest of its package.
func (s *suite) runPackage(ctx context.Context, pkg, dsn string) (*pkgResult, error) {
	env := testEnv(os.Environ(), dsn)
	listed, err := s.list(ctx, pkg, env)
	if err != nil {
		return nil, err
	}
	res := &pkgResult{Tests: map[string]*testResult{}, Listed: len(listed)}
	todo, crashed := listed, false
	for res.Runs < maxRuns && len(todo) > 0 && ctx.Err() == nil {
		run, err := s.runOnce(ctx, pkg, env, todo, res.Runs == 0)
		if err != nil {
			return nil, err
		}
		res.Runs++
		maps.Copy(res.Tests, run.Tests)
		if crashed = run.Crashed; !crashed {
			break
		}
		res.Crashes = append(res.Crashes, run.Note)
		s.log.Warn("test binary died; rerunning the tests it did not reach", "package", pkg, "why", run.Note)
		before := len(todo)
		todo = slices.DeleteFunc(todo, func(name string) bool { return res.Tests[name] != nil })
		if len(todo) == before {
			break // no progress: nothing more to learn from rerunning
		}
	}
	if crashed {
		// Still unreached after the last binary died: they count, as never ended.
		for _, name := range todo {
			if res.Tests[name] == nil {
				res.Tests[name] = &testResult{Outcome: hung, Reason: "not reached: test binaries kept dying before it"}
			}
		}
	}
	return res, ctx.Err()
}

// list returns the package's top-level tests and examples, the unit of a rerun.
func (s *suite) list(ctx context.Context, pkg string, env []string) ([]string, error) {
	cmd := exec.CommandContext(ctx, s.goBin, "test", "-count=1", "-list", ".", pkg)
	cmd.Dir, cmd.Env = s.dir, env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go test -list %s: %w\n%s%s", pkg, err, out, stderr.Bytes())
	}
	var names []string
	for line := range strings.Lines(string(out)) {
		name := strings.TrimSpace(line)
		if strings.HasPrefix(name, "Test") || strings.HasPrefix(name, "Example") || strings.HasPrefix(name, "Fuzz") {
			names = append(names, name)
		}
	}
	return names, nil
}

// runOnce runs one test binary of pkg over only (all of them when first).
// The timeout is go test's own, so a hang ends as a panic that names the
// running tests; the context's deadline behind it is a last resort.
func (s *suite) runOnce(ctx context.Context, pkg string, env, only []string, first bool) (*binaryRun, error) {
	args := []string{"test", "-json", "-count=1", "-timeout", s.timeout.String()}
	if !first {
		args = append(args, "-run", runPattern(only))
	}
	args = append(args, pkg)
	ctx, cancel := context.WithTimeout(ctx, s.timeout+2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.goBin, args...)
	cmd.Dir, cmd.Env = s.dir, env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	run, perr := parseEvents(bytes.NewReader(out))
	if perr != nil {
		return nil, fmt.Errorf("%s: %w", pkg, perr)
	}
	if err != nil && len(run.Tests) == 0 {
		// No test reported anything: the build or go itself failed.
		return nil, fmt.Errorf("go %s: %w\n%s%s", strings.Join(args, " "), err, stderr.Bytes(), run.pkgOut.String())
	}
	return run, nil
}

// runPattern matches exactly the named top-level tests (and their subtests).
func runPattern(names []string) string {
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = regexp.QuoteMeta(n)
	}
	return "^(" + strings.Join(quoted, "|") + ")$"
}

// testEnv is the environment of a pgx test run: PGX_TEST_DATABASE only, so
// that the optional tests (other connection methods, TLS, PgBouncer) skip
// as in pgx's minimal setup, and no PG* variable changes what the DSN says.
func testEnv(environ []string, dsn string) []string {
	env := slices.DeleteFunc(slices.Clone(environ), func(kv string) bool {
		return strings.HasPrefix(kv, "PGX_") || strings.HasPrefix(kv, "PG")
	})
	return append(env, "PGX_TEST_DATABASE="+dsn)
}
