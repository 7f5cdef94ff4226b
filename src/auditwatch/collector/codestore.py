"""The code store of a run: every piece of code that ran, and where it came from.

A RecordSink (``accept(raw, record, peer)``) that reads the provenance records the
hook makes (docs/launcher.md):

``auditwatch.code`` ``[sha256, nbytes, origin, text | null]``
    a string given to ``compile``/``exec``/``eval``, a ``-c`` command or source
    compiled at import; ``text`` is null when the same process already sent it.
``auditwatch.open_code`` ``[path, size, sha256]``
    a file read as code through the open-code hook (launcher only), and the main
    script.
``exec`` ``[{"$": "code", "file": ..., "sha256": ...}]``
    a code object about to run (each module body, each exec/eval).

Each distinct text is written once, as ``codes/<sha256>`` (the exact bytes that
were compiled, UTF-8 for str sources), when it arrived whole, its hash checks out
and it is no longer than ``max_bytes``; ``codes/index.jsonl`` lists every text
seen with where it came from and whether it was stored. ``finish()`` writes
``codes/provenance.json``: the files, the texts, and every executed code object
classified by origin (``file``, ``zip``, ``frozen``, ``string`` with the text's
hash, or the candidates when its process compiled several texts under its name,
``memory``),
plus the imports that ran no Python code read through the hook (``built-in``,
``native`` extension or otherwise not read as a file).

Wiring (``auditwatch run``): ``CodeStore(rundir.path / "codes")`` in the collector's
sinks, ``finish()`` after the collector stops.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

DEFAULT_MAX_BYTES = 1 << 20


def decode_text(value: Any) -> tuple[bytes | None, bool]:
    """The bytes of an encoded str/bytes argument, and whether it was cut."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass"), False
    if not isinstance(value, dict):
        return None, False
    cut = bool(value.get("trunc"))
    kind = value.get("$")
    if kind == "str" and isinstance(value.get("v"), str):
        return value["v"].encode("utf-8", "surrogatepass"), cut
    if kind in ("bytes", "bytearray"):
        if isinstance(value.get("text"), str):
            return value["text"].encode("utf-8", "surrogateescape"), cut
        if isinstance(value.get("b64"), str):
            return base64.b64decode(value["b64"]), cut
    return None, cut


def _plain(value: Any) -> Any:
    if isinstance(value, dict) and value.get("$") == "str":
        return value.get("v")
    return value


