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
