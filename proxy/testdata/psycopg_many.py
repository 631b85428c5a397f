"""N psycopg 3 clients with prepare_threshold=0 (every statement a named
prepared statement) hammering shardgate at once.

Usage: python3 psycopg_many.py DSN CLIENTS ITERATIONS BASE_KEY
Prints "ok <queries>" and exits 0 only if no client saw an error.
"""
import sys
import threading

import psycopg

dsn, clients, iterations, base = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
errors, done = [], []


def work(n):
    try:
        with psycopg.connect(dsn, prepare_threshold=0, autocommit=True) as conn:
            count = 0
            for i in range(iterations):
                key = base + (n * iterations + i) % 200
                conn.execute("INSERT INTO users (id, name) VALUES (%s, %s) ON CONFLICT (id) DO NOTHING", (key, "many"))
                row = conn.execute("SELECT name FROM users WHERE id = %s", (key,)).fetchone()
                assert row == ("many",), row
                assert conn.execute("SELECT %s::int + 1", (i,)).fetchone() == (i + 1,)
                count += 3
            done.append(count)
    except Exception as e:  # reported below, the test fails on any
        errors.append(repr(e))


threads = [threading.Thread(target=work, args=(n,)) for n in range(clients)]
for t in threads:
    t.start()
for t in threads:
    t.join()
if errors:
    print("errors:", len(errors), errors[:3])
    sys.exit(1)
print("ok", sum(done))
