#!/usr/bin/env bash
# bench/run.sh: the pooler benchmark behind `make bench` (see bench/README.md).
#
# One run compares, with equal pool sizes, direct PostgreSQL, PgBouncer in
# transaction mode and shardgate with one shard, twice: at 1 worker
# (shardgate-w1, like for like with single-threaded PgBouncer) and at the
# default worker count (shardgate): pgbench point selects (-M simple and
# -M extended, 8 and 32 clients) and reconnects (-C), then the RSS of
# PgBouncer and shardgate holding 10,000 idle clients. It writes
# bench/results/latest.md and keeps the raw outputs in bench/results/raw/.
#
# Everything listens on 127.0.0.1 and everything started here is stopped on
# exit. Knobs (environment): BENCH_DURATION (seconds per run, 10),
# BENCH_SECTION_DURATION (seconds per run of the scatter and replicas
# sections, half of BENCH_DURATION but at least 3), BENCH_WARMUP (3),
# BENCH_IDLE_CLIENTS (10000), BENCH_ROWS (100000), GO.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
GO=${GO:-go}
DURATION=${BENCH_DURATION:-10}
# The scatter and replicas sections run 9 measurements between them: at half
# the pooler runs' length they keep the whole benchmark within about 8
# minutes now that the pooler section measures four targets.
SECTION_DURATION=${BENCH_SECTION_DURATION:-$((DURATION / 2 > 3 ? DURATION / 2 : 3))}
WARMUP=${BENCH_WARMUP:-3}
IDLE_CLIENTS=${BENCH_IDLE_CLIENTS:-10000}
ROWS=${BENCH_ROWS:-100000}
POOL_SIZE=20                            # shardgate's default pool.size; PgBouncer gets the same
MAX_CLIENTS=$((IDLE_CLIENTS + 1000))    # max_client_conn for both poolers
THREADS=2                               # pgbench -j: the machine has 2 cores
PGBOUNCER=${PGBOUNCER:-/usr/sbin/pgbouncer}
RESULTS=$ROOT/bench/results
RAW=$RESULTS/raw

# name|pgbench options (all run the same custom point-select script)
SCENARIOS=(
	"select-simple-c8|-M simple -c 8"
	"select-simple-c32|-M simple -c 32"
	"select-extended-c8|-M extended -c 8"
	"select-extended-c32|-M extended -c 32"
	"reconnect-c8|-M simple -C -c 8"
)
TARGETS=(direct pgbouncer shardgate-w1 shardgate)
SHARDGATES=(shardgate-w1 shardgate) # the targets the ratio table compares with PgBouncer and direct

say() { printf '[bench %3ds] %s\n' "$SECONDS" "$*" >&2; }
die() {
	say "FAILED: $*"
	exit 1
}

for cmd in pgbench psql ss pgrep timeout "$PGBOUNCER"; do
	command -v "$cmd" >/dev/null || die "$cmd not found (PostgreSQL 15 client tools, pgbouncer, iproute2, procps)"
done
[ -x bin/shardgate ] || die "bin/shardgate is missing: run make bench (it builds first)"
AS_PG=()
if [ "$(id -u)" = 0 ]; then
	AS_PG=(runuser -u postgres --) # PostgreSQL and PgBouncer refuse to run as root
fi

# 10,000 idle clients need that many descriptors in the holder and in each
# pooler; children inherit this limit.
want_fds=$((MAX_CLIENTS + 1000))
if [ "$(ulimit -n)" -lt "$want_fds" ]; then
	ulimit -n "$want_fds" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi
[ "$(ulimit -n)" -ge "$want_fds" ] || say "warning: ulimit -n is $(ulimit -n), below $want_fds: the idle test may fail"

