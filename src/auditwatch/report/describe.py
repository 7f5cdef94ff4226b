"""Short, readable descriptions of encoded records for the report's tables.

Arguments are encoded as docs/schema.md says; these helpers turn the ones the report
shows (paths, commands, addresses, code objects) into text, and never fail on a
value of an unexpected shape: the audited process decides what its records hold.
"""

from __future__ import annotations

import json
import os
from typing import Any

from auditwatch.records import arg, plain, text

CELL_MAX = 400  # characters of one table cell
SOURCE_MAX = 4000  # characters of recorded source text shown for a code object

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC

SPAWN_EVENTS = frozenset(
    {"subprocess.Popen", "os.system", "os.posix_spawn", "os.exec", "os.spawn", "pty.spawn"}
)
# File events that change what they name (open counts by its mode and flags).
CHANGE_EVENTS = frozenset(
    {
        "os.chflags",
        "os.chmod",
        "os.chown",
        "os.link",
        "os.mkdir",
        "os.remove",
        "os.removexattr",
        "os.rename",
        "os.rmdir",
        "os.setxattr",
        "os.symlink",
        "os.truncate",
        "os.utime",
        "shutil.chown",
        "shutil.copyfile",
        "shutil.copymode",
        "shutil.copystat",
        "shutil.copytree",
        "shutil.make_archive",
        "shutil.move",
        "shutil.rmtree",
        "shutil.unpack_archive",
        "tempfile.mkdtemp",
        "tempfile.mkstemp",
        "_winapi.CopyFile2",
        "_winapi.CreateJunction",
    }
)
# Index of the argv argument; the first argument is the program.
_ARGV_INDEX = {"subprocess.Popen": 1, "os.posix_spawn": 1, "os.exec": 1, "os.spawn": 2}

# Network events by role, and which argument holds the peer.
CONNECT_EVENTS = {"socket.connect": 1, "socket.sendto": 1, "socket.sendmsg": 1}
BIND_EVENTS = {"socket.bind": 1}
LOOKUP_EVENTS = {
    "socket.getaddrinfo": 0,
    "socket.gethostbyname": 0,
    "socket.gethostbyaddr": 0,
    "socket.getnameinfo": 0,
}
CLIENT_EVENTS = {
    "http.client.connect": 1,
    "urllib.Request": 0,
    "smtplib.connect": 1,
    "ftplib.connect": 1,
    "poplib.connect": 1,
    "imaplib.open": 1,
    "nntplib.connect": 1,
    "telnetlib.Telnet.open": 1,
}
# CPython's ways of running code that is not a module being imported.
RUN_EVENTS = frozenset(
    {
        "cpython.run_command",
        "cpython.run_file",
        "cpython.run_module",
        "cpython.run_stdin",
        "cpython.run_startup",
        "cpython.run_interactivehook",
    }
)


def clip(value: str, limit: int = CELL_MAX) -> str:
    if len(value) <= limit:
        return value
    return value[: limit - 1] + "…"


def value_text(value: Any) -> str:
    """Any encoded argument as one line of text."""
    if isinstance(value, dict) and "b64" in value:
        return f"<{value.get('len')} bytes, not UTF-8>"
    t = text(value)
    if t is not None:
        return t
    v = plain(value)
    if isinstance(v, dict) and "$" in v:
        tag = v["$"]
        if tag == "code":
            return f"<code {v.get('name')} {v.get('file')}:{v.get('line')}>"
        if tag in ("function", "type"):
            return f"<{tag} {v.get('name')}>"
        if tag == "object":
            return f"<{v.get('type')}>"
        return f"<{tag}>"
    if isinstance(v, list):
        return "(" + ", ".join(value_text(item) for item in v[:8]) + (", …)" if len(v) > 8 else ")")
    return json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v


def args_text(record: dict) -> str:
    args = record.get("args")
    if not isinstance(args, list):
        return ""
    return clip(", ".join(value_text(a) for a in args[:6]))


def where_text(record: dict) -> str:
    where = record.get("where")
    if not isinstance(where, dict):
        return ""
    return clip(f"{where.get('file')}:{where.get('line')} {where.get('func')}")


def record_text(record: dict) -> str:
    """One line for a record in an alert's context."""
    kind = record.get("kind")
    if kind == "event":
        return args_text(record)
    if kind == "start":
        proc = record.get("proc") or {}
        argv = proc.get("argv") if isinstance(proc, dict) else None
        return clip(" ".join(str(a) for a in argv)) if isinstance(argv, list) else ""
    if kind == "exit":
        return status_text(record.get("status"))
    return ""


def status_text(status: Any) -> str:
    if not isinstance(status, dict):
        return "missing"
    how = status.get("how")
    if how == "signal":
        return f"signal {status.get('signal')}"
    return f"{how} {status.get('code')}"


def path_of(record: dict) -> str | None:
    # open() of an int wraps a descriptor that is already open (stdin/stdout at
    # start-up): no file is opened, so it is no file's row.
    return text(arg(record, 0))


def opened_for_writing(record: dict) -> bool:
    mode, flags = plain(arg(record, 1)), plain(arg(record, 2))
    if isinstance(mode, str) and any(c in mode for c in "wax+"):
        return True
    return isinstance(flags, int) and not isinstance(flags, bool) and bool(flags & WRITE_FLAGS)


def command_of(event: str, record: dict) -> str:
    if event == "os.system":
        return clip(text(arg(record, 0)) or "?")
    argv = plain(arg(record, _ARGV_INDEX.get(event, 1)))
    if isinstance(argv, list) and argv:
        return clip(" ".join(text(a) or value_text(a) for a in argv))
    t = text(argv)
    return clip(t if t is not None else (text(arg(record, 0)) or "?"))


def address_text(value: Any) -> str:
    v = plain(value)
    if isinstance(v, list) and len(v) >= 2 and not isinstance(v[0], list):
        host = text(v[0])
        return f"{host if host is not None else value_text(v[0])}:{value_text(v[1])}"
    return clip(value_text(value))


def network_peer(event: str, record: dict) -> tuple[str, str] | None:
    """(role, peer) of a network event the report lists, else None."""
    if event in CONNECT_EVENTS:
        return "connect", address_text(arg(record, CONNECT_EVENTS[event]))
    if event in BIND_EVENTS:
        return "bind", address_text(arg(record, BIND_EVENTS[event]))
    if event in LOOKUP_EVENTS:
        if event == "socket.getaddrinfo":
            host, port = arg(record, 0), arg(record, 1)
            peer = value_text(host) if port is None else f"{value_text(host)}:{value_text(port)}"
            return "lookup", clip(peer)
        return "lookup", address_text(arg(record, LOOKUP_EVENTS[event]))
    if event in CLIENT_EVENTS:
        index = CLIENT_EVENTS[event]
        if event == "urllib.Request":
            return "client", clip(value_text(arg(record, 0)))
        host, port = arg(record, index), arg(record, index + 1)
        peer = value_text(host) if port is None else f"{value_text(host)}:{value_text(port)}"
        return "client", clip(peer)
    return None


def code_object(record: dict) -> dict | None:
    """The encoded code object of an ``exec`` event."""
    v = arg(record, 0)
    if isinstance(v, dict) and v.get("$") == "code":
        return v
    return None


def source_text(value: Any) -> str | None:
    """Source given to compile() (str or bytes), clipped; None for an AST or nothing."""
    t = text(value)
    if t is None:
        return None
    if isinstance(value, dict) and value.get("trunc"):
        t += f"\n… (recorded {len(t)} of {value.get('len')} characters)"
    return clip(t, SOURCE_MAX)
