"""Find records: by run, process tree, event glob, time, argument text, alerts.

Narrowing happens in SQL as far as the store's layout allows (rows.py); the
argument filters then look at the record itself. Argument text is the record's
``args`` as compact JSON with non-ASCII characters as themselves
(``json.dumps(args, ensure_ascii=False, separators=(",", ":"))``), so it does not
depend on how the sender escaped it.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import json
import re
from typing import Any, Iterable, Iterator, NamedTuple, Pattern, Sequence

from auditwatch.store.rows import Filters, iter_rows
from auditwatch.store.sqlite import Store

# Runs of letters in the needle must appear verbatim in the raw line too (JSON
# encoders do not escape letters, and they are not number or structure syntax), so
# SQLite can drop most rows before Python parses any.
_VERBATIM = re.compile(r"[A-Za-z_]{2,}")


class StoredRecord(NamedTuple):
    pos: int
    run: str | None
    seq: int | None
    ts: int | None
    kind: str | None
    event: str | None
    pid: int | None
    alert: str | None
    raw: bytes

    def record(self) -> dict[str, Any]:
        """The record as received (parsed from the raw line)."""
        return json.loads(self.raw)  # type: ignore[no-any-return]


_ISO = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?"
    r"(?:(Z)|([+-])(\d{2}):?(\d{2}))?",
    re.IGNORECASE,
)


def parse_time(text: str) -> int:
    """Nanoseconds since the epoch from epoch seconds or an ISO 8601 date/time.

    A time without a zone is local time; ``Z`` means UTC. Parsed here rather than
    with ``datetime.fromisoformat``, which before Python 3.11 takes neither ``Z``
    nor fractions other than 3 or 6 digits.
    """
    value = text.strip()
    try:
        # Decimal, not float: a float cannot hold epoch nanoseconds exactly.
        return int(decimal.Decimal(value) * 1_000_000_000)
    except (decimal.InvalidOperation, ValueError, OverflowError):
        pass
    m = _ISO.fullmatch(value)
    try:
        if m is None:
            raise ValueError(value)
        y, mo, d, h, mi, sec, frac, z, sign, zh, zm = m.groups()
        tz: _dt.tzinfo | None = None
        if z:
            tz = _dt.timezone.utc
        elif sign:
            off = _dt.timedelta(hours=int(zh), minutes=int(zm))
            tz = _dt.timezone(-off if sign == "-" else off)
        when = _dt.datetime(
            int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(sec or 0), tzinfo=tz
        )
    except ValueError:
        raise ValueError(
            f"{text!r} is neither epoch seconds nor an ISO 8601 time "
            "(e.g. 1700000000, 2024-05-01, 2024-05-01T12:30:00, 2024-05-01T12:30:00.5Z)"
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()  # local time, as the user sees it
    nanos = int((frac or "0").ljust(9, "0"))
    return int(when.timestamp()) * 1_000_000_000 + nanos


def descendants(store: Store, roots: Iterable[str]) -> list[str]:
    """The runs and every run started under them (through parent_run), roots first."""
    children: dict[str, list[str]] = {}
    for run, parent in store.conn.execute("SELECT run, parent_run FROM runs ORDER BY first_pos"):
        if parent:
            children.setdefault(parent, []).append(run)
    seen: dict[str, None] = {}
    todo = list(roots)
    while todo:
        run = todo.pop(0)
        if run not in seen:
            seen[run] = None
            todo.extend(children.get(run, ()))
    return list(seen)


def query(
    store: Store,
    *,
    runs: Sequence[str] = (),
    tree: Sequence[str] = (),
    events: Sequence[str] = (),
    since: int | None = None,
    until: int | None = None,
    contains: str | None = None,
    regex: str | None = None,
    alerts: bool = False,
    limit: int | None = None,
) -> Iterator[StoredRecord]:
    """Records matching every filter given, in store order.

    ``runs``: full run ids; ``tree``: runs whose records and descendants' records are
    wanted; ``events``: fnmatch-style globs on the event name (case-sensitive);
    ``since``/``until``: ns since the epoch, inclusive; ``contains``/``regex``: on the
    argument text (see the module docstring); ``alerts``: alert records only.
    """
    wanted_runs = list(runs)
    if tree:
        wanted_runs.extend(descendants(store, tree))
    if (runs or tree) and not wanted_runs:
        return
    filters = Filters(
        runs=sorted(set(wanted_runs)),
        events=list(events),
        since=since,
        until=until,
        alerts=alerts,
        contains=[piece.encode("utf-8") for piece in _VERBATIM.findall(contains or "")],
    )
    pattern: Pattern[str] | None = re.compile(regex) if regex else None
    check_args = bool(contains) or pattern is not None
    if limit is not None and limit <= 0:
        return
    n = 0
    for row in iter_rows(store.conn, filters):
        rec = StoredRecord(*row[:9])
        if check_args and not _args_match(rec.raw, contains, pattern):
            continue
        yield rec
        n += 1
        if limit is not None and n >= limit:
            return


def _args_match(raw: bytes, contains: str | None, pattern: Pattern[str] | None) -> bool:
    try:
        args = json.loads(raw).get("args")
    except (ValueError, AttributeError):
        return False
    if args is None:
        return False
    text = json.dumps(args, ensure_ascii=False, separators=(",", ":"))
    if contains and contains not in text:
        return False
    return not (pattern is not None and pattern.search(text) is None)
