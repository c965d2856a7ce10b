#!/usr/bin/env bash
# A long run at a fixed rate on one server, as an operator's would be: SMPP client applications
# (`smsgate bench smpp`, 4 sessions x 256 window, a receipt asked for each message) and a REST sender
# (`smsgate bench http`, its callback URL called back with each final status) -> `smsgate serve` -> an `smpp`
# connector (4 sessions x 512) -> `smsgate sim --receipt-delay-ms 10` -> every receipt back. Each minute it prints
# that minute's submit latency (p50 and p99, SMPP and REST), the receipts that came back a second, the server's
# RSS, its WAL and database size, and the server's CPU per message; then a JSON summary of first and last minute.
#   MINUTES=30 RATE=10000 bench/soak.sh                 (build first: cargo build --release)
#   MINUTES=15 RATE=8000 DB=postgres bench/soak.sh      (a new database on the local PostgreSQL, dropped after)
#   DB=postgres://user@host/db bench/soak.sh             (that database, which must be empty; it is not cleaned)
#   SERVER_BIN=/tmp/old/smsgate bench/soak.sh            (that build's server under this build's loads and simulator)
# RATE is messages a second over both ways in; REST takes REST_SHARE percent of it (default 10). Loopback ports
# 18181 (HTTP), 18775 (SMPP server), 18776 (simulator).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/smsgate}
SERVER_BIN=${SERVER_BIN:-$BIN}
MINUTES=${MINUTES:-10}
RATE=${RATE:-8000}
REST_SHARE=${REST_SHARE:-10}
DB=${DB:-}
for v in MINUTES RATE REST_SHARE; do [[ ${!v} =~ ^[0-9]+$ ]] || { echo "$v must be a whole number, not ${!v}" >&2; exit 2; }; done
[ "$MINUTES" -ge 1 ] && [ "$RATE" -ge 10 ] && [ "$REST_SHARE" -le 100 ] \
  || { echo "MINUTES must be at least 1, RATE at least 10 and REST_SHARE at most 100" >&2; exit 2; }
REST_RATE=$((RATE * REST_SHARE / 100)); SMPP_RATE=$((RATE - REST_RATE))
SECS=$((MINUTES * 60))
KEY=sk_bench_key_0123456789
A="Authorization: Bearer $KEY"; J='Content-Type: application/json'; S=http://127.0.0.1:18181
WORK=$(mktemp -d)
SRV=; SIM=; LOADS=(); SPANS=(); DROP=
cleanup() {
  kill "${LOADS[@]}" $SRV $SIM 2>/dev/null || true
  wait "${LOADS[@]}" $SRV $SIM 2>/dev/null || true
  [ -n "$DROP" ] && psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $DROP" > /dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT
if [ "$DB" = postgres ]; then
  DROP=smsgate_soak_$$
  psql -q -h 127.0.0.1 -U postgres -d postgres -c "CREATE DATABASE $DROP" > /dev/null
  DB=postgres://postgres@127.0.0.1:5432/$DROP
fi
$BIN sim --smpp 127.0.0.1:18776 --receipt-delay-ms 10 > /dev/null 2>&1 &
SIM=$!
SMSGATE_ADMIN_KEY=$KEY SMSGATE_WEBHOOKS_ALLOW_PRIVATE=127.0.0.1/32 $SERVER_BIN serve --http 127.0.0.1:18181 --smpp 127.0.0.1:18775 --data-dir "$WORK/data" \
  ${DB:+--database "$DB"} > "$WORK/server.log" 2>&1 &
SRV=$!
for _ in $(seq 1 100); do curl -sf $S/healthz > /dev/null && break; sleep 0.1; done
curl -sf $S/v1/connectors -H "$A" -H "$J" -d '{"name": "carrier", "kind": "smpp", "host": "127.0.0.1",
  "port": 18776, "system_id": "gw", "password": "pw", "sessions": 4, "session_window": 512}' > /dev/null
curl -sf $S/v1/routes -H "$A" -H "$J" -d '{"name": "all", "connectors": [{"name": "carrier"}]}' > /dev/null
curl -sf $S/v1/smpp/credentials -H "$A" -H "$J" -d '{"system_id": "bench", "password": "benchpw"}' > /dev/null
for _ in $(seq 1 100); do curl -sf $S/v1/connectors/carrier -H "$A" | grep -q '"bound":4' && break; sleep 0.1; done

# The database's size and its WAL's, in MB.
sizes() {
  if [ -z "$DB" ]; then
    local db wal
    db=$(stat -c %s "$WORK/data/smsgate.db" 2>/dev/null || echo 0)
    wal=$(stat -c %s "$WORK/data/smsgate.db-wal" 2>/dev/null || echo 0)
    echo "$((db >> 20)) $((wal >> 20))"
  else
    psql -tA "$DB" -c "SELECT pg_database_size(current_database()) >> 20,
      (SELECT sum(size) FROM pg_ls_waldir())::bigint >> 20" | tr '|' ' '
  fi
}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss() { awk '/^VmRSS/ {printf "%d", $2 / 1024}' "/proc/$1/status"; }
# The nth line of a span log, or nothing yet.
span() { sed -n "${2}p" "$1" 2>/dev/null; }

