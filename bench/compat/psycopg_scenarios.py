#!/usr/bin/python3
"""psycopg 3 scenarios for bench/compat (issue 17).

Usage: psycopg_scenarios.py DSN [SCENARIO ...]   (no scenario: all of them)
       psycopg_scenarios.py --list

Each scenario prints one line, a JSON object:
    {"scenario": NAME, "ok": true|false, "detail": TEXT}
The expected values are what PostgreSQL itself returns, so a direct run
passes every scenario and a run through shardgate is measured against it.
Each scenario opens its own connections and tables (named after the
scenario and this process) and drops what it created.
"""

import json
import os
import sys
import threading
import time

import psycopg
from psycopg import errors, sql

SCENARIOS = {}


def scenario(fn):
    SCENARIOS[fn.__name__] = fn
    return fn


class Mismatch(Exception):
    """A result that differs from what PostgreSQL returns."""


# last is the last check that passed, to say where a scenario failed.
last = {"check": None}


def expect(what, got, want):
    if got != want:
        raise Mismatch(f"{what}: got {got!r}, want {want!r}")
    last["check"] = what


def table(name):
    return f"compat_py_{name}_{os.getpid()}"


def connect(dsn, **kw):
    return psycopg.connect(dsn, connect_timeout=10, **kw)


def drop(dsn, *tables):
    """Drops tables on a fresh connection: the scenario's may be broken."""
    try:
        with connect(dsn, autocommit=True) as c:
            for t in tables:
                c.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(t)))
    except psycopg.Error:
        pass


@scenario
def pipeline(dsn):
    t = table("pipeline")
    try:
        with connect(dsn, autocommit=True) as conn:
            conn.execute(f"CREATE TABLE {t} (id int PRIMARY KEY, v text)")
            with conn.pipeline() as p:
                c1 = conn.execute("SELECT 1, 'one'")
                c2 = conn.execute(f"INSERT INTO {t} VALUES (%s, %s), (%s, %s) RETURNING id", (1, "a", 2, "b"))
                c3 = conn.execute("SELECT %s::int + 1", (41,))
                c4 = conn.execute(f"UPDATE {t} SET v = upper(v) WHERE id = %s", (2,))
                c5 = conn.execute(f"SELECT id, v FROM {t} ORDER BY id")
                p.sync()
                expect("first", c1.fetchall(), [(1, "one")])
                expect("insert returning", c2.fetchall(), [(1,), (2,)])
                expect("third", c3.fetchall(), [(42,)])
                expect("update rowcount", c4.rowcount, 1)
                expect("last", c5.fetchall(), [(1, "a"), (2, "B")])
        return "5 statements, results in order"
    finally:
        drop(dsn, t)


@scenario
def pipeline_error(dsn):
    with connect(dsn, autocommit=True) as conn:
        with conn.pipeline() as p:
            c1 = conn.execute("SELECT 1")
            c2 = conn.execute("SELECT 1/0")
            c3 = conn.cursor()
            # psycopg reads results while it sends, so the error surfaces at
            # the sync or already at a later execute, as timing has it.
            try:
                c3.execute("SELECT 3")
                p.sync()
                raise Mismatch("a pipeline with a failing statement raised nothing")
            except errors.DivisionByZero:
                pass
            try:  # ends the aborted segment if the error came before its sync
                p.sync()
            except errors.PipelineAborted:
                pass
            expect("first statement's row", c1.fetchall(), [(1,)])
            try:
                c2.fetchall()
                raise Mismatch("the failing statement's cursor has a result")
            except psycopg.ProgrammingError:
                pass
            try:
                c3.fetchall()
                raise Mismatch("the statement after the error has a result")
            except psycopg.Error:
                pass
            c4 = conn.execute("SELECT 4")
            p.sync()
            expect("after the error, in the pipeline", c4.fetchall(), [(4,)])
        expect("after the pipeline", conn.execute("SELECT 5").fetchall(), [(5,)])
    return "row 1, then 22012, then the pipeline and connection usable"