class CodeStore:
    """Writes ``codes/<sha256>`` once per distinct text; a RecordSink."""

    def __init__(self, directory: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.texts: dict[str, dict] = {}
        self.files: list[dict] = []
        self.executed: list[dict] = []
        self.imports: dict[str, str] = {}
        # (run, name compiled under) -> the texts compiled so: each compile is on
        # record in the process run that made it, even when its text was sent before.
        self.compiled: dict[tuple[str, str], set[str]] = {}
        self._index = open(self.directory / "index.jsonl", "a", encoding="utf-8")  # noqa: SIM115

    # -- RecordSink ------------------------------------------------------------------

    def accept(self, raw: bytes, record: dict, peer: object) -> None:
        if record.get("kind") != "event":
            return
        event = record.get("event")
        args = record.get("args") or []
        if event == "auditwatch.code" and len(args) >= 4:
            self._text(record, args)
        elif event == "auditwatch.open_code" and len(args) >= 3:
            self.files.append(
                {
                    "path": _plain(args[0]),
                    "size": args[1],
                    "sha256": args[2],
                    "run": record.get("run"),
                    "action": record.get("action"),
                }
            )
        elif event == "exec" and args and isinstance(args[0], dict) and args[0].get("$") == "code":
            code = args[0]
            self.executed.append(
                {
                    "file": _plain(code.get("file")),
                    "name": _plain(code.get("name")),
                    "sha256": code.get("sha256"),
                    "run": record.get("run"),
                }
            )
        elif event == "import" and args and isinstance(_plain(args[0]), str):
            self.imports.setdefault(_plain(args[0]), record.get("run") or "")

    def flush(self) -> None:
        self._index.flush()

    # -- texts -----------------------------------------------------------------------

    def _text(self, record: dict, args: list) -> None:
        sha, nbytes, origin, value = args[0], args[1], _plain(args[2]), args[3]
        if not isinstance(sha, str) or len(sha) != 64:
            return
        if isinstance(origin, str):
            # CPython compiles a -c command under the name <string>.
            name = "<string>" if origin == "-c" else origin
            self.compiled.setdefault((record.get("run") or "", name), set()).add(sha)
        entry = self.texts.get(sha)
        if entry is None:
            entry = self.texts[sha] = {
                "sha256": sha,
                "bytes": nbytes,
                "origin": origin,
                "first_run": record.get("run"),
                "first_seq": record.get("seq"),
                "stored": False,
                "reason": "text not received",
                "count": 0,
            }
        entry["count"] += 1
        if value is None or entry["stored"]:
            return
        data, cut = decode_text(value)
        if data is None:
            entry["reason"] = "text not readable"
        elif cut:
            entry["reason"] = "text cut by the hook (AUDITWATCH_CODE_MAX)"
        elif hashlib.sha256(data).hexdigest() != sha:
            entry["reason"] = "text does not match its sha256"
        elif len(data) > self.max_bytes:
            entry["reason"] = f"longer than the store's cap ({self.max_bytes} bytes)"
        else:
            path = self.directory / sha
            if not path.exists():
                tmp = self.directory / f".{sha}.{os.getpid()}"
                tmp.write_bytes(data)
                os.replace(tmp, path)
            entry["stored"] = True
            entry["reason"] = None
        line = {k: entry[k] for k in ("sha256", "bytes", "origin", "stored", "reason")}
        line.update(run=record.get("run"), seq=record.get("seq"))
        self._index.write(json.dumps(line) + "\n")

    # -- the answer ------------------------------------------------------------------

    def provenance(self) -> dict:
        """Every piece of code that ran, and where each came from."""
        opened = {f["path"]: f for f in self.files if isinstance(f["path"], str)}
        # A code object names the filename it was compiled under, not its text: when
        # its process run compiled several texts under that name, all of them are
        # candidates (and those of every run, for code compiled in another run).
        by_name: dict[str, set[str]] = {}
        for (_, name), shas in self.compiled.items():
            by_name.setdefault(name, set()).update(shas)
        archives = [p for p in opened if p.endswith((".zip", ".egg", ".whl", ".pyz"))]
        executed = []
        files_seen = set()
        for code in self.executed:
            file = code["file"] if isinstance(code["file"], str) else ""
            item = dict(code)
            files_seen.add(file)
            if file.startswith("<frozen"):
                item["origin"] = "frozen"
            elif file in opened or _cached(file) in opened:
                src = opened.get(file) or opened[_cached(file)]
                item.update(origin="file", read=src["path"], read_sha256=src["sha256"])
            elif any(file.startswith(a + os.sep) for a in archives):
                archive = next(a for a in archives if file.startswith(a + os.sep))
                item.update(origin="zip", archive=archive, archive_sha256=opened[archive]["sha256"])
            elif file in by_name:
                candidates = sorted(self.compiled.get((code["run"] or "", file)) or by_name[file])
                if len(candidates) == 1:
                    item.update(origin="string", text_sha256=candidates[0])
                else:
                    item.update(origin="string", text_candidates=candidates)
            else:
                item["origin"] = "memory"  # no open-code read and no recorded text
            executed.append(item)
        builtin = set(sys.builtin_module_names)
        modules_without_read = [
            {"module": name, "how": "built-in" if name in builtin else "native or not read"}
            for name in sorted(self.imports)
            if name in builtin or not any(_module_file(name, f) for f in files_seen)
        ]
        return {
            "files": self.files,
            "texts": sorted(self.texts.values(), key=lambda t: t["first_seq"] or 0),
            "executed": executed,
            "imports_without_code_read": modules_without_read,
        }

    def finish(self) -> dict:
        result = self.provenance()
        self._index.close()
        (self.directory / "provenance.json").write_text(json.dumps(result, indent=2) + "\n")
        return result


def _cached(source: str) -> str:
    """The __pycache__ file CPython reads for a source path (this interpreter's tag)."""
    try:
        import importlib.util

        return importlib.util.cache_from_source(source)
    except (NotImplementedError, ValueError):
        return ""


def _module_file(name: str, file: str) -> bool:
    stem = name.rpartition(".")[2]
    base = os.path.basename(file)
    return base in (f"{stem}.py", "__init__.py") or base.startswith(f"{stem}.")
