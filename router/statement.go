package router

import (
	"cmp"
	"strconv"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v5"

	"github.com/shardgate/shardgate/merge"
	"github.com/shardgate/shardgate/pgerr"
	"github.com/shardgate/shardgate/topology"
)

// Class is what a parsed statement needs from the topology.
type Class uint8

const (
	ClassKeyed   Class = iota // a sharded table pinned by shard-key values
	ClassAny                  // any one shard answers the same
	ClassAll                  // every shard must run it
	ClassTx                   // transaction control
	ClassSet                  // SET / RESET of a session parameter
	ClassRefuse               // cannot be routed; Err says why
	ClassScatter              // needs every shard (no key); refused with Err unless a hint names a shard
	ClassHint                 // SET shardgate.*: a session or transaction routing hint
	ClassExplain              // EXPLAIN (SHARDGATE): answered by the proxy from Inner
	ClassCopyIn               // COPY ... FROM STDIN: rows split among the shards by the proxy
	ClassDefault              // names only tables the config does not name (and reference tables): the default shard
)

// KeyRef is where a shard-key value comes from: a literal in the SQL text or
// a bind parameter ($Param, 1-based).
type KeyRef struct {
	Param   int
	Literal string
}

// Statement is the topology-independent-of-values analysis of one SQL
// statement, computed once per distinct text and cached. Values arrive later
// (literals are already inside, parameters come with Bind).
type Statement struct {
	Class   Class
	Tx      TxOp
	Role    Role
	Table   string
	KeyType topology.KeyType
	Classes []KeyClass // ClassKeyed: what pins the sharded relations
	NewKey  *KeyRef    // UPDATE ... SET key = value: must stay on the row's shard
	Tag     string     // ClassTx: the command tag Postgres answers with
	Set     *Setting   // ClassSet: the session setting it changes
	Hint    *HintSetting
	Inner   *Analysis    // ClassExplain: the statement to explain
	Scatter *ScatterSpec // SELECTs that may run on several shards: how to merge
	Gather  *GatherSpec  // SELECTs no merge answers: how to run them on one shard instead
	// RunFirst: a gathered SELECT whose cross-shard subqueries can run
	// before it instead (runfirst.go); Gather stays its fallback.
	RunFirst *RunFirstSpec
	CopyIn   *CopyIn // ClassCopyIn
	// Broadcastable: an UPDATE or DELETE each shard can run on its own rows
	// alone, so several shards can run it (when the config allows).
	Broadcastable bool
	// Split: a lone INSERT ... VALUES whose every row is pinned by its own
	// key, which SplitInsert can write as one INSERT per shard.
	Split bool
	// DDLTables: the tables a DDL statement names (unqualified), so the
	// proxy can refuse DDL on tables being resharded.
	DDLTables []string
	// Unlisted is a table the config does not name that a statement
	// reaching sharded or reference tables (Listed) also names: it may run
	// only where every shard it needs is the default shard.
	Unlisted, Listed string
	// Missing is the table the config does not name that got the
	// statement refused (without default_shard), for the proxy to tell
	// Postgres's 42P01 when no such relation exists.
	Missing *Relation
	// DDL: the statement changes the schema, so prepared statements may
	// have gone stale.
	DDL bool
	// SessionState names the state the statement leaves on its server
	// connection past its transaction (LISTEN, temporary tables, cursors
	// WITH HOLD), or is empty.
	SessionState string
	// FromText marks analyses that keep values from the SQL text (SET), so
	// they must come from the original text, never a normalised one.
	FromText bool
	Reason   string
	Err      *pgerr.Error
}

// Relation is a relation as the SQL names it.
type Relation struct{ Schema, Name string }

// String is the name as Postgres quotes it in messages: schema.name.
func (r Relation) String() string {
	if r.Schema == "" {
		return r.Name
	}
	return r.Schema + "." + r.Name
}

