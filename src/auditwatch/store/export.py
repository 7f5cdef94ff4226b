"""Export records as JSON lines, byte for byte as the collector received them."""

from __future__ import annotations

from typing import BinaryIO, Iterable

from auditwatch.store.sqlite import Store


def export_jsonl(store: Store, out: BinaryIO, runs: Iterable[str] | None = None) -> int:
    """Write the raw lines (all, or of ``runs``) to ``out``; returns how many.

    A raw line stored without its terminator gets ``\\n``; one stored with it is
    written unchanged, so a JSON-lines file fed in comes back out identical.
    """
    n = 0
    write = out.write
    for raw in store.raw_lines(runs):
        write(raw if raw.endswith(b"\n") else raw + b"\n")
        n += 1
    return n
