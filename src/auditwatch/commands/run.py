"""``auditwatch run``: run a command with every Python process in it audited."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import click

from auditwatch.collector.alerts import LiveAlerts
from auditwatch.collector.codestore import CodeStore
from auditwatch.collector.rundir import RunDirectory
from auditwatch.collector.service import CollectorService
from auditwatch.collector.summary import Summary
from auditwatch.commands.options import rule_options
from auditwatch.commands.run_report import render_summary
from auditwatch.store.keys import StoreError, user_key_dir
from auditwatch.store.sqlite import Store

EX_NOTFOUND = 127  # the shell's codes for "not found" and "not executable"
EX_NOEXEC = 126


def events_spec(include: tuple[str, ...], exclude: tuple[str, ...], only: tuple[str, ...]) -> str:
    """--include/--exclude/--only as the native table's ``action:glob`` entries.

    Exclusions come first (first match wins), then inclusions, which also override
    the built-in ignore list; with --only everything not named is ignored.
    """
    entries = [f"ignore:{g}" for g in exclude]
    entries += [f"record:{g}" for g in (*include, *only)]
    if only:
        entries.append("ignore:*")
    for glob in entries:
        if "," in glob:
            raise click.BadParameter(f"an event glob cannot contain ',': {glob!r}")
    return ",".join(entries)


def child_environment(sink: str, events: str, options: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("AUDITWATCH_PARENT_RUN", None)  # the command is a root of this run
    env["AUDITWATCH_SINK"] = sink
    env["AUDITWATCH_EVENTS"] = events
    env["AUDITWATCH_OPTIONS"] = options
    return env


def run_command(argv: list[str], env: dict[str, str]) -> int:
    """Run the command in the foreground; Ctrl-C goes to it, we wait and report."""
    try:
        proc = subprocess.Popen(argv, env=env)
    except FileNotFoundError:
        click.echo(f"auditwatch: command not found: {argv[0]}", err=True)
        return EX_NOTFOUND
    except PermissionError:
        click.echo(f"auditwatch: command not executable: {argv[0]}", err=True)
        return EX_NOEXEC
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    forward = signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signum))
    try:
        code = proc.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, forward)
    return 128 - code if code < 0 else code


# -- the launcher (issue 3) -------------------------------------------------------


def with_launcher(argv: list[str]) -> list[str]:
    """argv with its program replaced by ``auditwatch-python`` when the program is this
    environment's Python (``sys.executable`` or a ``python``/``python3``... beside it
    that is the same file), so that the run's records begin before ``Py_Initialize``
    (``installed: pre-init``). Anything else, or no launcher installed: unchanged."""
    import shutil
    import sysconfig

    launcher = os.path.join(sysconfig.get_path("scripts"), "auditwatch-python")
    if not argv or not os.access(launcher, os.X_OK):
        return argv
    program = argv[0] if os.sep in argv[0] else shutil.which(argv[0])
    if program is None:
        return argv
    program = os.path.abspath(program)
    here = os.path.dirname(os.path.abspath(sys.executable))
    try:
        same = os.path.dirname(program) == here and os.path.samefile(program, sys.executable)
    except OSError:
        return argv
    return [launcher, *argv[1:]] if same else argv


def code_summary(provenance: dict) -> dict:
    """How much code ran, by where it came from (the details: codes/provenance.json)."""
    origins = Counter(item["origin"] for item in provenance["executed"])
    return {
        "provenance": "codes/provenance.json",
        "files_read": len(provenance["files"]),
        "texts": len(provenance["texts"]),
        "texts_stored": sum(1 for t in provenance["texts"] if t.get("stored")),
        "executed_by_origin": dict(sorted(origins.items())),
    }


def load_rules(files: tuple[str, ...], no_defaults: bool) -> Any:
    """The ruleset for the collector's alert engine; None when there are no rules."""
    if no_defaults and not files:
        return None
    from auditwatch.rules import RuleErrors, load

    try:
        return load(files, default=not no_defaults)
    except RuleErrors as exc:
        for err in exc.errors:
            click.echo(str(err), err=True)
        raise click.ClickException("the rule files have errors (listed above)") from None