func refused(format string, args ...any) *Statement {
	err := errorf(pgerr.CodeFeatureNotSupported, format, args...)
	return &Statement{Class: ClassRefuse, Err: err, Reason: err.Message}
}

// analyze classifies one raw statement against the table configuration.
func analyze(t *topology.Topology, node *pg.Node) *Statement {
	switch {
	case node.GetSelectStmt() != nil:
		return analyzeSelect(t, node.GetSelectStmt(), node)
	case node.GetInsertStmt() != nil:
		return analyzeInsert(t, node.GetInsertStmt(), node)
	case node.GetUpdateStmt() != nil:
		return analyzeUpdate(t, node.GetUpdateStmt(), node)
	case node.GetDeleteStmt() != nil:
		return analyzeDelete(t, node.GetDeleteStmt(), node)
	case node.GetTransactionStmt() != nil:
		return analyzeTx(node.GetTransactionStmt())
	case node.GetVariableSetStmt() != nil:
		st := analyzeSet(node)
		st.FromText = true
		return st
	case node.GetDiscardStmt() != nil:
		if node.GetDiscardStmt().Target != pg.DiscardMode_DISCARD_ALL {
			return &Statement{Class: ClassAny, Role: RolePrimary, Reason: "DISCARD of one kind of state"}
		}
		return &Statement{Class: ClassSet, Tag: "DISCARD ALL", Set: &Setting{ResetAll: true, Discard: true}, Reason: "DISCARD ALL resets the session"}
	case node.GetVariableShowStmt() != nil:
		return &Statement{Class: ClassAny, Role: RoleReplica, Reason: "SHOW is answered by any shard"}
	case node.GetExplainStmt() != nil && explainOption(node.GetExplainStmt(), "shardgate"):
		inner := analyze(t, node.GetExplainStmt().Query)
		// FromText as its statement: explained from normalised text, LIMIT
		// 10 would be LIMIT $1, which no merge takes, and show a gather.
		return &Statement{Class: ClassExplain, Inner: &Analysis{Stmts: []*Statement{inner}}, Tag: "EXPLAIN", Reason: "EXPLAIN (SHARDGATE)", FromText: inner.FromText}
	case node.GetExplainStmt() != nil:
		inner := analyze(t, node.GetExplainStmt().Query)
		if explainOption(node.GetExplainStmt(), "analyze") && inner.Class == ClassKeyed {
			inner.Role = RolePrimary // EXPLAIN ANALYZE runs the statement
		}
		return inner
	case node.GetCopyStmt() != nil:
		st := analyzeCopy(t, node.GetCopyStmt())
		st.FromText = true
		return st
	case isDDL(node):
		st := analyzeDDL(t, node)
		st.DDL = true
		if tempRelation(node) {
			st.SessionState = stateTempTable
		}
		return st
	}
	if st := analyzeSession(t, node); st != nil {
		return st
	}
	return refused("%s is not supported by shardgate yet", statementName(node))
}

func explainOption(e *pg.ExplainStmt, name string) bool {
	for _, o := range e.Options {
		if d := o.GetDefElem(); d != nil && d.Defname == name {
			return true
		}
	}
	return false
}

