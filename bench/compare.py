"""smsgate, Kannel and Jasmin side by side on this machine, driven by the same load generator (`smsgate bench`).

Started by bench/compare.sh, which installs Kannel, Jasmin, RabbitMQ and Redis first. One `smsgate sim` is the
upstream SMSC of all three gateways (each binds to it over SMPP); `smsgate bench` drives each gateway over HTTP,
and over SMPP where it has an SMPP server (smsgate, Jasmin), with receipts off and on; the ceiling is `smsgate bench
smpp` straight at the sim. Runs are interleaved (run 1 of every row, then run 2, ...) so a machine whose speed
drifts treats every row alike. Prints one Markdown table; the raw reports go to a JSON-lines file.

Rates: with receipts off, messages accepted divided by the time from the bench's start until the sim had taken
every one of them (so a gateway that acknowledges fast and forwards slowly is not flattered); with receipts on, the
bench's `delivered_per_s` (every receipt back at the client: a deliver_sm over SMPP, a callback over HTTP).
Lost: accepted by the gateway but never reaching the sim (receipts off), or never receipted (on; a second receipt
for the same message neither counts nor makes up for a missing one, and is logged).

Settings (environment): BIN (smsgate binary), N (messages a run, 20000), JASMIN_N (messages a Jasmin run, 2000:
at Jasmin's rates 20,000 would take an hour), RUNS (3), CONC (HTTP clients, 50), ONLY (comma list of row groups:
ceiling, smsgate, kannel, jasmin), JASMIN_PY (the Python with Jasmin installed), WORK (a folder for logs and data).
"""

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

BIN = os.path.abspath(os.environ.get("BIN", "target/release/smsgate"))
N = int(os.environ.get("N", "20000"))
JASMIN_N = int(os.environ.get("JASMIN_N", "2000"))
RUNS = int(os.environ.get("RUNS", "3"))
CONC = int(os.environ.get("CONC", "50"))
ONLY = set(filter(None, os.environ.get("ONLY", "ceiling,smsgate,kannel,jasmin").split(",")))
JASMIN_PY = os.environ.get("JASMIN_PY", "")
WORK = os.environ["WORK"]
HERE = os.path.dirname(os.path.abspath(__file__))

KEY = "sk_compare_key_0123456789"
SIM_SMPP, SIM_HTTP = 18776, 18777
SG_HTTP, SG_SMPP = 18181, 18775
K_ADMIN, K_BOX, K_SEND = 18300, 18301, 18302
J_HTTP, J_SMPP, J_CLI, J_SMPPS_PB, J_CM, J_ROUTER = 18401, 18402, 18403, 18404, 18405, 18406

procs = []


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def spawn(name, argv, env=None):
    out = open(os.path.join(WORK, name + ".log"), "w")
    p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                         cwd=WORK)
    procs.append(p)
    return p


def until(what, cond, seconds=60):
    deadline = time.time() + seconds
    while True:
        try:
            if cond():
                return
        except OSError:
            pass
        if time.time() > deadline:
            raise SystemExit(f"compare: timed out waiting for {what} (logs in {WORK})")
        time.sleep(0.1)