WORK=$(mktemp -d /tmp/shardgate-bench.XXXXXX)
chmod 711 "$WORK"
mkdir -p "$RAW"
rm -f "$RAW"/*.txt "$RAW"/*.log

DEV_PID='' SG_PID='' SG1_PID='' PGB_PID='' PGB_RUNNER='' HOLDER_PID='' PG_DATA=''

# alive PID: the process exists and is not a zombie.
alive() {
	[ -n "$1" ] && [ -r "/proc/$1/stat" ] && ! sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | grep -q '^Z'
}

# stop_pid PID SIGNAL SECONDS: signal a process, wait for it, SIGKILL if it lingers.
stop_pid() {
	local pid=$1 sig=$2 secs=$3 i
	alive "$pid" || return 0
	kill "-$sig" "$pid" 2>/dev/null || true
	for ((i = 0; i < secs * 10; i++)); do
		alive "$pid" || return 0
		sleep 0.1
	done
	say "process $pid still running ${secs}s after SIG$sig; sending SIGKILL"
	kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
	local rc=$?
	set +e
	trap '' INT TERM
	stop_pid "$HOLDER_PID" TERM 30
	stop_pid "$SG_PID" TERM 30
	stop_pid "$SG1_PID" TERM 30
	stop_pid "$PGB_PID" TERM 10
	stop_pid "$PGB_RUNNER" TERM 5
	# dev stops its PostgreSQL cleanly (pg_ctl stop -m fast) on SIGTERM.
	stop_pid "$DEV_PID" TERM 90
	if [ -n "$PG_DATA" ] && [ -f "$PG_DATA/postmaster.pid" ]; then
		say "PostgreSQL still running in $PG_DATA; stopping it"
		"${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 30 stop >/dev/null 2>&1 ||
			"${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate stop >/dev/null 2>&1
	fi
	wait 2>/dev/null
	for f in dev.log shardgate.log shardgate-w1.log pgbouncer/pgbouncer.log pgbouncer/stdout.log; do
		[ -f "$WORK/$f" ] && cp "$WORK/$f" "$RAW/$(echo "$f" | tr / -)"
	done
	[ -n "$PG_DATA" ] && [ -f "$PG_DATA/server.log" ] && cp "$PG_DATA/server.log" "$RAW/postgres.log"
	rm -rf "$WORK"
	if [ "$rc" != 0 ]; then
		say "exit status $rc; logs are in $RAW"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_for SECONDS PID WHAT COMMAND...: poll COMMAND until it succeeds; fail
# if PID (when given) exits or time runs out.
wait_for() {
	local deadline=$((SECONDS + $1)) pid=$2 what=$3
	shift 3
	until "$@"; do
		if [ -n "$pid" ] && ! alive "$pid"; then
			say "$what: process $pid exited"
			return 1
		fi
		if [ "$SECONDS" -ge "$deadline" ]; then
			say "$what: timed out after $1s"
			return 1
		fi
		sleep 0.2
	done
}

listening() { ss -Htln "sport = :$1" | grep -q .; }

# pick_port VAR: a free loopback port outside the ephemeral range, into VAR.
pick_port() {
	local p _
	for _ in $(seq 200); do
		p=$((20000 + RANDOM % 10000))
		if ! listening "$p" && [[ " $TAKEN_PORTS " != *" $p "* ]]; then
			TAKEN_PORTS="$TAKEN_PORTS $p"
			printf -v "$1" %s "$p"
			return 0
		fi
	done
	die "no free port"
}
TAKEN_PORTS=''

psql_at() { # PORT ARGS...
	local port=$1
	shift
	psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d app "$@"
}

CLK_TCK=$(getconf CLK_TCK)

# cpu_ticks PID: user+system CPU of one process so far, in clock ticks.
cpu_ticks() {
	if alive "$1"; then sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; else echo 0; fi
}

# pg_ticks: CPU of the whole PostgreSQL instance so far: the postmaster, its
# reaped children (backends that already exited) and its live children.
pg_ticks() {
	local pm
	pm=$(head -1 "$PG_DATA/postmaster.pid")
	{
		sed 's/^.*) //' "/proc/$pm/stat" | awk '{print $12 + $13 + $14 + $15}'
		for c in $(pgrep -P "$pm"); do
			sed 's/^.*) //' "/proc/$c/stat" 2>/dev/null | awk '{print $12 + $13}' || true
		done
	} | awk '{s += $1} END {print s + 0}'
}

# background_busy VAR: percent of all CPUs busy over one second while nothing
# is being benchmarked, into VAR: anything well above 0 is another workload
# (a test suite, a build) that would compete with the next run.
background_busy() {
	local a b
	a=$(awk '/^cpu / {print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9; exit}' /proc/stat)
	sleep 1
	b=$(awk '/^cpu / {print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9; exit}' /proc/stat)
	read -r "$1" < <(awk -v a="$a" -v b="$b" 'BEGIN {
		split(a, x, " "); split(b, y, " "); t = y[2] - x[2]
		printf "%.0f\n", (t > 0 ? (y[1] - x[1]) * 100 / t : 0)
	}')
}

# wait_quiet VAR: wait until the machine is nearly idle before a run, within
# what is left of QUIET_BUDGET seconds for the whole benchmark; the last
# background CPU percentage goes into VAR.
QUIET_BUDGET=${BENCH_QUIET_BUDGET:-60}
wait_quiet() {
	background_busy "$1"
	if [ "${!1}" -gt 10 ] && [ "$QUIET_BUDGET" -gt 0 ]; then
		say "something else is using ${!1}% of the CPU; waiting for it (${QUIET_BUDGET}s left for all such waits)"
	fi
	while [ "${!1}" -gt 10 ] && [ "$QUIET_BUDGET" -gt 0 ]; do
		sleep 1
		QUIET_BUDGET=$((QUIET_BUDGET - 2))
		background_busy "$1"
	done
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# --- build the idle-client holder ---------------------------------------
say "building bench/idleclients"
"$GO" build -o "$WORK/idleclients" ./bench/idleclients

# --- PostgreSQL: shardgate's own sandbox, one primary, no replicas ------
for d in "$(pg_config --bindir 2>/dev/null || true)" /usr/lib/postgresql/*/bin; do
	if [ -x "$d/pg_ctl" ]; then
		PG_BIN=$d
		break
	fi
