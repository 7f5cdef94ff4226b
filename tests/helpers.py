"""Running Python code under audit and reading what it recorded."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator


@dataclass
class Audited:
    proc: subprocess.CompletedProcess
    records: list[dict]

    def events(self, name: str | None = None) -> list[dict]:
        return [
            r for r in self.records if r["kind"] == "event" and (name is None or r["event"] == name)
        ]

    def kinds(self, kind: str) -> list[dict]:
        return [r for r in self.records if r["kind"] == kind]

    def runs(self) -> dict[str, list[dict]]:
        by_run: dict[str, list[dict]] = {}
        for r in self.records:
            by_run.setdefault(r["run"], []).append(r)
        return by_run


def read_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, "rb") as f:
        return [json.loads(line) for line in f if line.strip()]


@contextlib.contextmanager
def running_audited(tmp_path: Path, code: str, options: str = "") -> Iterator[subprocess.Popen]:
    """``python -c code`` audited into tmp_path/records.jsonl, its stdout piped, while the
    caller watches it; killed on leaving."""
    env = audit_env(tmp_path, options=options)
    with subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE) as proc:
        try:
            yield proc
        finally:
            proc.kill()


def audit_env(tmp_path: Path, events: str = "", options: str = "", **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("AUDITWATCH_PARENT_RUN", None)
    env["AUDITWATCH_SINK"] = f"file:{tmp_path / 'records.jsonl'}"
    env["AUDITWATCH_EVENTS"] = events
    env["AUDITWATCH_OPTIONS"] = f"spool={tmp_path / 'spool'};{options}"
    env.update(extra)
    return env


def run_audited(
    tmp_path: Path,
    code: str,
    *args: str,
    events: str = "",
    options: str = "",
    timeout: float = 120,
    check: bool = True,
    **extra: str,
) -> Audited:
    """Run ``python -c code`` with auditing asked for through the environment."""
    argv = [sys.executable, "-c", textwrap.dedent(code), *args]
    return run_argv(
        tmp_path, argv, events=events, options=options, timeout=timeout, check=check, **extra
    )


def run_argv(
    tmp_path: Path,
    argv: list[str],
    events: str = "",
    options: str = "",
    input: str | None = None,
    timeout: float = 120,
    check: bool = True,
    **extra: str,
) -> Audited:
    """Run a command with auditing asked for through the environment; its records."""
    env = audit_env(tmp_path, events, options, **extra)
    proc = subprocess.run(
        argv, env=env, input=input, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return Audited(proc, read_records(tmp_path / "records.jsonl"))


# -- the launcher (docs/launcher.md) ---------------------------------------------------


def launcher_path() -> Path:
    """``auditwatch-python`` of the environment the tests run in."""
    return Path(sys.executable).parent / "auditwatch-python"


def run_launched(
    tmp_path: Path,
    *args: str,
    events: str = "",
    options: str = "",
    input: str | None = None,
    timeout: float = 120,
    check: bool = True,
    **extra: str,
) -> Audited:
    """Run ``auditwatch-python ARGS`` with auditing asked for through the environment."""
    return run_argv(
        tmp_path,
        [str(launcher_path()), *args],
        events=events,
        options=options,
        input=input,
        timeout=timeout,
        check=check,
        **extra,
    )


def arg_text(value: object) -> object:
    """An encoded str argument's value, cut or not (``{"$": "str", "v": ...}``)."""
    if isinstance(value, dict) and value.get("$") == "str":
        return value.get("v")
    return value