func isDDL(node *pg.Node) bool {
	switch node.Node.(type) {
	case *pg.Node_CreateStmt, *pg.Node_AlterTableStmt, *pg.Node_DropStmt, *pg.Node_IndexStmt,
		*pg.Node_TruncateStmt, *pg.Node_CreateSchemaStmt, *pg.Node_CreateSeqStmt, *pg.Node_AlterSeqStmt,
		*pg.Node_ViewStmt, *pg.Node_CreateExtensionStmt, *pg.Node_CommentStmt, *pg.Node_RenameStmt,
		*pg.Node_CreateTableAsStmt, *pg.Node_CompositeTypeStmt, *pg.Node_CreateEnumStmt,
		*pg.Node_CreateFunctionStmt, *pg.Node_CreateTrigStmt, *pg.Node_GrantStmt,
		*pg.Node_CreateDomainStmt, *pg.Node_CreateRangeStmt, *pg.Node_DefineStmt, *pg.Node_AlterEnumStmt,
		*pg.Node_AlterDomainStmt, *pg.Node_AlterFunctionStmt, *pg.Node_AlterOwnerStmt, *pg.Node_AlterObjectSchemaStmt,
		*pg.Node_CreateCastStmt, *pg.Node_AlterExtensionStmt, *pg.Node_CreatePolicyStmt, *pg.Node_AlterPolicyStmt,
		*pg.Node_RuleStmt, *pg.Node_ReindexStmt, *pg.Node_ClusterStmt, *pg.Node_VacuumStmt,
		*pg.Node_CreateStatsStmt, *pg.Node_RefreshMatViewStmt, *pg.Node_AlterDefaultPrivilegesStmt,
		*pg.Node_AlterTypeStmt, *pg.Node_AlterCollationStmt, *pg.Node_CreateConversionStmt, *pg.Node_CreateOpClassStmt:
		return true
	}
	return false
}

// ddlTables lists the relations a DDL statement names: every RangeVar in
// it, and the tables of a DROP TABLE, which names them as plain lists.
func ddlTables(node *pg.Node) []string {
	var out []string
	if d := node.GetDropStmt(); d != nil && d.RemoveType == pg.ObjectType_OBJECT_TABLE {
		for _, o := range d.Objects {
			if l := o.GetList(); l != nil {
				out = append(out, lastName(l.Items))
			}
		}
	}
	walk(node, func(m any) bool {
		if r, ok := m.(*pg.RangeVar); ok {
			out = append(out, r.Relname)
		}
		return true
	})
	return out
}

// statementName turns "*pg_query.Node_CopyStmt" into "COPY" for messages.
func statementName(node *pg.Node) string {
	name := strings.TrimPrefix(strings.TrimPrefix(typeName(node.Node), "*pg_query.Node_"), "pg_query.Node_")
	name = strings.TrimSuffix(name, "Stmt")
	return strings.ToUpper(name)
}

func analyzeTx(s *pg.TransactionStmt) *Statement {
	st := &Statement{Class: ClassTx, Role: RolePrimary, Tx: TxOther, Reason: "savepoint in the current transaction"}
	switch s.Kind {
	case pg.TransactionStmtKind_TRANS_STMT_BEGIN:
		st.Tx, st.Tag, st.Reason = TxBegin, "BEGIN", "transaction start"
	case pg.TransactionStmtKind_TRANS_STMT_START:
		st.Tx, st.Tag, st.Reason = TxBegin, "START TRANSACTION", "transaction start"
	case pg.TransactionStmtKind_TRANS_STMT_COMMIT:
		st.Tx, st.Tag, st.Reason = TxCommit, "COMMIT", "transaction end"
	case pg.TransactionStmtKind_TRANS_STMT_ROLLBACK:
		st.Tx, st.Tag, st.Reason = TxRollback, "ROLLBACK", "transaction end"
	case pg.TransactionStmtKind_TRANS_STMT_SAVEPOINT:
		st.Tag = "SAVEPOINT"
	case pg.TransactionStmtKind_TRANS_STMT_RELEASE:
		st.Tag = "RELEASE"
	case pg.TransactionStmtKind_TRANS_STMT_ROLLBACK_TO:
		st.Tag = "ROLLBACK"
	default: // PREPARE TRANSACTION and friends
		return refused("two-phase commit commands are reserved for shardgate itself")
	}
	return st
}

// Setting is a session-level SET, RESET or DISCARD ALL. The proxy keeps
// each client's settings and replays them on whichever server connection
// serves it, so SQL is the canonical (deparsed) form of the statement.
type Setting struct {
	Name     string // lower-case parameter name; "" for RESET ALL
	SQL      string // statement that applies it; "" for a RESET
	ResetAll bool   // RESET ALL or DISCARD ALL
	Discard  bool   // DISCARD ALL: also forget prepared statements
}