@scenario
def prepared(dsn):
    t = table("prepared")
    try:
        with connect(dsn, autocommit=True) as conn:
            conn.execute(f"CREATE TABLE {t} (id int PRIMARY KEY, v int)")
            with conn.cursor() as cur:
                cur.executemany(f"INSERT INTO {t} VALUES (%s, %s)", [(i, i * 10) for i in range(1, 51)])
                expect("executemany rowcount", cur.rowcount, 50)
            q = f"SELECT v FROM {t} WHERE id = %s"
            for i in (1, 2, 3, 4, 5, 6):
                expect(f"prepared run id={i}", conn.execute(q, (i,), prepare=True).fetchall(), [(i * 10,)])
            names = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0]
            # DDL that keeps the result type: the server plans again.
            conn.execute(f"ALTER TABLE {t} ADD COLUMN w int")
            expect("after ADD COLUMN", conn.execute(q, (7,), prepare=True).fetchall(), [(70,)])
            # DDL that changes it: the statement fails as PostgreSQL says,
            # until a DROP makes psycopg send DEALLOCATE ALL and prepare again.
            conn.execute(f"ALTER TABLE {t} ALTER COLUMN v TYPE text")
            try:
                conn.execute(q, (7,), prepare=True)
                raise Mismatch("a prepared statement whose result type changed raised nothing")
            except errors.FeatureNotSupported as e:
                expect("changed type", e.diag.message_primary, "cached plan must not change result type")
            conn.execute(f"DROP TABLE IF EXISTS {t}_none")
            for i in (7, 8, 9):
                expect(f"after DDL id={i}", conn.execute(q, (i,), prepare=True).fetchall(), [(str(i * 10),)])
            with conn.cursor() as cur:
                cur.executemany(f"UPDATE {t} SET v = %s WHERE id = %s", [(f"x{i}", i) for i in range(1, 11)])
                expect("executemany update rowcount", cur.rowcount, 10)
            got = conn.execute(f"SELECT count(*) FROM {t} WHERE v LIKE 'x%%'", prepare=True).fetchone()
            expect("updated rows", got, (10,))
        return (f"6 prepared runs ({names} in pg_prepared_statements), ADD COLUMN replanned, "
                "ALTER TYPE 0A000 then DEALLOCATE ALL and text, executemany x2")
    finally:
        drop(dsn, t)


def copy_rows():
    return [(i, f"row {i}\twith tab", None if i % 7 == 0 else i * 1.5) for i in range(1, 1001)]


@scenario
def copy(dsn):
    t = table("copy")
    rows = copy_rows()
    try:
        with connect(dsn, autocommit=True) as conn:
            conn.execute(f"CREATE TABLE {t} (id int PRIMARY KEY, v text, f float8)")
            with conn.cursor() as cur:
                with cur.copy(f"COPY {t} (id, v, f) FROM STDIN") as cp:
                    for r in rows:
                        cp.write_row(r)
                expect("COPY FROM rowcount", cur.rowcount, 1000)
                with cur.copy(f"COPY (SELECT id, v, f FROM {t} ORDER BY id) TO STDOUT") as cp:
                    cp.set_types(["int4", "text", "float8"])
                    got = list(cp.rows())
                expect("COPY TO STDOUT rows", got, rows)
                with cur.copy(f"COPY {t} TO STDOUT (FORMAT csv)") as cp:
                    n = sum(1 for _ in cp)
                expect("csv COPY TO has data", n > 0, True)
            expect("after COPY", conn.execute(f"SELECT count(*), sum(id) FROM {t}").fetchone(), (1000, 500500))
            # A COPY that fails half way leaves the connection usable.
            try:
                with conn.cursor().copy(f"COPY {t} (id, v, f) FROM STDIN") as cp:
                    cp.write_row((1, "duplicate", 1.0))
                raise Mismatch("COPY of a duplicate key raised nothing")
            except errors.UniqueViolation:
                pass
            expect("after failed COPY", conn.execute(f"SELECT count(*) FROM {t}").fetchone(), (1000,))
        return "1000 rows in (text), out (text, csv) equal; duplicate key 23505, then usable"
    finally:
        drop(dsn, t)


