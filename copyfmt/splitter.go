// Package copyfmt splits the data of COPY ... FROM STDIN (text and CSV
// formats) into rows, as PostgreSQL 15 reads it, so that each row can be
// sent unchanged to the shard that owns it.
//
// The line reading follows PostgreSQL 15's CopyReadLineText, the field
// reading its CopyReadAttributesText and CopyReadAttributesCSV
// (src/backend/commands/copyfromparse.c), byte for byte where it matters:
// where a row ends (newline style, backslash escapes, CSV quotes spanning
// lines, the \. end marker), how the shard-key field is de-escaped or
// unquoted and whether it is NULL, the line numbers of PostgreSQL's
// "COPY t, line N" error context, and the errors PostgreSQL would raise
// that can be found without knowing column types: bad newlines, a corrupt
// end marker, invalid UTF-8, an unterminated CSV quoted field, extra or
// missing fields, and a HEADER MATCH mismatch.
//
// Forwarding each row's raw bytes to a shard is exact: the rows one shard
// gets parse there as they would have in the whole stream. Only the row
// that the end marker or the end of the data ended has no line terminator;
// it is the last row of all.
//
// Use:
//
//	opt, err := copyfmt.FromStmt(stmt) // refuses FORMAT binary
//	s, err := copyfmt.NewSplitter(opt, columns, keyIndex)
//	// for each CopyData payload p:
//	s.Write(p)
//	for {
//		row, ok, err := s.Next()
//		if err != nil || !ok { break } // err: fail the COPY with it
//		// row.Header: send row.Raw to every shard; else to the owner of row.Key (row.Null)
//	}
//	// at CopyDone: the same loop with s.End() for its first call.
//
// What it cannot know: column types, so an input error PostgreSQL would
// raise for an earlier column comes after the "missing data" error this
// package reports for the same line; and, for data not in UTF8, the key is
// in the data's encoding and only NUL bytes are refused. It follows
// PostgreSQL 15, which the shards run; later versions differ in places
// (PostgreSQL 18 no longer takes \. as the end marker in CSV).
package copyfmt

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strconv"
)

// Row is one line of COPY data. Its slices point into the Splitter's buffer
// and are valid only until the next call of any of its methods.
type Row struct {
	// Raw is the line exactly as received, with its line terminator (\n,
	// \r or \r\n). The last line has none when the data ended without one
	// or with the end marker (\. after it on the same line is not part of
	// Raw).
	Raw []byte
	// Key is the shard-key field, de-escaped (text) or unquoted (CSV);
	// nil when Null.
	Key []byte
	// Null says the key field is NULL: it equals the NULL string as
	// written (unquoted, in CSV), subject to FORCE_NOT_NULL and FORCE_NULL.
	Null bool
	// Line is the line number PostgreSQL gives this row in its error
	// context "COPY t, line N". Lines are counted from 1, the header
	// included; in CSV a quoted field's embedded newlines count too.
	Line int64
	// Header says this is the header line (Options.Header): it has no key,
	// and every shard needs it.
	Header bool
}

// Error is an error PostgreSQL would raise for the same COPY data or
// options, with its SQLSTATE and wording.
type Error struct {
	Code    string // SQLSTATE
	Message string
	Detail  string
	Hint    string
	// Line is the N of PostgreSQL's error context "COPY t, line N"; 0 for
	// errors about the options rather than the data.
	Line int64
	// LineText is the line PostgreSQL quotes in that context, shortened as
	// it does, when ShowLine; PostgreSQL quotes none for errors found while
	// it is still reading the line (newlines, end marker, encoding).
	LineText string
	ShowLine bool
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return e.Code + ": " + e.Message + " (COPY line " + strconv.FormatInt(e.Line, 10) + ")"
	}
	return e.Code + ": " + e.Message
}

// Context returns the CONTEXT PostgreSQL reports with the error for COPY
// into table rel (the bare table name), or "" for an error about options.
func (e *Error) Context(rel string) string {
	switch {
	case e.Line == 0:
		return ""
	case e.ShowLine:
		return fmt.Sprintf("COPY %s, line %d: \"%s\"", rel, e.Line, e.LineText)
	default:
		return fmt.Sprintf("COPY %s, line %d", rel, e.Line)
	}
}

func errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

type eolType uint8

