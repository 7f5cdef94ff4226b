"""``auditwatch run``: run a command with every Python process in it audited."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import click

from auditwatch.collector.rundir import RunDirectory
from auditwatch.collector.server import Collector
from auditwatch.collector.summary import Summary
from auditwatch.commands.run_report import render_summary

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
@click.option("-q", "--quiet", is_flag=True, help="No summary on the terminal.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def command(
    out: str,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    only: tuple[str, ...],
    policy: str,
    grace: float,
    quiet: bool,
    as_json: bool,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND with every Python process it starts audited.

    Put `--` before the command: auditwatch run -- python -m pip install .

    Records stream over a Unix socket into OUT/<run>/records.jsonl; a summary
    follows when the command ends, and the command's exit status is passed through.
    """
    argv = list(command)
    rundir = RunDirectory.create(Path(out), argv)
    summary = Summary()
    sockdir = tempfile.mkdtemp(prefix="auditwatch-")
    sock_path = os.path.join(sockdir, "collector.sock")
    spool = rundir.path / "spool"

    def reject(reason: str, raw: bytes, peer: object) -> None:
        summary.reject(reason)
        rundir.reject(reason, raw, peer)

    collector = Collector(sock_path, [rundir, summary], reject)
    collector.start()
    options = f"spool={spool};policy={policy}"
    env = child_environment(f"unix:{sock_path}", events_spec(include, exclude, only), options)
    exit_code = EX_NOTFOUND
    still_running = 0
    try:
        exit_code = run_command(argv, env)
    finally:
        still_running = collector.stop(grace)
        for line in rundir.spooled_lines(spool):
            collector.feed(line)
        os.rmdir(sockdir)
        result = summary.as_dict(argv, exit_code, still_running)
        rundir.finish(result)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    elif not quiet:
        render_summary(result, rundir.path, sys.stderr)
    sys.exit(exit_code)
