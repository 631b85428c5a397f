package copyfmt

import (
	"strconv"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v5"

	"github.com/shardgate/shardgate/pgerr"
)

// Options are the COPY FROM format options that matter for splitting the
// data into rows. FromStmt fills them from a parsed statement with
// PostgreSQL's defaults applied; NewSplitter checks them as PostgreSQL does.
type Options struct {
	CSV       bool
	Delimiter byte   // 0 means the default: '\t' for text, ',' for CSV
	Quote     byte   // CSV only; 0 means '"'
	Escape    byte   // CSV only; 0 means the same as Quote
	Null      string // used as given: FromStmt sets the default, `\N` for text and "" for CSV
	// Header says the first line is a header (HEADER true or HEADER MATCH);
	// HeaderMatch also checks its fields against the column names, as
	// PostgreSQL 15 does for HEADER MATCH.
	Header      bool
	HeaderMatch bool
	// ForceNotNull and ForceNull are the CSV FORCE_NOT_NULL and FORCE_NULL
	// column lists; only whether they name the shard-key column matters.
	ForceNotNull []string
	ForceNull    []string
	// Encoding is the encoding of the data: the ENCODING option, else the
	// session's client_encoding (FromStmt leaves it empty when the statement
	// has no ENCODING option; the caller may fill in client_encoding). Empty
	// means UTF8. Any spelling PostgreSQL accepts is taken ("utf-8",
	// "Latin1"); NewSplitter refuses the client-only encodings (SJIS, BIG5,
	// GBK, UHC, GB18030, JOHAB, SHIFT_JIS_2004), whose multi-byte characters
	// can contain ASCII bytes, so the data cannot be split byte by byte.
	Encoding string
	// MaxRow is not a COPY option but the proxy's limit on the bytes of one
	// line, which is all a Splitter buffers; 0 means DefaultMaxRow.
	MaxRow int
}

// SQLSTATEs this package reports.
const (
	CodeBadCopyFileFormat     = pgerr.CodeBadCopyFileFormat        // bad_copy_file_format
	CodeCharacterNotInRepert  = pgerr.CodeCharacterNotInRepertoire // character_not_in_repertoire
	CodeFeatureNotSupported   = pgerr.CodeFeatureNotSupported      // feature_not_supported
	CodeInvalidParameterValue = pgerr.CodeInvalidParameterValue    // invalid_parameter_value
	CodeSyntaxError           = pgerr.CodeSyntaxError              // syntax_error
	CodeProgramLimitExceeded  = pgerr.CodeProgramLimitExceeded     // program_limit_exceeded
)