done
pick_port DEV_PORT
pick_port SG_PORT
pick_port SG_METRICS_PORT
pick_port SG1_PORT
pick_port SG1_METRICS_PORT
pick_port PGB_PORT
say "starting PostgreSQL with shardgate dev --shards 1 --replicas 0 (sandbox in $WORK/sandbox)"
./bin/shardgate dev --shards 1 --replicas 0 --dir "$WORK/sandbox" --listen "127.0.0.1:$DEV_PORT" --metrics-listen "" >"$WORK/dev.log" 2>&1 &
DEV_PID=$!
wait_for 120 "$DEV_PID" "shardgate dev" grep -q 'shardgate dev ready' "$WORK/dev.log" || {
	cat "$WORK/dev.log" >&2
	die "shardgate dev did not start"
}
PG_PORT=$(jq -r '.shards[0].primary.port' "$WORK/sandbox/sandbox.json")
PG_DATA=$(jq -r '.shards[0].primary.data_dir' "$WORK/sandbox/sandbox.json")
[ -f "$PG_DATA/postmaster.pid" ] || die "no postmaster.pid in $PG_DATA"
say "PostgreSQL primary on 127.0.0.1:$PG_PORT; loading $ROWS users"
psql_at "$PG_PORT" -c "INSERT INTO users (id, name, email, country)
	SELECT g, 'user ' || g, 'user' || g || '@example.com', 'NL' FROM generate_series(1, $ROWS) g"
psql_at "$PG_PORT" -c "VACUUM ANALYZE users"
psql_at "$PG_PORT" -c "CHECKPOINT"

