package router

import (
	"strings"

	"github.com/shardgate/shardgate/pgerr"
	"github.com/shardgate/shardgate/topology"
)

// Hints say what SQL cannot: which shard a statement without a shard key
// runs on, or which role serves it. They come as a comment in the
// statement, /* shardgate: shard_key=42 */, /* shardgate: shard=s1 */,
// /* shardgate: role=primary */ (several may share one comment), or as the
// session or transaction settings shardgate.shard_key, shardgate.shard and
// shardgate.role. A statement's own keys win over a session hint; a comment
// hint that contradicts them is an error.

// Hint is a parsed, validated hint.
type Hint struct {
	ShardKey string // routes like a key of the statement's key type
	Shard    string
	Role     string // "primary" or "replica"
	// Session is shardgate.session, the read-your-writes token: not a
	// routing hint, so empty() ignores it.
	Session string
}

// MaxSessionToken is the longest shardgate.session value, in bytes.
const MaxSessionToken = 64

func (h *Hint) empty() bool { return h == nil || (h.ShardKey == "" && h.Shard == "" && h.Role == "") }

// set applies one name=value pair; name is without the "shardgate." prefix.
func (h *Hint) set(t *topology.Topology, name, value string) *pgerr.Error {
	switch name {
	case "shard_key":
		h.ShardKey = value
	case "shard":
		if _, ok := t.ShardIndex(value); !ok && value != "" {
			return errorf(pgerr.CodeInvalidParameterValue, "shardgate hint: unknown shard %q", value)
		}
		h.Shard = value
	case "role":
		if value != "primary" && value != "replica" && value != "" {
			return errorf(pgerr.CodeInvalidParameterValue, "shardgate hint: role must be primary or replica, got %q", value)
		}
		h.Role = value
	case "session":
		if len(value) > MaxSessionToken {
			return errorf(pgerr.CodeInvalidParameterValue, "shardgate.session: token is %d bytes, at most %d allowed", len(value), MaxSessionToken)
		}
		h.Session = value
	default:
		return errorf(pgerr.CodeInvalidParameterValue, "shardgate hint: unknown setting %q (want shard_key, shard, role or session)", name)
	}
	return nil
}

// commentHint finds a /* shardgate: ... */ comment in sql.
func commentHint(t *topology.Topology, sql string) (*Hint, *pgerr.Error) {
	const open = "/* shardgate:"
	i := strings.Index(sql, open)
	if i < 0 {
		return nil, nil
	}
	end := strings.Index(sql[i:], "*/")
	if end < 0 {
		return nil, nil // an unterminated comment: the parser reports it
	}
	h := &Hint{}
	for _, pair := range strings.FieldsFunc(sql[i+len(open):i+end], func(r rune) bool { return r == ' ' || r == ',' || r == '\t' || r == '\n' }) {
		name, value, ok := strings.Cut(pair, "=")
		if !ok {
			return nil, errorf(pgerr.CodeInvalidParameterValue, "shardgate hint: want name=value, got %q", pair)
		}
		if name == "session" {
			return nil, errorf(pgerr.CodeInvalidParameterValue, "shardgate hint: session is a session setting, not a comment hint")
		}
		if err := h.set(t, name, strings.Trim(value, `'"`)); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// ParseSessionHint validates SET shardgate.<name> = value for the proxy,
// which keeps session and transaction hints.
func (r *Router) ParseSessionHint(h *Hint, name, value string) (*Hint, *pgerr.Error) {
	out := Hint{}
	if h != nil {
		out = *h
	}
	if err := out.set(r.topo.Load(), name, value); err != nil {
		return nil, err
	}
	return &out, nil
}

// applyHint routes a plan by a hint: a statement that needs every shard
// (or names none) runs on the hinted shard; a keyed one must agree.
func applyHint(t *topology.Topology, plan Plan, h *Hint, comment bool, kt topology.KeyType) Plan {
	if h.empty() {
		return plan
	}
	if h.Role == "primary" {
		plan.Role = RolePrimary
	} else if h.Role == "replica" && plan.Target != TargetAll {
		plan.Role = RoleReplica
	}
	shard := -1
	switch {
	case h.Shard != "":
		shard, _ = t.ShardIndex(h.Shard)
	case h.ShardKey != "":
		at, err := t.Place(kt, h.ShardKey)
		if err != nil {
			return Plan{Target: TargetError, Err: &pgerr.Error{Code: pgerr.CodeInvalidText, Message: "shardgate hint: " + err.Error()}}
		}
		shard = at.Shard
	default:
		return plan
	}
	switch plan.Target {
	case TargetShard:
		if plan.Shard != shard && comment {
			return refuse("shardgate hint names shard %s but the statement's key is on shard %s", t.Shards[shard].Name, t.Shards[plan.Shard].Name)
		}
	case TargetAny, TargetMulti:
		plan.Target, plan.Shard, plan.Shards, plan.Err, plan.Split = TargetShard, shard, 0, nil, false
		plan.Reason = "shardgate hint: shard " + t.Shards[shard].Name
	}
	return plan
}