def listening(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def http(method, url, body=None, headers=None, timeout=10):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read().decode()


def sim_accepted():
    return json.loads(http("GET", f"http://127.0.0.1:{SIM_HTTP}/stats"))["accepted"]


def start_sim():
    spawn("sim", [BIN, "sim", "--smpp", f"127.0.0.1:{SIM_SMPP}", "--http", f"127.0.0.1:{SIM_HTTP}",
                  "--receipt-delay-ms", "10"])
    until("the simulator", lambda: listening(SIM_HTTP) and listening(SIM_SMPP))


def start_smsgate():
    data = os.path.join(WORK, "smsgate-data")
    spawn("smsgate", [BIN, "serve", "--http", f"127.0.0.1:{SG_HTTP}", "--smpp", f"127.0.0.1:{SG_SMPP}",
                      "--data-dir", data],
          # The bench receives the callbacks on loopback: a private address the operator allows by name.
          env={"SMSGATE_ADMIN_KEY": KEY, "SMSGATE_WEBHOOKS_ALLOW_PRIVATE": "127.0.0.1/32"})
    base = f"http://127.0.0.1:{SG_HTTP}"
    until("smsgate", lambda: http("GET", base + "/healthz"))
    auth = {"Authorization": "Bearer " + KEY}
    http("POST", base + "/v1/connectors", {"name": "carrier", "kind": "smpp", "host": "127.0.0.1", "port": SIM_SMPP,
                                           "system_id": "smsgate", "password": "pw", "sessions": 4,
                                           "session_window": 512}, auth)
    http("POST", base + "/v1/routes", {"name": "all", "connectors": [{"name": "carrier"}]}, auth)
    http("POST", base + "/v1/smpp/credentials", {"system_id": "bench", "password": "benchpw"}, auth)
    until("smsgate's connector to bind", lambda: '"bound":4' in http("GET", base + "/v1/connectors/carrier",
                                                                        headers=auth))


def start_kannel():
    folder = os.path.join(WORK, "kannel")
    os.makedirs(folder, exist_ok=True)
    conf = os.path.join(folder, "kannel.conf")
    # One SMPP bind to the sim (KANNEL_BINDS=4 gives it four, as smsgate's connector has: measured slower, 6,400/s
    # against 8,900/s, and its receipts then come on another bind than their submit_sm_resp and many are lost).
    smsc = "".join(f"""group = smsc
smsc = smpp
smsc-id = sim
host = 127.0.0.1
port = {SIM_SMPP}
transceiver-mode = true
smsc-username = kannel
smsc-password = pw
system-type = ""
interface-version = 34
max-pending-submits = 512
enquire-link-interval = 30
reconnect-delay = 1

""" for _ in range(int(os.environ.get("KANNEL_BINDS", "1"))))
    with open(conf, "w") as f:
        f.write(f"""group = core
admin-port = {K_ADMIN}
admin-password = secret
admin-interface = 127.0.0.1
admin-allow-ip = 127.0.0.1
smsbox-port = {K_BOX}
smsbox-interface = 127.0.0.1
box-allow-ip = 127.0.0.1
log-file = "{folder}/bearerbox.log"
log-level = 2
dlr-storage = internal

{smsc}group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = {K_BOX}
sendsms-port = {K_SEND}
sendsms-interface = 127.0.0.1
log-file = "{folder}/smsbox.log"
log-level = 2

group = sendsms-user
username = bench
password = benchpw
max-messages = 1
""")
    # -v 4: only panics on the console (its default is every debug line with each PDU dumped: 600 MB a run, and
    # a good part of Kannel's time); the log files keep warnings and errors (log-level 2).
    spawn("bearerbox", ["/usr/sbin/bearerbox", "-v", "4", conf])
    until("Kannel's bearerbox", lambda: listening(K_BOX))
    spawn("smsbox", ["/usr/sbin/smsbox", "-v", "4", conf])
    status = f"http://127.0.0.1:{K_ADMIN}/status.xml?password=secret"
    until("Kannel to bind to the sim", lambda: "<status>online" in http("GET", status) and listening(K_SEND))


def start_jasmin():
    root = os.path.join(WORK, "jasmin")
    etc = os.path.join(root, "etc", "jasmin")
    for d in ("resource", "store"):
        os.makedirs(os.path.join(etc, d), exist_ok=True)
    os.makedirs(os.path.join(root, "var", "log", "jasmin"), exist_ok=True)
    shutil.copy(os.environ["JASMIN_AMQP_SPEC"], os.path.join(etc, "resource", "amqp0-9-1.xml"))
    amqp = "[amqp-broker]\nhost = 127.0.0.1\nport = 5672\n"
    redis = "[redis-client]\nhost = 127.0.0.1\nport = 6379\ndbid = 7\n"
    with open(os.path.join(etc, "jasmin.cfg"), "w") as f:
        f.write(f"""[smpp-server]
bind = 127.0.0.1
port = {J_SMPP}

[smpp-server-pb]
bind = 127.0.0.1
port = {J_SMPPS_PB}

[client-management]
bind = 127.0.0.1
port = {J_CM}

[http-api]
bind = 127.0.0.1
port = {J_HTTP}

[router]
bind = 127.0.0.1
port = {J_ROUTER}

[jcli]
bind = 127.0.0.1
port = {J_CLI}
authentication = False

{amqp}
{redis}""")
    with open(os.path.join(etc, "dlr.cfg"), "w") as f:
        f.write(f"[dlr-thrower]\n\n[smpp-server-pb-client]\nhost = 127.0.0.1\nport = {J_SMPPS_PB}\n\n{amqp}")
    with open(os.path.join(etc, "dlrlookupd.cfg"), "w") as f:
        f.write(f"{amqp}\n{redis}\n[dlr]\npid = dlrlookupd-01\n")
    env = {"ROOT_PATH": root}
    bindir = os.path.dirname(JASMIN_PY)
    # jasmind.py, then the receipt daemons: Jasmin's recommended layout (its docs), each a process of its own.
    spawn("jasmind", [JASMIN_PY, os.path.join(bindir, "jasmind.py"), "--username", "jcliadmin", "--password",
                      "jclipwd"], env)
    until("Jasmin's jCli", lambda: listening(J_CLI) and listening(J_HTTP) and listening(J_SMPPS_PB))
    spawn("dlrlookupd", [JASMIN_PY, os.path.join(bindir, "dlrlookupd.py")], env)
    spawn("dlrd", [JASMIN_PY, os.path.join(bindir, "dlrd.py")], env)
    commands = f"""
smppccm -a
cid sim
host 127.0.0.1
port {SIM_SMPP}
username jasmin
password pw
submit_throughput 0
ok
smppccm -1 sim
group -a
gid bench
ok
user -a
username bench
password benchpw
gid bench
uid bench
ok
mtrouter -a
type defaultroute
connector smppc(sim)
rate 0
ok
"""
    subprocess.run([JASMIN_PY, os.path.join(HERE, "jcli.py"), str(J_CLI)], input=commands.encode(), check=True)
    until("Jasmin to bind to the sim", lambda: "BOUND_TRX" in open(os.path.join(root, "var", "log", "jasmin",
                                                                                  "default-sim.log")).read())
    time.sleep(2)  # the receipt daemons connect to RabbitMQ and to the SMPP server's PB port


def bench(args, messages):
    """Runs `smsgate bench` and returns its report, the seconds until the sim took every accepted message, and
    how many it took."""
    before = sim_accepted()
    t0 = time.monotonic()
    out = subprocess.run([BIN, "bench", *args, "--messages", str(messages), "--json", "--timeout", "900"],
                         capture_output=True, timeout=1000)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.decode().strip())
    report = json.loads(out.stdout)
    accepted = report["accepted"]
    deadline = time.monotonic() + 300
    while sim_accepted() - before < accepted and time.monotonic() < deadline:
        time.sleep(0.02)
    return report, time.monotonic() - t0, sim_accepted() - before