# --- shardgate: the measured proxies --------------------------------------
# dev's own proxy only manages the sandbox and serves nothing here; the
# measured proxies are two `shardgate serve` processes on dev's config with
# the same pool size and max_client_conn as PgBouncer (the default 10000
# leaves no room beside 10,000 idle clients): shardgate-w1 with workers: 1,
# shardgate with the default worker count. Their metrics listeners are on,
# as in production, so the numbers include what metrics cost.

# start_shardgate NAME PORT METRICS_PORT EXTRA_YAML: start `shardgate serve`
# as NAME; its pid goes into SERVE_PID.
start_shardgate() {
	local name=$1 port=$2 metrics=$3 extra=$4 cfg=$WORK/$1.yaml
	sed -e "s/^listen: .*/listen: 127.0.0.1:$port/" \
		-e "s/^pool: .*/pool: {mode: transaction, size: $POOL_SIZE, max_client_conn: $MAX_CLIENTS}/" \
		"$WORK/sandbox/shardgate.yaml" >"$cfg"
	echo "metrics_listen: 127.0.0.1:$metrics" >>"$cfg"
	[ -z "$extra" ] || echo "$extra" >>"$cfg"
	grep -q "size: $POOL_SIZE, max_client_conn" "$cfg" || die "could not rewrite the pool line of dev's shardgate.yaml"
	say "starting $name: shardgate serve on 127.0.0.1:$port (pool.size $POOL_SIZE${extra:+, $extra})"
	./bin/shardgate serve --config "$cfg" >"$WORK/$name.log" 2>&1 &
	SERVE_PID=$!
	wait_for 30 "$SERVE_PID" "$name serve" listening "$port" || {
		cat "$WORK/$name.log" >&2
		die "$name serve did not start"
	}
	# serve logs the worker count in effect on its "listening" line.
	SERVE_WORKERS=$(sed -n 's/.*shardgate listening.* workers=\([0-9]*\).*/\1/p' "$WORK/$name.log" | head -1)
	say "$name: workers ${SERVE_WORKERS:-?}"
}
start_shardgate shardgate "$SG_PORT" "$SG_METRICS_PORT" ''
SG_PID=$SERVE_PID SG_WORKERS=$SERVE_WORKERS
start_shardgate shardgate-w1 "$SG1_PORT" "$SG1_METRICS_PORT" 'workers: 1'
SG1_PID=$SERVE_PID SG1_WORKERS=$SERVE_WORKERS

# --- PgBouncer, transaction mode, same pool size ------------------------
PGB_DIR=$WORK/pgbouncer
mkdir -p "$PGB_DIR"
echo '"postgres" ""' >"$PGB_DIR/userlist.txt"
cat >"$PGB_DIR/pgbouncer.ini" <<EOF
[databases]
app = host=127.0.0.1 port=$PG_PORT dbname=app user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB_PORT
unix_socket_dir =
auth_type = trust
auth_file = $PGB_DIR/userlist.txt
pool_mode = transaction
default_pool_size = $POOL_SIZE
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = $MAX_CLIENTS
logfile = $PGB_DIR/pgbouncer.log
pidfile = $PGB_DIR/pgbouncer.pid
log_connections = 0
log_disconnections = 0
log_stats = 0
ignore_startup_parameters = extra_float_digits
EOF
[ "${#AS_PG[@]}" = 0 ] || chown -R postgres: "$PGB_DIR"
say "starting PgBouncer on 127.0.0.1:$PGB_PORT (transaction mode, default_pool_size $POOL_SIZE)"
# runuser's PAM session resets the soft descriptor limit to 1024: raise it
# again (up to the hard limit inherited from here) before exec'ing PgBouncer.
"${AS_PG[@]}" bash -c 'ulimit -Sn "$0" && exec "$@"' "$(ulimit -Hn)" "$PGBOUNCER" "$PGB_DIR/pgbouncer.ini" \
	>"$PGB_DIR/stdout.log" 2>&1 &