@scenario
def copy_binary(dsn):
    t = table("copy_binary")
    rows = copy_rows()
    try:
        with connect(dsn, autocommit=True) as conn:
            conn.execute(f"CREATE TABLE {t} (id int PRIMARY KEY, v text, f float8)")
            with conn.cursor() as cur:
                got = []
                with cur.copy("COPY (SELECT id, v, f FROM generate_series(1, 3) g(id), "
                              "LATERAL (SELECT 'x', 1.5::float8) s(v, f)) TO STDOUT (FORMAT BINARY)") as cp:
                    cp.set_types(["int4", "text", "float8"])
                    got = list(cp.rows())
                expect("binary COPY TO of a query", got, [(1, "x", 1.5), (2, "x", 1.5), (3, "x", 1.5)])
                with cur.copy(f"COPY {t} (id, v, f) FROM STDIN (FORMAT BINARY)") as cp:
                    cp.set_types(["int4", "text", "float8"])
                    for r in rows:
                        cp.write_row(r)
                expect("binary COPY FROM rowcount", cur.rowcount, 1000)
                with cur.copy(f"COPY {t} TO STDOUT (FORMAT BINARY)") as cp:
                    cp.set_types(["int4", "text", "float8"])
                    got = sorted(cp.rows())
                expect("binary COPY TO rows", got, rows)
        return "binary COPY TO of a query; 1000 rows in and out (binary) equal"
    finally:
        drop(dsn, t)


@scenario
def notices(dsn):
    fn = table("notices_fn")
    got = []
    with connect(dsn, autocommit=True) as conn:
        conn.add_notice_handler(lambda d: got.append((d.severity_nonlocalized, d.sqlstate, d.message_primary)))
        try:
            conn.execute("DO $$BEGIN RAISE NOTICE 'from do %', 42; END$$")
            conn.execute(
                f"CREATE FUNCTION {fn}(n int) RETURNS int LANGUAGE plpgsql AS "
                f"$$BEGIN RAISE NOTICE 'from function %', n; RAISE WARNING 'careful %', n; RETURN n * 2; END$$"
            )
            expect("function result", conn.execute(f"SELECT {fn}(%s)", (21,)).fetchone(), (42,))
        finally:
            conn.execute(f"DROP FUNCTION IF EXISTS {fn}(int)")
    want = [
        ("NOTICE", "00000", "from do 42"),
        ("NOTICE", "00000", "from function 21"),
        ("WARNING", "01000", "careful 21"),
    ]
    expect("notices", got, want)
    return "DO notice, function notice + warning, in order"


@scenario
def cancel(dsn):
    with connect(dsn, autocommit=True) as conn:
        timer = threading.Timer(0.5, conn.cancel)
        began = time.monotonic()
        timer.start()
        try:
            conn.execute("SELECT pg_sleep(20)")
            raise Mismatch("pg_sleep(20) was not cancelled")
        except errors.QueryCanceled as e:
            expect("sqlstate", e.sqlstate, "57014")
            msg = e.diag.message_primary
        finally:
            timer.cancel()
        took = time.monotonic() - began
        if took > 5:
            raise Mismatch(f"cancel took {took:.1f}s")
        expect("after cancel", conn.execute("SELECT 1").fetchone(), (1,))
        # Inside a transaction: cancel aborts it, ROLLBACK recovers.
        conn.autocommit = False
        timer = threading.Timer(0.5, conn.cancel)
        timer.start()
        try:
            conn.execute("SELECT pg_sleep(20)")
            raise Mismatch("pg_sleep(20) in a transaction was not cancelled")
        except errors.QueryCanceled:
            pass
        finally:
            timer.cancel()
        try:
            conn.execute("SELECT 1")
            raise Mismatch("the cancelled transaction is not aborted")
        except errors.InFailedSqlTransaction:
            pass
        conn.rollback()
        expect("after rollback", conn.execute("SELECT 2").fetchone(), (2,))
        conn.rollback()
    return f"57014 {msg!r} after {took:.2f}s, usable after; in a transaction 25P02 until rollback"


@scenario
def transactions(dsn):
    t = table("transactions")
    try:
        with connect(dsn, autocommit=True) as conn:
            conn.execute(f"CREATE TABLE {t} (id int PRIMARY KEY)")
            try:
                with conn.transaction():
                    conn.execute(f"INSERT INTO {t} VALUES (1)")
                    raise RuntimeError("roll back")
            except RuntimeError:
                pass
            expect("after rollback", conn.execute(f"SELECT count(*) FROM {t}").fetchone(), (0,))
            with conn.transaction():
                conn.execute(f"INSERT INTO {t} VALUES (2)")
                try:
                    with conn.transaction():  # a savepoint
                        conn.execute(f"INSERT INTO {t} VALUES (3)")
                        conn.execute(f"INSERT INTO {t} VALUES (2)")
                except errors.UniqueViolation:
                    pass
                conn.execute(f"INSERT INTO {t} VALUES (4)")
            expect("savepoint", conn.execute(f"SELECT array_agg(id ORDER BY id) FROM {t}").fetchone(), ([2, 4],))
        with connect(dsn) as conn:  # not autocommit: psycopg's implicit BEGIN
            conn.execute(f"INSERT INTO {t} VALUES (5)")
            expect("status in transaction", conn.info.transaction_status, psycopg.pq.TransactionStatus.INTRANS)
            conn.rollback()
            expect("rolled back", conn.execute(f"SELECT count(*) FROM {t} WHERE id = 5").fetchone(), (0,))
            conn.execute(f"INSERT INTO {t} VALUES (6)")
            conn.commit()
            expect("committed", conn.execute(f"SELECT count(*) FROM {t} WHERE id = 6").fetchone(), (1,))
            conn.rollback()
        return "rollback, savepoint rollback, implicit BEGIN rollback and commit"
    finally:
        drop(dsn, t)


