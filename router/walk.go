package router

import (
	"fmt"

	pg "github.com/pganalyze/pg_query_go/v5"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

func typeName(v any) string { return fmt.Sprintf("%T", v) }

// visit calls fn for every message in the tree below m, depth first. The
// router walks generically so that no table reference can hide in a node
// type the router forgot to list (a missed table means a wrong shard).
func visit(m proto.Message, fn func(protoreflect.Message)) {
	walkMessage(m.ProtoReflect(), fn)
}

func walkMessage(m protoreflect.Message, fn func(protoreflect.Message)) {
	fn(m)
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind {
			return true
		}
		if fd.IsList() {
			list := v.List()
			for i := 0; i < list.Len(); i++ {
				walkMessage(list.Get(i).Message(), fn)
			}
		} else if !fd.IsMap() {
			walkMessage(v.Message(), fn)
		}
		return true
	})
}

// relations lists every table reference in the tree, minus references to
// the statement's own CTEs.
func relations(root proto.Message) []*pg.RangeVar {
	var refs []*pg.RangeVar
	ctes := map[string]bool{}
	visit(root, func(m protoreflect.Message) {
		switch n := m.Interface().(type) {
		case *pg.RangeVar:
			refs = append(refs, n)
		case *pg.CommonTableExpr:
			ctes[n.Ctename] = true
		}
	})
	out := refs[:0]
	for _, r := range refs {
		if r.Schemaname == "" && ctes[r.Relname] {
			continue
		}
		out = append(out, r)
	}
	return out
}

// hasMessage reports whether the tree holds a message matching pred.
func hasMessage(root proto.Message, pred func(any) bool) bool {
	found := false
	visit(root, func(m protoreflect.Message) {
		if !found && pred(m.Interface()) {
			found = true
		}
	})
	return found
}

// walkPruned calls fn for every message below m, depth first, skipping the
// children of messages for which fn returns false.
func walkPruned(m protoreflect.Message, fn func(any) bool) {
	if !fn(m.Interface()) {
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind {
			return true
		}
		if fd.IsList() {
			list := v.List()
			for i := 0; i < list.Len(); i++ {
				walkPruned(list.Get(i).Message(), fn)
			}
		} else if !fd.IsMap() {
			walkPruned(v.Message(), fn)
		}
		return true
	})
}