// FromStmt reads the format options of a parsed COPY ... FROM statement,
// checking them as PostgreSQL 15's ProcessCopyOptions does (same SQLSTATEs
// and messages). It also refuses, with a *Error for the client, what the
// splitter cannot split: FORMAT binary and client-only encodings.
func FromStmt(stmt *pg.CopyStmt) (Options, error) {
	var o Options
	if stmt == nil || !stmt.IsFrom {
		return o, errorf(CodeFeatureNotSupported, "only COPY ... FROM can be split into rows")
	}
	var (
		format, freeze, header     bool
		binary                     bool
		delim, null, quote, escape *string
		forceQuote                 bool
		forceNotNull, forceNull    bool
		encoding                   bool
	)
	for _, n := range stmt.Options {
		d := n.GetDefElem()
		if d == nil {
			continue
		}
		switch d.Defname {
		case "format":
			f, err := defGetString(d)
			if err != nil {
				return o, err
			}
			if format {
				return o, conflicting()
			}
			format = true
			switch f {
			case "text":
			case "csv":
				o.CSV = true
			case "binary":
				binary = true
			default:
				return o, errorf(CodeInvalidParameterValue, "COPY format \"%s\" not recognized", f)
			}
		case "freeze":
			if freeze {
				return o, conflicting()
			}
			freeze = true
			if _, err := defGetBoolean(d); err != nil {
				return o, err
			}
		case "delimiter", "null", "quote", "escape":
			p := &delim
			switch d.Defname {
			case "null":
				p = &null
			case "quote":
				p = &quote
			case "escape":
				p = &escape
			}
			if *p != nil {
				return o, conflicting()
			}
			v, err := defGetString(d)
			if err != nil {
				return o, err
			}
			*p = &v
		case "header":
			if header {
				return o, conflicting()
			}
			header = true
			var err error
			if o.Header, o.HeaderMatch, err = defGetCopyHeaderChoice(d); err != nil {
				return o, err
			}
		case "force_quote":
			if forceQuote {
				return o, conflicting()
			}
			forceQuote = true
			if d.Arg == nil || (d.Arg.GetAStar() == nil && d.Arg.GetList() == nil) {
				return o, errorf(CodeInvalidParameterValue, "argument to option \"%s\" must be a list of column names", d.Defname)
			}
		case "force_not_null", "force_null":
			seen, list := &forceNotNull, &o.ForceNotNull
			if d.Defname == "force_null" {
				seen, list = &forceNull, &o.ForceNull
			}
			if *seen {
				return o, conflicting()
			}
			*seen = true
			l := d.Arg.GetList()
			if l == nil {
				return o, errorf(CodeInvalidParameterValue, "argument to option \"%s\" must be a list of column names", d.Defname)
			}
			for _, item := range l.Items {
				*list = append(*list, item.GetString_().GetSval())
			}
		case "encoding":
			if encoding {
				return o, conflicting()
			}
			encoding = true
			v, err := defGetString(d)
			if err != nil {
				return o, err
			}
			if o.Encoding = encodingName(v); o.Encoding == "" {
				return o, errorf(CodeInvalidParameterValue, "argument to option \"%s\" must be a valid encoding name", d.Defname)
			}
		default:
			return o, errorf(CodeSyntaxError, "option \"%s\" not recognized", d.Defname)
		}
	}
	if binary {
		switch {
		case delim != nil:
			return o, errorf(CodeSyntaxError, "cannot specify DELIMITER in BINARY mode")
		case null != nil:
			return o, errorf(CodeSyntaxError, "cannot specify NULL in BINARY mode")
		case o.Header:
			return o, errorf(CodeFeatureNotSupported, "cannot specify HEADER in BINARY mode")
		}
		return o, &Error{Code: CodeFeatureNotSupported,
			Message: "COPY FROM in binary format cannot be split across shards",
			Hint:    "Use FORMAT text or FORMAT csv."}
	}

	// Defaults, then PostgreSQL's checks in its order.
	d := "\t"
	if o.CSV {
		d = ","
	}
	if delim != nil {
		d = *delim
	}
	o.Null = `\N`
	if o.CSV {
		o.Null = ""
	}
	if null != nil {
		o.Null = *null
	}
	q, e := `"`, ""
	if quote != nil {
		q = *quote
	}
	if escape != nil {
		e = *escape
	} else {
		e = q
	}
	if len(d) != 1 {
		return o, errorf(CodeFeatureNotSupported, "COPY delimiter must be a single one-byte character")
	}
	o.Delimiter = d[0]
	if err := o.checkDelimNull(); err != nil {
		return o, err
	}
	if !o.CSV && quote != nil {
		return o, errorf(CodeFeatureNotSupported, "COPY quote available only in CSV mode")
	}
	if o.CSV && len(q) != 1 {
		return o, errorf(CodeFeatureNotSupported, "COPY quote must be a single one-byte character")
	}
	if o.CSV {
		o.Quote = q[0]
		if o.Delimiter == o.Quote {
			return o, errorf(CodeInvalidParameterValue, "COPY delimiter and quote must be different")
		}
	}
	if !o.CSV && escape != nil {
		return o, errorf(CodeFeatureNotSupported, "COPY escape available only in CSV mode")
	}
	if o.CSV && len(e) != 1 {
		return o, errorf(CodeFeatureNotSupported, "COPY escape must be a single one-byte character")
	}
	if o.CSV {
		o.Escape = e[0]
	}
	if !o.CSV && forceQuote {
		return o, errorf(CodeFeatureNotSupported, "COPY force quote available only in CSV mode")
	}
	if forceQuote {
		return o, errorf(CodeFeatureNotSupported, "COPY force quote only available using COPY TO")
	}
	if !o.CSV && forceNotNull {
		return o, errorf(CodeFeatureNotSupported, "COPY force not null available only in CSV mode")
	}
	if !o.CSV && forceNull {
		return o, errorf(CodeFeatureNotSupported, "COPY force null available only in CSV mode")
	}
	if err := o.checkNullChars(); err != nil {
		return o, err
	}
	if err := checkEncoding(o.Encoding); err != nil {
		return o, err
	}
	return o, nil
}

