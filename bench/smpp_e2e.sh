#!/usr/bin/env bash
# SMPP end to end on this machine: `smsgate bench smpp` (the client application) -> `smsgate serve` (its SMPP
# server, SQLite) -> an `smpp` connector -> `smsgate sim` (the carrier) -> the receipt back through smsgate to the
# client as a deliver_sm. Prints bench's JSON and the CPU the server and the simulator used.
#   N=50000 SESS=4 WIN=256 CSESS=4 CWIN=512 bench/smpp_e2e.sh      (build first: cargo build --release)
#   EXTRA="--rate 20000" bench/smpp_e2e.sh                            (more arguments for smsgate bench smpp)
# Loopback ports 18181 (HTTP), 18775 (SMPP server) and 18776 (simulator); data in a temporary folder, or the
# database DB names (DB=postgres://postgres@127.0.0.1:5432/test: give it an empty database, it is not cleaned).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/smsgate}
N=${N:-50000}
SESS=${SESS:-4}
WIN=${WIN:-256}
CSESS=${CSESS:-4}
CWIN=${CWIN:-512}
DATA=$(mktemp -d)
KEY=sk_bench_key_0123456789
$BIN sim --smpp 127.0.0.1:18776 --receipt-delay-ms 10 > /dev/null 2>&1 &
SIM=$!
SMSGATE_ADMIN_KEY=$KEY $BIN serve --http 127.0.0.1:18181 --smpp 127.0.0.1:18775 --data-dir "$DATA" \
  ${DB:+--database "$DB"} > /dev/null 2>&1 &
SRV=$!
trap 'kill $SRV $SIM 2>/dev/null; wait $SRV $SIM 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:18181/healthz > /dev/null && break; sleep 0.1; done
A="Authorization: Bearer $KEY"; J='Content-Type: application/json'; S=http://127.0.0.1:18181
curl -sf $S/v1/connectors -H "$A" -H "$J" -d "{\"name\": \"carrier\", \"kind\": \"smpp\", \"host\": \"127.0.0.1\",
  \"port\": 18776, \"system_id\": \"gw\", \"password\": \"pw\", \"sessions\": $CSESS, \"session_window\": $CWIN}" > /dev/null
curl -sf $S/v1/routes -H "$A" -H "$J" -d '{"name": "all", "connectors": [{"name": "carrier"}]}' > /dev/null
curl -sf $S/v1/smpp/credentials -H "$A" -H "$J" -d '{"system_id": "bench", "password": "benchpw"}' > /dev/null
for _ in $(seq 1 100); do curl -sf $S/v1/connectors/carrier -H "$A" | grep -q "\"bound\":$CSESS" && break; sleep 0.1; done
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
T0=$(ticks $SRV); S0=$(ticks $SIM)
$BIN bench smpp --target 127.0.0.1:18775 --system-id bench --password benchpw --messages "$N" --sessions "$SESS" \
  --window "$WIN" --receipts --json ${EXTRA:-}
T1=$(ticks $SRV); S1=$(ticks $SIM)
awk -v s=$((T1 - T0)) -v m=$((S1 - S0)) -v hz="$(getconf CLK_TCK)" \
  'BEGIN { printf "server_cpu_s=%.2f sim_cpu_s=%.2f\n", s / hz, m / hz }'
