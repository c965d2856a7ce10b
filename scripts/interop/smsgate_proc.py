"""Running `smsgate serve` for the black-box interop scripts: on loopback ports of its own, with an admin key,
and the REST calls they make."""

import json
import os
import subprocess
import threading
import urllib.request


def start(binary, data, key):
    """Starts `binary serve` on `data`; returns the process, its HTTP base URL and its SMPP address."""
    env = dict(os.environ, SMSGATE_ADMIN_KEY=key)
    proc = subprocess.Popen(
        [binary, "serve", "--http", "127.0.0.1:0", "--smpp", "127.0.0.1:0", "--data-dir", data],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    http = smpp = None
    for line in proc.stdout:
        if line.startswith("smsgate: listening on "):
            http = line.split()[3]
        if line.startswith("smsgate: SMPP on "):
            smpp = line.split()[3]
        if line.startswith("smsgate: try"):
            break
    if not http or not smpp:
        raise SystemExit("smsgate serve did not start")
    # Keep reading so the server never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    return proc, http, smpp


def call(key, method, url, body=None):
    """A REST call with the key; its status and JSON body."""
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, json.loads(r.read() or b"null")


def check(cond, what):
    if not cond:
        raise SystemExit("FAIL: " + what)
    print("ok:", what)