TIMEOUT=$((SECS + 600))
GIVE_UP=$((SECONDS + TIMEOUT + 60))
$BIN bench smpp --target 127.0.0.1:18775 --system-id bench --password benchpw --sessions 4 --window 256 \
  --receipts --rate "$SMPP_RATE" --messages $((SMPP_RATE * SECS)) --timeout $TIMEOUT \
  --interval 60 --interval-log "$WORK/smpp.spans" --json > "$WORK/smpp.json" 2> "$WORK/smpp.err" &
LOADS+=($!); SPANS+=("$WORK/smpp.spans")
if [ "$REST_RATE" -gt 0 ]; then
  $BIN bench http --target $S --api-key $KEY --concurrency 64 --threads 1 --receipts --callbacks --rate "$REST_RATE" \
    --messages $((REST_RATE * SECS)) --timeout $TIMEOUT --interval 60 --interval-log "$WORK/http.spans" \
    --json > "$WORK/http.json" 2> "$WORK/http.err" &
  LOADS+=($!); SPANS+=("$WORK/http.spans")
else
  for _ in $(seq 1 "$MINUTES"); do echo '{}'; done > "$WORK/http.spans"
fi
HZ=$(getconf CLK_TCK)
T0=$(ticks $SRV)
echo "soak: $MINUTES min at $RATE msg/s (SMPP $SMPP_RATE, REST $REST_RATE) on ${DB:-SQLite}"
printf '%4s %9s %9s %9s %9s %11s %7s %7s %7s %11s\n' min smpp_p50 smpp_p99 rest_p50 rest_p99 receipts/s \
  rss_mb db_mb wal_mb cpu_us/msg
for m in $(seq 1 "$MINUTES"); do
  # Each load writes its line for minute m at its own minute mark, or its last line at its end.
  while [ -z "$(span "$WORK/smpp.spans" $m)" ] || [ -z "$(span "$WORK/http.spans" $m)" ]; do
    kill -0 $SRV 2>/dev/null || { echo "the server stopped; its log:" >&2; tail -20 "$WORK/server.log" >&2; exit 1; }
    for i in "${!LOADS[@]}"; do
      kill -0 "${LOADS[$i]}" 2>/dev/null || [ -n "$(span "${SPANS[$i]}" $m)" ] \
        || { echo "a load stopped before its line for minute $m:" >&2; cat "$WORK"/*.err >&2; exit 1; }
    done
    [ "$SECONDS" -lt "$GIVE_UP" ] || { echo "no line for minute $m after $TIMEOUT s" >&2; exit 1; }
    sleep 0.5
  done
  T1=$(ticks $SRV)
  read -r DBMB WALMB < <(sizes)
  jq -nr --argjson s "$(span "$WORK/smpp.spans" $m)" --argjson h "$(span "$WORK/http.spans" $m)" \
    --argjson m "$m" --argjson rss "$(rss $SRV)" --argjson db "$DBMB" --argjson wal "$WALMB" \
    --argjson cpu "$(((T1 - T0) * 1000000 / HZ))" '
    ($s.answered + ($h.answered // 0)) as $n
    | {min: $m, smpp_p50: $s.submit_p50_ms, smpp_p99: $s.submit_p99_ms, rest_p50: ($h.submit_p50_ms // 0),
       rest_p99: ($h.submit_p99_ms // 0), receipts_s: ((($s.receipts // 0) + ($h.receipts // 0)) / 60 | floor),
       rss_mb: $rss, db_mb: $db, wal_mb: $wal, cpu_us: (if $n > 0 then $cpu / $n | floor else 0 end)}' \
    | tee -a "$WORK/minutes.json" \
    | jq -r '"\(.min) \(.smpp_p50) \(.smpp_p99) \(.rest_p50) \(.rest_p99) \(.receipts_s) \(.rss_mb) \(.db_mb) \(.wal_mb) \(.cpu_us)"' \
    | xargs printf '%4s %9s %9s %9s %9s %11s %7s %7s %7s %11s\n'
  T0=$T1
done
# Each load ends once every receipt it is owed has come back (or fails, and so does this script).
for l in "${LOADS[@]}"; do wait "$l" || { echo "a load failed:" >&2; cat "$WORK"/*.err >&2; exit 1; }; done
LOADS=()
jq -s '{first: .[0], last: .[-1], worst_smpp_p99: (map(.smpp_p99) | max), most_wal_mb: (map(.wal_mb) | max),
  last_over_first_smpp_p99: ((.[-1].smpp_p99 / ([.[0].smpp_p99, 0.01] | max)) * 100 | round / 100)}' \
  "$WORK/minutes.json"
jq -c '{smpp: {accepted, errors, receipts, duplicate_receipts, submit_p99_ms}}' "$WORK/smpp.json"
[ "$REST_RATE" -gt 0 ] && jq -c '{rest: {accepted, errors, receipts, submit_p99_ms}}' "$WORK/http.json"
true
