package proxy_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// TestCopyOut gathers COPY ... TO STDOUT from every shard and checks the
// rows against the shards themselves; a keyed COPY (SELECT ...) passes
// through to its shard; what concatenation cannot reproduce is refused.
func TestCopyOut(t *testing.T) {
	ctx := t.Context()
	conn := connectLow(t)
	var want int64
	for shard := range cluster.Shards {
		var n int64
		if err := connectShard(t, shard).QueryRow(ctx, "SELECT count(*) FROM users").Scan(&n); err != nil {
			t.Fatal(err)
		}
		want += n
	}
	var out bytes.Buffer
	tag, err := conn.CopyTo(ctx, &out, "COPY users (id, name) TO STDOUT")
	if err != nil {
		t.Fatal(err)
	}
	if lines := int64(strings.Count(out.String(), "\n")); lines != want || tag.RowsAffected() != want {
		t.Fatalf("COPY users: %d lines, tag %q; the shards hold %d rows", lines, tag, want)
	}

	out.Reset()
	tag, err = conn.CopyTo(ctx, &out, "COPY (SELECT id, name FROM users WHERE id > 0) TO STDOUT WITH (FORMAT csv, HEADER)")
	if err != nil {
		t.Fatal(err)
	}
	if headers := strings.Count(out.String(), "id,name\n"); headers != 1 || !strings.HasPrefix(out.String(), "id,name\n") {
		t.Fatalf("CSV HEADER across shards: %d header lines", headers)
	}
	if lines := int64(strings.Count(out.String(), "\n")); lines != tag.RowsAffected()+1 {
		t.Fatalf("%d lines for %q", lines, tag)
	}

	keys := keysBy(t, 12_000_000, 1)
	if _, err := conn.Exec(ctx, fmt.Sprintf("INSERT INTO users (id, name) VALUES (%d, 'copied')", keys[1][0])).ReadAll(); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if _, err := conn.CopyTo(ctx, &out, fmt.Sprintf("COPY (SELECT name FROM users WHERE id = %d) TO STDOUT", keys[1][0])); err != nil || out.String() != "copied\n" {
		t.Fatalf("keyed COPY: %q, %v", out.String(), err)
	}

	for _, q := range []string{
		"COPY (SELECT id FROM users ORDER BY id) TO STDOUT",
		"COPY users TO '/tmp/x'",
	} {
		_, err := conn.CopyTo(ctx, &out, q)
		if sqlState(err) != "0A000" {
			t.Errorf("%s: %v, want 0A000", q, err)
		}
	}
	if res, err := conn.Exec(ctx, "SELECT 1").ReadAll(); err != nil || len(res) != 1 {
		t.Fatalf("connection after COPY refusals: %v", err)
	}
}