func analyzeSet(node *pg.Node) *Statement {
	s := node.GetVariableSetStmt()
	if strings.HasPrefix(s.Name, "shardgate.") {
		return hintSetting(node, s)
	}
	// SET TRANSACTION and SET LOCAL only mean something inside the
	// transaction, so they travel with it like a savepoint.
	if s.Kind == pg.VariableSetKind_VAR_SET_MULTI || s.IsLocal {
		return &Statement{Class: ClassTx, Tx: TxOther, Tag: "SET", Reason: "transaction-scoped setting"}
	}
	switch s.Name {
	case "role", "session_authorization":
		return refused("SET %s is not supported: server connections are shared between clients", s.Name)
	}
	// Inside a transaction a SET is transaction control too: it counts only
	// if the transaction commits.
	st := &Statement{Class: ClassSet, Tx: TxOther, Tag: "SET", Reason: "session parameter " + s.Name, Set: &Setting{Name: s.Name}}
	switch s.Kind {
	case pg.VariableSetKind_VAR_RESET_ALL:
		st.Set, st.Tag = &Setting{ResetAll: true}, "RESET"
	case pg.VariableSetKind_VAR_RESET:
		st.Tag = "RESET"
	case pg.VariableSetKind_VAR_SET_DEFAULT:
	default:
		sql, err := deparse(node, unknownDepth)
		if err != nil {
			return refused("cannot track SET %s: %v", s.Name, err)
		}
		st.Set.SQL = sql
	}
	return st
}

// HintSetting is SET [LOCAL] shardgate.<name> = value, or its RESET.
type HintSetting struct {
	Name  string // without the "shardgate." prefix
	Value string // "" for RESET
	Local bool
}

func hintSetting(node *pg.Node, s *pg.VariableSetStmt) *Statement {
	h := &HintSetting{Name: strings.TrimPrefix(s.Name, "shardgate."), Local: s.IsLocal}
	if s.Kind == pg.VariableSetKind_VAR_SET_VALUE {
		if len(s.Args) != 1 {
			return refused("SET %s takes one value", s.Name)
		}
		c := s.Args[0].GetAConst()
		switch {
		case c.GetSval() != nil:
			h.Value = c.GetSval().Sval
		case c.GetIval() != nil:
			h.Value = strconv.Itoa(int(c.GetIval().Ival))
		case c.GetFval() != nil:
			h.Value = c.GetFval().Fval
		default:
			return refused("SET %s takes a constant", s.Name)
		}
	}
	return &Statement{Class: ClassHint, Hint: h, Tag: "SET", Reason: "shardgate routing hint"}
}

// mayScatter reports whether a keyed statement can route to several shards
// (IN lists, arrays, several independent key classes).
func (s *Statement) mayScatter() bool {
	if s.Class != ClassKeyed {
		return false
	}
	if len(s.Classes) > 1 {
		return true
	}
	for _, c := range s.Classes {
		for _, p := range c.Pins {
			if len(p.Refs) > 1 || p.Array > 0 {
				return true
			}
		}
	}
	return false
}

