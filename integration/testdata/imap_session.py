#!/usr/bin/env python3
"""One IMAP session with Python's imaplib, the way a script-writing user drives
a server. Run by integration/clients_test.go:

    python3 imap_session.py HOST PORT USER PASSWORD SENT_FILE

SENT_FILE holds the bytes of the one message the test delivered to USER's
INBOX before starting the script. The script checks what the server says
about it, copies, moves and expunges, then IDLEs: it prints IDLING on
stdout, reads one line from stdin (the test writes it after delivering one
more message) and waits at most IDLE_WAIT seconds for the EXISTS. Progress
goes to stderr; the first failed expectation exits 1 with a message saying
what was expected and what came.
"""

import email
import email.policy
import email.utils
import imaplib
import re
import socket
import sys

IDLE_WAIT = 10  # seconds

imaplib.Commands.setdefault("MOVE", ("SELECTED",))


def fail(what):
    print(f"imap_session.py: FAIL: {what}", file=sys.stderr)
    sys.exit(1)


def step(what):
    print(f"imap_session.py: {what}", file=sys.stderr)


def ok(res, what):
    typ, data = res
    if typ != "OK":
        fail(f"{what}: {typ} {data!r}")
    return data


def fetch_one(m, seq, items):
    """Returns the bytes of one FETCH response: its literals joined to its
    parenthesised text, as the server sent them."""
    data = ok(m.fetch(seq, items), f"FETCH {seq} {items}")
    parts = []
    for d in data:
        if isinstance(d, tuple):
            parts.extend(d)
        elif d is not None:
            parts.append(d)
    if not parts:
        fail(f"FETCH {seq} {items}: no data")
    return b"".join(parts)


def fetch_literal(m, seq, items):
    data = ok(m.fetch(seq, items), f"FETCH {seq} {items}")
    lits = [d[1] for d in data if isinstance(d, tuple)]
    if len(lits) != 1:
        fail(f"FETCH {seq} {items}: want one literal, got {data!r}")
    return lits[0]


def flags_of(m, seq):
    resp = fetch_one(m, seq, "(FLAGS)")
    mt = re.search(rb"FLAGS \(([^)]*)\)", resp)
    if not mt:
        fail(f"FETCH {seq} (FLAGS): no FLAGS in {resp!r}")
    # \Recent is the session's own (RFC 3501 2.3.2), not a stored flag.
    return set(mt.group(1).decode().split()) - {"\\Recent"}