const (
	eolUnknown eolType = iota
	eolNL
	eolCR
	eolCRNL
)

// What ensure finds at a position.
const (
	avail    = iota // the byte is there and passed the encoding check
	needMore        // it has not arrived yet
	atEOF           // the data ended before it
)

// DefaultMaxRow is the longest line a Splitter buffers unless
// Options.MaxRow says otherwise: PostgreSQL's own limit for a line.
const DefaultMaxRow = 1<<30 - 2

// Splitter cuts COPY FROM data into rows. Feed it the CopyData payloads
// with Write, take the complete rows with Next after each Write, and call
// End at CopyDone. It keeps only the data of the incomplete last line.
// A Splitter is not safe for concurrent use.
type Splitter struct {
	opt splitOptions

	buf      []byte
	start    int // start of the current line in buf
	pos      int // next byte of the current line to read
	verified int // buf[:verified] passed the encoding check
	eof      bool
	done     bool // no more rows: end marker, or the data ended
	err      error

	line lineState

	keyBuf, tmpBuf []byte
}

// splitOptions is a Splitter's configuration, fixed by NewSplitter.
type splitOptions struct {
	csv     bool
	delim   byte
	quote   byte
	escape  byte // the CSV escape character
	lineEsc byte // the escape as CopyReadLineText sees it: 0 if it is the quote
	null    []byte
	cols    []string
	key     int
	header  bool
	match   bool
	keyFNN  bool // FORCE_NOT_NULL names the key column
	keyFN   bool // FORCE_NULL names the key column
	utf8    bool // verify UTF-8; otherwise only reject NUL bytes
	encName string
	maxRow  int
	// bytes that stop the fast scan of a line, and of a field
	textStop, outStop, inStop, fieldStop stopSet
}

// lineState is CopyReadLineText's state, kept across Writes.
type lineState struct {
	inLine     bool
	inQuote    bool
	lastWasEsc bool
	eol        eolType
	lineno     int64
	headerDone bool
}

// NewSplitter returns a Splitter for data with the given options. columns
// are the names of the COPY's columns in order (the table's columns when
// the statement lists none), keyCol the index of the shard key among them.
// It fails, with a *Error, for options PostgreSQL would refuse or that
// cannot be split (see Options.Encoding).
func NewSplitter(opt Options, columns []string, keyCol int) (*Splitter, error) {
	if opt.Delimiter == 0 {
		opt.Delimiter = '\t'
		if opt.CSV {
			opt.Delimiter = ','
		}
	}
	if opt.CSV {
		if opt.Quote == 0 {
			opt.Quote = '"'
		}
		if opt.Escape == 0 {
			opt.Escape = opt.Quote
		}
	}
	if err := opt.check(); err != nil {
		return nil, err
	}
	if keyCol < 0 || keyCol >= len(columns) {
		return nil, fmt.Errorf("copyfmt: key column %d out of range for %d columns", keyCol, len(columns))
	}
	enc := encodingName(opt.Encoding)
	if enc == "" {
		enc = "UTF8"
	}
	s := &Splitter{opt: splitOptions{
		csv:     opt.CSV,
		delim:   opt.Delimiter,
		quote:   opt.Quote,
		escape:  opt.Escape,
		null:    []byte(opt.Null),
		cols:    columns,
		key:     keyCol,
		header:  opt.Header || opt.HeaderMatch,
		match:   opt.HeaderMatch,
		utf8:    enc == "UTF8",
		encName: enc,
		maxRow:  DefaultMaxRow,
	}}
	if opt.MaxRow > 0 {
		s.opt.maxRow = opt.MaxRow
	}
	if s.opt.escape != s.opt.quote {
		s.opt.lineEsc = s.opt.escape
	}
	for _, c := range opt.ForceNotNull {
		s.opt.keyFNN = s.opt.keyFNN || c == columns[keyCol]
	}
	for _, c := range opt.ForceNull {
		s.opt.keyFN = s.opt.keyFN || c == columns[keyCol]
	}
	s.opt.textStop.set('\n', '\r', '\\')
	s.opt.outStop.set('\n', '\r', s.opt.quote)
	s.opt.inStop.set('\n', '\r', s.opt.quote)
	if s.opt.lineEsc != 0 {
		s.opt.inStop.set('\n', '\r', s.opt.quote, s.opt.lineEsc)
	}
	if s.opt.csv {
		s.opt.fieldStop.set(s.opt.delim, s.opt.quote)
	} else {
		s.opt.fieldStop.set(s.opt.delim, '\\')
	}
	return s, nil
}

