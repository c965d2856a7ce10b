"""Black-box interop: Kannel (the Debian package) with an SMPP SMSC group pointing at `smsgate serve`.

Starts smsgate on loopback ports of its own (SQLite in a temporary folder, the built-in simulated network as the
carrier), makes SMPP credentials for Kannel over REST, starts Kannel's bearerbox and smsbox with a transceiver
bind to smsgate, and sends through Kannel's HTTP sendsms with a delivery report asked for. The message must reach
the virtual handset (smsgate's simulated network shows its inbox) and its receipt must come back to Kannel, which
calls the dlr-url this script listens on. A failing number (the network's ending 0002) must come back as a
failed report. Bounded in time; every process is stopped and the folder removed at the end.

Usage: kannel.py PATH/TO/smsgate   (needs /usr/sbin/bearerbox and smsbox: Debian's `kannel`)
"""

import http.server
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

from smsgate_proc import call, check, start

KEY = "sk_interop_kannel_0123456789"
DEADLINE_S = 40




def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]




def until(what, cond):
    deadline = time.time() + DEADLINE_S
    while True:
        v = cond()
        if v:
            return v
        if time.time() > deadline:
            raise SystemExit("FAIL: timed out waiting for " + what)
        time.sleep(0.1)


class Reports(http.server.BaseHTTPRequestHandler):
    """Kannel's dlr-url calls: /dlr?ref=...&type=%d."""
    got = []

    def do_GET(self):
        q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        Reports.got.append({k: v[0] for k, v in q.items()})
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass




def kannel_config(folder, smpp, admin, smsbox, sendsms):
    host, port = smpp.rsplit(":", 1)
    return f"""group = core
admin-port = {admin}
admin-password = secret
admin-interface = 127.0.0.1
admin-allow-ip = 127.0.0.1
smsbox-port = {smsbox}
smsbox-interface = 127.0.0.1
box-allow-ip = 127.0.0.1
log-file = "{folder}/bearerbox.log"
log-level = 1
dlr-storage = internal

group = smsc
smsc = smpp
smsc-id = smsgate
host = {host}
port = {port}
transceiver-mode = true
smsc-username = kannel
smsc-password = kannelpw
system-type = ""
interface-version = 34
enquire-link-interval = 30
reconnect-delay = 1

group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = {smsbox}
sendsms-port = {sendsms}
sendsms-interface = 127.0.0.1
log-file = "{folder}/smsbox.log"
log-level = 1

group = sendsms-user
username = app
password = secret
"""


def main(binary):
    for tool in ("/usr/sbin/bearerbox", "/usr/sbin/smsbox"):
        if not os.access(tool, os.X_OK):
            raise SystemExit(f"FAIL: {tool} is missing: install Debian's kannel (scripts/test does)")
    folder = tempfile.mkdtemp(prefix="smsgate-kannel-")
    procs = []
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Reports)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        proc, http_base, smpp = start(binary, os.path.join(folder, "smsgate"), KEY)
        procs.append(proc)
        status, _ = call(KEY, "POST", http_base + "/v1/smpp/credentials", {"system_id": "kannel", "password": "kannelpw"})
        check(status == 201, "credentials for Kannel made over REST")
        admin, smsbox, sendsms = free_port(), free_port(), free_port()
        conf = os.path.join(folder, "kannel.conf")
        with open(conf, "w") as f:
            f.write(kannel_config(folder, smpp, admin, smsbox, sendsms))
        for box in ("/usr/sbin/bearerbox", "/usr/sbin/smsbox"):
            procs.append(subprocess.Popen([box, conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(0.5)

        def status_xml():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/status.xml?password=secret", timeout=2) as r:
                    return r.read().decode()
            except OSError:
                return ""

        until("Kannel to bind to smsgate", lambda: "<status>online" in status_xml())
        check(True, "Kannel's SMPP SMSC bound to smsgate")

        report_port = receiver.server_address[1]

        def send(to, text, ref):
            dlr_url = f"http://127.0.0.1:{report_port}/dlr?ref={ref}&type=%d&reply=%A"
            q = urllib.parse.urlencode({"username": "app", "password": "secret", "from": "Acme", "to": to,
                                        "text": text, "dlr-mask": "3", "dlr-url": dlr_url})
            deadline = time.time() + DEADLINE_S
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{sendsms}/cgi-bin/sendsms?{q}", timeout=5) as r:
                        return r.status, r.read().decode()
                except OSError:
                    # smsbox may still be connecting to bearerbox.
                    if time.time() > deadline:
                        raise
                    time.sleep(0.2)

        status, body = send("+447700900125", "Hello through Kannel", "ok1")
        check(status in (200, 202), f"sendsms accepted: {status} {body}")
        status, body = send("+447700900002", "This one fails", "bad1")
        check(status in (200, 202), f"sendsms accepted the failing one: {status} {body}")

        def inbox():
            _, got = call(KEY, "GET", http_base + "/v1/sim/handsets/+447700900125/messages")
            return [m for m in got["data"] if m["body"] == "Hello through Kannel"]

        got = until("the message at the virtual handset", inbox)
        check(got[0]["from"] == "Acme", "the virtual handset got Kannel's message from Acme")

        def report(ref, kind):
            return [r for r in Reports.got if r.get("ref") == ref and r.get("type") == kind]

        until("Kannel's delivered report", lambda: report("ok1", "1"))
        check(True, "the receipt came back to Kannel: dlr-url type 1 (delivered)")
        until("Kannel's failed report", lambda: report("bad1", "2"))
        check(True, "the failing number came back to Kannel: dlr-url type 2 (failed)")
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        receiver.shutdown()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1])
