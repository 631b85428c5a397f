package copyfmt

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	pg "github.com/pganalyze/pg_query_go/v5"
)

// got is a row copied out of the Splitter's buffer.
type got struct {
	Raw    string
	Key    string
	Null   bool
	Line   int64
	Header bool
}

func (g got) String() string {
	k := fmt.Sprintf("%q", g.Key)
	if g.Null {
		k = "NULL"
	}
	if g.Header {
		k = "HEADER"
	}
	return fmt.Sprintf("{%q %s line %d}", g.Raw, k, g.Line)
}

// split feeds input to a new Splitter in the pieces chunks gives and
// collects every row until End, or the error.
func split(t testing.TB, opt Options, cols []string, key int, input string, chunks []int) ([]got, error) {
	t.Helper()
	s, err := NewSplitter(opt, cols, key)
	if err != nil {
		t.Fatalf("NewSplitter: %v", err)
	}
	var rows []got
	take := func(next func() (Row, bool, error)) error {
		for {
			r, ok, err := next()
			if err != nil {
				return err
			}
			if !ok {
				return nil
			}
			if r.Null && r.Key != nil {
				t.Fatalf("row %q: Null with a non-nil Key", r.Raw)
			}
			if !r.Null && !r.Header && r.Key == nil {
				t.Fatalf("row %q: nil Key but not Null", r.Raw)
			}
			rows = append(rows, got{string(r.Raw), string(r.Key), r.Null, r.Line, r.Header})
		}
	}
	rest := input
	for _, n := range chunks {
		n = min(n, len(rest))
		s.Write([]byte(rest[:n]))
		rest = rest[n:]
		if err := take(s.Next); err != nil {
			return rows, err
		}
	}
	if rest != "" {
		s.Write([]byte(rest))
		if err := take(s.Next); err != nil {
			return rows, err
		}
	}
	first := true
	err = take(func() (Row, bool, error) {
		if first {
			first = false
			return s.End()
		}
		return s.Next()
	})
	if err == nil && !s.Done() {
		t.Fatalf("not Done after End")
	}
	return rows, err
}

// chunkings are the ways the tests cut an input into Writes: whole, byte
// by byte, every two-piece cut, and random pieces.
func chunkings(input string, rng *rand.Rand) [][]int {
	n := len(input)
	out := [][]int{{n}}
	ones := make([]int, n)
	for i := range ones {
		ones[i] = 1
	}
	out = append(out, ones)
	for cut := 1; cut < n; cut++ {
		out = append(out, []int{cut, n - cut})
	}
	for range 5 {
		var c []int
		for left := n; left > 0; {
			k := 1 + rng.IntN(min(left, 7))
			c = append(c, k)
			left -= k
		}
		out = append(out, c)
	}
	return out
}

// optionsFor parses "COPY t FROM STDIN <with>" and returns its Options.
func optionsFor(t testing.TB, with string) Options {
	t.Helper()
	o, err := parseOptions(with)
	if err != nil {
		t.Fatalf("%s: %v", with, err)
	}
	return o
}

func parseOptions(with string) (Options, error) {
	tree, err := pg.Parse("COPY t FROM STDIN " + with)
	if err != nil {
		return Options{}, err
	}
	return FromStmt(tree.Stmts[0].Stmt.GetCopyStmt())
}

func rowsString(rows []got) string {
	var b strings.Builder
	for _, r := range rows {
		b.WriteString(r.String())
		b.WriteByte('\n')
	}
	return b.String()
}