// check validates o as ProcessCopyOptions would, after defaults.
func (o *Options) check() error {
	if err := o.checkDelimNull(); err != nil {
		return err
	}
	if o.CSV && o.Delimiter == o.Quote {
		return errorf(CodeInvalidParameterValue, "COPY delimiter and quote must be different")
	}
	if !o.CSV && len(o.ForceNotNull) > 0 {
		return errorf(CodeFeatureNotSupported, "COPY force not null available only in CSV mode")
	}
	if !o.CSV && len(o.ForceNull) > 0 {
		return errorf(CodeFeatureNotSupported, "COPY force null available only in CSV mode")
	}
	if err := o.checkNullChars(); err != nil {
		return err
	}
	return checkEncoding(o.Encoding)
}

func (o *Options) checkDelimNull() error {
	if o.Delimiter == '\r' || o.Delimiter == '\n' {
		return errorf(CodeInvalidParameterValue, "COPY delimiter cannot be newline or carriage return")
	}
	if strings.ContainsAny(o.Null, "\r\n") {
		return errorf(CodeInvalidParameterValue, "COPY null representation cannot use newline or carriage return")
	}
	if !o.CSV && strings.IndexByte("\\.abcdefghijklmnopqrstuvwxyz0123456789", o.Delimiter) >= 0 {
		return errorf(CodeInvalidParameterValue, "COPY delimiter cannot be \"%s\"", string(o.Delimiter))
	}
	return nil
}

func (o *Options) checkNullChars() error {
	if strings.IndexByte(o.Null, o.Delimiter) >= 0 {
		return errorf(CodeFeatureNotSupported, "COPY delimiter must not appear in the NULL specification")
	}
	if o.CSV && strings.IndexByte(o.Null, o.Quote) >= 0 {
		return errorf(CodeFeatureNotSupported, "CSV quote character must not appear in the NULL specification")
	}
	return nil
}

func conflicting() error { return errorf(CodeSyntaxError, "conflicting or redundant options") }

// defGetString is PostgreSQL's defGetString.
func defGetString(d *pg.DefElem) (string, error) {
	a := d.Arg
	if a == nil {
		return "", errorf(CodeSyntaxError, "%s requires a parameter", d.Defname)
	}
	switch {
	case a.GetInteger() != nil:
		return strconv.Itoa(int(a.GetInteger().Ival)), nil
	case a.GetFloat() != nil:
		return a.GetFloat().Fval, nil
	case a.GetBoolean() != nil:
		if a.GetBoolean().Boolval {
			return "true", nil
		}
		return "false", nil
	case a.GetString_() != nil:
		return a.GetString_().Sval, nil
	case a.GetList() != nil:
		return nameList(a.GetList().Items), nil
	case a.GetTypeName() != nil:
		return nameList(a.GetTypeName().Names), nil
	case a.GetAStar() != nil:
		return "*", nil
	}
	return "", errorf(CodeSyntaxError, "%s: unrecognized argument", d.Defname)
}

func nameList(items []*pg.Node) string {
	parts := make([]string, len(items))
	for i, n := range items {
		parts[i] = n.GetString_().GetSval()
	}
	return strings.Join(parts, ".")
}

// defGetBoolean is PostgreSQL's defGetBoolean.
func defGetBoolean(d *pg.DefElem) (bool, error) {
	if d.Arg == nil {
		return true, nil
	}
	if i := d.Arg.GetInteger(); i != nil {
		switch i.Ival {
		case 0:
			return false, nil
		case 1:
			return true, nil
		}
	} else {
		s, err := defGetString(d)
		if err != nil {
			return false, err
		}
		switch strings.ToLower(s) {
		case "true", "on":
			return true, nil
		case "false", "off":
			return false, nil
		}
	}
	return false, errorf(CodeSyntaxError, "%s requires a Boolean value", d.Defname)
}

// defGetCopyHeaderChoice is PostgreSQL 15's, for COPY FROM.
func defGetCopyHeaderChoice(d *pg.DefElem) (header, match bool, err error) {
	if d.Arg == nil {
		return true, false, nil
	}
	if i := d.Arg.GetInteger(); i != nil {
		switch i.Ival {
		case 0:
			return false, false, nil
		case 1:
			return true, false, nil
		}
	} else {
		s, err := defGetString(d)
		if err != nil {
			return false, false, err
		}
		switch strings.ToLower(s) {
		case "true", "on":
			return true, false, nil
		case "false", "off":
			return false, false, nil
		case "match":
			return true, true, nil
		}
	}
	return false, false, errorf(CodeSyntaxError, "%s requires a Boolean value or \"match\"", d.Defname)
}