PGB_RUNNER=$!
wait_for 30 "$PGB_RUNNER" "pgbouncer" listening "$PGB_PORT" || {
	cat "$PGB_DIR/stdout.log" "$PGB_DIR/pgbouncer.log" >&2 || true
	die "pgbouncer did not start"
}
wait_for 10 "$PGB_RUNNER" "pgbouncer pidfile" test -s "$PGB_DIR/pgbouncer.pid"
PGB_PID=$(cat "$PGB_DIR/pgbouncer.pid")

declare -A PORT=([direct]=$PG_PORT [pgbouncer]=$PGB_PORT [shardgate-w1]=$SG1_PORT [shardgate]=$SG_PORT)
declare -A PID=([direct]='' [pgbouncer]=$PGB_PID [shardgate-w1]=$SG1_PID [shardgate]=$SG_PID)
for p in "$PGB_PID" "$SG1_PID" "$SG_PID"; do
	fds=$(awk '/^Max open files/ {print $4}' "/proc/$p/limits")
	[ "$fds" -ge "$MAX_CLIENTS" ] || say "warning: process $p may open only $fds files"
done

for t in "${TARGETS[@]}"; do
	got=$(psql_at "${PORT[$t]}" -Atc "SELECT name FROM users WHERE id = 42") || die "query through $t failed"
	[ "$got" = "user 42" ] || die "query through $t returned '$got'"
done

# --- pgbench runs ---------------------------------------------------------
printf '\\set id random(1, %d)\nSELECT id, name FROM users WHERE id = :id;\n' "$ROWS" >"$WORK/select.sql"
TSV=$WORK/results.tsv
: >"$TSV"

