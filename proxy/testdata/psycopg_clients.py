"""Drive shardgate with psycopg2 (simple protocol, client-side binding) and
psycopg 3 (extended protocol, server-side binding, prepared statements).

Usage: python3 psycopg_clients.py DSN BASE_KEY
Prints one "ok <check>" line per passed check; exits non-zero on failure.
"""
import sys

import psycopg
import psycopg2

dsn, base = sys.argv[1], int(sys.argv[2])


def check_psycopg2():
    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    # psycopg2 opens a transaction implicitly (BEGIN on the first statement).
    for i in range(20):
        cur.execute("INSERT INTO users (id, name) VALUES (%s, %s)", (base + i, "pg2-%d" % i))
        conn.commit()
    for i in range(20):
        cur.execute("SELECT name FROM users WHERE id = %s", (base + i,))
        assert cur.fetchone() == ("pg2-%d" % i,), i
        conn.commit()
    try:
        cur.execute("DELETE FROM users")
        raise AssertionError("cross-shard delete was not refused")
    except psycopg2.errors.FeatureNotSupported:
        conn.rollback()
    cur.execute("SELECT 1")
    assert cur.fetchone() == (1,)
    conn.close()
    print("ok psycopg2")


def check_psycopg3(prepare_threshold, offset):
    with psycopg.connect(dsn, prepare_threshold=prepare_threshold) as conn:
        for i in range(20):
            key = base + offset + i
            with conn.transaction():
                conn.execute("INSERT INTO users (id, name) VALUES (%s, %s)", (key, "pg3"))
                conn.execute("INSERT INTO posts (user_id, id, body) VALUES (%s, 1, %s)", (key, "hi"))
        conn.autocommit = True  # each read its own transaction: keys span shards
        for _ in range(3):  # repeated: prepared statements are reused
            for i in range(20):
                key = base + offset + i
                row = conn.execute("SELECT u.name, p.body FROM users u JOIN posts p ON p.user_id = u.id "
                                   "WHERE u.id = %s AND p.user_id = %s", (key, key)).fetchone()
                assert row == ("pg3", "hi"), (key, row)
        try:
            conn.execute("DELETE FROM posts")
            raise AssertionError("cross-shard delete was not refused")
        except psycopg.errors.FeatureNotSupported:
            pass
        assert conn.execute("SELECT 2").fetchone() == (2,)
    print("ok psycopg3 prepare_threshold=%s" % prepare_threshold)


check_psycopg2()
check_psycopg3(None, 100)  # never prepare: unnamed statements
check_psycopg3(0, 200)     # prepare everything: named statements
