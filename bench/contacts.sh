#!/usr/bin/env bash
# Contacts and consent, measured: (1) an import of ROWS contacts (1,000,000) from a CSV file with `smsgate contacts
# import` into a fresh server on SQLite, its time and the server's peak resident set while it runs, then their
# export as CSV; (2) the cost of
# the opt-out check on single REST sends: `smsgate bench http` (MESSAGES single calls, 50 at once) against a fresh
# server whose account has OPTOUTS numbers opted out (10,000; none of them among the bench's destinations, so every
# message is checked and goes), reporting accepted/s and the server's CPU ticks. ONLY=import or ONLY=rest runs one.
#   BIN=target/release/smsgate ROWS=1000000 OPTOUTS=10000 MESSAGES=20000 bench/contacts.sh
# DB=postgres://... runs the server on that database instead of SQLite (give it an empty one; it is not cleaned).
# Loopback port 18281 (HTTP) and 18875 (SMPP).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/smsgate}
ROWS=${ROWS:-1000000}
OPTOUTS=${OPTOUTS:-10000}
MESSAGES=${MESSAGES:-20000}
ONLY=${ONLY:-}
DB=${DB:-}
for v in ROWS OPTOUTS MESSAGES; do [[ ${!v} =~ ^[0-9]+$ ]] || { echo "$v must be a whole number, not ${!v}" >&2; exit 2; }; done
KEY=sk_bench_key_0123456789
A="Authorization: Bearer $KEY"; J='Content-Type: application/json'; S=http://127.0.0.1:18281
serve() {
  SMSGATE_ADMIN_KEY=$KEY $BIN serve --http 127.0.0.1:18281 --smpp 127.0.0.1:18875 --data-dir "$1" \
    ${DB:+--database "$DB"} > /dev/null 2>&1 &
  SRV=$!
  for _ in $(seq 1 100); do curl -sf $S/healthz > /dev/null && break; sleep 0.1; done
}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
DATA=$(mktemp -d)
SRV=
trap 'kill $SRV 2>/dev/null; wait $SRV 2>/dev/null; rm -rf "$DATA"' EXIT

if [ "$ONLY" != rest ]; then
  awk -v n="$ROWS" 'BEGIN { print "phone,name,email,plan,visits,tags";
    for (i = 0; i < n; i++) printf "+1212%07d,Person %d,p%d@example.com,%s,%d,%s\n", i, i, i, (i % 3 ? "silver" : "gold"), i % 17, (i % 5 ? "new" : "vip;new") }' \
    > "$DATA/contacts.csv"
  serve "$DATA/import"
  ( while kill -0 $SRV 2>/dev/null; do awk '/^VmRSS/ {print $2}' /proc/$SRV/status 2>/dev/null; sleep 0.2; done > "$DATA/rss" ) &
  START=$(date +%s.%N)
  SMSGATE_URL=$S SMSGATE_API_KEY=$KEY $BIN contacts import "$DATA/contacts.csv" --list Everyone > "$DATA/report"
  END=$(date +%s.%N)
  PEAK=$(sort -n "$DATA/rss" | tail -1)
  echo "import of $ROWS contacts: $(echo "$END - $START" | bc) s, server peak RSS $((PEAK / 1024)) MB, CPU $(ticks $SRV) ticks;" \
    "$(sed -n 2p "$DATA/report" | sed 's/^ *//')"
  EXPORT=$(curl -s $S/v1/contacts/export -H "$A" -o "$DATA/export.csv" -w '%{time_total}')
  echo "export of the same as CSV: $EXPORT s, $(($(wc -l < "$DATA/export.csv") - 1)) rows"
  kill $SRV; wait $SRV 2>/dev/null || true
fi

if [ "$ONLY" != import ]; then
  serve "$DATA/rest"
  if [ "$OPTOUTS" -gt 0 ]; then
    # Opted-out numbers outside the bench's destinations (+4477009...), through the API, 8 at a time.
    seq 0 $((OPTOUTS - 1)) | xargs -P 8 -I{} sh -c \
      "printf '{\"phone\": \"+4477008%05d\"}' {} | curl -sf $S/v1/opt-outs -H '$A' -H '$J' -d @- > /dev/null"
    echo "opted out: $(curl -s "$S/v1/opt-outs?limit=1" -H "$A" | head -c 80)..."
  fi
  BEFORE=$(ticks $SRV)
  $BIN bench http --target $S --api-key $KEY --messages "$MESSAGES" --concurrency 50 --json \
    | grep -E '"(accepted|accepted_per_s|submit_p99_ms)"' | tr -d ' \n'; echo
  echo "single REST sends with $OPTOUTS opt-outs: server CPU $(( $(ticks $SRV) - BEFORE )) ticks"
  kill $SRV; wait $SRV 2>/dev/null || true
fi