@scenario
def listen_notify(dsn):
    chan = table("chan")
    got = []
    with connect(dsn, autocommit=True) as listener, connect(dsn, autocommit=True) as sender:
        listener.add_notify_handler(lambda n: got.append((n.channel, n.payload, n.pid)))
        listener.execute(f"LISTEN {chan}")
        sender.execute("SELECT pg_notify(%s, %s)", (chan, "first"))
        sender.execute(f"NOTIFY {chan}, 'second'")
        sender_pid = sender.execute("SELECT pg_backend_pid()").fetchone()[0]
        deadline = time.monotonic() + 3
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
            listener.execute("SELECT 1")
        expect("notifications", [(c, p) for c, p, _ in got], [(chan, "first"), (chan, "second")])
        expect("sender pid", {pid for _, _, pid in got}, {sender_pid})
        listener.execute(f"UNLISTEN {chan}")
        sender.execute(f"NOTIFY {chan}, 'third'")
        time.sleep(0.2)
        listener.execute("SELECT 1")
        expect("after UNLISTEN", len(got), 2)
    return "2 notifications from another connection, none after UNLISTEN"


@scenario
def server_cursor(dsn):
    t = table("server_cursor")
    try:
        with connect(dsn, autocommit=True) as conn:
            conn.execute(f"CREATE TABLE {t} AS SELECT g AS id, g * 2 AS v FROM generate_series(1, 1000) g")
        with connect(dsn) as conn:
            with conn.transaction():
                with conn.cursor(name="compat_cur", scrollable=True) as cur:
                    cur.itersize = 64
                    cur.execute(f"SELECT id, v FROM {t} WHERE id > %s ORDER BY id", (100,))
                    expect("fetchone", cur.fetchone(), (101, 202))
                    expect("fetchmany", [r[0] for r in cur.fetchmany(3)], [102, 103, 104])
                    cur.scroll(-2)
                    expect("after scroll", cur.fetchone(), (103, 206))
                    rest = list(cur)
                    expect("iterated", (len(rest), rest[-1]), (897, (1000, 2000)))
                    cur.scroll(0, mode="absolute")
                    expect("absolute scroll", cur.fetchone(), (101, 202))
            with conn.cursor(name="compat_hold", withhold=True) as cur:
                cur.execute(f"SELECT count(*) FROM {t}")
                conn.commit()
                expect("WITH HOLD after commit", cur.fetchone(), (1000,))
            conn.commit()
        return "named scrollable cursor: fetchone, fetchmany, scroll, iterate 897 in batches; WITH HOLD after commit"
    finally:
        drop(dsn, t)


def describe(e):
    if isinstance(e, Mismatch):
        return str(e)
    text = f"{type(e).__name__}: {str(e).strip()}"
    code = getattr(e, "sqlstate", None)
    if code:
        text += f" (SQLSTATE {code})"
    if last["check"]:
        text += f" [after check {last['check']!r}]"
    return text


def main(argv):
    if argv[1:] == ["--list"]:
        print("\n".join(SCENARIOS))
        return 0
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    dsn, names = argv[1], argv[2:] or list(SCENARIOS)
    for name in names:
        fn = SCENARIOS.get(name)
        began = time.monotonic()
        last["check"] = None
        if fn is None:
            ok, detail = False, f"no scenario {name!r}"
        else:
            try:
                ok, detail = True, fn(dsn)
            except Exception as e:  # every failure is a result to report
                ok, detail = False, describe(e)
        line = {"scenario": name, "ok": ok, "detail": detail, "seconds": round(time.monotonic() - began, 3)}
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
