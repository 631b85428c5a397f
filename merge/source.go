package merge

import (
	"errors"
	"io"
)

// Source is one stream of rows; Next returns io.EOF at its end.
type Source interface {
	Next() (Row, error)
}

// SliceSource is a Source over rows already in memory.
type SliceSource struct {
	Rows []Row
}

// Next returns the next row, or io.EOF.
func (s *SliceSource) Next() (Row, error) {
	if len(s.Rows) == 0 {
		return nil, io.EOF
	}
	r := s.Rows[0]
	s.Rows = s.Rows[1:]
	return r, nil
}

// Concat returns the rows of sources one source after the other, for
// results without ORDER BY.
func Concat(sources []Source) Source {
	return &concat{sources: sources}
}

type concat struct{ sources []Source }

func (c *concat) Next() (Row, error) {
	for len(c.sources) > 0 {
		r, err := c.sources[0].Next()
		if !errors.Is(err, io.EOF) {
			return r, err
		}
		c.sources = c.sources[1:]
	}
	return nil, io.EOF
}

// Drain reads src to its end; on an error it returns no rows.
func Drain(src Source) ([]Row, error) {
	var rows []Row
	for {
		r, err := src.Next()
		if errors.Is(err, io.EOF) {
			return rows, nil
		}
		if err != nil {
			return nil, err
		}
		rows = append(rows, r)
	}
}

// gather is a Source for the steps that need every row before they can
// return the first (combining aggregates, sorting, DISTINCT): at the first
// Next it drains src and hands the rows to step, then returns what step
// returned.
type gather struct {
	src  Source
	step func([]Row) ([]Row, error)
	done SliceSource
	read bool
	err  error
}

func (g *gather) Next() (Row, error) {
	if !g.read {
		g.read = true
		rows, err := Drain(g.src)
		if err == nil {
			rows, err = g.step(rows)
		}
		g.done.Rows, g.err = rows, err
	}
	if g.err != nil {
		return nil, g.err
	}
	return g.done.Next()
}
