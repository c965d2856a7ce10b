#!/usr/bin/env bash
# Analytics, measured: a fresh server whose rollups hold what MESSAGES texts (10,000,000) over DAYS days (30) make
# for one account sending for CAMPAIGNS campaigns (20) over CONNECTORS connectors (4) to COUNTRIES countries (7) from
# SENDERS senders (5) every hour — an hour's rows: the account's, and one for each campaign, connector, country and
# sender — written straight into the database; then REPEAT (20) of each `GET /v1/analytics` shape, the median and
# the slowest answer time as curl sees it. The query reads the rollups alone (never the messages), so what its time
# follows is the rollup rows in the range, which this fills as that many texts would.
#   BIN=target/release/smsgate bench/analytics.sh
# DB=postgres://... runs on that database instead of SQLite (give it an empty one, or a schema in its
# search_path; it is not cleaned). Loopback port 18292 (HTTP) and 18886 (SMPP).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/smsgate}
MESSAGES=${MESSAGES:-10000000}
DAYS=${DAYS:-30}
CAMPAIGNS=${CAMPAIGNS:-20}
CONNECTORS=${CONNECTORS:-4}
COUNTRIES=${COUNTRIES:-7}
SENDERS=${SENDERS:-5}
REPEAT=${REPEAT:-20}
DB=${DB:-}
for v in MESSAGES DAYS CAMPAIGNS CONNECTORS COUNTRIES SENDERS REPEAT; do
  [[ ${!v} =~ ^[0-9]+$ ]] || { echo "$v must be a whole number" >&2; exit 2; }
done
KEY=sk_bench_key_0123456789
A="Authorization: Bearer $KEY"; S=http://127.0.0.1:18292
DATA=$(mktemp -d)
SRV=
trap 'kill $SRV 2>/dev/null; wait $SRV 2>/dev/null; rm -rf "$DATA"' EXIT
SMSGATE_ADMIN_KEY=$KEY $BIN serve --http 127.0.0.1:18292 --smpp 127.0.0.1:18886 --data-dir "$DATA/server" \
  ${DB:+--database "$DB"} > "$DATA/server.log" 2>&1 &
SRV=$!
for _ in $(seq 1 100); do curl -sf $S/healthz > /dev/null && break; sleep 0.1; done

HOURS=$((DAYS * 24))
HOURLY=$((MESSAGES / HOURS))
NOW_MS=$(( $(date +%s) * 1000 ))
BASE=$(( (NOW_MS / 3600000 - HOURS + 1) * 3600000 ))
# An hour's rows: (dimension, value, the share of the hour's texts it has).
DIMS="('all', '', 1)"
for i in $(seq 0 $((CAMPAIGNS - 1))); do DIMS="$DIMS, ('campaign', 'campaign-$i', $CAMPAIGNS)"; done
for i in $(seq 0 $((CONNECTORS - 1))); do DIMS="$DIMS, ('connector', 'connector-$i', $CONNECTORS)"; done
for i in $(seq 0 $((COUNTRIES - 1))); do DIMS="$DIMS, ('country', 'C$i', $COUNTRIES)"; done
for i in $(seq 0 $((SENDERS - 1))); do DIMS="$DIMS, ('sender', 'sender-$i', $SENDERS)"; done
ROWS=$((HOURS * (1 + CAMPAIGNS + CONNECTORS + COUNTRIES + SENDERS)))
# Each row: its share of the hour's texts sent, most delivered within 5 s, a few failed, replies and clicks; a
# price of 0.04 a text.
P="(CAST($HOURLY AS BIGINT) / share)"
COUNTS="$P, $P * 97 / 100, $P / 100, $P / 100, 0, $P * 40000, $P / 50, $P / 40, 0,
        $P / 2, $P / 4, $P * 97 / 100 - $P / 2 - $P / 4, 0, 0, 0, 0, 0, 0, 0, 0, 0"
COLUMNS="account_id, dimension, hour, value, sent, delivered, undelivered, failed, expired, cost_micros, replies,
         clicks, opt_outs, lat_0, lat_1, lat_2, lat_3, lat_4, lat_5, lat_6, lat_7, lat_8, lat_9, lat_10, lat_11"
START=$(date +%s.%N)
if [ -z "$DB" ]; then
  SQLITE="$DATA/server/smsgate.db"
  ACCOUNT=$(sqlite3 "$SQLITE" "SELECT id FROM accounts WHERE is_admin = 1")
  sqlite3 "$SQLITE" > /dev/null "PRAGMA busy_timeout = 10000;
    WITH RECURSIVE h(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM h WHERE n < $HOURS - 1),
         d(dimension, value, share) AS (VALUES $DIMS)
    INSERT INTO rollups ($COLUMNS) SELECT '$ACCOUNT', dimension, $BASE + n * 3600000, value, $COUNTS FROM h, d;"
else
  ACCOUNT=$(psql -Atq "$DB" -c "SELECT id FROM accounts WHERE is_admin = 1")
  psql -q "$DB" -c "INSERT INTO rollups ($COLUMNS)
    SELECT '$ACCOUNT', dimension, $BASE + n * 3600000, value, $COUNTS
    FROM generate_series(CAST(0 AS BIGINT), $HOURS - 1) n, (VALUES $DIMS) AS d(dimension, value, share);
    ANALYZE rollups;"
fi
echo "rollups of $((HOURLY * HOURS)) texts over $DAYS days: $ROWS rows, written in $(echo "$(date +%s.%N) - $START" | bc) s"

TO=$(date -u -d "@$(( (NOW_MS + 3600000) / 1000 ))" +%FT%TZ)
MONTH=$(date -u -d "@$(( BASE / 1000 ))" +%FT%TZ)
time_of() {
  local times=()
  for _ in $(seq 1 "$REPEAT"); do
    t=$(curl -sf -o /dev/null -w '%{time_total}' "$S/v1/analytics?$1" -H "$A") || { echo "failed: $1" >&2; exit 1; }
    times+=("$t")
  done
  printf '%s\n' "${times[@]}" | sort -n | awk -v q="$1" '{ t[NR] = $1 * 1000 }
    END { printf "%-70s median %6.1f ms, slowest %6.1f ms\n", q, t[int((NR + 1) / 2)], t[NR] }'
}
curl -sf "$S/v1/analytics?to=$TO&metric=sent" -H "$A" > /dev/null   # the first read warms the page cache
time_of "to=$TO"
time_of "by=hour&to=$TO"
time_of "by=hour&group=country&to=$TO"
time_of "by=day&group=campaign&from=$MONTH&to=$TO"
time_of "by=day&group=sender&metric=sent,delivery_rate,latency_p95&from=$MONTH&to=$TO"