// Write appends a piece of the COPY data. It keeps no reference to p.
// Data after the end marker is dropped, as PostgreSQL ignores it.
func (s *Splitter) Write(p []byte) {
	if s.done || s.eof || s.err != nil {
		return
	}
	if s.start > 0 {
		n := copy(s.buf, s.buf[s.start:])
		s.buf = s.buf[:n]
		s.pos -= s.start
		s.verified -= s.start
		s.start = 0
	}
	// Let go of the room a long line needed once it is no longer needed.
	if need := len(s.buf) + len(p); cap(s.buf) > 1<<20 && need < cap(s.buf)/4 {
		nb := make([]byte, len(s.buf), max(2*need, 64<<10))
		copy(nb, s.buf)
		s.buf = nb
	}
	s.buf = append(s.buf, p...)
}

// Next returns the next complete row. ok is false when no complete row is
// buffered: Write more, or call End. After an error every call returns it.
//
// The first row is the header line when Options.Header is set. The end
// marker \. ends the data: no rows follow it. Next allocates nothing in
// the common case; the Row's slices are valid until the next call.
func (s *Splitter) Next() (row Row, ok bool, err error) {
	if s.err != nil {
		return Row{}, false, s.err
	}
	if s.done {
		return Row{}, false, nil
	}
	if !s.line.inLine {
		if s.start >= len(s.buf) && !s.eof {
			return Row{}, false, nil
		}
		s.line.inLine = true
		s.line.lineno++
		s.pos = s.start
		s.line.inQuote, s.line.lastWasEsc = false, false
	}
	end, ok, err := s.scan()
	if err != nil {
		return s.fail(err)
	}
	if !ok {
		if len(s.buf)-s.start > s.opt.maxRow {
			return s.fail(&Error{Code: CodeProgramLimitExceeded, Message: "COPY line too long",
				Detail: fmt.Sprintf("A line of COPY data may be at most %d bytes.", s.opt.maxRow), Line: s.line.lineno})
		}
		return Row{}, false, nil
	}
	s.line.inLine = false
	line := s.buf[s.start:end.cend]
	raw := s.buf[s.start:end.rend]
	s.start = end.rend
	if end.last {
		s.done = true
		s.buf = s.buf[:s.start] // drop whatever followed the end marker
	}
	if s.opt.header && !s.line.headerDone {
		s.line.headerDone = true
		if s.opt.match {
			if err := s.matchHeader(line); err != nil {
				return s.fail(err)
			}
		}
		if len(raw) == 0 {
			return Row{}, false, nil
		}
		return Row{Raw: raw, Line: s.line.lineno, Header: true}, true, nil
	}
	if end.last && len(line) == 0 {
		return Row{}, false, nil
	}
	key, null, err := s.keyField(line)
	if err != nil {
		return s.fail(err)
	}
	return Row{Raw: raw, Key: key, Null: null, Line: s.line.lineno}, true, nil
}

// End tells the Splitter the data is complete (CopyDone) and returns the
// next row as Next does: the last line if the data did not end with a line
// terminator, or one whose end could not be told before. Call End, then
// Next, until ok is false; at most one row is left in practice. Writes
// after End are ignored.
func (s *Splitter) End() (row Row, ok bool, err error) {
	s.eof = true
	return s.Next()
}

// Done reports whether the data has ended: the end marker was read, or End
// was called and every row has been returned. Data written after that is
// ignored.
func (s *Splitter) Done() bool { return s.done }

func (s *Splitter) fail(err error) (Row, bool, error) {
	if e, ok := err.(*Error); ok && e.Line == 0 {
		e.Line = s.line.lineno
	}
	s.err = err
	s.buf, s.start, s.pos, s.verified = nil, 0, 0, 0
	return Row{}, false, err
}

// lineEnd is where scan found the current line to end.
type lineEnd struct {
	cend int  // end of the line's content
	rend int  // end of its raw bytes, terminator included
	last bool // nothing follows: end marker or end of data
}

