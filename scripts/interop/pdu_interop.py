"""Differential test of smsgate's SMPP codec against two independent implementations from PyPI.

For PDUs with random field values (a fixed seed, so runs repeat):
  theirs -> ours: smpplib encodes; `smsgate pdu decode` must read every field as smpplib wrote it, and
                  `smsgate pdu encode` of that JSON must give back the very same octets;
  ours -> theirs: `smsgate pdu encode` builds the PDU from the field values; smpplib must parse every field back,
                  and smpp.pdu3 must decode it too.

Usage: python pdu_interop.py PATH_TO_SMSGATE [CASES]. Prints one line per failure and a closing
"interop: N passed, N failed" line; exits non-zero on any failure.
"""
import io
import json
import random
import subprocess
import sys

import contextlib

import smpplib.gsm
import smpplib.smpp
from smpp.pdu.pdu_encoding import PDUEncoder

SMSGATE = sys.argv[1]
CASES = int(sys.argv[2]) if len(sys.argv) > 2 else 300
rng = random.Random(20261126)


class _Seq:
    def next_sequence(self):
        return 1


def smsgate(*args, stdin=None):
    out = subprocess.run([SMSGATE, *args], input=stdin, capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise RuntimeError(f"smsgate {' '.join(args[:2])}: {out.stderr.strip()}")
    return out.stdout


def rstr(max_len, alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-_ .:"):
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, max_len - 1)))


def rtime():
    if rng.random() < 0.5:
        return ""
    if rng.random() < 0.5:
        return "%02d%02d%02d%02d%02d%02d000R" % tuple(rng.randint(0, 30) for _ in range(6))
    return "%02d%02d%02d%02d%02d%02d%d%02d%s" % (rng.randint(0, 99), rng.randint(1, 12), rng.randint(1, 28),
        rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59), rng.randint(0, 9), rng.randint(0, 48),
        rng.choice("+-"))


def byte():
    return rng.randint(0, 255)


# Values within each field's domain in SMPP 3.4 (section 5.2): smpp.pdu3 rejects anything else.
def ton():
    return rng.randint(0, 6)


def npi():
    return rng.choice([0, 1, 3, 4, 6, 8, 9, 10, 14, 18])


def esm_class():
    return rng.randint(0, 3) | rng.choice([0, 0x04, 0x08, 0x10, 0x18, 0x20]) | rng.choice([0, 0x40, 0x80, 0xC0])


def registered_delivery():
    return rng.randint(0, 2) | rng.choice([0, 4, 8, 12]) | rng.choice([0, 16])


def data_coding():
    return rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 13, 14])


def submit_fields():
    f = {
        "service_type": rstr(6), "source_addr_ton": ton(), "source_addr_npi": npi(), "source_addr": rstr(21),
        "dest_addr_ton": ton(), "dest_addr_npi": npi(), "destination_addr": rstr(21), "esm_class": esm_class(),
        "protocol_id": byte(), "priority_flag": rng.randint(0, 3), "schedule_delivery_time": rtime(),
        "validity_period": rtime(), "registered_delivery": registered_delivery(),
        "replace_if_present_flag": rng.randint(0, 1), "data_coding": data_coding(), "sm_default_msg_id": byte(),
        "short_message": bytes(byte() for _ in range(rng.randint(0, 254))),
    }
    tlvs = []
    if rng.random() < 0.4:
        tlvs += [("sar_msg_ref_num", rng.randint(0, 65535)), ("sar_total_segments", byte()),
                 ("sar_segment_seqnum", byte())]
    if rng.random() < 0.3:
        tlvs += [("source_port", rng.randint(0, 65535)), ("destination_port", rng.randint(0, 65535))]
    if rng.random() < 0.3:
        tlvs.append(("user_message_reference", rng.randint(0, 65535)))
    if rng.random() < 0.2:
        f["short_message"] = b""
        tlvs.append(("message_payload", bytes(byte() for _ in range(rng.randint(0, 2000)))))
    return f, tlvs


def deliver_fields():
    # SMPP 3.4 4.6.1: in a deliver_sm these fields are NULL.
    f, tlvs = submit_fields()
    f.update(schedule_delivery_time="", validity_period="", replace_if_present_flag=0)
    return f, tlvs


def bind_fields():
    return {"system_id": rstr(16), "password": rstr(9), "system_type": rstr(13), "interface_version": 0x34,
            "addr_ton": ton(), "addr_npi": npi(), "address_range": rstr(41)}, []


GENERATORS = {
    "submit_sm": submit_fields,
    "deliver_sm": deliver_fields,
    "bind_transmitter": bind_fields,
    "bind_receiver": bind_fields,
    "bind_transceiver": bind_fields,
    "submit_sm_resp": lambda: ({"message_id": rstr(65)}, []),
    "query_sm": lambda: ({"message_id": rstr(65), "source_addr_ton": ton(), "source_addr_npi": npi(),
                          "source_addr": rstr(21)}, []),
    "query_sm_resp": lambda: ({"message_id": rstr(65), "final_date": rtime(), "message_state": rng.randint(1, 8),
                               "error_code": byte()}, []),
    "enquire_link": lambda: ({}, []),
    "enquire_link_resp": lambda: ({}, []),
    "unbind": lambda: ({}, []),
    "unbind_resp": lambda: ({}, []),
}
TLV_INT = {"sar_msg_ref_num", "sar_total_segments", "sar_segment_seqnum", "source_port", "destination_port",
           "user_message_reference"}


