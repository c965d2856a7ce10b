"""Types commands into Jasmin's jCli console (a telnet prompt) and fails on any answer that is not a success.

Usage: jcli.py PORT < commands   (one jCli command a line; blank lines and lines starting with # are skipped)
Used by bench/compare.sh to make Jasmin's upstream connector, route and user. Python's telnetlib (up to 3.12).
"""

import sys
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import telnetlib

PROMPTS = [b"jcli : ", b"> "]
FAILURES = (b"Unknown", b"Error", b"error", b"Failed", b"failed", b"Invalid", b"invalid", b"Cannot", b"not found")


def main(port):
    t = telnetlib.Telnet("127.0.0.1", int(port), timeout=10)
    t.expect(PROMPTS, 10)
    for line in sys.stdin.read().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        t.write(line.encode() + b"\r\n")
        _, _, answer = t.expect(PROMPTS, 10)
        if any(f in answer for f in FAILURES):
            raise SystemExit(f"jCli refused {line!r}: {answer.decode(errors='replace').strip()}")
    t.write(b"quit\r\n")
    t.close()


if __name__ == "__main__":
    main(sys.argv[1])
