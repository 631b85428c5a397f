package router

import (
	"fmt"
	"strings"
	"testing"

	"github.com/shardgate/shardgate/merge"
)

// condString spells a Cond compactly, output column n as $n.
func condString(c merge.Cond) string {
	var args []string
	for _, a := range c.Args {
		args = append(args, condString(a))
	}
	switch c.Op {
	case merge.CondAnd:
		return "and(" + strings.Join(args, ", ") + ")"
	case merge.CondOr:
		return "or(" + strings.Join(args, ", ") + ")"
	case merge.CondNot:
		return "not(" + args[0] + ")"
	case merge.CondIsNull:
		return fmt.Sprintf("isnull($%d)", c.L)
	case merge.CondValue:
		return fmt.Sprintf("$%d", c.L)
	}
	return fmt.Sprintf("$%d %s $%d", c.L, c.Cmp, c.R)
}

// TestScatterHaving checks how HAVING is planned: the shards' SQL (the
// aggregates and constants it reads appended to the select list, the
// condition kept only for Postgres to check), the condition the proxy
// evaluates, and how many appended columns the client must not see.
func TestScatterHaving(t *testing.T) {
	r := testRouter(t)
	cases := []struct {
		sql, shardSQL, having string
		hidden                int
	}{
		{"SELECT country, count(*) FROM users GROUP BY country HAVING count(*) > 2",
			"SELECT country, count(*), 2 FROM users GROUP BY country HAVING count(*) > 2 OR true", "$1 > $2", 1},
		{"SELECT country FROM users GROUP BY country HAVING count(*) > 2 AND avg(id) <= 2.5 ORDER BY country LIMIT 3",
			"SELECT country, count(*), 2, sum(id), 2.5, count(id) FROM users GROUP BY country HAVING (count(*) > 2 AND avg(id) <= 2.5) OR true",
			"and($1 > $2, $3 <= $4)", 4},
		{"SELECT country, avg(id) FROM users GROUP BY country HAVING avg(id) > -1 OR country IS NULL",
			"SELECT country, sum(id), -1, count(id) FROM users GROUP BY country HAVING (avg(id) > -1 OR country IS NULL) OR true",
			"or($1 > $2, isnull($0))", 1},
		{"SELECT country, min(name) FROM users GROUP BY country HAVING NOT (min(name) < 'b' AND max(name) IS NOT NULL)",
			"SELECT country, min(name), CASE WHEN false THEN min(name) ELSE 'b' END, max(name) FROM users GROUP BY country HAVING NOT (min(name) < 'b' AND max(name) IS NOT NULL) OR true",
			"not(and($1 < $2, not(isnull($3))))", 2},
		{"SELECT country FROM users GROUP BY country HAVING count(*) BETWEEN 2 AND '5'::int8 AND country IN ('de', 2::text)",
			"SELECT country, count(*), 2, '5'::int8, CASE WHEN false THEN country ELSE 'de' END, 2::text FROM users GROUP BY country HAVING (count(*) BETWEEN 2 AND '5'::int8 AND country IN ('de', 2::text)) OR true",
			"and(and($1 >= $2, $1 <= $3), or($0 = $4, $0 = $5))", 5},
		{"SELECT country FROM users GROUP BY country HAVING count(*) NOT BETWEEN SYMMETRIC 5 AND 2",
			"SELECT country, count(*), 5, 2 FROM users GROUP BY country HAVING count(*) NOT BETWEEN SYMMETRIC 5 AND 2 OR true",
			"not(or(and($1 >= $2, $1 <= $3), and($1 >= $3, $1 <= $2)))", 3},
		{"SELECT count(*) FROM users HAVING bool_or(country = 'jp') AND min(created_at) = NULL AND 't'",
			"SELECT count(*), bool_or(country = 'jp'), min(created_at), CASE WHEN false THEN min(created_at) ELSE NULL END, CASE WHEN false THEN true ELSE 't' END FROM users HAVING (bool_or(country = 'jp') AND min(created_at) = NULL AND 't') OR true",
			"and($1, $2 = $3, $4)", 4},
		{"SELECT email IS NULL AS noemail, count(*) FROM users GROUP BY 1 HAVING email IS NULL AND 2 < count(*)",
			"SELECT email IS NULL AS noemail, count(*), 2 FROM users GROUP BY 1 HAVING (email IS NULL AND 2 < count(*)) OR true",
			"and($0, $2 < $1)", 1},
		{"SELECT body FROM posts GROUP BY body HAVING count(DISTINCT user_id) <> 1",
			"SELECT body, count(DISTINCT user_id), 1 FROM posts GROUP BY body HAVING count(DISTINCT user_id) <> 1 OR true", "$1 <> $2", 2},
	}
	for _, c := range cases {
		a, _ := r.Analyze([]byte(c.sql))
		plan := r.Route(a, nil, nil)
		s := plan.Scatter
		if s == nil {
			t.Errorf("%s: refused: %v", c.sql, plan.Err)
			continue
		}
		if s.SQL != c.shardSQL {
			t.Errorf("%s:\nshard SQL %s\n     want %s", c.sql, s.SQL, c.shardSQL)
		}
		if s.Having == nil || condString(*s.Having) != c.having || s.Hidden != c.hidden {
			t.Errorf("%s: having %s (%d hidden), want %s (%d hidden)", c.sql, condString(*s.Having), s.Hidden, c.having, c.hidden)
		}
	}
}
