#!/usr/bin/env bash
# A campaign, measured: ROWS contacts (1,000,000) imported into a fresh server, then one campaign to all of them
# with two merge fields (name and a custom field), the campaign's data and a short link (LINK=0 leaves it out): the
# time from start until every recipient is rendered, filtered (opt-outs, quiet hours) and queued, and the server's
# peak resident set meanwhile; then (unless DELIVER=0) the time until the built-in network has delivered them all.
# CATEGORY=marketing holds what falls in quiet hours (transactional by default). CARRIER_TPS=N limits the built-in
# network's connector to N texts a second (as a carrier's binds would) while the campaign is queued, so that queuing
# is measured apart from the delivery it would otherwise share the machine with; unlimited by default. Once every
# text is queued the limit is lifted, and the rest is delivered at the engine's rate (timed from then). DELIVER=0
# stops once every text is queued. OPTOUTS contacts of the audience (1 in 100 by default) are opted out first: the campaign skips them.
#   BIN=target/release/smsgate ROWS=1000000 bench/campaign.sh
# DB=postgres://... runs the server on that database instead of SQLite (give it an empty one; it is not cleaned).
# Loopback port 18291 (HTTP) and 18885 (SMPP).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/smsgate}
ROWS=${ROWS:-1000000}
DB=${DB:-}
CATEGORY=${CATEGORY:-transactional}
CARRIER_TPS=${CARRIER_TPS:-}
DELIVER=${DELIVER:-1}
LINK=${LINK:-1}
[[ $ROWS =~ ^[0-9]+$ ]] || { echo "ROWS must be a whole number, not $ROWS" >&2; exit 2; }
OPTOUTS=${OPTOUTS:-$((ROWS / 100))}
[[ $OPTOUTS =~ ^[0-9]+$ ]] && [ "$OPTOUTS" -le "$ROWS" ] || { echo "OPTOUTS must be 0 to ROWS" >&2; exit 2; }
KEY=sk_bench_key_0123456789
A="Authorization: Bearer $KEY"; J='Content-Type: application/json'; S=http://127.0.0.1:18291
DATA=$(mktemp -d)
SRV=
trap 'kill $SRV 2>/dev/null; wait $SRV 2>/dev/null; rm -rf "$DATA"' EXIT
SMSGATE_ADMIN_KEY=$KEY $BIN serve --http 127.0.0.1:18291 --smpp 127.0.0.1:18885 --data-dir "$DATA/server" \
  ${DB:+--database "$DB"} > "$DATA/server.log" 2>&1 &
SRV=$!
for _ in $(seq 1 100); do curl -sf $S/healthz > /dev/null && break; sleep 0.1; done
awk -v n="$ROWS" 'BEGIN { print "phone,name,plan";
  for (i = 0; i < n; i++) printf "+1212%07d,Person %d,%s\n", i, i, (i % 3 ? "silver" : "gold") }' > "$DATA/contacts.csv"
START=$(date +%s.%N)
SMSGATE_URL=$S SMSGATE_API_KEY=$KEY $BIN contacts import "$DATA/contacts.csv" --list Everyone > /dev/null
echo "import of $ROWS contacts: $(echo "$(date +%s.%N) - $START" | bc) s"
if [ "$OPTOUTS" -gt 0 ]; then
  # Contacts of the campaign's audience opted out (spread through it), through the API, 8 at a time.
  seq 0 $((OPTOUTS - 1)) | awk -v n="$ROWS" -v k="$OPTOUTS" '{ printf "+1212%07d\n", int($1 * n / k) }' \
    | xargs -P 8 -I{} sh -c "curl -sf $S/v1/opt-outs -H '$A' -H '$J' -d '{\"phone\": \"{}\"}' > /dev/null"
  echo "opted out: $OPTOUTS of the $ROWS contacts"
fi
if [ -n "$CARRIER_TPS" ]; then
  curl -sf -X PATCH $S/v1/connectors/sim -H "$A" -H "$J" -d "{\"throughput\": $CARRIER_TPS}" > /dev/null
fi
LINKED=
[ "$LINK" != 0 ] && LINKED=' {{ link(\"https://shop.example/offer\") }}'
SPEC="{\"name\": \"bench\", \"audience\": {\"lists\": [\"Everyone\"]}, \"from\": \"Bench\", \"category\": \"$CATEGORY\",
  \"body\": \"Hi {{ name }}, your {{ fields.plan }} plan gets {{ data.offer }} this week.$LINKED\", \"data\": {\"offer\": \"20% off\"}}"
ID=$(curl -sf $S/v1/campaigns -H "$A" -H "$J" -d "$SPEC" | sed 's/.*"id":"\([^"]*\)".*/\1/')
( while kill -0 $SRV 2>/dev/null; do awk '/^VmRSS/ {print $2}' /proc/$SRV/status 2>/dev/null; sleep 0.2; done > "$DATA/rss" ) &
CPU0=$(awk '{print $14 + $15}' /proc/$SRV/stat)
START=$(date +%s.%N)
curl -sf -X POST $S/v1/campaigns/$ID/start -H "$A" > /dev/null
stats() { curl -sf $S/v1/campaigns/$ID -H "$A" | grep -o '"stats":{[^}]*}[^}]*}'; }
# The state from the list (a campaign's numbers are counted at each GET of it: not polled here).
while :; do
  STATE=$(curl -sf "$S/v1/campaigns" -H "$A" | grep -o '"state":"[a-z]*"' | head -1)
  [ "$STATE" = '"state":"completed"' ] && break
  [ "$STATE" = '"state":"paused"' ] && { echo "the campaign stopped: $(curl -sf $S/v1/campaigns/$ID -H "$A")"; exit 1; }
  sleep 0.5
done
END=$(date +%s.%N)
PEAK=$(sort -n "$DATA/rss" | tail -1)
echo "campaign to $ROWS contacts queued: $(echo "$END - $START" | bc) s, server peak RSS $((PEAK / 1024)) MB," \
  "CPU $(( $(awk '{print $14 + $15}' /proc/$SRV/stat) - CPU0 )) ticks"
echo "$(stats)"
if [ "$DELIVER" != 0 ]; then
  if [ -n "$CARRIER_TPS" ]; then
    curl -sf -X PATCH $S/v1/connectors/sim -H "$A" -H "$J" -d '{"throughput": null}' > /dev/null
    LIFTED=$(date +%s.%N)
    CPU1=$(awk '{print $14 + $15}' /proc/$SRV/stat)
    : > "$DATA/rss"
  fi
  while :; do
    S2=$(stats)
    W=$(echo "$S2" | grep -o '"waiting":[0-9]*' | cut -d: -f2)
    [ "${W:-1}" = 0 ] && break
    sleep 2
  done
  END2=$(date +%s.%N)
  echo "delivered through the built-in network: $(echo "$END2 - $START" | bc) s from start; $(stats)"
  if [ -n "$CARRIER_TPS" ]; then
    PEAK=$(sort -n "$DATA/rss" | tail -1)
    echo "after the limit was lifted: the rest delivered in $(echo "$END2 - $LIFTED" | bc) s, server peak RSS" \
      "$((PEAK / 1024)) MB, CPU $(( $(awk '{print $14 + $15}' /proc/$SRV/stat) - CPU1 )) ticks"
  fi
fi
