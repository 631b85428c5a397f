// Command crashdepth measures how deeply nested SQL must be to crash
// pg_query's C code (a stack overflow: a segfault, not a Go panic), which
// the limits in router/nesting.go and router/parse.go are set against.
// Each try runs in a child process on a thread Go created, like the
// proxy's connection goroutines; run it under different `ulimit -s`
// values (thread stacks are 8 MiB by default, 2 MiB under unlimited):
//
//	go run ./router/testdata/crashdepth
//	go run ./router/testdata/crashdepth -deparse
//	(ulimit -s unlimited; go run ./router/testdata/crashdepth -deparse)
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	pg "github.com/pganalyze/pg_query_go/v5"
)

var shapes = map[string]func(n int) string{
	"plus":  func(n int) string { return "SELECT 1" + strings.Repeat("+1", n) },
	"cast":  func(n int) string { return "SELECT 1" + strings.Repeat("::int", n) },
	"union": func(n int) string { return "SELECT 1" + strings.Repeat(" UNION SELECT 1", n) },
	"join":  func(n int) string { return "SELECT * FROM t" + strings.Repeat(" JOIN t ON true", n) },
	// Right-nested shapes: the grammar's own stack limit refuses them
	// ("memory exhausted") before the C stack is at risk when parsing.
	"subquery": func(n int) string { return strings.Repeat("SELECT (", n) + "SELECT 1" + strings.Repeat(")", n) },
	"case": func(n int) string {
		return "SELECT " + strings.Repeat("CASE WHEN true THEN ", n) + "1" + strings.Repeat(" END", n)
	},
}

func main() {
	deparse := flag.Bool("deparse", false, "also deparse the parsed tree")
	max := flag.Int("max", 200_000, "largest nesting to try")
	flag.Parse()
	if spec := os.Getenv("CRASHDEPTH_CHILD"); spec != "" {
		child(spec, *deparse)
		return
	}
	for _, name := range []string{"plus", "cast", "union", "join", "subquery", "case"} {
		lo, hi := 0, 1
		for hi <= *max && !crashes(name, hi, *deparse) {
			lo, hi = hi, hi*2
		}
		if hi > *max {
			fmt.Printf("%-9s no crash up to %d levels\n", name, lo)
			continue
		}
		for hi-lo > 1+lo/200 {
			if mid := (lo + hi) / 2; crashes(name, mid, *deparse) {
				hi = mid
			} else {
				lo = mid
			}
		}
		fmt.Printf("%-9s crashes at %d levels (fine at %d)\n", name, hi, lo)
	}
}

func crashes(shape string, n int, deparse bool) bool {
	args := []string{}
	if deparse {
		args = append(args, "-deparse")
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "CRASHDEPTH_CHILD="+shape+":"+strconv.Itoa(n))
	out, err := cmd.CombinedOutput()
	return err != nil && strings.Contains(string(out), "SIGSEGV")
}

// child parses (and deparses) one statement on a thread other than the
// process's main one, whose stack may grow further.
func child(spec string, deparse bool) {
	shape, n, _ := strings.Cut(spec, ":")
	levels, _ := strconv.Atoi(n)
	sql := shapes[shape](levels)
	done := make(chan bool)
	for {
		go func() {
			runtime.LockOSThread() // never unlocked: the thread is not reused
			if syscall.Gettid() == syscall.Getpid() {
				done <- false
				return
			}
			tree, err := pg.Parse(sql)
			if err == nil && deparse {
				_, err = pg.Deparse(tree)
			}
			fmt.Println("no crash:", err)
			done <- true
		}()
		if <-done {
			return
		}
	}
}