// scan reads on in the current line from s.pos, as CopyReadLineText does.
// ok is false when it needs more data; s.pos and the state are then where
// reading resumes.
func (s *Splitter) scan() (end lineEnd, ok bool, err error) {
	b := s.buf
	n := len(b)
	i := s.pos
	lim := s.verified
	for {
		// Skip bytes that neither end the line nor change the state.
		if !s.opt.csv {
			i = s.opt.textStop.skip(b, i, lim)
		} else if i != s.start { // the first byte may start \.
			if s.line.inQuote {
				if j := s.opt.inStop.skip(b, i, lim); j > i {
					s.line.lastWasEsc = false
					i = j
				}
			} else {
				i = s.opt.outStop.skip(b, i, lim)
			}
		}
		if i >= lim {
			switch st, err := s.ensure(i); {
			case err != nil:
				return end, false, err
			case st == needMore:
				s.pos = i
				return end, false, nil
			case st == atEOF:
				return lineEnd{cend: n, rend: n, last: true}, true, nil
			}
			lim = s.verified
			continue
		}

		prev := i
		c := b[i]
		i++
		savedQuote, savedEsc := s.line.inQuote, s.line.lastWasEsc
		if s.opt.csv {
			// Look ahead before the state changes, as PostgreSQL does.
			if c == '\\' || c == '\r' {
				st, err := s.ensure(i)
				if err != nil {
					return end, false, err
				}
				if st == needMore {
					s.pos = prev
					return end, false, nil
				}
			}
			if s.line.inQuote && c == s.opt.lineEsc {
				s.line.lastWasEsc = !s.line.lastWasEsc
			}
			if c == s.opt.quote && !s.line.lastWasEsc {
				s.line.inQuote = !s.line.inQuote
			}
			if c != s.opt.lineEsc {
				s.line.lastWasEsc = false
			}
			if s.line.inQuote && (c == '\n' && s.line.eol == eolNL || c == '\r' && s.line.eol != eolNL) {
				s.line.lineno++
			}
		}

		if c == '\r' && (!s.opt.csv || !s.line.inQuote) {
			if s.line.eol == eolUnknown || s.line.eol == eolCRNL {
				st, err := s.ensure(i)
				if err != nil {
					return end, false, err
				}
				if st == needMore { // only in text mode: CSV looked ahead above
					s.pos = prev
					return end, false, nil
				}
				if st == avail && b[i] == '\n' {
					i++
					s.line.eol = eolCRNL
				} else {
					if s.line.eol == eolCRNL {
						return end, false, s.crError()
					}
					s.line.eol = eolCR
				}
			} else if s.line.eol == eolNL {
				return end, false, s.crError()
			}
			return lineEnd{cend: prev, rend: i}, true, nil
		}
		if c == '\n' && (!s.opt.csv || !s.line.inQuote) {
			if s.line.eol == eolCR || s.line.eol == eolCRNL {
				return end, false, s.nlError()
			}
			s.line.eol = eolNL
			return lineEnd{cend: prev, rend: i}, true, nil
		}
		if c == '\\' && (!s.opt.csv || prev == s.start) {
			st, err := s.ensure(i)
			if err != nil {
				return end, false, err
			}
			switch st {
			case needMore:
				s.pos = prev
				return end, false, nil
			case atEOF: // a backslash just before the end is data
				return lineEnd{cend: n, rend: n, last: true}, true, nil
			}
			if b[i] != '.' {
				if !s.opt.csv {
					i++ // the escaped byte, whatever it is
				}
				continue
			}
			// \. : the end marker if a newline follows.
			j := i + 1
			c2, st, err := s.peek(j)
			if err != nil {
				return end, false, err
			}
			if st == needMore {
				s.pos, s.line.inQuote, s.line.lastWasEsc = prev, savedQuote, savedEsc
				return end, false, nil
			}
			if s.line.eol == eolCRNL {
				j++
				if c2 == '\n' {
					if !s.opt.csv {
						return end, false, s.dataError("end-of-copy marker does not match previous newline style")
					}
					continue // not the marker: go on after the backslash
				} else if c2 != '\r' {
					if !s.opt.csv {
						return end, false, s.dataError("end-of-copy marker corrupt")
					}
					continue
				}
				c2, st, err = s.peek(j)
				if err != nil {
					return end, false, err
				}
				if st == needMore {
					s.pos, s.line.inQuote, s.line.lastWasEsc = prev, savedQuote, savedEsc
					return end, false, nil
				}
			}
			if c2 != '\r' && c2 != '\n' {
				if !s.opt.csv {
					return end, false, s.dataError("end-of-copy marker corrupt")
				}
				continue
			}
			if s.line.eol == eolNL && c2 != '\n' || s.line.eol == eolCRNL && c2 != '\n' || s.line.eol == eolCR && c2 != '\r' {
				return end, false, s.dataError("end-of-copy marker does not match previous newline style")
			}
			return lineEnd{cend: prev, rend: prev, last: true}, true, nil
		}
	}
}

