"""Starting ``auditwatch collect`` and audited processes that talk to it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

AUDITWATCH = shutil.which("auditwatch", path=os.path.dirname(sys.executable)) or "auditwatch"


class CollectProcess:
    def __init__(self, tmp: Path, *options: str) -> None:
        self.tmp = tmp
        self.socket = str(tmp / "collector.sock")
        self.store = str(tmp / "store.sqlite")
        self.spool = str(tmp / "spool")
        self.options = options
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.log = open(self.tmp / "collect.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                *(AUDITWATCH, "collect", "--socket", self.socket, "--store", self.store),
                *("--spool-dir", self.spool, *self.options),
            ],
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=clean_env(),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line == b"READY\n", (line, self.stderr())

    def stderr(self) -> str:
        return (self.tmp / "collect.log").read_text(errors="replace")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.log.close()

    def terminate(self, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self.log.close()
        return code


def clean_env() -> dict[str, str]:
    env = dict(os.environ)
    for key in ("AUDITWATCH_SINK", "AUDITWATCH_EVENTS", "AUDITWATCH_OPTIONS"):
        env.pop(key, None)
    env.pop("AUDITWATCH_PARENT_RUN", None)
    return env


def audited(
    collector: CollectProcess,
    code: str,
    events: str = "record:bench.*,ignore:*",
    options: str = "",
    **popen,
) -> subprocess.Popen:
    env = clean_env()
    env["AUDITWATCH_SINK"] = f"unix:{collector.socket}"
    env["AUDITWATCH_EVENTS"] = events
    env["AUDITWATCH_OPTIONS"] = f"spool={collector.spool};{options}"
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, **popen)


def wait_for(predicate, timeout: float = 30.0, every: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return bool(predicate())
