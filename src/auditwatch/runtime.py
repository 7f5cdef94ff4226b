"""What runs inside an audited process.

This module is imported by ``auditwatch.pth`` at site start-up when the environment
asks for auditing (``AUDITWATCH_SINK`` is set), or by :func:`auditwatch.start`. It
imports only the standard library and the native extension, and the native hook
does all the recording: nothing here is on the path of an event.

Environment (read by the native code, so the launcher can use it before Python
starts):

``AUDITWATCH_SINK``
    ``unix:/path/to/socket`` (a collector) or ``file:/path/to/records.jsonl``.
``AUDITWATCH_EVENTS``
    ``action:glob`` entries, comma-separated, first match wins, before the defaults.
``AUDITWATCH_OPTIONS``
    ``key=value`` pairs separated by ``;`` (policy, spool, heartbeat, ...).
``AUDITWATCH_PARENT_RUN``
    set by auditwatch for children: the run that started them.
``AUDITWATCH_REQUIRED``
    ``1``: a process that cannot be audited exits (status 70) instead of running
    unaudited.

Without ``AUDITWATCH_SINK``, ``sys.prefix/auditwatch.conf`` (written by
``auditwatch install``, read the same way by the launcher) turns auditing on for
every Python of that environment; a config that cannot be used stops the process
(status 70) rather than letting it run unaudited. See docs/launcher.md.
"""

# No ``from __future__ import annotations`` in the modules every audited process
# loads: it is a real import of the ``__future__`` module, 1.2M instructions of a
# 39M-instruction ``python -c pass``. Annotations that 3.8 cannot evaluate are quoted.
import os
import sys

_ENV_KEYS = ("AUDITWATCH_SINK", "AUDITWATCH_EVENTS", "AUDITWATCH_OPTIONS", "AUDITWATCH_DENY")
EX_SOFTWARE = 70


def _fail(message: str) -> None:
    sys.stderr.write(f"auditwatch: WARNING: this process is NOT audited: {message}\n")
    if os.environ.get("AUDITWATCH_REQUIRED") == "1":
        sys.stderr.write("auditwatch: AUDITWATCH_REQUIRED=1, exiting\n")
        os._exit(EX_SOFTWARE)


def _after_install(run: str) -> None:
    from auditwatch import _hook

    # The native code exported the run id into the C environment; os.environ is a
    # copy made at start-up, and children started with env=os.environ read that.
    os.environ["AUDITWATCH_PARENT_RUN"] = run
    # os._exit skips every exit handler: route it through the recorder so the
    # process still leaves an exit record.
    import posix

    posix._exit = os._exit = _hook.exit  # type: ignore[assignment]
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _after_fork_in_child() -> None:
    from auditwatch import _hook

    # The child's run id is made by its first record; make it now, so that
    # os.environ carries it to the child's own children.
    os.environ["AUDITWATCH_PARENT_RUN"] = _hook.begin_child()


CONFIG_NAME = "auditwatch.conf"
CONFIG_KEYS = ("sink", "events", "options", "deny", "manifest")


def read_config(path: str) -> "dict[str, str]":
    """``key = value`` lines, ``#`` comments: the installed config (docs/launcher.md)."""
    values: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, sep, value = line.partition("=")
            if not sep:
                raise ValueError(f"{path}:{number}: expected KEY = VALUE")
            values[key.strip()] = value.strip()
    if not values.get("sink"):
        raise ValueError(f"{path}: no sink = ... line")
    return values


def bootstrap() -> None:
    """Install the native hook at site start-up (called from ``auditwatch.pth``)."""
    config = os.path.join(sys.prefix, CONFIG_NAME)
    use_config = os.environ.get("AUDITWATCH_SINK") is None and os.path.exists(config)
    try:
        from auditwatch import _hook
    except ImportError as exc:
        _fail(f"cannot load the native hook ({exc}); is auditwatch built for {sys.version}?")
        if use_config:
            _refuse()
        return
    status = _hook.status()
    if status.get("installed") == "pre-init" and not _state.get("pre-init"):
        # The launcher installed the hook before Python started: finish the
        # Python-side part (os._exit, fork) once per interpreter.
        _state["pre-init"] = True
        try:
            _after_install(status["run"])
        except RuntimeError:  # a subinterpreter that does not support fork handlers
            return
        return
    if status.get("installed"):
        return  # a subinterpreter: the process-wide hook already covers it
    args: tuple[str | None, ...] = ()
    try:
        if use_config:
            values = read_config(config)
            if values.get("manifest"):
                raise ValueError(f"{config}: a manifest needs the launcher (auditwatch-python)")
            args = tuple(values.get(key, "") for key in CONFIG_KEYS[:4])
        run = _hook.install("site", *args)
    except (OSError, ValueError, RuntimeError) as exc:
        _fail(str(exc))
        if use_config:
            _refuse()
        return
    _after_install(run)


_state: "dict[str, bool]" = {}


def _refuse() -> None:
    # An installed config means "every process here is audited": never run without.
    sys.stderr.write(f"auditwatch: {sys.prefix}/{CONFIG_NAME} requires auditing, exiting\n")
    os._exit(EX_SOFTWARE)


def start(
    sink: "str | None" = None,
    events: "str | None" = None,
    options: "str | None" = None,
    out: str = ".auditwatch",
    children: bool = True,
    deny: "str | None" = None,
) -> str:
    """Start recording this process from now on; returns the run id.

    Records say ``installed: late``: everything before this call is not on record.
    Without a sink (argument or ``AUDITWATCH_SINK``) records are appended to
    ``OUT/records.jsonl``. With ``children`` (the default) the environment is set so
    that Python children are audited too. ``deny`` takes native deny rules in the
    AUDITWATCH_DENY format (``auditwatch.rules.native.encode_native``).
    """
    from auditwatch import _hook

    sink = sink or os.environ.get("AUDITWATCH_SINK")
    if not sink:
        os.makedirs(out, exist_ok=True)
        sink = "file:" + os.path.abspath(os.path.join(out, "records.jsonl"))
        spool = os.path.abspath(os.path.join(out, "spool"))
        options = f"spool={spool};{options}" if options else f"spool={spool}"
    run = _hook.install("late", sink, events, options, deny)
    if children:
        values = {
            "AUDITWATCH_SINK": sink,
            "AUDITWATCH_EVENTS": events,
            "AUDITWATCH_OPTIONS": options,
            "AUDITWATCH_DENY": deny,
        }
        for key in _ENV_KEYS:
            if values[key] is not None:
                os.environ[key] = values[key]  # type: ignore[assignment]
    _after_install(run)
    return run


def status() -> dict:
    """The native recorder's counters; ``{"installed": None}`` when not recording."""
    try:
        from auditwatch import _hook
    except ImportError:
        return {"installed": None}
    return _hook.status()


def flush(timeout: float = 5.0) -> bool:
    """Wait until every record so far has left this process."""
    from auditwatch import _hook

    return _hook.flush(timeout)