// stopSet is up to four bytes that stop a scan.
type stopSet struct {
	is [256]bool
	m  [4]uint64 // each byte repeated 8 times
}

func (ss *stopSet) set(c ...byte) {
	ss.is = [256]bool{}
	for i := range ss.m {
		b := c[min(i, len(c)-1)]
		ss.is[b] = true
		ss.m[i] = 0x0101010101010101 * uint64(b)
	}
}

// skip returns the index of the first stop byte in b[i:lim], or lim.
func (ss *stopSet) skip(b []byte, i, lim int) int {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	if lim > len(b) {
		lim = len(b)
	}
	for i+8 <= lim {
		x := binary.LittleEndian.Uint64(b[i:])
		y0, y1, y2, y3 := x^ss.m[0], x^ss.m[1], x^ss.m[2], x^ss.m[3]
		if ((y0-lo)&^y0|(y1-lo)&^y1|(y2-lo)&^y2|(y3-lo)&^y3)&hi != 0 {
			break // a stop byte among these 8
		}
		i += 8
	}
	for i < lim && !ss.is[b[i]] {
		i++
	}
	return i
}

// peek returns buf[i], or 0 at the end of the data, as PostgreSQL reads
// the zero padding after its buffer.
func (s *Splitter) peek(i int) (byte, int, error) {
	st, err := s.ensure(i)
	if err != nil || st != avail {
		return 0, st, err
	}
	return s.buf[i], avail, nil
}

// ensure says whether buf[i] can be read, verifying the encoding of what
// has arrived as PostgreSQL does before its line reader sees it; the
// error is the one for an invalid byte sequence at i.
func (s *Splitter) ensure(i int) (int, error) {
	if i < s.verified {
		return avail, nil
	}
	n := len(s.buf)
	if i >= n {
		if s.eof {
			return atEOF, nil
		}
		return needMore, nil
	}
	s.verify()
	if i < s.verified {
		return avail, nil
	}
	// buf[i] starts an invalid or incomplete character.
	l, rem := 1, n-i
	if s.opt.utf8 {
		l = utf8Len(s.buf[i])
	}
	if l > rem && !s.eof {
		return needMore, nil
	}
	return 0, s.encodingError(s.opt.encName, s.buf[i:], l)
}

// verify advances s.verified over the valid characters that follow it.
func (s *Splitter) verify() {
	b, v := s.buf, s.verified
	if !s.opt.utf8 {
		if j := bytes.IndexByte(b[v:], 0); j >= 0 {
			s.verified = v + j
		} else {
			s.verified = len(b)
		}
		return
	}
	s.verified = v + validUTF8Prefix(b[v:])
}

// validUTF8Prefix returns the length of the longest prefix of b made of
// characters pg_utf8_verifystr accepts (no NUL bytes).
func validUTF8Prefix(b []byte) int {
	const hi, lo = 0x8080808080808080, 0x0101010101010101
	v, n := 0, len(b)
	for v < n {
		for v+8 <= n {
			x := binary.LittleEndian.Uint64(b[v:])
			if x&hi != 0 || (x-lo)&^x&hi != 0 {
				break
			}
			v += 8
		}
		if v >= n {
			break
		}
		c := b[v]
		if c < 0x80 {
			if c == 0 {
				break
			}
			v++
			continue
		}
		l := utf8Len(c)
		if v+l > n || !utf8Legal(b[v:v+l]) {
			break
		}
		v += l
	}
	return v
}

// utf8Len is pg_utf_mblen.
func utf8Len(c byte) int {
	switch {
	case c&0x80 == 0:
		return 1
	case c&0xe0 == 0xc0:
		return 2
	case c&0xf0 == 0xe0:
		return 3
	case c&0xf8 == 0xf0:
		return 4
	}
	return 1
}

