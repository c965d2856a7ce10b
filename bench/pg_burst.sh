#!/usr/bin/env bash
# A burst into PostgreSQL: N messages over the REST batch endpoint into a fresh database, the built-in simulated
# network as the carrier, then the seconds until every one is final (nothing scheduled, queued, sending or sent in
# /metrics), the server's CPU and PostgreSQL's (every `postgres` process of this machine, from /proc: keep the
# machine otherwise quiet).
#   N=200000 bench/pg_burst.sh          (build first: cargo build --release)
#   PG=postgres://postgres@127.0.0.1:5432 DBNAME=smsgate_burst  (the database is dropped and made anew, and dropped
#   at the end); WAIT=600: the most seconds after acceptance it waits for the last message to be final. Loopback ports 18181 (HTTP) and 18775 (SMPP server); the server's folder is a temporary one.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/smsgate}
N=${N:-200000}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
DBNAME=${DBNAME:-smsgate_burst}
WAIT=${WAIT:-600}
for v in N WAIT; do [[ ${!v} =~ ^[0-9]+$ ]] || { echo "$v must be a whole number, not ${!v}" >&2; exit 2; }; done
KEY=sk_bench_key_0123456789
A="Authorization: Bearer $KEY"; S=http://127.0.0.1:18181
DATA=$(mktemp -d)
QUIET="SET client_min_messages = warning"
psql "$PG/postgres" -qc "$QUIET" -c "DROP DATABASE IF EXISTS $DBNAME" -c "CREATE DATABASE $DBNAME" > /dev/null
SMSGATE_ADMIN_KEY=$KEY $BIN serve --http 127.0.0.1:18181 --smpp 127.0.0.1:18775 --data-dir "$DATA" \
  --database "$PG/$DBNAME" > "$DATA/log" 2>&1 &
SRV=$!
trap 'kill $SRV 2>/dev/null; wait $SRV 2>/dev/null; rm -rf "$DATA"; psql "$PG/postgres" -qc "$QUIET" -c "DROP DATABASE IF EXISTS $DBNAME" > /dev/null' EXIT
for _ in $(seq 1 100); do curl -sf $S/healthz > /dev/null && break; sleep 0.1; done
ticks() { awk '{s += $14 + $15} END {print s + 0}' "$@" 2>/dev/null || echo 0; }
pg_ticks() { ticks $(pgrep -x postgres | sed 's|.*|/proc/&/stat|'); }
on_the_way() {
  local m
  m=$(curl -sf $S/metrics) || { echo unknown; return; }
  awk '/^smsgate_messages\{/ {n += $2} END {print n + 0}' <<< "$m"
}
HZ=$(getconf CLK_TCK)
S0=$(ticks /proc/$SRV/stat); P0=$(pg_ticks); T0=$(date +%s.%N)
$BIN bench http --target $S --api-key $KEY --messages "$N" --batch 500 --concurrency 4 --json \
  | grep -E '"(accepted|accepted_per_s)"' | tr -d ' \n'; echo
T1=$(date +%s.%N)
until [ "$(on_the_way)" = 0 ]; do
  if ! kill -0 $SRV 2>/dev/null; then echo "the server stopped; its log:" >&2; tail "$DATA/log" >&2; exit 1; fi
  if awk -v t0="$T1" -v now="$(date +%s.%N)" -v most="$WAIT" 'BEGIN { exit !(now - t0 > most) }'; then
    echo "still $(on_the_way) messages on their way $WAIT s after acceptance" >&2; exit 1
  fi
  sleep 0.2
done
T2=$(date +%s.%N)
S1=$(ticks /proc/$SRV/stat); P1=$(pg_ticks)
awk -v t0="$T0" -v t1="$T1" -v t2="$T2" -v s=$((S1 - S0)) -v p=$((P1 - P0)) -v hz="$HZ" -v n="$N" 'BEGIN {
  printf "accepted in %.1f s; all %d final %.1f s after the burst began\n", t1 - t0, n, t2 - t0
  printf "server CPU %.1f s, PostgreSQL CPU %.1f s\n", s / hz, p / hz }'
curl -s $S/metrics | grep -E '^smsgate_status_changes_total' | sed 's/^/  /'