def rows():
    sg_smpp = ["smpp", "--target", f"127.0.0.1:{SG_SMPP}", "--system-id", "bench", "--password", "benchpw",
               "--sessions", "4", "--window", "256"]
    sg_http = ["http", "--target", f"http://127.0.0.1:{SG_HTTP}", "--api-key", KEY, "--concurrency", str(CONC)]
    sg_batch = ["http", "--target", f"http://127.0.0.1:{SG_HTTP}", "--api-key", KEY, "--concurrency", "4",
                "--batch", "500"]
    k_http = ["http", "--kannel", "--target", f"http://127.0.0.1:{K_SEND}", "--username", "bench", "--password",
              "benchpw", "--concurrency", str(CONC)]
    j_http = ["http", "--jasmin", "--target", f"http://127.0.0.1:{J_HTTP}", "--username", "bench", "--password",
              "benchpw", "--concurrency", str(CONC), "--to-prefix", "4477009"]
    j_smpp = ["smpp", "--target", f"127.0.0.1:{J_SMPP}", "--system-id", "bench", "--password", "benchpw",
              "--sessions", "1", "--window", "50"]
    ceiling = ["smpp", "--target", f"127.0.0.1:{SIM_SMPP}", "--system-id", "bench", "--password", "pw",
               "--sessions", "4", "--window", "256"]
    out = []
    # (group, gateway, ingress, receipts, messages, bench arguments); with receipts, "--receipts" is added.
    if "ceiling" in ONLY:
        out += [("ceiling", "none (bench → sim)", "SMPP", r, N, ceiling) for r in (False, True)]
    if "smsgate" in ONLY:
        for r in (False, True):
            out += [("smsgate", "smsgate", "SMPP", r, N, sg_smpp),
                    ("smsgate", "smsgate", "HTTP", r, N, sg_http + (["--callbacks"] if r else [])),
                    ("smsgate", "smsgate", "HTTP batch 500", r, N, sg_batch)]
    if "kannel" in ONLY:
        out += [("kannel", "Kannel 1.4.5", "HTTP", r, N, k_http) for r in (False, True)]
    if "jasmin" in ONLY:
        for r in (False, True):
            out += [("jasmin", "Jasmin 0.11.1", "HTTP", r, JASMIN_N, j_http),
                    ("jasmin", "Jasmin 0.11.1", "SMPP", r, JASMIN_N, j_smpp)]
    return out


