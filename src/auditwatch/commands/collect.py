"""``auditwatch collect``: the host collector, in the foreground (systemd-friendly)."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from typing import Any

import click

from auditwatch.collector.service import CollectorService, log_stderr
from auditwatch.commands.options import rule_options
from auditwatch.commands.run import load_rules
from auditwatch.store.keys import StoreError
from auditwatch.store.sqlite import Store


def notify_systemd(state: str) -> bool:
    """sd_notify(3) with the standard library: one datagram to $NOTIFY_SOCKET."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]  # an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(path)
            s.sendall(state.encode())
    except OSError:
        return False
    return True


def _mode(ctx: click.Context, param: click.Parameter, value: str) -> int:
    try:
        mode = int(value, 8)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an octal mode such as 0666") from None
    if not 0 <= mode <= 0o777:
        raise click.BadParameter(f"{value!r} is not a permission mode")
    return mode


@click.command("collect")
@click.option(
    "--socket",
    "socket_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Unix socket to listen on (AUDITWATCH_SINK=unix:PATH in audited processes).",
)
@click.option(
    "--store",
    "store_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="The sealed SQLite store (created when missing).",
)
@click.option(
    "--key",
    "key_path",
    type=click.Path(dir_okay=False),
    help="The store's key file (default STORE.key; created with mode 0600 with a new store).",
)
@click.option(
    "--spool-dir",
    type=click.Path(file_okay=False),
    help="Where audited processes spool when no collector answers; leftovers are ingested "
    "at start-up and every few seconds.",
)
@click.option(
    "--socket-mode",
    default="0666",
    show_default=True,
    callback=_mode,
    help="Permissions of the socket (other users' processes must be able to connect; "
    "each sender is identified by SO_PEERCRED).",
)
@rule_options
@click.option(
    "--heartbeat",
    type=float,
    default=5.0,
    show_default=True,
    help="The audited processes' heartbeat interval, in seconds.",
)
@click.option(
    "--silence-factor",
    type=float,
    default=3.0,
    show_default=True,
    help="A process is reported silent after this many heartbeat intervals without a record.",
)
@click.option(
    "--grace",
    type=float,
    default=5.0,
    show_default=True,
    help="On SIGTERM/SIGINT: seconds to keep reading open connections before stopping.",
)
def command(
    socket_path: str,
    store_path: str,
    key_path: str | None,
    spool_dir: str | None,
    socket_mode: int,
    rule_files: tuple[str, ...],
    no_default_rules: bool,
    heartbeat: float,
    silence_factor: float,
    grace: float,
) -> None:
    """Collect records from every audited process on this host into a sealed store.

    Runs in the foreground and logs to stderr; prints READY (and tells systemd,
    when NOTIFY_SOCKET is set) once it listens. SIGTERM or SIGINT: stop accepting,
    drain open connections for --grace seconds, commit, exit 0.
    """
    ruleset = load_rules(rule_files, no_default_rules)
    try:
        store = Store.open(store_path, key_path=key_path)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        service = CollectorService(
            socket_path,
            store,
            ruleset,
            socket_mode=socket_mode,
            heartbeat=heartbeat,
            silence_factor=silence_factor,
            spool_dir=spool_dir,
        )
    except OSError as exc:
        store.close()
        raise click.ClickException(f"cannot listen on {socket_path}: {exc}") from None
    service.start()
    rules = "no rules" if ruleset is None else f"{len(ruleset.enabled())} rules"
    log_stderr(
        f"listening on {socket_path} (mode {socket_mode:04o}), store {store.path}, {rules}, "
        f"{service.seeded_runs} recent run(s) known from the store"
    )
    print("READY", flush=True)
    notify_systemd("READY=1\nSTATUS=collecting")
    while not stop.wait(1.0):
        pass
    notify_systemd("STOPPING=1")
    t0 = time.monotonic()
    still_open = service.stop(grace, accept_meanwhile=False)
    store.close()
    info = service.summary()
    log_stderr(
        f"stopped in {time.monotonic() - t0:.1f}s: {info['stored']} records stored this session, "
        f"{info['alerts']['total']} alerts, {still_open} connection(s) still open at the end "
        "(those processes spool and replay to the next collector)"
    )
    if info["unstored"]:
        sys.exit(1)