// analyzeCopy routes COPY ... TO STDOUT: a relation or query on one shard
// passes through; one spread over shards is gathered by concatenation,
// which is exact only without ORDER BY, LIMIT, DISTINCT or aggregates.
func analyzeCopy(t *topology.Topology, c *pg.CopyStmt) *Statement {
	switch {
	case c.IsFrom:
		return analyzeCopyIn(t, c)
	case c.Filename != "" || c.IsProgram:
		return refused("COPY to a server file or program is not supported: use COPY ... TO STDOUT")
	}
	header := false
	for _, o := range c.Options {
		if d := o.GetDefElem(); d != nil && d.Defname == "header" {
			header = d.Arg == nil || d.Arg.GetBoolean().GetBoolval() || d.Arg.GetString_().GetSval() == "true" || d.Arg.GetString_().GetSval() == "on"
		}
	}
	if c.Query != nil {
		inner := analyze(t, c.Query)
		if inner.Scatter == nil {
			return inner // one shard, any shard, or a refusal
		}
		out := *inner
		sp := *inner.Scatter
		if sp.Refusal == "" && (sp.SQL != "" || len(sp.Sort) > 0 || sp.Limit >= 0 || sp.Offset > 0 || sp.Distinct || sp.Aggregate) {
			sp.Refusal = "COPY of a query with ORDER BY, LIMIT, DISTINCT or aggregates"
		}
		sp.SQL, sp.CopyOut, sp.CopyHeader = "", true, header
		out.Scatter = &sp
		return &out
	}
	rel := c.Relation
	table, sharded := t.Tables[rel.Relname]
	switch {
	case isSystemRelation(rel) || t.Reference[rel.Relname]:
		return &Statement{Class: ClassAny, Role: RoleReplica, Reason: "COPY of a table every shard holds"}
	case !sharded:
		if _, ok := t.DefaultShard(); ok {
			return &Statement{Class: ClassDefault, Role: RoleReplica, Reason: "COPY of " + rel.Relname + ", which the config does not name: the default shard"}
		}
		return unknownTable(rel)
	}
	st := scatter(rel.Relname, table)
	st.Role = RoleReplica
	st.Scatter = &ScatterSpec{Spec: merge.Spec{Limit: -1}, CopyOut: true, CopyHeader: header}
	return st
}

// analyzeDDL runs DDL on every shard, except that with a default shard,
// DDL naming only tables the config does not name runs there alone: they
// live nowhere else. DDL naming no table at all (types, functions,
// extensions) still runs everywhere, as sharded tables may need it.
func analyzeDDL(t *topology.Topology, node *pg.Node) *Statement {
	st := &Statement{Class: ClassAll, Role: RolePrimary, DDLTables: ddlTables(node), Reason: "DDL runs on every shard"}
	if _, ok := t.DefaultShard(); !ok {
		return st
	}
	var named, unlisted string
	for _, r := range ddlRelations(node) {
		switch {
		case isSystemRelation(r):
		case listed(t, r.Relname):
			named = cmp.Or(named, r.Relname)
		default:
			unlisted = cmp.Or(unlisted, r.Relname)
		}
	}
	switch {
	case unlisted != "" && named == "":
		return &Statement{Class: ClassDefault, Role: RolePrimary, DDLTables: st.DDLTables, Reason: "DDL on " + unlisted + ", which the config does not name: the default shard"}
	case unlisted != "":
		st.Unlisted, st.Listed = unlisted, named
	}
	return st
}

// ddlRelations lists the relations a DDL statement names, with their
// schemas: every RangeVar in it, and the relations a DROP names as lists.
func ddlRelations(node *pg.Node) []*pg.RangeVar {
	var out []*pg.RangeVar
	if d := node.GetDropStmt(); d != nil {
		switch d.RemoveType {
		case pg.ObjectType_OBJECT_TABLE, pg.ObjectType_OBJECT_VIEW, pg.ObjectType_OBJECT_MATVIEW,
			pg.ObjectType_OBJECT_SEQUENCE, pg.ObjectType_OBJECT_FOREIGN_TABLE:
			for _, o := range d.Objects {
				if items := o.GetList().GetItems(); len(items) > 0 {
					r := &pg.RangeVar{Relname: lastName(items)}
					if len(items) > 1 {
						r.Schemaname = items[len(items)-2].GetString_().GetSval()
					}
					out = append(out, r)
				}
			}
		}
	}
	walk(node, func(m any) bool {
		if r, ok := m.(*pg.RangeVar); ok {
			out = append(out, r)
		}
		return true
	})
	return out
}