// utf8Legal is pg_utf8_islegal.
func utf8Legal(s []byte) bool {
	switch len(s) {
	case 4:
		if s[3] < 0x80 || s[3] > 0xbf {
			return false
		}
		fallthrough
	case 3:
		if s[2] < 0x80 || s[2] > 0xbf {
			return false
		}
		fallthrough
	case 2:
		a := s[1]
		switch s[0] {
		case 0xe0:
			if a < 0xa0 || a > 0xbf {
				return false
			}
		case 0xed:
			if a < 0x80 || a > 0x9f {
				return false
			}
		case 0xf0:
			if a < 0x90 || a > 0xbf {
				return false
			}
		case 0xf4:
			if a < 0x80 || a > 0x8f {
				return false
			}
		default:
			if a < 0x80 || a > 0xbf {
				return false
			}
		}
		fallthrough
	case 1:
		a := s[0]
		if a >= 0x80 && a < 0xc2 || a > 0xf4 {
			return false
		}
		return true
	}
	return false
}

// encodingError is report_invalid_encoding for the character starting b,
// whose length by its first byte is l.
func (s *Splitter) encodingError(enc string, b []byte, l int) *Error {
	n := min(l, len(b), 8)
	var msg []byte
	for j := range n {
		if j > 0 {
			msg = append(msg, ' ')
		}
		msg = fmt.Appendf(msg, "0x%02x", b[j])
	}
	return &Error{Code: CodeCharacterNotInRepert,
		Message: fmt.Sprintf("invalid byte sequence for encoding \"%s\": %s", enc, msg),
		Line:    s.line.lineno}
}

func (s *Splitter) dataError(msg string) *Error {
	return &Error{Code: CodeBadCopyFileFormat, Message: msg, Line: s.line.lineno}
}

func (s *Splitter) crError() *Error {
	if s.opt.csv {
		return &Error{Code: CodeBadCopyFileFormat, Message: "unquoted carriage return found in data",
			Hint: "Use quoted CSV field to represent carriage return.", Line: s.line.lineno}
	}
	return &Error{Code: CodeBadCopyFileFormat, Message: "literal carriage return found in data",
		Hint: `Use "\r" to represent carriage return.`, Line: s.line.lineno}
}

func (s *Splitter) nlError() *Error {
	if s.opt.csv {
		return &Error{Code: CodeBadCopyFileFormat, Message: "unquoted newline found in data",
			Hint: "Use quoted CSV field to represent newline.", Line: s.line.lineno}
	}
	return &Error{Code: CodeBadCopyFileFormat, Message: "literal newline found in data",
		Hint: `Use "\n" to represent newline.`, Line: s.line.lineno}
}

// lineError is an error PostgreSQL raises with the line in its context.
func (s *Splitter) lineError(line []byte, e *Error) *Error {
	e.Line = s.line.lineno
	e.LineText = printout(line)
	e.ShowLine = true
	return e
}

// printout is limit_printout_length: at most 100 bytes, cut at a character
// boundary, then "...".
func printout(line []byte) string {
	if i := bytes.IndexByte(line, 0); i >= 0 {
		line = line[:i]
	}
	const limit = 100
	if len(line) <= limit {
		return string(line)
	}
	n := 0
	for n < len(line) {
		l := utf8Len(line[n])
		if n+l > limit {
			break
		}
		n += l
		if n == limit {
			break
		}
	}
	return string(line[:n]) + "..."
}

// field is one field of a line.
type field struct {
	val   []byte // de-escaped or unquoted value (valid only if wanted)
	null  bool   // the raw field equals the NULL string (unquoted, in CSV)
	found bool   // a delimiter ended it: another field follows
	next  int    // where the next field starts
}