def main():
    if len(sys.argv) != 6:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    host, port, user, password, sent_file = sys.argv[1:]
    with open(sent_file, "rb") as f:
        sent = f.read()
    msg = email.message_from_bytes(sent, policy=email.policy.compat32)
    subject = msg["Subject"]
    from_local, from_domain = email.utils.parseaddr(msg["From"])[1].split("@")

    m = imaplib.IMAP4(host, int(port), timeout=30)
    ok(m.login(user, password), "LOGIN")
    step("logged in")

    caps = ok(m.capability(), "CAPABILITY")[0].decode().upper().split()
    for c in ("IDLE", "UIDPLUS", "MOVE", "SPECIAL-USE"):
        if c not in caps:
            fail(f"CAPABILITY after login lacks {c}: {caps}")

    uses = {}
    for line in ok(m.list(), "LIST"):
        mt = re.match(rb'\(([^)]*)\) "(.)" "?([^"]*)"?$', line)
        if not mt:
            fail(f"LIST: cannot parse {line!r}")
        if mt.group(2) != b"/":
            fail(f"LIST: delimiter {mt.group(2)!r}, want '/'")
        for a in mt.group(1).decode().split():
            if a in ("\\Sent", "\\Drafts", "\\Trash", "\\Junk", "\\Archive"):
                uses[a] = mt.group(3).decode()
    want = {"\\Sent": "Sent", "\\Drafts": "Drafts", "\\Trash": "Trash", "\\Junk": "Junk", "\\Archive": "Archive"}
    if uses != want:
        fail(f"LIST special-use attributes {uses}, want {want}")

    n = int(ok(m.select("INBOX"), "SELECT INBOX")[0])
    if n != 1:
        fail(f"SELECT INBOX: {n} EXISTS, want the 1 message the test sent")

    resp = fetch_one(m, "1", "(ENVELOPE BODYSTRUCTURE FLAGS)")
    for want_part, what in (
        (b'"' + subject.encode() + b'"', "the subject"),
        (b'"' + from_local.encode() + b'" "' + from_domain.encode() + b'"', "the From address"),
        (b'BODYSTRUCTURE ("text" "plain"', "a text/plain body structure"),
        (b"FLAGS (", "flags"),
    ):
        if want_part.lower() not in resp.lower():
            fail(f"FETCH 1 (ENVELOPE BODYSTRUCTURE FLAGS): want {what} ({want_part!r}) in {resp!r}")

    if flags_of(m, "1"):
        fail(f"FLAGS of a new message: {flags_of(m, '1')}, want none but \\Recent")

    body = fetch_literal(m, "1", "(BODY.PEEK[])")
    if not body.endswith(sent):
        fail(f"BODY.PEEK[] does not end with the sent bytes:\n{body!r}\nsent:\n{sent!r}")
    if not body.startswith(b"Return-Path: "):
        fail(f"BODY.PEEK[] does not start with Return-Path: {body[:80]!r}")
    if "\\Seen" in flags_of(m, "1"):
        fail("BODY.PEEK[] set \\Seen")

    hdr = fetch_literal(m, "1", "(BODY[HEADER.FIELDS (SUBJECT)])")
    if hdr != f"Subject: {subject}\r\n\r\n".encode():
        fail(f"BODY[HEADER.FIELDS (SUBJECT)] = {hdr!r}")
    if "\\Seen" not in flags_of(m, "1"):
        fail("BODY[HEADER.FIELDS (SUBJECT)] did not set \\Seen")
    step("fetched")

    ok(m.store("1", "+FLAGS", "(\\Flagged)"), "STORE +FLAGS")
    if flags_of(m, "1") != {"\\Seen", "\\Flagged"}:
        fail(f"FLAGS after +FLAGS (\\Flagged): {flags_of(m, '1')}")

    data = ok(m.copy("1", "Archive"), "COPY 1 Archive")
    if not re.search(rb"\[COPYUID \d+ \d+ \d+\]", data[0] or b""):
        fail(f"COPY: no COPYUID response code in {data!r}")
    archived = ok(m.status("Archive", "(MESSAGES)"), "STATUS Archive")[0]
    if b"MESSAGES 1" not in archived:
        fail(f"STATUS Archive after COPY: {archived!r}")

    ok(m._simple_command("MOVE", "1", "Trash"), "MOVE 1 Trash")
    expunged = m.response("EXPUNGE")[1]
    if expunged != [b"1"]:
        fail(f"MOVE: EXPUNGE responses {expunged!r}, want [b'1']")
    trash = ok(m.status("Trash", "(MESSAGES)"), "STATUS Trash")[0]
    if b"MESSAGES 1" not in trash:
        fail(f"STATUS Trash after MOVE: {trash!r}")
    step("copied and moved")

    # Expunge with \Deleted, on a message the script appends itself.
    m.response("EXISTS")
    appended = b"From: py@example.org\r\nSubject: to be expunged\r\n\r\nbye\r\n"
    data = ok(m.append("INBOX", None, None, appended), "APPEND")
    if not re.search(rb"\[APPENDUID \d+ \d+\]", data[0] or b""):
        fail(f"APPEND: no APPENDUID response code in {data!r}")
    # The APPEND's EXISTS arrives with the NOOP at the latest.
    ok(m.noop(), "NOOP")
    if m.response("EXISTS")[1][-1:] != [b"1"]:
        fail(f"after APPEND: EXISTS {m.response('EXISTS')!r}, want 1")
    if fetch_literal(m, "1", "(BODY.PEEK[])") != appended:
        fail("APPENDed message does not read back byte for byte")
    ok(m.store("1", "+FLAGS", "(\\Deleted)"), "STORE +FLAGS (\\Deleted)")
    expunged = ok(m.expunge(), "EXPUNGE")
    if expunged != [b"1"]:
        fail(f"EXPUNGE: responses {expunged!r}, want [b'1']")
    step("expunged")

    # IDLE: imaplib in 3.11 has no idle(), so it goes over the wire by hand.
    n = int(ok(m.select("INBOX"), "SELECT INBOX")[0])
    tag = m._new_tag()
    m.send(tag + b" IDLE\r\n")
    line = m.readline()
    if not line.startswith(b"+"):
        fail(f"IDLE: want a continuation, got {line!r}")
    print("IDLING", flush=True)
    if not sys.stdin.readline():
        fail("stdin closed before the test said it delivered")
    m.sock.settimeout(IDLE_WAIT)
    want = b"* %d EXISTS" % (n + 1)
    try:
        while True:
            line = m.readline()
            if not line:
                fail("IDLE: connection closed")
            step(f"while idling: {line!r}")
            if line.rstrip() == want:
                break
    except socket.timeout:
        fail(f"IDLE: no {want!r} within {IDLE_WAIT} s")
    m.send(b"DONE\r\n")
    while True:
        line = m.readline()
        if not line:
            fail("IDLE: connection closed after DONE")
        if line.startswith(tag + b" "):
            break
    if not line.startswith(tag + b" OK"):
        fail(f"IDLE: after DONE {line!r}")
    m.sock.settimeout(30)
    step("idled")

    m.logout()
    print("DONE", flush=True)


if __name__ == "__main__":
    try:
        main()
    except (imaplib.IMAP4.error, OSError) as e:
        fail(f"{type(e).__name__}: {e}")
