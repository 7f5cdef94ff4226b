"""The collector's own records (``kind: "collector"``, docs/schema.md): what it
noticed about the runs it receives — a gap in a sequence, a silent process, a
connection that ended without an exit record, a line it refused.

They are stored with the records they are about and sealed the same way; they have
no ``seq`` (the sequence checks skip them), and ``run`` names the run concerned
(null when none can be named, e.g. for garbage).
"""

from __future__ import annotations

import json
import time
from typing import Any

MAX_EXCERPT = 256  # bytes of a refused line kept in its notice


def notice(what: str, run: str | None, **details: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"v": 1, "kind": "collector", "ts": time.time_ns(), "run": run}
    rec["what"] = what
    rec.update(details)
    return rec


def encode(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode(
        "utf-8", "backslashreplace"
    )


def excerpt(raw: bytes) -> str:
    """The start of a refused line as text (undecodable bytes escaped)."""
    return raw[:MAX_EXCERPT].decode("utf-8", "backslashreplace")


def peer_dict(peer: Any) -> dict[str, int] | None:
    if peer is None:
        return None
    return {"pid": peer.pid, "uid": peer.uid, "gid": peer.gid}
