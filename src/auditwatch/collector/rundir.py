"""A run directory: ``OUT/<time>-<id>/`` with the records of one ``auditwatch run``.

``records.jsonl``
    every accepted record, byte for byte as received (schema: docs/schema.md)
``rejected.jsonl``
    every line that failed a check, with the reason (nothing is dropped silently)
``summary.json``
    the end-of-run summary
``spool/``
    records that processes wrote locally when the collector could not take them;
    merged into ``records.jsonl`` at the end of the run
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import time
from pathlib import Path
from typing import Iterator


class RunDirectory:
    def __init__(self, path: Path) -> None:
        self.path = path
        # Open for the whole run, closed by finish(): records arrive until then.
        self._records = open(path / "records.jsonl", "ab", buffering=1 << 20)  # noqa: SIM115
        self._rejected = open(path / "rejected.jsonl", "ab")  # noqa: SIM115

    @classmethod
    def create(cls, out: Path, argv: list[str]) -> RunDirectory:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = out / f"{stamp}-{secrets.token_hex(3)}"
        path.mkdir(parents=True)
        latest = out / "latest"
        # "latest" points at the newest run; replace it atomically.
        tmp = out / f".latest-{os.getpid()}"
        _unlink(tmp)
        os.symlink(path.name, tmp)
        os.replace(tmp, latest)
        (path / "command.json").write_text(json.dumps({"argv": argv, "cwd": os.getcwd()}) + "\n")
        return cls(path)

    def accept(self, raw: bytes, record: dict, peer: object) -> None:
        self._records.write(raw)
        self._records.write(b"\n")

    def flush(self) -> None:
        self._records.flush()

    def reject(self, reason: str, raw: bytes, peer: object) -> None:
        try:
            line = {"reason": reason, "text": raw.decode("utf-8")}
        except UnicodeDecodeError:
            line = {"reason": reason, "b64": base64.b64encode(raw).decode("ascii")}
        if peer is not None:
            line["peer"] = getattr(peer, "__dict__", None) or repr(peer)
        self._rejected.write(json.dumps(line).encode() + b"\n")

    @staticmethod
    def spooled_lines(spool: Path) -> Iterator[bytes]:
        if not spool.is_dir():
            return
        for file in sorted(spool.glob("*.jsonl")):
            with open(file, "rb") as f:
                for line in f:
                    line = line.rstrip(b"\n")
                    if line:
                        yield line

    def finish(self, summary: dict) -> None:
        self._records.close()
        self._rejected.close()
        (self.path / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