# run_pgbench SCENARIO TARGET OPTIONS: one bounded pgbench run; appends a line to $TSV.
run_pgbench() {
	local scen=$1 target=$2 opts=$3
	local port=${PORT[$target]} pid=${PID[$target]} out=$RAW/$scen.$target.txt
	local logdir=$WORK/log/$scen.$target rc=0 p0=0 p1=0 g0 g1 bg
	local -a cmd
	# shellcheck disable=SC2206 # opts is a list of options
	cmd=(pgbench -h 127.0.0.1 -p "$port" -U postgres -n -f "$WORK/select.sql" $opts -j "$THREADS" -T "$DURATION"
		-l "--log-prefix=$logdir/tx" app)
	mkdir -p "$logdir"
	if [ -n "$pid" ] && ! alive "$pid"; then
		printf '%s\t%s\t-\t-\t-\t-\t-\t-\t-\t0\t-\t-\t%s\t-\t-\n' "$scen" "$target" "proxy process is gone" >>"$TSV"
		return
	fi
	wait_quiet bg
	echo "# ${cmd[*]}" >"$out"
	[ -n "$pid" ] && p0=$(cpu_ticks "$pid")
	g0=$(pg_ticks)
	timeout -k 5 --signal=INT $((DURATION + 30)) "${cmd[@]}" >>"$out" 2>&1 || rc=$?
	[ -n "$pid" ] && p1=$(cpu_ticks "$pid")
	g1=$(pg_ticks)
	echo "# exit status $rc" >>"$out"

	local tx tps failed err conn
	tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out")
	tx=${tx:-0}
	tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$out")
	failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out")
	conn=$(sed -n 's/^average connection time = \([0-9.]*\) ms/\1/p' "$out") # -C only
	err=$(grep -m1 -E 'pgbench: (error|fatal)|aborted' "$out" | cut -c1-200 | tr '\t|' '  ' || true)
	if [ "$rc" != 0 ] && [ -z "$err" ]; then err="pgbench exit status $rc"; fi
	alive "$pid" || [ -z "$pid" ] || err="${err:+$err; }proxy process exited"
	# Latency percentiles (nearest rank) from pgbench's per-transaction log:
	# the third field is the transaction's latency in microseconds.
	local lat
	lat=$(cat "$logdir"/tx.* 2>/dev/null | awk '$3 ~ /^[0-9]+$/ {print $3}' | sort -n | awk '
		function pct(p,  i) { i = int(p * NR); if (i < p * NR) i++; if (i < 1) i = 1; return a[i] / 1000 }
		{ a[NR] = $1; s += $1 }
		END {
			if (NR == 0) { print "-\t-\t-\t-"; exit }
			printf "%.3f\t%.3f\t%.3f\t%.3f\n", s / NR / 1000, pct(0.50), pct(0.95), pct(0.99)
		}') || true
	rm -rf "$logdir"
	local proxy_us=- pg_us=-
	if [ "$tx" -gt 0 ]; then
		[ -n "$pid" ] && proxy_us=$(awk -v d=$((p1 - p0)) -v hz="$CLK_TCK" -v n="$tx" 'BEGIN {printf "%.1f", d * 1e6 / hz / n}')
		pg_us=$(awk -v d=$((g1 - g0)) -v hz="$CLK_TCK" -v n="$tx" 'BEGIN {printf "%.1f", d * 1e6 / hz / n}')
	fi
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scen" "$target" "${tps:--}" "$lat" \
		"$proxy_us" "$pg_us" "$tx" "${failed:--}" "$rc" "${err:-}" "${conn:--}" "$bg" >>"$TSV"
	say "$(printf '%-20s %-12s tps %-10s p50/p95/p99 ms %-22s proxy µs/tx %-6s %s' "$scen" "$target" "${tps:--}" \
		"$(echo "$lat" | cut -f2-4 | tr '\t' /)" "$proxy_us" "${err:+ERROR: $err}")"
}

say "warming up each target for ${WARMUP}s"
for t in "${TARGETS[@]}"; do
	timeout -k 5 --signal=INT $((WARMUP + 30)) pgbench -h 127.0.0.1 -p "${PORT[$t]}" -U postgres -n \
		-f "$WORK/select.sql" -M simple -c 8 -j "$THREADS" -T "$WARMUP" app >"$RAW/warmup.$t.txt" 2>&1 ||
		say "warmup through $t failed: see $RAW/warmup.$t.txt"
done

for s in "${SCENARIOS[@]}"; do
	for t in "${TARGETS[@]}"; do
		run_pgbench "${s%%|*}" "$t" "${s#*|}"
		sleep 1
	done
done

# --- memory with idle clients ------------------------------------------
IDLE_TSV=$WORK/idle.tsv
: >"$IDLE_TSV"

# idle_test TARGET: RSS of the pooler before and while IDLE_CLIENTS hold a
# connection each; appends a line to $IDLE_TSV.
idle_test() {
	local target=$1 port=${PORT[$1]} pid=${PID[$1]} log=$RAW/idle.$1.txt
	local before after='-' per='-' took='-' query='no' verified='-' hrc=0 note=''
	before=$(rss_kb "$pid")
	say "opening $IDLE_CLIENTS idle clients to $target (RSS now $((before / 1024)) MiB)"
	: >"$log"
	"$WORK/idleclients" -addr "127.0.0.1:$port" -n "$IDLE_CLIENTS" -hold 300s >"$log" 2>&1 &
	HOLDER_PID=$!
	if wait_for 180 "$HOLDER_PID" "idle clients to $target" grep -q '^connected' "$log"; then
		sleep 2
		after=$(rss_kb "$pid")
		per=$(awk -v a="$after" -v b="$before" -v n="$IDLE_CLIENTS" 'BEGIN {printf "%.1f", (a - b) / n}')
		took=$(sed -n 's/^connected .* in \([0-9.]*s\).*/\1/p' "$log")
		if got=$(timeout 20 psql -X -h 127.0.0.1 -p "$port" -U postgres -d app -Atc "SELECT name FROM users WHERE id = 7" 2>>"$log") &&
			[ "$got" = "user 7" ]; then
			query=yes
		fi
	else
		note=$(grep -m1 -E 'idleclients:' "$log" | cut -c1-200 | tr '\t|' '  ' || true)
	fi
	stop_pid "$HOLDER_PID" TERM 60
	wait "$HOLDER_PID" || hrc=$?
	HOLDER_PID=''
	verified=$(sed -n 's/^verified \([0-9]*\/[0-9]*\).*/\1/p' "$log")
	[ "$hrc" = 0 ] || note="${note:-idle client holder exit status $hrc}"
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$before" "$after" "$per" "$took" "$query" "${verified:--}" "$note" >>"$IDLE_TSV"
	say "$target: RSS $((before / 1024)) MiB -> $([ "$after" = - ] && echo - || echo $((after / 1024))) MiB with $IDLE_CLIENTS idle clients ($per KiB each); query while holding: $query; verified ${verified:--} ${note}"
}

idle_test pgbouncer
idle_test shardgate

# --- report -------------------------------------------------------------
say "writing bench/results/latest.md"
pg_version=$(psql_at "$PG_PORT" -Atc "SHOW server_version")
pgb_version=$("$PGBOUNCER" --version | head -1)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] || commit="$commit + uncommitted changes"
cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)