// keyField splits a data line into fields as PostgreSQL does, checks the
// field count against the columns, and returns the key field.
func (s *Splitter) keyField(line []byte) (key []byte, null bool, err error) {
	special := byte('\\')
	if s.opt.csv {
		special = s.opt.quote
	}
	if bytes.IndexByte(line, special) < 0 {
		// No escapes or quotes: the fields are what lies between delimiters.
		if nf := bytes.Count(line, []byte{s.opt.delim}) + 1; nf != len(s.opt.cols) {
			return s.countError(line, nf)
		}
		p := 0
		for range s.opt.key {
			p += bytes.IndexByte(line[p:], s.opt.delim) + 1
		}
		key = line[p:]
		if j := bytes.IndexByte(key, s.opt.delim); j >= 0 {
			key = key[:j]
		}
		return s.keyNull(line, key, bytes.Equal(key, s.opt.null))
	}

	nf, p, n := 0, 0, len(line)
	for {
		// A field with no escape or quote needs no more than its end.
		j := s.opt.fieldStop.skip(line, p, n)
		if j >= n || line[j] == s.opt.delim {
			if nf == s.opt.key {
				key, null = line[p:j], bytes.Equal(line[p:j], s.opt.null)
			}
			nf++
			if j >= n {
				break
			}
			p = j + 1
			continue
		}
		want := nf == s.opt.key
		var f field
		if s.opt.csv {
			f, err = s.csvField(line, p, want)
		} else {
			f, err = s.textField(line, p, want)
		}
		if err != nil {
			return nil, false, s.lineError(line, err.(*Error))
		}
		if want {
			key, null = f.val, f.null
		}
		nf++
		if !f.found {
			break
		}
		p = f.next
	}
	if nf != len(s.opt.cols) {
		return s.countError(line, nf)
	}
	return s.keyNull(line, key, null)
}

// countError is NextCopyFrom's error for a line of nf fields.
func (s *Splitter) countError(line []byte, nf int) ([]byte, bool, error) {
	if nf > len(s.opt.cols) {
		return nil, false, s.lineError(line, errorf(CodeBadCopyFileFormat, "extra data after last expected column"))
	}
	return nil, false, s.lineError(line, errorf(CodeBadCopyFileFormat, "missing data for column \"%s\"", s.opt.cols[nf]))
}

// keyNull applies FORCE_NOT_NULL and FORCE_NULL to the key field.
func (s *Splitter) keyNull(line, key []byte, null bool) ([]byte, bool, error) {
	if s.opt.csv {
		if null && s.opt.keyFNN {
			key, null = s.opt.null, false
		} else if !null && s.opt.keyFN && bytes.Equal(key, s.opt.null) {
			null = true
		}
	}
	if null {
		key = nil
	} else if key == nil {
		key = line[:0]
	}
	return key, null, nil
}

// textField reads the field at line[p:] as CopyReadAttributesText does.
// The value is only built when want, or when needed for the encoding
// check of de-escaped bytes.
func (s *Splitter) textField(line []byte, p int, want bool) (field, error) {
	n := len(line)
	j := p + indexEither(line[p:], s.opt.delim, '\\')
	if j < p {
		j = n
	}
	if j >= n || line[j] == s.opt.delim { // no escapes: the value is the raw field
		raw := line[p:j]
		return field{val: raw, null: bytes.Equal(raw, s.opt.null), found: j < n, next: j + 1}, nil
	}

	out := s.tmpBuf[:0]
	if want {
		out = s.keyBuf[:0]
	}
	var f field
	nonASCII := false
	cur, end := p, p
	for {
		end = cur
		if cur >= n {
			break
		}
		c := line[cur]
		cur++
		if c == s.opt.delim {
			f.found = true
			break
		}
		if c == '\\' {
			if cur >= n {
				break
			}
			c = line[cur]
			cur++
			switch c {
			case '0', '1', '2', '3', '4', '5', '6', '7':
				v := int(c - '0')
				if cur < n && isOctal(line[cur]) {
					v = v<<3 + int(line[cur]-'0')
					cur++
					if cur < n && isOctal(line[cur]) {
						v = v<<3 + int(line[cur]-'0')
						cur++
					}
				}
				c = byte(v)
				nonASCII = nonASCII || c == 0 || c >= 0x80
			case 'x':
				if cur < n && isHex(line[cur]) {
					v := hexVal(line[cur])
					cur++
					if cur < n && isHex(line[cur]) {
						v = v<<4 + hexVal(line[cur])
						cur++
					}
					c = v
					nonASCII = nonASCII || c == 0 || c >= 0x80
				}
			case 'b':
				c = '\b'
			case 'f':
				c = '\f'
			case 'n':
				c = '\n'
			case 'r':
				c = '\r'
			case 't':
				c = '\t'
			case 'v':
				c = '\v'
			}
		}
		out = append(out, c)
	}
	if want {
		s.keyBuf = out
	} else {
		s.tmpBuf = out
	}
	f.val, f.next = out, cur
	f.null = bytes.Equal(line[p:end], s.opt.null)
	if !f.null && nonASCII {
		// pg_verifymbstr in the server encoding, taken to be UTF8.
		if v := validUTF8Prefix(out); v < len(out) {
			return f, s.encodingError("UTF8", out[v:], utf8Len(out[v]))
		}
	}
	return f, nil
}

