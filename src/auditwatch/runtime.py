"""Starting the recorder from Python, and reading its counters.

An audited process does not import this module: ``auditwatch.pth`` imports
``_auditwatch_boot``, which imports the ``_auditwatch`` extension alone and calls its
``bootstrap()`` when the environment asks for auditing (``AUDITWATCH_SINK`` is set).
This module is for :func:`auditwatch.start`, for the tools, and for the rare
start-up that cannot load the extension. It imports only the standard library and
the extension, and the native hook does all the recording: nothing here is on the
path of an event.

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
``auditwatch install``, read by the extension at site start-up and by the launcher)
turns auditing on for every Python of that environment; a config that cannot be used
stops the process (status 70) rather than letting it run unaudited. See
docs/launcher.md.
"""

# No ``from __future__ import annotations``: a real import of the ``__future__``
# module, 1.2M instructions of a 39M-instruction ``python -c pass``, for whoever
# imports this. Annotations that 3.8 cannot evaluate are quoted.
import os
import sys

_ENV_KEYS = ("AUDITWATCH_SINK", "AUDITWATCH_EVENTS", "AUDITWATCH_OPTIONS", "AUDITWATCH_DENY")
CONFIG_NAME = "auditwatch.conf"
EX_SOFTWARE = 70


def cannot_load() -> None:
    """``_auditwatch_boot``'s answer when importing the extension fails (called while
    that exception is handled): warn, and exit (status 70) when auditing is
    required, as the extension's bootstrap would."""
    exc = sys.exc_info()[1]
    # Any exception, not only ImportError: CPython 3.12 cannot import an extension
    # from a path that is not valid UTF-8 and raises UnicodeEncodeError.
    hint = (
        f"; is auditwatch built for {sys.version.split()[0]}?"
        if isinstance(exc, ImportError)
        else ""
    )
    sys.stderr.write(
        "auditwatch: WARNING: this process is NOT audited: cannot load the native hook "
        f"({type(exc).__name__}: {exc}){hint}\n"
    )
    config = os.path.join(sys.prefix, CONFIG_NAME)
    if os.environ.get("AUDITWATCH_REQUIRED") == "1":
        why = "AUDITWATCH_REQUIRED=1"
    elif os.environ.get("AUDITWATCH_SINK") is None and os.path.exists(config):
        why = f"{config} requires auditing"
    else:
        return
    sys.stderr.write(f"auditwatch: {why}, exiting\n")
    sys.stderr.flush()
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
    import _auditwatch

    sink = sink or os.environ.get("AUDITWATCH_SINK")
    if not sink:
        os.makedirs(out, exist_ok=True)
        sink = "file:" + os.path.abspath(os.path.join(out, "records.jsonl"))
        spool = os.path.abspath(os.path.join(out, "spool"))
        options = f"spool={spool};{options}" if options else f"spool={spool}"
    # The extension also routes os._exit through the recorder and starts a forked
    # child's own run.
    run = _auditwatch.install("late", sink, events, options, deny)
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
    return run


def status() -> dict:
    """The native recorder's counters; ``{"installed": None}`` when not recording."""
    try:
        import _auditwatch
    except ImportError:
        return {"installed": None}
    return _auditwatch.status()


def flush(timeout: float = 5.0) -> bool:
    """Wait until every record so far has left this process."""
    import _auditwatch

    return _auditwatch.flush(timeout)