def main():
    start_sim()
    if "smsgate" in ONLY:
        start_smsgate()
    if "kannel" in ONLY:
        start_kannel()
    if "jasmin" in ONLY:
        start_jasmin()
    results = {}
    raw = open(os.path.join(WORK, "results.jsonl"), "w")
    plan = rows()
    for run in range(RUNS):
        for (group, gateway, ingress, receipts, messages, args) in plan:
            key = (gateway, ingress, receipts)
            try:
                report, seconds, taken = bench(args + (["--receipts"] if receipts else []), messages)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                log(f"compare: {gateway} {ingress} receipts {'on' if receipts else 'off'}: {e}")
                results.setdefault(key, []).append(None)
                continue
            accepted = report["accepted"]
            if receipts:
                rate = report["delivered_per_s"]
                lost = accepted - report.get("receipts", accepted)
            else:
                rate = round(accepted / seconds, 1)
                lost = max(0, accepted - taken)
            row = {"run": run + 1, "gateway": gateway, "ingress": ingress, "receipts": receipts,
                   "messages": messages, "rate": rate, "lost": lost, "report": report}
            raw.write(json.dumps(row) + "\n")
            raw.flush()
            results.setdefault(key, []).append(row)
            twice = report.get("duplicate_receipts", 0)
            log(f"run {run + 1}: {gateway:<20} {ingress:<15} receipts {'on ' if receipts else 'off'} "
                f"{rate:>10,.0f} msg/s  p99 {report['submit_p99_ms']} ms  lost {lost}  errors {report['errors']}"
                + (f"  receipts sent twice {twice}" if twice else ""))
    print_table(plan, results)
    runs = [r for rs in results.values() for r in rs]
    failed, lost = sum(r is None for r in runs), sum(r["lost"] for r in runs if r)
    if failed or lost:
        raise SystemExit(f"compare: {failed} runs failed and {lost} messages were lost (logs in {WORK})")


def print_table(plan, results):
    def median_of(key):
        runs = [r for r in results.get(key, []) if r]
        if not runs:
            return None
        return (statistics.median(r["rate"] for r in runs), statistics.median(r["report"]["submit_p99_ms"] for r in
                                                                              runs),
                sum(r["lost"] for r in runs), len(runs), "/".join(f"{r['rate']:,.0f}" for r in runs))

    print(f"| gateway | ingress | receipts | messages/s (median of {RUNS}) | runs | p99 submit (ms) | lost |")
    print("|---|---|---|---|---|---|---|")
    seen = set()
    for (_, gateway, ingress, receipts, messages, _) in plan:
        key = (gateway, ingress, receipts)
        if key in seen:
            continue
        seen.add(key)
        m = median_of(key)
        if m is None:
            print(f"| {gateway} | {ingress} | {'on' if receipts else 'off'} | failed | | | |")
            continue
        rate, p99, lost, n, each = m
        print(f"| {gateway} | {ingress} | {'on' if receipts else 'off'} | {rate:,.0f} | {each} | {p99} | {lost} |")
    # Ratios: smsgate's best HTTP and SMPP rows against each peer's, receipts off and on.
    print()
    for receipts in (False, True):
        for peer in ("Kannel 1.4.5", "Jasmin 0.11.1"):
            for ingress, peer_ingress in (("HTTP", "HTTP"), ("HTTP batch 500", "HTTP"), ("SMPP", "HTTP"),
                                          ("SMPP", "SMPP")):
                ours, theirs = median_of(("smsgate", ingress, receipts)), median_of((peer, peer_ingress, receipts))
                if ours and theirs and theirs[0] > 0:
                    print(f"- receipts {'on' if receipts else 'off'}: smsgate {ingress} / {peer} {peer_ingress}: "
                          f"{ours[0] / theirs[0]:.1f}x")
    ceiling = {r: median_of(("none (bench → sim)", "SMPP", r)) for r in (False, True)}
    for r in (False, True):
        ours = median_of(("smsgate", "SMPP", r))
        if ours and ceiling[r]:
            print(f"- receipts {'on' if r else 'off'}: smsgate SMPP / ceiling: {100 * ours[0] / ceiling[r][0]:.0f} %")


if __name__ == "__main__":
    try:
        main()
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