// indexEither returns the index of the first x or y in b, or -1.
func indexEither(b []byte, x, y byte) int {
	i := bytes.IndexByte(b, x)
	if i < 0 {
		return bytes.IndexByte(b, y)
	}
	if j := bytes.IndexByte(b[:i], y); j >= 0 {
		return j
	}
	return i
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func hexVal(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// csvField reads the field at line[p:] as CopyReadAttributesCSV does. The
// value is only built when want.
func (s *Splitter) csvField(line []byte, p int, want bool) (field, error) {
	n := len(line)
	j := p + indexEither(line[p:], s.opt.delim, s.opt.quote)
	if j < p {
		j = n
	}
	if j >= n || line[j] == s.opt.delim { // unquoted
		raw := line[p:j]
		return field{val: raw, null: bytes.Equal(raw, s.opt.null), found: j < n, next: j + 1}, nil
	}

	out := s.keyBuf[:0]
	var f field
	sawQuote := false
	cur, end := p, p
outer:
	for {
		for { // not in quotes
			end = cur
			if cur >= n {
				break outer
			}
			c := line[cur]
			cur++
			if c == s.opt.delim {
				f.found = true
				break outer
			}
			if c == s.opt.quote {
				sawQuote = true
				break
			}
			if want {
				out = append(out, c)
			}
		}
		for { // in quotes
			if cur >= n {
				return f, errorf(CodeBadCopyFileFormat, "unterminated CSV quoted field")
			}
			c := line[cur]
			cur++
			if c == s.opt.escape && cur < n {
				if nc := line[cur]; nc == s.opt.escape || nc == s.opt.quote {
					if want {
						out = append(out, nc)
					}
					cur++
					continue
				}
			}
			if c == s.opt.quote {
				break
			}
			if want {
				out = append(out, c)
			}
		}
	}
	if want {
		s.keyBuf = out
		f.val = out
	}
	f.next = cur
	f.null = !sawQuote && bytes.Equal(line[p:end], s.opt.null)
	return f, nil
}

// matchHeader checks the header line against the column names, as
// PostgreSQL 15 does for HEADER MATCH.
func (s *Splitter) matchHeader(line []byte) error {
	var names [][]byte
	var nulls []bool
	p := 0
	for {
		var f field
		var err error
		if s.opt.csv {
			f, err = s.csvField(line, p, true)
		} else {
			f, err = s.textField(line, p, true)
		}
		if err != nil {
			return s.lineError(line, err.(*Error))
		}
		names = append(names, bytes.Clone(f.val))
		nulls = append(nulls, f.null)
		if !f.found {
			break
		}
		p = f.next
	}
	if len(names) != len(s.opt.cols) {
		return s.lineError(line, errorf(CodeBadCopyFileFormat,
			"wrong number of fields in header line: got %d, expected %d", len(names), len(s.opt.cols)))
	}
	for i, col := range s.opt.cols {
		if nulls[i] {
			return s.lineError(line, errorf(CodeBadCopyFileFormat,
				"column name mismatch in header line field %d: got null value (\"%s\"), expected \"%s\"", i+1, s.opt.null, col))
		}
		// namestrcmp: strncmp(name, value, NAMEDATALEN)
		got := names[i]
		if i := bytes.IndexByte(got, 0); i >= 0 {
			got = got[:i]
		}
		a, b := []byte(col), got
		if len(a) > 64 {
			a = a[:64]
		}
		if len(b) > 64 {
			b = b[:64]
		}
		if !bytes.Equal(a, b) {
			return s.lineError(line, errorf(CodeBadCopyFileFormat,
				"column name mismatch in header line field %d: got \"%s\", expected \"%s\"", i+1, got, col))
		}
	}
	return nil
}
