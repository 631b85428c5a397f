package merge

import (
	"container/heap"
	"errors"
	"fmt"
	"io"
)

// Merger does a streaming k-way merge of shard streams that are each sorted
// by the same keys: Next returns their rows in global order. Rows that
// compare equal come out in source order (source 0 first), so the merge is
// deterministic. A source that is not sorted by the keys is an error.
type Merger struct {
	cols    []Column
	keys    []SortKey
	sources []Source
	h       rowHeap
	started bool
	pending int // source whose row Next returned last: read it before the next pick
	last    []Row
	err     error
}

// NewMerger checks keys against cols; it reads nothing until the first Next.
func NewMerger(cols []Column, keys []SortKey, sources []Source) (*Merger, error) {
	for _, k := range keys {
		if k.Col < 0 || k.Col >= len(cols) {
			return nil, fmt.Errorf("merge: sort column %d out of range (%d columns)", k.Col, len(cols))
		}
		if err := Supported(cols[k.Col]); err != nil {
			return nil, err
		}
	}
	m := &Merger{cols: cols, keys: keys, sources: sources, pending: -1, last: make([]Row, len(sources))}
	m.h.m = m
	return m, nil
}

type heapItem struct {
	row Row
	src int
}

type rowHeap struct {
	items []heapItem
	m     *Merger
}

func (h *rowHeap) Len() int { return len(h.items) }
func (h *rowHeap) Less(i, j int) bool {
	a, b := h.items[i], h.items[j]
	c, err := CompareRows(h.m.cols, h.m.keys, a.row, b.row)
	if err != nil && h.m.err == nil {
		h.m.err = err
	}
	if c != 0 {
		return c < 0
	}
	return a.src < b.src
}
func (h *rowHeap) Swap(i, j int) { h.items[i], h.items[j] = h.items[j], h.items[i] }
func (h *rowHeap) Push(x any)    { h.items = append(h.items, x.(heapItem)) }
func (h *rowHeap) Pop() any {
	n := len(h.items) - 1
	it := h.items[n]
	h.items[n] = heapItem{}
	h.items = h.items[:n]
	return it
}

// read pulls the next row of source i onto the heap.
func (m *Merger) read(i int) error {
	row, err := m.sources[i].Next()
	if errors.Is(err, io.EOF) {
		m.last[i] = nil
		return nil
	}
	if err != nil {
		return err
	}
	if len(row) != len(m.cols) {
		return fmt.Errorf("merge: source %d returned a row of %d columns, want %d", i, len(row), len(m.cols))
	}
	if prev := m.last[i]; prev != nil {
		c, err := CompareRows(m.cols, m.keys, prev, row)
		if err != nil {
			return err
		}
		if c > 0 {
			return fmt.Errorf("merge: source %d is not sorted by the merge keys", i)
		}
	}
	m.last[i] = row
	heap.Push(&m.h, heapItem{row: row, src: i})
	return m.err
}

// Next returns the next row in global order, or io.EOF after the last one.
// After an error every call returns that error.
func (m *Merger) Next() (Row, error) {
	if m.err != nil {
		return nil, m.err
	}
	if !m.started {
		m.started = true
		for i := range m.sources {
			if err := m.read(i); err != nil {
				m.err = err
				return nil, err
			}
		}
	} else if m.pending >= 0 {
		i := m.pending
		m.pending = -1
		if err := m.read(i); err != nil {
			m.err = err
			return nil, err
		}
	}
	if m.h.Len() == 0 {
		return nil, io.EOF
	}
	it := heap.Pop(&m.h).(heapItem)
	if m.err != nil {
		return nil, m.err
	}
	m.pending = it.src
	return it.row, nil
}

// Limit applies OFFSET offset LIMIT count to src; count < 0 means no limit.
// It stops reading src once count rows have been returned.
func Limit(src Source, offset, count int64) Source {
	return &limiter{src: src, skip: max(offset, 0), left: count}
}

type limiter struct {
	src  Source
	skip int64
	left int64
}

func (l *limiter) Next() (Row, error) {
	for l.skip > 0 {
		if l.left == 0 {
			return nil, io.EOF
		}
		if _, err := l.src.Next(); err != nil {
			return nil, err
		}
		l.skip--
	}
	if l.left == 0 {
		return nil, io.EOF
	}
	row, err := l.src.Next()
	if err != nil {
		return nil, err
	}
	if l.left > 0 {
		l.left--
	}
	return row, nil
}