def to_ours(command, seq, fields, tlvs):
    """The JSON `smsgate pdu encode` reads."""
    j = {"command": command, "sequence_number": seq}
    for k, v in fields.items():
        j[k] = v.hex() if isinstance(v, bytes) else v
    if tlvs:
        j["tlvs"] = [{k: (v.hex() if isinstance(v, bytes) else v)} for k, v in tlvs]
    return j


def theirs(command, seq, fields, tlvs):
    kw = dict(fields)
    kw.update(dict(tlvs))
    p = smpplib.smpp.make_pdu(command, client=_Seq(), **kw)
    p.sequence = seq
    return p.generate()


def check_fields(ours_json, fields, tlvs, where):
    for k, v in fields.items():
        got = ours_json.get(k)
        want = v.hex() if isinstance(v, bytes) else v
        if got != want:
            raise AssertionError(f"{where}: {k} is {got!r}, expected {want!r}")
    got_tlvs = [(k, v) for t in ours_json.get("tlvs", []) for k, v in t.items()]
    want_tlvs = [(k, v.hex() if isinstance(v, bytes) else v) for k, v in tlvs]
    if sorted(got_tlvs) != sorted(want_tlvs):
        raise AssertionError(f"{where}: tlvs {got_tlvs} != {want_tlvs}")


def check_parsed(parsed, fields, tlvs, where):
    for k, v in list(fields.items()) + list(tlvs):
        got = getattr(parsed, k)
        want = v.encode() if isinstance(v, str) else v
        if k in ("schedule_delivery_time", "validity_period", "final_date") and got is None:
            got = b""
        if isinstance(want, bytes) and got is None:
            got = b""
        if got != want:
            raise AssertionError(f"{where}: smpplib reads {k} as {got!r}, expected {want!r}")


# smpplib's GSM table differs from TS 23.038 at 0x5F (it has '`' for '§'), so neither character is used here.
GSM_BASIC = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ¿abcdefghijklmnopqrstuvwxyzäöñüà"
GSM_EXT = "^{}\\[~]|€"
OTHER = "жЖяλ中文✓"
ASTRAL = "😀🎉"


def check_text(where):
    """`smsgate encode` against smpplib.gsm.make_parts: the same octets, and (where smpplib splits correctly:
    no escapes, no surrogate pairs) the same number of parts."""
    alphabet = GSM_BASIC
    if rng.random() < 0.3:
        alphabet += GSM_EXT
    if rng.random() < 0.3:
        alphabet += OTHER
    if rng.random() < 0.1:
        alphabet += ASTRAL
    text = "".join(rng.choice(alphabet) for _ in range(rng.choice([rng.randint(0, 80), rng.randint(140, 400)])))
    plan = json.loads(smsgate("encode", "--json", "--", text))
    parts, encoding, _ = smpplib.gsm.make_parts(text)
    whole = b"".join(parts) if len(parts) == 1 else b"".join(p[6:] for p in parts)
    ours = b"".join(bytes.fromhex(p["short_message"])[len(p["udh"]) // 2:] for p in plan["parts"])
    if ours != whole:
        raise AssertionError(f"{where}: {plan['encoding']} octets differ from smpplib's for {text!r}")
    if not any(c in text for c in GSM_EXT + ASTRAL) and len(parts) != plan["segments"]:
        raise AssertionError(f"{where}: {plan['segments']} segments, smpplib makes {len(parts)} for {text!r}")


def main():
    passed = failed = 0
    encoder = PDUEncoder()
    for i in range(CASES):
        command = rng.choice(list(GENERATORS))
        fields, tlvs = GENERATORS[command]()
        seq = rng.randint(1, 0x7FFFFFFF)
        where = f"case {i} ({command})"
        try:
            # theirs -> ours
            wire = theirs(command, seq, fields, tlvs)
            decoded = json.loads(smsgate("pdu", "decode", wire.hex()))
            if decoded["command"] != command or decoded["sequence_number"] != seq:
                raise AssertionError(f"{where}: header read as {decoded['command']} {decoded['sequence_number']}")
            check_fields(decoded, fields, tlvs, where + " theirs->ours")
            again = smsgate("pdu", "encode", stdin=json.dumps(decoded)).strip()
            if again != wire.hex():
                raise AssertionError(f"{where}: re-encoded {again} != {wire.hex()}")
            # ours -> theirs
            ours = bytes.fromhex(smsgate("pdu", "encode", stdin=json.dumps(to_ours(command, seq, fields, tlvs))).strip())
            parsed = smpplib.smpp.parse_pdu(ours, client=_Seq(), allow_unknown_opt_params=True)
            if parsed.command != command or parsed.sequence != seq:
                raise AssertionError(f"{where}: smpplib reads header as {parsed.command} {parsed.sequence}")
            check_parsed(parsed, fields, tlvs, where + " ours->smpplib")
            with contextlib.redirect_stdout(io.StringIO()):  # smpp.pdu3 prints while it parses times
                p3 = encoder.decode(io.BytesIO(ours))
            if p3.seqNum != seq or str(p3.id).split(".")[-1] != command:
                raise AssertionError(f"{where}: smpp.pdu3 reads {p3.id} {p3.seqNum}")
            passed += 1
        except Exception as e:  # one line per failed case, then go on
            failed += 1
            print(f"FAIL {where}: {e}")
    for i in range(CASES // 3):
        where = f"text {i}"
        try:
            check_text(where)
            passed += 1
        except Exception as e:
            failed += 1
            print(f"FAIL {where}: {e}")
    print(f"interop: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
