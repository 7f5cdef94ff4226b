"""The alert engine: alerts, sequences, counts, rate limits, process info, overrides."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from auditwatch.rules import AlertEngine, load
from auditwatch.rules.testing import alerts_for, stream

HEAD = "  desc: d\n  priority: warning\n  tags: [T1]\n"


def ruleset(text: str, default: bool = False, *more: str) -> Any:
    texts = [("a.yaml", textwrap.dedent(text))] + [
        (f"{i}.yaml", textwrap.dedent(t)) for i, t in enumerate(more)
    ]
    return load([], default=default, texts=texts)


def fired(
    rs: Any, records: list[dict], proc: dict | None = None, parent: dict | None = None
) -> list[str]:
    return [a["rule"] for a in alerts_for(rs, stream(records, proc, parent))]


def test_alert_record_fields() -> None:
    rs = ruleset(
        "- rule: shadow\n" + HEAD + "  condition: open.file = /etc/shadow\n"
        "  output: '%proc.exe read %open.file (%open.mode) argv=%proc.argv 100%%'\n"
    )
    out: list[dict] = []
    engine = AlertEngine(rs, out.append, clock=lambda: 42)
    for rec in stream([{"event": "open", "args": ["/etc/shadow", "r", 0]}], None, None):
        engine.process(rec)
    (alert,) = out
    assert alert == {
        "v": 1,
        "kind": "alert",
        "ts": 42,
        "run": "a" * 32,
        "seq": 2,
        "parent_run": None,
        "pid": 4242,
        "event": "open",
        "record_ts": 1_700_000_000_001_000_000,
        "rule": "shadow",
        "priority": "warning",
        "tags": ["T1"],
        "output": "/usr/bin/python3.12 read /etc/shadow (r) argv=python3 app.py 100%",
        "action": "alert",
    }


def test_encoded_values_are_decoded_before_comparison() -> None:
    rs = ruleset("- rule: r\n" + HEAD + "  condition: open.file = /etc/shadow\n  output: o\n")
    evil = {"$": "str", "v": "/etc/shadow", "type": "Evil"}
    as_bytes = {"$": "bytes", "len": 11, "text": "/etc/shadow"}
    as_b64 = {"$": "bytes", "len": 11, "b64": "L2V0Yy9zaGFkb3c="}
    for value in (evil, as_bytes, as_b64):
        assert fired(rs, [{"event": "open", "args": [value, "r", 0]}]) == ["r"]


def test_missing_values_make_every_comparison_false() -> None:
    rs = ruleset(
        "- rule: ne\n" + HEAD + "  condition: open.mode != r\n  output: o\n"
        "- rule: pos\n" + HEAD + "  condition: args[5] = x or args[0] != y\n  output: o\n"
    )
    assert fired(rs, [{"event": "open", "args": ["/x", None, 0]}]) == ["pos"]
    assert fired(rs, [{"event": "open", "args": ["/x", "w", 0]}]) == ["ne", "pos"]


def test_operators_on_lists_dicts_numbers_and_addresses() -> None:
    rs = ruleset(
        """\
        - rule: argv
          desc: d
          priority: notice
          condition: proc.argv contains "-c" and proc.argv[0] = python3
          output: o
        - rule: env key
          desc: d
          priority: notice
          condition: subprocess.Popen.env = LD_PRELOAD and len(subprocess.Popen.env) < 3
          output: o
        - rule: port
          desc: d
          priority: notice
          condition: socket.connect.address[1] >= 1024 and socket.connect.address cidr 10.0.0.0/8
          output: o
        - rule: bits
          desc: d
          priority: notice
          condition: os.chmod.mode bitand 2048
          output: o
        - rule: parent
          desc: d
          priority: notice
          condition: proc.parent.exe endswith /bash and basename(proc.exe) regex "^python"
          output: o
        """
    )
    popen = {
        "event": "subprocess.Popen",
        "args": [
            "/bin/x",
            ["x"],
            None,
            {"$": "dict", "len": 2, "items": [["LD_PRELOAD", "/x.so"], ["A", "b"]]},
        ],
    }
    connect = {
        "event": "socket.connect",
        "args": [{"$": "object", "type": "socket"}, ["10.1.2.3", 8080]],
    }
    proc = {"argv": ["python3", "-c", "pass"]}
    got = fired(
        rs,
        [popen, connect, {"event": "os.chmod", "args": ["/x", 0o4755, None]}],
        proc,
        {"exe": "/bin/bash"},
    )
    # argv and parent constrain no event: they are checked on every record.
    assert got == ["argv", "env key", "parent", "argv", "port", "parent", "argv", "bits", "parent"]


def test_val_compares_with_another_field() -> None:
    rs = ruleset(
        "- rule: out\n"
        + HEAD
        + "  condition: write.path startswith / and not write.path startswith val(proc.cwd)\n  output: o\n"
    )
    inside = {"event": "open", "args": ["/home/user/project/x", "w", 577]}
    outside = {"event": "os.rename", "args": ["/home/user/project/x", "/etc/x", None, None]}
    assert fired(rs, [inside]) == []
    assert fired(rs, [outside]) == ["out"]


SEQ = """\
- rule: fetch then exec
  desc: d
  priority: warning
  sequence:
    - event = socket.connect
    - event = open
    - compile.filename = "<string>"
  within: {WITHIN}
  output: "%compile.filename after %event"
