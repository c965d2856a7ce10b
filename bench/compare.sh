#!/usr/bin/env bash
# smsgate, Kannel and Jasmin side by side on this machine, one `smsgate sim` as the upstream SMSC of all three,
# each driven by `smsgate bench` (HTTP, and SMPP for smsgate and Jasmin) with receipts off and on; prints one table
# (medians of RUNS runs) and the ratios. On a fresh Debian machine, as root, it installs what it needs first:
# Debian's kannel, rabbitmq-server and redis-server (started on loopback unless already running), and Jasmin 0.11.1
# from PyPI in a virtualenv under ~/.cache/smsgate-compare, with the two-line fix of its receipts bug (upstream issue
# #1236) and the AMQP spec file its wheel lacks.
#   bench/compare.sh            (N=20000 JASMIN_N=2000 RUNS=3 CONC=50; ONLY=ceiling,smsgate,kannel,jasmin; KEEP=1
#                                keeps the folder of logs and raw reports, which a failed run always keeps)
# Loopback ports 18181, 18300-18302, 18401-18406, 18775-18777, and RabbitMQ's 5672 and Redis's 6379 (database 7).
set -euo pipefail
cd "$(dirname "$0")/.."
export BIN=${BIN:-$PWD/target/release/smsgate}
CACHE=${CACHE:-$HOME/.cache/smsgate-compare}
[ -x "$BIN" ] || cargo build --release

need_apt() { dpkg -s "$1" > /dev/null 2>&1 || { apt-get update -qq || true; apt-get install -y -qq "$1" > /dev/null; }; }
need_apt kannel
need_apt redis-server
need_apt rabbitmq-server
python3 -m venv --help > /dev/null 2>&1 || need_apt python3-venv
if ! redis-cli -h 127.0.0.1 ping > /dev/null 2>&1; then
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
fi
if ! rabbitmqctl -q status > /dev/null 2>&1; then
  RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 rabbitmq-server -detached
  for _ in $(seq 1 60); do rabbitmqctl -q status > /dev/null 2>&1 && break; sleep 1; done
fi

VENV=$CACHE/jasmin-venv
if [ ! -x "$VENV/bin/jasmind.py" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q jasmin==0.11.1
fi
# The wheel lacks the AMQP 0-9-1 spec Jasmin's broker client loads: take it from the source archive.
SPEC=$CACHE/amqp0-9-1.xml
if [ ! -f "$SPEC" ]; then
  "$VENV/bin/pip" download -q --no-binary :all: --no-deps jasmin==0.11.1 -d "$CACHE/src"
  tar -xzf "$CACHE/src/jasmin-0.11.1.tar.gz" -C "$CACHE/src" jasmin-0.11.1/misc/config/resource/amqp0-9-1.xml
  cp "$CACHE/src/jasmin-0.11.1/misc/config/resource/amqp0-9-1.xml" "$SPEC"
fi
# Jasmin 0.11.1 reads a response off the request PDU after every submit_sm_resp (issue #1236), so no receipt is
# ever matched; the fix the issue gives reads it off the response.
LISTENERS=$("$VENV/bin/python" -c 'import jasmin.managers.listeners as l; print(l.__file__)')
sed -i 's/_pdu\.response/r.response/g' "$LISTENERS"

WORK=$(mktemp -d /tmp/smsgate-compare.XXXXXX)
export WORK JASMIN_PY=$VENV/bin/python JASMIN_AMQP_SPEC=$SPEC
# The folder (logs, raw reports, smsgate's data) is removed after a run that passed, unless KEEP=1.
python3 bench/compare.py
if [ -z "${KEEP:-}" ]; then rm -rf "$WORK"; else echo "compare: logs and raw reports in $WORK" >&2; fi