{
	cat <<EOF
# shardgate benchmark: $(date -u '+%Y-%m-%d %H:%M UTC')

shardgate $commit ($("$GO" env GOVERSION)), PostgreSQL $pg_version, $pgb_version, pgbench $(pgbench --version | awk '{print $3}').
$(nproc) cores ($cpu_model), shared by PostgreSQL, pgbench and the pooler; everything on 127.0.0.1.
$(awk -F'\t' '$15 ~ /^[0-9]+$/ && $15 > 10 {n++} END {
		if (n) printf "\n**%d of %d runs started while something else used more than 10%% of the CPU (bg CPU %% column): repeat them on a quiet machine.**\n", n, NR
	}' "$TSV")

Each run: \`pgbench -n -j $THREADS -T $DURATION\` with a point select by primary key on \`users\` ($ROWS rows):
\`\\set id random(1, $ROWS)\` then \`SELECT id, name FROM users WHERE id = :id;\`.
Targets: **direct** PostgreSQL; **PgBouncer** in transaction mode, default_pool_size $POOL_SIZE;
shardgate with one shard, pool.size $POOL_SIZE (\`shardgate serve\`), as two processes on the same config:
**shardgate-w1** with \`workers: 1\` (${SG1_WORKERS:-?} worker, like single-threaded PgBouncer) and **shardgate** with
the default worker count (${SG_WORKERS:-?}: the CPUs the process may use). Targets take turns within each scenario.

- tps: as pgbench prints it (for \`reconnect\`, pgbench -C: including the reconnections).
- latency: mean and percentiles of pgbench's per-transaction log (\`-l\`), in ms. With -C pgbench logs the
  transaction without its connection setup; connect ms is pgbench's "average connection time" for those runs.
- CPU µs/tx: user+system CPU of the pooler process over the run (/proc/PID/stat) divided by transactions;
  postgres CPU µs/tx is the same for the whole PostgreSQL instance (postmaster, backends, exited backends).
- bg CPU %: the machine's CPU use in the second before the run, with nothing benchmarked running (the harness
  waits up to ${BENCH_QUIET_BUDGET:-60} s in all for it to drop to 10% or less); more means another workload competed.

| scenario | target | tps | avg ms | p50 ms | p95 ms | p99 ms | connect ms | pooler CPU µs/tx | postgres CPU µs/tx | transactions | bg CPU % | errors |
|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|
EOF
	awk -F'\t' '{
		err = $13; if ($11 != "-" && $11 + 0 > 0) err = $11 " failed" (err != "" ? "; " err : "")
		if (err == "") err = "none"
		tps = $3; if (tps ~ /^[0-9.]+$/) tps = sprintf(tps >= 100 ? "%.0f" : "%.1f", tps)
		printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, tps, $4, $5, $6, $7, $14, $8, $9, $10, $15, err
	}' "$TSV"
	cat <<EOF

Ratios per scenario, each shardgate process against PgBouncer and direct (tps: higher is better for shardgate;
CPU per tx and p99: lower is better):

| scenario | target | tps / PgBouncer | tps / direct | CPU per tx / PgBouncer | p99 / PgBouncer |
|---|---|---:|---:|---:|---:|
EOF
	awk -F'\t' -v shardgates="${SHARDGATES[*]}" '
		function ratio(a, b) { return (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b + 0 > 0) ? sprintf("%.2f", a / b) : "-" }
		{ tps[$1, $2] = $3; cpu[$1, $2] = $8; p99[$1, $2] = $7; if (!seen[$1]++) order[++n] = $1 }
		END {
			m = split(shardgates, sg, " ")
			for (i = 1; i <= n; i++) {
				s = order[i]
				for (j = 1; j <= m; j++) {
					t = sg[j]
					printf "| %s | %s | %s | %s | %s | %s |\n", s, t, ratio(tps[s, t], tps[s, "pgbouncer"]),
						ratio(tps[s, t], tps[s, "direct"]), ratio(cpu[s, t], cpu[s, "pgbouncer"]),
						ratio(p99[s, t], p99[s, "pgbouncer"])
				}
			}
		}' "$TSV"
	cat <<EOF

Memory with $IDLE_CLIENTS idle clients (each completed startup and sits idle; VmRSS of the pooler process;
shardgate at the default worker count):

| pooler | RSS before | RSS with $IDLE_CLIENTS idle | KiB per idle client | connect time | query while holding | idle clients still answering | notes |
|---|---:|---:|---:|---:|---|---:|---|
EOF
	awk -F'\t' '
		function mib(k) { return k ~ /^[0-9]+$/ ? sprintf("%.1f MiB", k / 1024) : "-" }
		{ printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, mib($2), mib($3), $4, $5, $6, $7, ($8 == "" ? "" : $8) }' "$IDLE_TSV"
	echo
	echo "Harness wall time: ${SECONDS}s. Raw pgbench output and logs: bench/results/raw/ (not committed)."
} >"$RESULTS/latest.md.tmp"
mv "$RESULTS/latest.md.tmp" "$RESULTS/latest.md"
echo
cat "$RESULTS/latest.md"

# --- cross-shard queries: bench/scatter ----------------------------------
# Its own 3-shard sandbox and in-process proxy against one PostgreSQL database
# holding all rows; its markdown section is appended to latest.md.
say "running bench/scatter (scatter queries, 3 shards vs one PostgreSQL; about $((6 * SECTION_DURATION + 30))s)"
"$GO" run ./bench/scatter -duration "${SECTION_DURATION}s" -out "$WORK/scatter.md" >"$RAW/scatter.txt" 2>&1 || {
	tail -20 "$RAW/scatter.txt" >&2
	die "bench/scatter failed: see $RAW/scatter.txt"
}
{
	echo
	cat "$WORK/scatter.md"
} >>"$RESULTS/latest.md"
echo
cat "$WORK/scatter.md"

# --- replica reads: bench/replicas ----------------------------------------
# Its own 2-shard sandbox with 2 replicas per shard and in-process proxies:
# primary-only reads vs 1 and 2 replicas per shard; appended to latest.md.
say "running bench/replicas (replica reads, 2 shards x 2 replicas; about $((3 * SECTION_DURATION + 40))s)"
"$GO" run ./bench/replicas -duration "${SECTION_DURATION}s" -out "$WORK/replicas.md" >"$RAW/replicas.txt" 2>&1 || {
	tail -20 "$RAW/replicas.txt" >&2
	die "bench/replicas failed: see $RAW/replicas.txt"
}
{
	echo
	cat "$WORK/replicas.md"
} >>"$RESULTS/latest.md"
echo
cat "$WORK/replicas.md"
