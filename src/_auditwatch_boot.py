"""What ``auditwatch.pth`` runs in every start-up of this environment.

site executes the one line of ``auditwatch.pth``, ``import _auditwatch_boot``; this
module decides whether auditing is asked for and, if so, loads the recorder (the
``_auditwatch`` extension) and calls its ``bootstrap()``. Every Python of the
environment imports it, audited or not, so it stays small and imports nothing:
``os`` and ``sys`` are loaded before site runs.

Why a module and not the logic in the line: site compiles a ``.pth`` line at every
start-up (twice in a 3.11 virtual environment, which processes its site-packages
twice), at about 15,000 instructions per name in it, and the guarded first import
below had to be compiled again with ``exec``. This module's bytecode is compiled
once, at install, and read from ``__pycache__``; a second site pass finds it in
``sys.modules``. (docs/performance.md, "The .pth line".)
"""

import os
import sys

# Asked for: AUDITWATCH_SINK, or an installed config (``auditwatch install``), or
# this very process has the recorder already (AUDITWATCH_LOADED_PID, set by it):
# the launcher installed it before Python started, or this is a subinterpreter, or a
# program that replaced itself with exec. In each case a first import that fails
# must still warn, and exit when auditing is required (runtime.cannot_load).
if "_auditwatch" not in sys.modules and (
    "AUDITWATCH_SINK" in os.environ
    or os.environ.get("AUDITWATCH_LOADED_PID") == str(os.getpid())
    or os.path.exists(sys.prefix + "/auditwatch.conf")
):
    try:
        import _auditwatch
    except Exception:  # not only ImportError: 3.12 raises UnicodeEncodeError for some paths
        from auditwatch.runtime import cannot_load

        cannot_load()
    else:
        _auditwatch.bootstrap()
