#!/usr/bin/env bash
# The server's memory on this machine: resident set (VmRSS) of `smsgate serve` on SQLite, fresh and idle; while a
# backlog of BACKLOG messages (1,000,000) is accepted over the REST batch endpoint and held queued behind a
# connector whose SMSC is down; and idle again a while after a burst of end-to-end SMPP traffic (bench/smpp_e2e.sh
# style, N messages, receipts on; ROUNDS such bursts one after another, nothing scraping /metrics), 15 and 60 s
# later. Prints one line per measurement.
#   BACKLOG=1000000 N=50000 ROUNDS=1 bench/memory.sh        (build first: cargo build --release; BACKLOG=0: no backlog)
# Loopback ports 18181 (HTTP), 18775 (SMPP server), 18776 (simulator); nothing listens on 18999 (the down SMSC).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/smsgate}
BACKLOG=${BACKLOG:-1000000}
N=${N:-50000}
ROUNDS=${ROUNDS:-1}
for v in BACKLOG N ROUNDS; do [[ ${!v} =~ ^[0-9]+$ ]] || { echo "$v must be a whole number, not ${!v}" >&2; exit 2; }; done
KEY=sk_bench_key_0123456789
A="Authorization: Bearer $KEY"; J='Content-Type: application/json'; S=http://127.0.0.1:18181
rss() { awk '/^VmRSS/ {printf "%.1f MB", $2 / 1024}' "/proc/$1/status"; }
serve() {
  SMSGATE_ADMIN_KEY=$KEY $BIN serve --http 127.0.0.1:18181 --smpp 127.0.0.1:18775 --data-dir "$1" > /dev/null 2>&1 &
  SRV=$!
  for _ in $(seq 1 100); do curl -sf $S/healthz > /dev/null && break; sleep 0.1; done
}
DATA=$(mktemp -d)
SRV=; SIM=
trap 'kill $SRV $SIM 2>/dev/null; wait $SRV $SIM 2>/dev/null; rm -rf "$DATA"' EXIT

# Fresh, then a backlog queued behind an SMSC that is down.
serve "$DATA/backlog"
sleep 5
echo "fresh, idle 5 s: $(rss $SRV)"
if [ "$BACKLOG" -gt 0 ]; then
  curl -sf $S/v1/connectors -H "$A" -H "$J" -d '{"name": "down", "kind": "smpp", "host": "127.0.0.1", "port": 18999,
    "system_id": "gw", "password": "pw"}' > /dev/null
  curl -sf $S/v1/routes -H "$A" -H "$J" -d '{"name": "all", "connectors": [{"name": "down"}]}' > /dev/null
  PEAK=0
  ( while kill -0 $SRV 2>/dev/null; do awk '/^VmRSS/ {print $2}' /proc/$SRV/status; sleep 0.5; done > "$DATA/rss" ) &
  $BIN bench http --target $S --api-key $KEY --messages "$BACKLOG" --batch 1000 --concurrency 4 --json \
    | grep -E '"(accepted|accepted_per_s)"' | tr -d ' \n'; echo
  sleep 30
  PEAK=$(sort -n "$DATA/rss" | tail -1)
  echo "backlog of $BACKLOG queued: peak while accepting $((PEAK / 1024)) MB, 30 s later $(rss $SRV)"
  echo "queued now: $(curl -s $S/metrics | grep '^smsgate_queue_depth')"
fi
kill $SRV; wait $SRV 2>/dev/null || true

# A burst end to end (SMPP in, the sim as carrier, every receipt back), then idle.
$BIN sim --smpp 127.0.0.1:18776 --receipt-delay-ms 10 > /dev/null 2>&1 &
SIM=$!
serve "$DATA/burst"
curl -sf $S/v1/connectors -H "$A" -H "$J" -d '{"name": "carrier", "kind": "smpp", "host": "127.0.0.1",
  "port": 18776, "system_id": "gw", "password": "pw", "sessions": 4, "session_window": 512}' > /dev/null
curl -sf $S/v1/routes -H "$A" -H "$J" -d '{"name": "all", "connectors": [{"name": "carrier"}]}' > /dev/null
curl -sf $S/v1/smpp/credentials -H "$A" -H "$J" -d '{"system_id": "bench", "password": "benchpw"}' > /dev/null
for _ in $(seq 1 100); do curl -sf $S/v1/connectors/carrier -H "$A" | grep -q '"bound":4' && break; sleep 0.1; done
echo "bound to the sim, idle: $(rss $SRV)"
for round in $(seq 1 "$ROUNDS"); do
  $BIN bench smpp --target 127.0.0.1:18775 --system-id bench --password benchpw --messages "$N" --sessions 4 \
    --window 256 --receipts --json | grep -E '"receipted_per_s"' | tr -d ' \n'; echo
  echo "right after $((round * N)) messages end to end: $(rss $SRV)"
done
sleep 15
echo "15 s later, idle: $(rss $SRV)"
sleep 45
echo "60 s later, idle: $(rss $SRV)"
