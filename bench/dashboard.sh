#!/usr/bin/env bash
# The dashboard's pages with a store that has run for a while: ROWS contacts (1,000,000) imported, one campaign to
# all of them delivered through the built-in network (so ROWS messages, their rollups and a campaign of ROWS
# recipients), REPLIES handsets' replies (conversations); then, signed in with a session cookie as the pages are,
# each page's API calls asked N times each (200), one at a time, and the time each took, end to end on loopback
# (curl's time_total: the server's time and a few hundred microseconds of loopback and curl). Prints, for each
# page, the p50 and p99 over all its calls, and the slowest call's p99.
#   BIN=target/release/smsgate ROWS=1000000 bench/dashboard.sh
# DB=postgres://... runs the server on that database instead of SQLite (give it an empty one; it is not cleaned).
# Loopback port 18293 (HTTP) and 18887 (SMPP).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/smsgate}
ROWS=${ROWS:-1000000}
N=${N:-200}
REPLIES=${REPLIES:-200}
DB=${DB:-}
[[ $ROWS =~ ^[0-9]+$ && $N =~ ^[0-9]+$ && $REPLIES =~ ^[0-9]+$ ]] || { echo "ROWS, N and REPLIES are whole numbers" >&2; exit 2; }
KEY=sk_bench_key_0123456789
A="Authorization: Bearer $KEY"; J='Content-Type: application/json'; S=http://127.0.0.1:18293
DATA=$(mktemp -d)
SRV=
trap 'kill $SRV 2>/dev/null; wait $SRV 2>/dev/null; rm -rf "$DATA"' EXIT
SMSGATE_ADMIN_KEY=$KEY $BIN serve --http 127.0.0.1:18293 --smpp 127.0.0.1:18887 --data-dir "$DATA/server" \
  ${DB:+--database "$DB"} > "$DATA/server.log" 2>&1 &
SRV=$!
for _ in $(seq 1 100); do curl -sf $S/healthz > /dev/null && break; sleep 0.1; done

# The history: contacts, a campaign to all of them delivered, replies.
NUMBER=+447700900999
curl -sf $S/v1/numbers -H "$A" -H "$J" -d "{\"number\": \"$NUMBER\", \"account_id\": \"$(curl -sf $S/v1/accounts -H "$A" | grep -o '"id":"[^"]*"' | head -1 | cut -d'"' -f4)\"}" > /dev/null
awk -v n="$ROWS" 'BEGIN { print "phone,name,plan";
  for (i = 0; i < n; i++) printf "+1212%07d,Person %d,%s\n", i, i, (i % 3 ? "silver" : "gold") }' > "$DATA/contacts.csv"
START=$(date +%s.%N)
SMSGATE_URL=$S SMSGATE_API_KEY=$KEY $BIN contacts import "$DATA/contacts.csv" --list Everyone > /dev/null
SPEC="{\"name\": \"history\", \"audience\": {\"lists\": [\"Everyone\"]}, \"from\": \"$NUMBER\", \"category\": \"transactional\",
  \"body\": \"Hi {{ name }}, your {{ fields.plan }} plan renews soon.\"}"
CID=$(curl -sf $S/v1/campaigns -H "$A" -H "$J" -d "$SPEC" | sed 's/.*"id":"\([^"]*\)".*/\1/')
curl -sf -X POST $S/v1/campaigns/$CID/start -H "$A" > /dev/null
while :; do
  W=$(curl -sf $S/v1/campaigns/$CID -H "$A" | grep -o '"waiting":[0-9]*' | cut -d: -f2)
  STATE=$(curl -sf "$S/v1/campaigns" -H "$A" | grep -o '"state":"[a-z]*"' | head -1)
  [ "$STATE" = '"state":"completed"' ] && [ "${W:-1}" = 0 ] && break
  sleep 2
done
for i in $(seq 0 $((REPLIES - 1))); do
  printf '+1212%07d\n' $((i * (ROWS / (REPLIES + 1))))
done | xargs -P 8 -I{} sh -c "curl -sf $S/v1/sim/handsets/{}/reply -H '$A' -H '$J' \
  -d '{\"to\": \"$NUMBER\", \"body\": \"Thanks, see you then\"}' > /dev/null"
echo "history: $ROWS contacts, a campaign of $ROWS delivered, $REPLIES replies, in $(echo "$(date +%s.%N) - $START" | bc) s"
sleep 3 # the replies filed as conversations