"""


@pytest.mark.parametrize(
    ("within", "gap", "fires"),
    [("{events: 5}", 0, True), ("{events: 5}", 4, False), ("{seconds: 1}", 0, True)],
)
def test_sequence_within_events(within: str, gap: int, fires: bool) -> None:
    rs = ruleset(SEQ.replace("{WITHIN}", within))
    connect = {"event": "socket.connect", "args": [None, ["1.2.3.4", 80]]}
    filler = [{"event": "import", "args": ["m"]}] * gap
    records = [
        connect,
        *filler,
        {"event": "open", "args": ["/x", "r", 0]},
        {"event": "compile", "args": ["x", "<string>"]},
    ]
    assert fired(rs, records) == (["fetch then exec"] if fires else [])


def test_sequence_needs_its_steps_in_order_in_one_run_and_times_out() -> None:
    rs = ruleset(SEQ.replace("{WITHIN}", "{seconds: 1}"))
    connect = {"event": "socket.connect", "args": [None, ["1.2.3.4", 80]]}
    opened = {"event": "open", "args": ["/x", "r", 0]}
    comp = {"event": "compile", "args": ["x", "<string>"]}
    assert fired(rs, [opened, connect, comp]) == []
    assert fired(rs, [connect, comp, opened]) == []
    assert fired(rs, [connect, opened, dict(comp, ts=1_700_000_005_000_000_000)]) == []
    other_run = dict(comp, run="f" * 32)
    assert fired(rs, [connect, opened, other_run]) == []
    # Fires once per chain: a second compile needs a new connect.
    assert fired(rs, [connect, opened, comp, comp]) == ["fetch then exec"]
    assert fired(rs, [connect, opened, comp, connect, opened, comp]) == ["fetch then exec"] * 2


def test_sequence_alert_says_where_the_chain_began() -> None:
    rs = ruleset(SEQ.replace("{WITHIN}", "{events: 10}"))
    records = stream(
        [
            {"event": "socket.connect", "args": [None, ["1.2.3.4", 80]]},
            {"event": "open", "args": ["/x", "r", 0]},
            {"event": "compile", "args": ["x", "<string>"]},
        ],
        None,
        None,
    )
    (alert,) = alerts_for(rs, records)
    assert alert["first"]["seq"] == 2 and alert["first"]["event"] == "socket.connect"
    assert alert["seq"] == 4 and alert["output"] == "<string> after compile"


def test_count_rules_fire_on_the_nth_match_within_the_window() -> None:
    rs = ruleset(
        "- rule: many\n"
        + HEAD
        + "  condition: event = os.remove\n  count: 3\n  within: {seconds: 1}\n  output: o\n"
    )
    rm = {"event": "os.remove", "args": ["/x", None]}
    assert fired(rs, [rm, rm]) == []
    assert fired(rs, [rm, rm, rm]) == ["many"]
    assert fired(rs, [rm] * 6) == ["many", "many"]
    late = dict(rm, ts=1_700_000_009_000_000_000)
    assert fired(rs, [rm, rm, late]) == []


def test_rate_limit_counts_and_reports_suppressed_alerts() -> None:
    rs = ruleset("- rule: r\n" + HEAD + "  condition: event = open\n  output: o\n")
    out: list[dict] = []
    engine = AlertEngine(rs, out.append, rate=1.0, burst=3, summary_every=60)
    base = {"v": 1, "kind": "event", "run": "r", "pid": 1, "event": "open", "args": []}
    t0 = 1_700_000_000_000_000_000
    for i in range(10):  # 10 in 10 ms: 3 pass, 7 are suppressed
        engine.process(dict(base, seq=i + 1, ts=t0 + i * 1_000_000))
    assert [a.get("suppressed") for a in out] == [None, None, None]
    engine.process(dict(base, seq=11, ts=t0 + 2_000_000_000))  # 2 s later: tokens again
    assert len(out) == 4
    engine.process(dict(base, seq=12, ts=t0 + 61_000_000_000))  # a minute on: summary due
    summary = [a for a in out if "suppressed" in a]
    assert summary and summary[0]["suppressed"] == 7 and summary[0]["rule"] == "r"
    assert summary[0]["kind"] == "alert" and summary[0]["run"] is None
    assert engine.suppressed_total == 7 and engine.alerts == 5
    for i in range(5):
        engine.process(dict(base, seq=20 + i, ts=t0 + 61_000_000_000 + i))
    engine.close()
    assert out[-1]["suppressed"] == 3  # 2 of the 5 had tokens left; the rest, at close


def test_exceptions_falco_style() -> None:
    rs = ruleset(
        """\
        - list: tools
          items: [/usr/bin/ssh]
        - rule: key read
          desc: d
          priority: warning
          condition: open.file glob "*/.ssh/id_*"
          output: o
          exceptions:
            - name: by_tool
              fields: proc.exe
              values: [tools]
            - name: tool_and_file
              fields: [proc.exe, open.file]
              comps: [=, endswith]
              values:
                - [/usr/bin/git, id_deploy]
        """
    )
    key = {"event": "open", "args": ["/home/u/.ssh/id_rsa", "r", 0]}
    deploy = {"event": "open", "args": ["/home/u/.ssh/id_deploy", "r", 0]}
    assert fired(rs, [key]) == ["key read"]
    assert fired(rs, [key], {"exe": "/usr/bin/ssh"}) == []
    assert fired(rs, [deploy], {"exe": "/usr/bin/git"}) == []
    assert fired(rs, [key], {"exe": "/usr/bin/git"}) == ["key read"]


def test_overrides_appends_and_partial_changes_across_files() -> None:
    base = """\
    - list: names
      items: [/a]
    - macro: m
      condition: open.file in (names)
    - rule: r
      desc: d
      priority: notice
      condition: m
      output: o
      tags: [x]
    - rule: other
      desc: d
      priority: notice
      condition: event = exec
      output: o
    """
    user = """\
    - list: names
      items: [/b]
      append: true
    - macro: m
      condition: or open.file = /c
      append: true
    - rule: r
      condition: and not proc.user = root
      append: true
    - rule: r
      tags: [y]
      append: true
    - rule: other
      enabled: false
    """
    rs = ruleset(base, False, user)
    assert rs.get("r").tags == ("x", "y")
    assert rs.get("other").enabled is False
    opened = [{"event": "open", "args": [p, "r", 0]} for p in ("/a", "/b", "/c", "/d")]
    assert fired(rs, opened) == ["r", "r", "r"]
    assert fired(rs, opened, {"user": "root"}) == []
    assert fired(rs, [{"event": "exec", "args": []}]) == []
    replaced = (
        "- rule: r\n  desc: new\n  priority: error\n  condition: open.file = /d\n  output: o\n"
    )
    rs = ruleset(base, False, replaced)
    assert rs.get("r").priority == "error" and rs.get("r").tags == ()
    assert [r.name for r in rs.rules] == ["r", "other"]  # an override keeps its place
    assert fired(rs, opened) == ["r"]


def test_user_file_can_disable_and_extend_default_rules(tmp_path: Path) -> None:
    user = tmp_path / "user.yaml"
    user.write_text(
        "- rule: Shell spawned\n  enabled: false\n"
        "- rule: Shadow password file read\n  exceptions:\n"
        "    - {name: auditor, fields: proc.exe, values: [/usr/sbin/auditor]}\n  append: true\n"
    )
    rs = load([user])
    assert rs.get("Shell spawned").enabled is False
    shadow = {"event": "open", "args": ["/etc/shadow", "r", 0]}
    assert fired(rs, [shadow], {"exe": "/usr/sbin/auditor"}) == []
    assert fired(rs, [shadow]) == ["Shadow password file read"]


def test_process_table_and_sequence_state_are_bounded() -> None:
    rs = ruleset(SEQ.replace("{WITHIN}", "{events: 5}"))
    engine = AlertEngine(rs, lambda a: None, max_runs=10)
    for i in range(100):
        run = f"{i:032x}"
        engine.process({"v": 1, "kind": "start", "run": run, "seq": 1, "pid": i, "proc": {}})
        engine.process(
            {
                "v": 1,
                "kind": "event",
                "run": run,
                "seq": 2,
                "pid": i,
                "event": "socket.connect",
                "args": [None, ["1.1.1.1", 1]],
            }
        )
    assert len(engine.procs) == 10 and len(engine._chains) <= 10
