#!/usr/bin/env bash
# What a backlog costs the server while it cannot go out: N messages accepted over the REST batch endpoint for a
# carrier that cannot take them, then the server's CPU (from /proc) over the next WATCH seconds, twice, by thread,
# with its files and what its metrics count.
#   KIND=down N=200000 WATCH=30 bench/backlog.sh   an SMPP connector whose SMSC is down (nothing on port 18999)
#   KIND=slow N=5000 WATCH=20 bench/backlog.sh     a sim connector with a window of 4, 50 ms a submission (80/s)
# (build first: cargo build --release). Loopback ports 18181 (HTTP) and 18775 (SMPP server); data in a temporary
# folder, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/smsgate}
KIND=${KIND:-down}
N=${N:-200000}
WATCH=${WATCH:-30}
KEY=sk_bench_key_0123456789
A="Authorization: Bearer $KEY"; J='Content-Type: application/json'; S=http://127.0.0.1:18181
DATA=$(mktemp -d)
SMSGATE_ADMIN_KEY=$KEY $BIN serve --http 127.0.0.1:18181 --smpp 127.0.0.1:18775 --data-dir "$DATA" > "$DATA/log" 2>&1 &
SRV=$!
trap 'kill $SRV 2>/dev/null; wait $SRV 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 1 100); do curl -sf $S/healthz > /dev/null && break; sleep 0.1; done
case $KIND in
  down) CONNECTOR='{"name": "carrier", "kind": "smpp", "host": "127.0.0.1", "port": 18999, "system_id": "gw", "password": "pw"}' ;;
  slow) CONNECTOR='{"name": "carrier", "kind": "sim", "submit_latency_ms": 50, "window": 4, "receipt_delay_ms": 5}' ;;
  *) echo "KIND is down or slow" >&2; exit 2 ;;
esac
curl -sf $S/v1/connectors -H "$A" -H "$J" -d "$CONNECTOR" > /dev/null
curl -sf $S/v1/routes -H "$A" -H "$J" -d '{"name": "all", "connectors": [{"name": "carrier"}]}' > /dev/null
$BIN bench http --target $S --api-key $KEY --messages "$N" --batch 1000 --concurrency 4 --json \
  | grep -E '"(accepted|accepted_per_s)"' | tr -d ' \n'; echo
cpu() { awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$SRV/stat"; }
c0=$(cpu); sleep "$WATCH"; c1=$(cpu); sleep "$WATCH"; c2=$(cpu)
awk -v a="$c0" -v b="$c1" -v c="$c2" -v w="$WATCH" \
  'BEGIN { printf "server CPU: %.2f s in the %d s after acceptance, %.2f s in the next %d s\n", b - a, w, c - b, w }'
for t in /proc/$SRV/task/*; do
  awk -v n="$(cat "$t/comm")" '{ s = ($14 + $15) / 100; if (s >= 0.5) printf "  thread %s: %.1f s\n", n, s }' "$t/stat"
done
ls -l "$DATA" | awk '/smsgate.db/ {printf "  %s: %.0f MB\n", $9, $5 / 1048576}'
curl -s $S/metrics | grep -E '^smsgate_(queue_depth|submissions_total)' | sed 's/^/  /'
curl -s $S/v1/connectors/carrier -H "$A" | grep -o '"counters":{[^}]*}' | sed 's/^/  /'