// encodingName returns PostgreSQL's name for an encoding spelled any way
// pg_char_to_encoding accepts, or "" if it names none.
func encodingName(s string) string {
	if s == "" || len(s) >= 64 {
		return ""
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'A' && c <= 'Z':
			b.WriteByte(c + 'a' - 'A')
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
			b.WriteByte(c)
		}
	}
	return encodingAliases[b.String()]
}

// encodingAliases is pg_encname_tbl (src/common/encnames.c), mapped to the
// names pg_encoding_to_char reports.
var encodingAliases = map[string]string{
	"abc": "WIN1258", "alt": "WIN866", "big5": "BIG5", "euccn": "EUC_CN",
	"eucjis2004": "EUC_JIS_2004", "eucjp": "EUC_JP", "euckr": "EUC_KR", "euctw": "EUC_TW",
	"gb18030": "GB18030", "gbk": "GBK", "iso88591": "LATIN1", "iso885910": "LATIN6",
	"iso885913": "LATIN7", "iso885914": "LATIN8", "iso885915": "LATIN9", "iso885916": "LATIN10",
	"iso88592": "LATIN2", "iso88593": "LATIN3", "iso88594": "LATIN4", "iso88595": "ISO_8859_5",
	"iso88596": "ISO_8859_6", "iso88597": "ISO_8859_7", "iso88598": "ISO_8859_8", "iso88599": "LATIN5",
	"johab": "JOHAB", "koi8": "KOI8R", "koi8r": "KOI8R", "koi8u": "KOI8U",
	"latin1": "LATIN1", "latin10": "LATIN10", "latin2": "LATIN2", "latin3": "LATIN3",
	"latin4": "LATIN4", "latin5": "LATIN5", "latin6": "LATIN6", "latin7": "LATIN7",
	"latin8": "LATIN8", "latin9": "LATIN9", "mskanji": "SJIS", "muleinternal": "MULE_INTERNAL",
	"shiftjis": "SJIS", "shiftjis2004": "SHIFT_JIS_2004", "sjis": "SJIS", "sqlascii": "SQL_ASCII",
	"tcvn": "WIN1258", "tcvn5712": "WIN1258", "uhc": "UHC", "unicode": "UTF8",
	"utf8": "UTF8", "vscii": "WIN1258", "win": "WIN1251", "win1250": "WIN1250",
	"win1251": "WIN1251", "win1252": "WIN1252", "win1253": "WIN1253", "win1254": "WIN1254",
	"win1255": "WIN1255", "win1256": "WIN1256", "win1257": "WIN1257", "win1258": "WIN1258",
	"win866": "WIN866", "win874": "WIN874", "win932": "SJIS", "win936": "GBK",
	"win949": "UHC", "win950": "BIG5", "windows1250": "WIN1250", "windows1251": "WIN1251",
	"windows1252": "WIN1252", "windows1253": "WIN1253", "windows1254": "WIN1254", "windows1255": "WIN1255",
	"windows1256": "WIN1256", "windows1257": "WIN1257", "windows1258": "WIN1258", "windows866": "WIN866",
	"windows874": "WIN874", "windows932": "SJIS", "windows936": "GBK", "windows949": "UHC",
	"windows950": "BIG5",
}

// checkEncoding refuses encodings the data cannot be scanned in byte by byte.
func checkEncoding(enc string) error {
	if enc == "" {
		return nil
	}
	name := encodingName(enc)
	switch name {
	case "":
		return errorf(CodeInvalidParameterValue, "invalid encoding name \"%s\"", enc)
	case "SJIS", "BIG5", "GBK", "UHC", "GB18030", "JOHAB", "SHIFT_JIS_2004":
		return &Error{Code: CodeFeatureNotSupported,
			Message: "COPY FROM data in encoding \"" + name + "\" cannot be split across shards",
			Hint:    "Send the data in UTF8, or in another encoding whose multi-byte characters contain no ASCII bytes."}
	}
	return nil
}
