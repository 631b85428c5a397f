package copyfmt

import (
	"fmt"
	"strings"
	"testing"
)

var benchColumns = []string{"id", "email", "name", "created", "data"}

// benchData is about 4 MB of rows much like a table dump.
func benchData(csv bool) []byte {
	var b strings.Builder
	for i := 0; b.Len() < 4<<20; i++ {
		if csv {
			fmt.Fprintf(&b, "%d,user%d@example.com,\"Name, %d\",2024-01-%02d 12:34:56+00,\"{\"\"k\"\": %d}\"\n", i, i, i, i%28+1, i)
		} else {
			fmt.Fprintf(&b, "%d\tuser%d@example.com\tName\\t%d\t2024-01-%02d 12:34:56+00\t{\"k\": %d}\n", i, i, i, i%28+1, i)
		}
	}
	return []byte(b.String())
}

func benchmarkSplit(b *testing.B, with string) {
	opt := optionsFor(b, with)
	data := benchData(opt.CSV)
	const chunk = 64 << 10 // what pgx sends in one CopyData
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	rows := 0
	for b.Loop() {
		s, err := NewSplitter(opt, benchColumns, 1)
		if err != nil {
			b.Fatal(err)
		}
		rows = 0
		for p := data; len(p) > 0; {
			n := min(chunk, len(p))
			s.Write(p[:n])
			p = p[n:]
			for {
				r, ok, err := s.Next()
				if err != nil {
					b.Fatal(err)
				}
				if !ok {
					break
				}
				if len(r.Key) == 0 {
					b.Fatal("no key")
				}
				rows++
			}
		}
		if _, ok, err := s.End(); ok || err != nil {
			b.Fatal(ok, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(rows), "ns/row")
}

func BenchmarkSplitText(b *testing.B) { benchmarkSplit(b, "") }
func BenchmarkSplitCSV(b *testing.B)  { benchmarkSplit(b, "(FORMAT csv)") }
