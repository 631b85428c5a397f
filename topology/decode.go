package topology

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// The config is decoded by walking the yaml.Node tree rather than with
// yaml.Decoder.KnownFields, so that every error, including unknown fields
// and type mismatches, carries the full field path and its line, and so that
// validation afterwards can point back into the file.

// positions maps a field path ("pool.size", "keyspace[1].range",
// "tables.users.key_type") to the line it was written on.
type positions map[string]int

// line returns the line of path or, if path was not written (a missing
// required field), of its nearest written ancestor; 0 if none is known.
func (p positions) line(path string) int {
	for {
		if l, ok := p[path]; ok {
			return l
		}
		if path == "" {
			return 0
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			i = 0
		}
		path = path[:i]
	}
}

// problems collects config errors so that all of them are reported at once.
type problems struct {
	file string
	pos  positions
	list []problem
}

type problem struct {
	line int
	msg  string
}

// add records a problem with the field at path, located through pos.
func (p *problems) add(path, format string, args ...any) {
	p.addAt(p.pos.line(path), path, fmt.Sprintf(format, args...))
}

func (p *problems) addAt(line int, path, msg string) {
	if path != "" {
		msg = path + ": " + msg
	}
	p.list = append(p.list, problem{line, msg})
}

// err returns the problems in file order, one "file:line: field: message"
// per line, or nil if there are none.
func (p *problems) err() error {
	if len(p.list) == 0 {
		return nil
	}
	slices.SortStableFunc(p.list, func(a, b problem) int { return a.line - b.line })
	errs := make([]error, len(p.list))
	for i, pr := range p.list {
		switch {
		case p.file != "" && pr.line > 0:
			errs[i] = fmt.Errorf("%s:%d: %s", p.file, pr.line, pr.msg)
		case p.file != "":
			errs[i] = fmt.Errorf("%s: %s", p.file, pr.msg)
		default:
			errs[i] = errors.New(pr.msg)
		}
	}
	return errors.Join(errs...)
}

// decode fills cfg from YAML data, leaving fields that are absent or null
// untouched, and returns where each field was written.
func decode(file string, data []byte, cfg *Config) (positions, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, syntaxError(file, err)
	}
	d := &decoder{problems{file: file, pos: positions{}}}
	if len(doc.Content) > 0 {
		root := doc.Content[0]
		d.pos[""] = root.Line
		d.value(root, reflect.ValueOf(cfg).Elem(), "")
	}
	return d.pos, d.err()
}

// syntaxError rewrites yaml.v3's "yaml: line N: msg" as "file:N: msg".
func syntaxError(file string, err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, text, ok := strings.Cut(rest, ": "); ok {
			if n, err := strconv.Atoi(num); err == nil {
				return fmt.Errorf("%s:%d: %s", file, n, text)
			}
		}
	}
	return fmt.Errorf("%s: %s", file, msg)
}

type decoder struct {
	problems
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

func (d *decoder) value(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	// Null means the same as absent: keep the default.
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return
	}
	if v.Addr().Type().Implements(unmarshalerType) {
		if err := n.Decode(v.Addr().Interface()); err != nil {
			d.addAt(n.Line, path, err.Error())
		}
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.structure(n, v, path)
	case reflect.Slice:
		d.sequence(n, v, path)
	case reflect.Map:
		d.mapping(n, v, path)
	default:
		d.scalar(n, v, path)
	}
}

func (d *decoder) structure(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.addAt(n.Line, path, "want a mapping, got "+describe(n, path))
		return
	}
	type written struct {
		key  string
		line int
	}
	seen := map[int]written{} // by field, so a name and its alias are one key
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		f, name, ok := fieldByTag(v.Type(), k.Value)
		if !ok {
			d.addAt(k.Line, joinPath(path, k.Value), "unknown field")
			continue
		}
		fp := joinPath(path, k.Value)
		if first, dup := seen[f]; dup {
			d.addAt(k.Line, fp, fmt.Sprintf("duplicate key (%s first at line %d)", first.key, first.line))
			continue
		}
		seen[f] = written{k.Value, k.Line}
		// Validation finds lines by the field's own name (pool.size),
		// whichever name the file used.
		d.pos[joinPath(path, name)] = k.Line
		d.pos[fp] = k.Line
		d.value(val, v.Field(f), fp)
	}
}

func (d *decoder) sequence(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.SequenceNode {
		d.addAt(n.Line, path, "want a list, got "+describe(n, path))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		ip := fmt.Sprintf("%s[%d]", path, i)
		d.pos[ip] = item.Line
		d.value(item, s.Index(i), ip)
	}
	v.Set(s)
}

func (d *decoder) mapping(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.addAt(n.Line, path, "want a mapping, got "+describe(n, path))
		return
	}
	m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		fp := joinPath(path, k.Value)
		if k.Kind != yaml.ScalarNode {
			d.addAt(k.Line, path, "keys must be plain names, got "+describe(k, path))
			continue
		}
		if first, dup := seen[k.Value]; dup {
			d.addAt(k.Line, fp, fmt.Sprintf("duplicate key (first at line %d)", first))
			continue
		}
		seen[k.Value] = k.Line
		d.pos[fp] = k.Line
		elem := reflect.New(v.Type().Elem()).Elem()
		d.value(val, elem, fp)
		m.SetMapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key()), elem)
	}
	v.Set(m)
}

func (d *decoder) scalar(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.ScalarNode {
		d.addAt(n.Line, path, "want a single value, got "+describe(n, path))
		return
	}
	if err := n.Decode(v.Addr().Interface()); err != nil {
		want := v.Type().String()
		switch v.Kind() {
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			want = "an integer"
		}
		d.addAt(n.Line, path, fmt.Sprintf("want %s, got %s", want, describe(n, path)))
	}
}

// fieldByTag finds the field that key names: its yaml tag, or its alias
// tag, which gives PgBouncer's name for a setting shardgate names more
// briefly (pool.size is default_pool_size). It returns the field's own name.
func fieldByTag(t reflect.Type, key string) (int, string, bool) {
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name == key || t.Field(i).Tag.Get("alias") == key && key != "" {
			return i, name, true
		}
	}
	return 0, "", false
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// describe names what n is for an error about the field at path: its value
// quoted, unless the field may hold a secret (see secretPath).
func describe(n *yaml.Node, path string) string {
	switch {
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case secretPath(path):
		return "a single value (not shown: the field may hold a secret)"
	}
	return fmt.Sprintf("%q", n.Value)
}