def deny_spec(ruleset: Any) -> str:
    """The ruleset's deny rules in the form the hook decides them in (AUDITWATCH_DENY)."""
    if ruleset is None:
        return ""
    from auditwatch.rules.native import encode_native

    return encode_native(ruleset.native_rules())


@click.command("run", context_settings={"ignore_unknown_options": False})
@click.option(
    "-o",
    "--out",
    default=".auditwatch",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Directory that receives one subdirectory per run.",
)
@click.option(
    "--include",
    multiple=True,
    metavar="GLOB",
    help="Record these events, even those ignored by default. Repeatable.",
)
@click.option(
    "--exclude", multiple=True, metavar="GLOB", help="Do not record these events. Repeatable."
)
@click.option("--only", multiple=True, metavar="GLOB", help="Record only these events. Repeatable.")
@click.option(
    "--policy",
    type=click.Choice(["wait", "drop"]),
    default="wait",
    show_default=True,
    help="When the ring is full: the recording thread waits (lossless), "
    "or records are dropped and counted.",
)
@click.option(
    "--grace",
    type=float,
    default=3.0,
    show_default=True,
    help="Seconds to wait after the command exits for its children's records.",
)
@rule_options
@click.option(
    "--key",
    "key_path",
    type=click.Path(dir_okay=False),
    help="The store's key file (default: a new key in ~/.local/share/auditwatch/keys/, "
    "named by the store id, outside the run directory).",
)
@click.option("-q", "--quiet", is_flag=True, help="No summary and no live alerts on the terminal.")
@click.option(
    "--no-launcher",
    is_flag=True,
    help="Run this environment's Python as given, not through auditwatch-python "
    "(records then begin at site start-up).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def command(
    out: str,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    only: tuple[str, ...],
    policy: str,
    grace: float,
    rule_files: tuple[str, ...],
    no_default_rules: bool,
    key_path: str | None,
    quiet: bool,
    no_launcher: bool,
    as_json: bool,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND with every Python process it starts audited.

    Put `--` before the command: auditwatch run -- python -m pip install .

    Records stream over a Unix socket into OUT/<run>/records.jsonl; a summary
    follows when the command ends, and the command's exit status is passed through.
    """
    argv = list(command)
    ruleset = load_rules(rule_files, no_default_rules)
    rundir = RunDirectory.create(Path(out), argv)
    summary = Summary()
    sockdir = tempfile.mkdtemp(prefix="auditwatch-")
    sock_path = os.path.join(sockdir, "collector.sock")
    spool = rundir.path / "spool"
    try:
        store = Store.open(
            str(rundir.path / "store.sqlite"),
            key_path=key_path,
            key_dir=None if key_path else user_key_dir(),
        )
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None

    def reject(reason: str, raw: bytes, peer: object) -> None:
        summary.reject(reason)
        rundir.reject(reason, raw, peer)

    live = None if quiet else LiveAlerts(sys.stderr)
    codes = CodeStore(rundir.path / "codes")
    service = CollectorService(
        sock_path,
        store,
        ruleset,
        sinks=[rundir, summary, codes],
        on_alert=live.show if live is not None else None,
        on_reject=reject,
        spool_dir=str(spool),
        remove_spooled=False,  # the run directory keeps them, as evidence
    )
    service.start()
    options = f"spool={spool};policy={policy}"
    env = child_environment(f"unix:{sock_path}", events_spec(include, exclude, only), options)
    env["AUDITWATCH_DENY"] = deny_spec(ruleset)
    exit_code = EX_NOTFOUND
    still_running = 0
    try:
        exit_code = run_command(argv if no_launcher else with_launcher(argv), env)
    finally:
        still_running = service.stop(grace)
        store.close()
        os.rmdir(sockdir)
        result = summary.as_dict(argv, exit_code, still_running)
        result.update(service.summary())
        result["store"] = "store.sqlite"
        result["code"] = code_summary(codes.finish())
        rundir.finish(result)
    if live is not None:
        live.finish()
    if as_json:
        click.echo(json.dumps(result, indent=2))
    elif not quiet:
        render_summary(result, rundir.path, sys.stderr)
    sys.exit(exit_code)
