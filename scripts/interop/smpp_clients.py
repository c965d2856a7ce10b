"""Black-box interop: an SMPP client nobody here wrote (Python's smpplib) against `smsgate serve`.

Starts the real server on loopback ports of its own (SQLite in a temporary folder, the built-in simulated
network as the carrier), makes SMPP credentials over REST, binds with smpplib as a transceiver, and submits:
  - a concatenated GSM message (smpplib's own UDH parts), every part asking for a receipt: each part is answered
    with an id of its own and gets its own delivery receipt;
  - a concatenated UCS-2 message whose last part only asks for one: all parts share one id and one receipt comes;
  - a short message to a number that fails (the built-in network's ending 0002): an UNDELIV receipt.
Then a handset replies, and the reply reaches the client as a deliver_sm. Everything is bounded in time; the server
is stopped and the folder removed at the end.

Usage: smpp_clients.py PATH/TO/smsgate
"""

import shutil
import sys
import tempfile
import time

import smpplib.client
import smpplib.consts
import smpplib.gsm

from smsgate_proc import call, check, start

KEY = "sk_interop_0123456789abcdef"
DEADLINE_S = 30








def main(binary):
    data = tempfile.mkdtemp(prefix="smsgate-interop-")
    proc, http, smpp = start(binary, data, KEY)
    try:
        run(http, smpp)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        shutil.rmtree(data, ignore_errors=True)


def run(http, smpp):
    status, _ = call(KEY, "POST", http + "/v1/smpp/credentials", {"system_id": "pyapp", "password": "pw1234"})
    check(status == 201, "credentials made over REST")

    host, port = smpp.rsplit(":", 1)
    client = smpplib.client.Client(host, int(port), timeout=1, allow_unknown_opt_params=True)
    answered = {}      # sequence -> message_id
    delivered = []     # deliver_sm PDUs
    client.set_message_sent_handler(
        lambda pdu: answered.__setitem__(pdu.sequence, pdu.message_id.decode()))
    client.set_message_received_handler(lambda pdu: delivered.append(pdu))
    client.connect()
    client.bind_transceiver(system_id="pyapp", password="pw1234")
    check(True, "smpplib bound as a transceiver")

    def submit(text, to, receipt_on):
        parts, encoding, esm_class = smpplib.gsm.make_parts(text)
        sequences = []
        for i, part in enumerate(parts):
            pdu = client.send_message(
                source_addr_ton=smpplib.consts.SMPP_TON_ALNUM, source_addr="Acme",
                dest_addr_ton=smpplib.consts.SMPP_TON_INTL, dest_addr_npi=smpplib.consts.SMPP_NPI_ISDN,
                destination_addr=to, short_message=part, data_coding=encoding, esm_class=esm_class,
                registered_delivery=receipt_on(i, len(parts)))
            sequences.append(pdu.sequence)
        return sequences

    def pump(until):
        deadline = time.time() + DEADLINE_S
        while not until():
            if time.time() > deadline:
                raise SystemExit("FAIL: timed out; answered %s, delivered %d" % (answered, len(delivered)))
            client.read_once()

    gsm = "Concatenated over smpplib: every part asks for a receipt of its own. " * 3
    every = submit(gsm, "447700900125", lambda i, n: 1)
    ucs2 = "Ünïcödé text in parts, one receipt for the whole message, asked on the last part. " * 2
    last = submit(ucs2, "447700900126", lambda i, n: 1 if i == n - 1 else 0)
    failing = submit("This one fails", "447700900002", lambda i, n: 1)
    pump(lambda: all(s in answered for s in every + last + failing))
    part_ids = [answered[s] for s in every]
    base = part_ids[0].rsplit(".", 1)[0]
    check(len(every) > 1 and part_ids == ["%s.%d" % (base, i + 1) for i in range(len(every))],
          "each GSM part answered with its own id: %s" % part_ids)
    whole = {answered[s] for s in last}
    check(len(last) > 1 and len(whole) == 1, "the UCS-2 parts share one id: %s" % whole)

    want = set(part_ids) | whole | {answered[failing[0]]}

    def receipts():
        return {p.receipted_message_id.decode(): p for p in delivered if p.esm_class & 0x3c == 0x04}

    pump(lambda: set(receipts()) >= want)
    got = receipts()
    check(set(got) == want, "one receipt per id asked for, none other (%d)" % len(got))
    check(all(got[i].message_state == 2 for i in set(part_ids) | whole), "delivered: message_state 2")
    check(got[answered[failing[0]]].message_state == 5 and b"stat:UNDELIV" in got[answered[failing[0]]].short_message,
          "the failing number's receipt says UNDELIV")
    text = got[base + ".1"].short_message.decode()
    check(text.startswith("id:%s.1 sub:001 dlvrd:001 submit date:" % base) and "stat:DELIVRD err:000" in text,
          "receipt text in the standard layout: %s" % text)

    _, m = call(KEY, "GET", http + "/v1/messages/" + whole.pop())
    check(m["body"] == ucs2 and m["encoding"] == "ucs2", "the UCS-2 message stored whole")

    status, _ = call(KEY, "POST", http + "/v1/sim/handsets/+447700900125/reply", {"to": "Acme", "body": "Got it, thanks"})
    check(status in (200, 201, 202), "a handset replies")
    pump(lambda: any(p.esm_class == 0 for p in delivered))
    reply = next(p for p in delivered if p.esm_class == 0)
    check(reply.short_message == b"Got it, thanks" and reply.source_addr == b"447700900125",
          "the reply reached the client as a deliver_sm")

    client.unbind()
    client.disconnect()


if __name__ == "__main__":
    main(sys.argv[1])