# Signed in as the pages are.
curl -sf $S/v1/users -H "$A" -H "$J" -d '{"email": "bench@example.com", "password": "bench password", "role": "owner"}' > /dev/null
LOGIN=$(curl -sf -D "$DATA/headers" $S/v1/session -H "$J" -d '{"email": "bench@example.com", "password": "bench password"}')
COOKIE=$(grep -i '^set-cookie:' "$DATA/headers" | sed 's/^[^:]*: *//; s/;.*//')
[ -n "$COOKIE" ] && [ -n "$LOGIN" ] || { echo "sign-in failed" >&2; exit 1; }
C="Cookie: $COOKIE"
MID=$(curl -sf "$S/v1/messages?limit=1" -H "$C" | grep -o '"id":"[^"]*"' | head -1 | cut -d'"' -f4)
CONTACT=$(curl -sf "$S/v1/contacts?limit=1&q=Person%20$((ROWS / 2))" -H "$C" | grep -o '"id":"[^"]*"' | head -1 | cut -d'"' -f4)
CONV=$(curl -sf "$S/v1/conversations?limit=1" -H "$C" | grep -o '"id":"[^"]*"' | head -1 | cut -d'"' -f4)
ACCOUNT=$(echo "$LOGIN" | grep -o '"account":{"id":"[^"]*"' | cut -d'"' -f6)
NOW=$(date -u +%FT%TZ); DAY=$(date -u -d '-1 day' +%FT%TZ); WEEK=$(date -u -d '-7 days' +%FT%TZ)
M=sent,delivered,undelivered,failed,delivery_rate,latency_p50,latency_p95,cost,replies,clicks,opt_outs

# Each page and the calls it makes when it opens.
declare -A PAGES=(
  [assets]="/ /assets/app.js /assets/lib.js /assets/app.css"
  [overview]="/v1/session /v1/analytics?metric=$M&by=hour&from=$DAY&to=$NOW /v1/analytics?metric=$M&by=day&from=$DAY&to=$NOW /v1/analytics?metric=$M&by=hour&group=connector&from=$DAY&to=$NOW /v1/analytics?metric=$M&by=hour&group=country&from=$DAY&to=$NOW /v1/analytics?metric=$M&by=day&from=$WEEK&to=$NOW"
  [messages]="/v1/messages?limit=50 /v1/messages?limit=50&status=delivered /v1/messages?limit=50&to=%2B12120000500 /v1/inbound?limit=50 /v1/messages/$MID"
  [send]="/v1/numbers /v1/sender-ids /v1/contacts?limit=8&q=Person%2012"
  [inbox]="/v1/conversations?limit=100 /v1/conversations/$CONV /v1/conversations/$CONV/messages?limit=100"
  [contacts]="/v1/contacts?limit=50 /v1/contacts?limit=50&q=Person%20777 /v1/lists /v1/segments /v1/contacts/$CONTACT /v1/contacts/$CONTACT/consent"
  [templates]="/v1/templates"
  [campaigns]="/v1/campaigns?limit=200 /v1/campaigns/$CID /v1/analytics?metric=sent,delivered,failed,undelivered&by=hour&group=campaign&from=$DAY&to=$NOW"
  [automations]="/v1/automations?limit=200"
  [compliance]="/v1/opt-outs?limit=50 /v1/settings/compliance"
  [users]="/v1/users"
  [developers]="/v1/accounts/$ACCOUNT/keys /v1/webhooks /v1/webhooks/deliveries?limit=50 /v1/smpp/credentials"
  [operator]="/v1/connectors /v1/routes /v1/accounts"
)
printf '%-12s %9s %9s  %s\n' page p50_ms p99_ms "slowest call (its p99)"
for page in assets overview messages send inbox contacts templates campaigns automations compliance users developers operator; do
  : > "$DATA/all"
  WORST=0; WORST_URL=
  for url in ${PAGES[$page]}; do
    for _ in $(seq 1 "$N"); do
      curl -s -o /dev/null -w '%{http_code} %{time_total}\n' "$S$url" -H "$C"
    done > "$DATA/one"
    BAD=$(awk '$1 != 200 && $1 != 304' "$DATA/one" | head -1)
    [ -z "$BAD" ] || { echo "$url answered $BAD" >&2; exit 1; }
    P99=$(awk '{print $2 * 1000}' "$DATA/one" | sort -n | awk -v n="$N" '{a[NR]=$1} END {print a[int(n * 0.99 + 0.999)]}')
    if awk -v a="$P99" -v b="$WORST" 'BEGIN {exit !(a > b)}'; then WORST=$P99; WORST_URL=$url; fi
    awk '{print $2 * 1000}' "$DATA/one" >> "$DATA/all"
  done
  sort -n "$DATA/all" | awk -v page="$page" -v worst="$WORST" -v url="${WORST_URL%%\?*}" \
    '{a[NR]=$1} END {printf "%-12s %9.2f %9.2f  %s (%.2f)\n", page, a[int(NR * 0.5 + 0.5)], a[int(NR * 0.99 + 0.999)], url, worst}'
done
echo "server RSS $(( $(awk '/^VmRSS/ {print $2}' /proc/$SRV/status) / 1024 )) MB"
