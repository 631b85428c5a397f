package router

import (
	"slices"
	"testing"
)

// TestDDLTables: a DDL plan names the tables its statement touches, so the
// proxy can refuse DDL on tables being resharded; other plans name none.
func TestDDLTables(t *testing.T) {
	r := testRouter(t)
	for sql, want := range map[string][]string{
		"ALTER TABLE users ADD COLUMN x int":           {"users"},
		"DROP TABLE IF EXISTS public.users, posts":     {"users", "posts"},
		"TRUNCATE users":                               {"users"},
		"CREATE INDEX users_x ON users (id)":           {"users"},
		"ALTER TABLE users RENAME TO people":           {"users"},
		"CREATE TABLE fresh (id bigint)":               {"fresh"},
		"SELECT * FROM users WHERE id = 1":             nil,
		"INSERT INTO users (id, name) VALUES (1, 'a')": nil,
		"DROP INDEX users_x":                           nil,
	} {
		a, _ := r.Analyze([]byte(sql))
		got := r.Route(a, nil, nil).DDLTables
		if !slices.Equal(got, want) {
			t.Errorf("%s: DDL tables %v, want %v", sql, got, want)
		}
	}
}

// TestMissingTable: a refusal for a table the config does not name carries
// the relation as written, so the proxy can answer 42P01 when it does not
// exist; other refusals carry none, and a default shard takes the table.
func TestMissingTable(t *testing.T) {
	r := testRouter(t)
	for sql, want := range map[string]*Relation{
		"SELECT * FROM mystery":                                              {Name: "mystery"},
		"INSERT INTO other.enigma VALUES (1)":                                {Schema: "other", Name: "enigma"},
		"COPY mystery FROM STDIN":                                            {Name: "mystery"},
		"SELECT * FROM users u JOIN mystery m ON m.id = u.id WHERE u.id = 3": {Name: "mystery"},
		"DELETE FROM posts":                                                  nil,
	} {
		a, _ := r.Analyze([]byte(sql))
		p := r.Route(a, nil, nil)
		switch {
		case want == nil && p.Missing != nil:
			t.Errorf("%s: missing %v, want none", sql, p.Missing)
		case want != nil && (p.Missing == nil || *p.Missing != *want || p.Err == nil):
			t.Errorf("%s: missing %v (err %v), want %v", sql, p.Missing, p.Err, want)
		}
	}
	d := caseRouters{}.get(t, "default-s1")
	a, _ := d.Analyze([]byte("SELECT * FROM mystery"))
	if p := d.Route(a, nil, nil); p.Missing != nil || p.Target != TargetShard || p.Shard != 1 {
		t.Errorf("with default_shard: %+v", p)
	}
	if ex := d.Explain("SELECT 1", nil); len(ex.Shards) != 1 || ex.Shards[0] != "s1" {
		t.Errorf("explain of SELECT 1 with default_shard s1: %+v", ex)
	}
}
