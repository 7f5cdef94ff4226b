"""Where alerts go once the rules engine makes them: counted, stored, shown live.

The engine (auditwatch.rules.AlertEngine) already rate-limits per rule and emits a
summary alert with the number it held back; the terminal adds its own, tighter
limit (a screen is not a log), and says at the end how many lines it left out.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import IO, Any, Callable

PRIORITY_STYLES = {
    "emergency": "bold white on red",
    "alert": "bold red",
    "critical": "bold red",
    "error": "red",
    "warning": "yellow",
    "notice": "cyan",
    "informational": "green",
    "debug": "dim",
}


class AlertCounts:
    """Alerts per rule and priority, for the run summary."""

    def __init__(self) -> None:
        self.by_rule: Counter[str] = Counter()
        self.by_priority: Counter[str] = Counter()
        self.suppressed = 0

    def add(self, alert: dict) -> None:
        rule = str(alert.get("rule"))
        if alert.get("suppressed"):
            self.suppressed += int(alert["suppressed"])
            return
        self.by_rule[rule] += 1
        self.by_priority[str(alert.get("priority"))] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": sum(self.by_rule.values()),
            "by_rule": dict(self.by_rule.most_common()),
            "by_priority": dict(self.by_priority.most_common()),
            "suppressed": self.suppressed,
        }


class LiveAlerts:
    """One line per alert on a terminal stream: priority, rule, process, what."""

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        burst: int = 5,
        per: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from rich.console import Console

        self.stream = stream or sys.stderr
        self.console = Console(file=self.stream, highlight=False, soft_wrap=True)
        self.burst = burst
        self.per = per
        self.clock = clock
        self._window: dict[str, tuple[float, int]] = {}  # rule -> (window start, shown)
        self.held_back: Counter[str] = Counter()

    def show(self, alert: dict) -> None:
        rule = str(alert.get("rule"))
        if alert.get("suppressed"):
            self.held_back[rule] += int(alert["suppressed"])
            return
        now = self.clock()
        start, shown = self._window.get(rule, (now, 0))
        if now - start >= self.per:
            start, shown = now, 0
        if shown >= self.burst:
            self.held_back[rule] += 1
            self._window[rule] = (start, shown)
            return
        self._window[rule] = (start, shown + 1)
        self.console.print(format_alert(alert), soft_wrap=True)

    def finish(self) -> None:
        for rule, n in self.held_back.items():
            self.console.print(
                f"[dim]auditwatch: {n} more alert(s) of rule {rule!r} not shown "
                "(rate limit; all are in the store: auditwatch query --alerts)[/dim]"
            )


def format_alert(alert: dict) -> str:
    """Rich markup for one alert line."""
    from rich.markup import escape

    priority = str(alert.get("priority") or "notice")
    style = PRIORITY_STYLES.get(priority, "")
    run = alert.get("run") or ""
    who = f"pid {alert.get('pid')} ({run[:8]})" if run else "-"
    # One alert, one line: the output may quote multi-line source text.
    output = str(alert.get("output") or alert.get("event") or "").strip().replace("\n", "\\n")
    return (
        f"[{style}]{priority.upper():<8}[/{style}] [bold]{escape(str(alert.get('rule')))}[/bold]"
        f"  {escape(who)}  {escape(output)}"
    )
