"""auditwatch: a flight recorder for Python processes, built on PEP 578 audit hooks.

The code that runs inside an audited process (the ``_auditwatch`` extension, and
this module and ``runtime`` when a program starts recording itself) imports only
the standard library, and only when asked.
"""

__version__ = "0.1.0"
SCHEMA_VERSION = 1

__all__ = ["SCHEMA_VERSION", "__version__", "start", "status"]


def start(**kwargs: object) -> str:
    """Start recording this process from now on; see :func:`auditwatch.runtime.start`."""
    from auditwatch import runtime

    return runtime.start(**kwargs)  # type: ignore[arg-type]


def status() -> dict:
    """Counters of the native recorder (records, drops, sink state), read-only."""
    from auditwatch import runtime

    return runtime.status()
