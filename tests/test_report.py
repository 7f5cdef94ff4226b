"""``auditwatch report``: the HTML page of a run, checked in headless Chromium.

The page is opened in Chromium and the assertions are about what it shows after its
scripts ran (``innerText`` of its sections), not about the HTML source. Screenshots
and the timings of the one-million-event run are kept in tests/artifacts/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _chromium import Browser
from _synthetic_run import write_run

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
AUDITWATCH = shutil.which("auditwatch", path=os.path.dirname(sys.executable)) or "auditwatch"
RENDERED = "document.body && document.body.dataset.rendered === '1'"


def clean_env() -> dict:
    env = dict(os.environ)
    for key in (
        "AUDITWATCH_SINK",
        "AUDITWATCH_EVENTS",
        "AUDITWATCH_OPTIONS",
        "AUDITWATCH_PARENT_RUN",
    ):
        env.pop(key, None)
    return env


def aw(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [AUDITWATCH, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=clean_env(),
    )


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name


def text_of(browser: Browser, selector: str) -> str:
    return browser.evaluate(f"document.querySelector({json.dumps(selector)}).innerText")


def set_control(browser: Browser, control_id: str, value: str) -> None:
    """Change a filter the way a user does: set the control and fire its event,
    then wait until the page has applied it (text inputs apply after a pause)."""
    event = "change" if control_id in ("f-process", "f-category") else "input"
    browser.evaluate(
        f"""(() => {{
            const c = document.getElementById({json.dumps(control_id)});
            c.value = {json.dumps(value)};
            c.dispatchEvent(new Event({json.dumps(event)}));
        }})()"""
    )
    key = control_id[2:]  # f-process -> process: the page lists active filters
    deadline = time.monotonic() + 10
    while (key in browser.evaluate("document.body.dataset.filters").split(",")) != bool(value):
        assert time.monotonic() < deadline, f"filter {key}={value!r} not applied"
        time.sleep(0.05)


def option_value(browser: Browser, control_id: str, label_part: str) -> str:
    return browser.evaluate(
        f"""[...document.getElementById({json.dumps(control_id)}).options]
            .find(o => o.text.includes({json.dumps(label_part)})).value"""
    )


@pytest.fixture(scope="module")
def example_run(tmp_path_factory) -> Path:
    """``auditwatch run`` of examples/suspicious.py: its output directory."""
    tmp = tmp_path_factory.mktemp("example")
    shutil.copytree(REPO / "examples", tmp / "examples")
    proc = aw(
        "run", "-o", str(tmp / "out"), "-q", "--", sys.executable,
        str(tmp / "examples" / "suspicious.py"), cwd=tmp,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return tmp / "out"


@pytest.fixture(scope="module")
def example_page(example_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("page") / "report.html"
    proc = aw("report", str(example_run), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stderr
    with Browser() as browser:
        browser.open(out.as_uri(), RENDERED)
        yield browser, out


def test_page_is_self_contained(example_page):
    browser, out = example_page
    html = out.read_text(encoding="utf-8")
    # Data is embedded with "<" escaped, so these can only come from the template.
    for needle in ("<script src", "<link", "<img", "<iframe"):
        assert needle not in html, needle
    assert browser.evaluate("document.querySelectorAll('[src], [href], link').length") == 0
    assert "url(" not in browser.evaluate(
        "[...document.styleSheets].flatMap(s => [...s.cssRules]).map(r => r.cssText).join()"
    )
    # Only the file itself was loaded, and no script failed.
    assert browser.requested_urls() == [out.as_uri()]
    assert browser.console_errors() == []


def test_page_shows_what_the_example_did(example_page):
    browser, _ = example_page
    tree = text_of(browser, "#tree")
    assert "suspicious.py" in tree
    assert "import platform; print(platform.python_version())" in tree
    assert tree.count("exit 0") == 2 and "missing exit" not in tree

    written = text_of(browser, "#t-written")
    assert "loot.txt" in written and "credentials" not in written
    assert "examples/data/.aws/credentials" in browser.evaluate(
        "JSON.stringify(JSON.parse(document.getElementById('aw-data').textContent)"
        ".tables.find(t => t.id === 'read').rows.map(r => r[0]))"
    )

    spawned = text_of(browser, "#t-spawned")
    assert "subprocess.Popen" in spawned and "import platform" in spawned
    child_pid = browser.evaluate(
        "JSON.parse(document.getElementById('aw-data').textContent).runs[1].pid"
    )
    assert f"pid {child_pid}" in spawned  # linked to the child's own run

    network = text_of(browser, "#t-network")
    assert "connect\t127.0.0.1:" in network and "bind\t127.0.0.1:0" in network

    code = text_of(browser, "#t-code")
    assert "print('hello from the network')" in code
    assert "print('decoded and run')" in code
    assert "dynamic" in code and "<string>" in code

    # Start-up imports come first (with the launcher, from before Py_Initialize):
    # find the example's own through the search box.
    for module in ("base64", "socket"):
        set_control(browser, "f-search", module)
        assert module in text_of(browser, "#t-imports")
        set_control(browser, "f-search", "")
    timeline = text_of(browser, "#timeline")
    for category in ("code", "import", "file", "network", "process"):
        assert category in timeline
    # The default rules on the example (alerts are paged: look each one up).
    for rule in ("Cloud credentials read", "Code compiled after a network connection"):
        set_control(browser, "f-search", rule)
        assert rule in text_of(browser, "#alerts")
        set_control(browser, "f-search", "")

    shot = browser.screenshot(artifact("report-example.png"))
    print(f"screenshot: {shot}")


def test_filters_change_what_is_shown(example_page):
    browser, _ = example_page
    try:
        # Category: only network rows remain.
        set_control(browser, "f-category", option_value(browser, "f-category", "network"))
        assert "No row matches" in text_of(browser, "#t-written")
        assert "127.0.0.1" in text_of(browser, "#t-network")
        assert "No row matches" in text_of(browser, "#t-code")
        set_control(browser, "f-category", "")
        assert "loot.txt" in text_of(browser, "#t-written")

        # Process: the child ran `-c` code and neither exec'd the network code nor
        # wrote anything.
        set_control(browser, "f-process", option_value(browser, "f-process", "import platform"))
        code = text_of(browser, "#t-code")
        assert "import platform; print(platform.python_version())" in code
        assert "hello from the network" not in code
        assert "No row matches" in text_of(browser, "#t-written")
        assert "import platform" in text_of(browser, "#tree .proc.selected")
        set_control(browser, "f-process", "")

        # Event name: connect, not bind.
        set_control(browser, "f-event", "socket.connect")
        network = text_of(browser, "#t-network")
        assert "connect" in network and "bind" not in network
        set_control(browser, "f-event", "")

        # Search box: across every table.
        set_control(browser, "f-search", "loot")
        assert "loot.txt" in text_of(browser, "#t-written")
        assert "No row matches" in text_of(browser, "#t-imports")
        assert "table rows match" in text_of(browser, "#f-status")
    finally:
        browser.evaluate("document.getElementById('f-clear').click()")
    assert "No row matches" not in text_of(browser, "#t-imports")


def test_alerts_with_the_records_around_them_from_the_store(example_run, tmp_path):
    """A run sealed into store.sqlite, with an alert: the report reads the store,
    and shows the alert with the records of its process before and after it."""
    from auditwatch.store import Store

    source = (example_run / "latest" / "records.jsonl").read_bytes().splitlines()
    records = [json.loads(line) for line in source]
    trigger = next(r for r in records if r.get("event") == "compile" and "network" in json.dumps(r))
    alert = {
        "v": 1, "kind": "alert", "ts": trigger["ts"] + 5, "run": trigger["run"],
        "seq": trigger["seq"], "parent_run": trigger["parent_run"], "pid": trigger["pid"],
        "rule": "Code from a socket compiled", "priority": "critical",
        "tags": ["mitre_execution", "T1059.006"], "output": "compile of code received on a socket",
        "event": "compile", "record_ts": trigger["ts"], "action": "alert",
    }  # fmt: skip
    at = records.index(trigger) + 1
    lines = [*source[:at], json.dumps(alert).encode(), *source[at:]]
    run = tmp_path / "sealed"
    run.mkdir()
    (run / "records.jsonl").write_text("this file is not read: the store is\n")
    with Store.open(str(run / "store.sqlite")) as store:
        store.append_many((line, json.loads(line), None) for line in lines)
    out = tmp_path / "alerts.html"
    proc = aw("report", str(run), "-o", str(out), "--context", "3")
    assert proc.returncode == 0, proc.stderr
    with Browser() as browser:
        browser.open(out.as_uri(), RENDERED)
        assert "store.sqlite" in text_of(browser, "header")
        alerts = text_of(browser, "#alerts")
        assert "Code from a socket compiled" in alerts and "critical" in alerts
        assert "compile of code received on a socket" in alerts
        rows = browser.evaluate(
            "[...document.querySelectorAll('#alerts tbody tr')].map(r => [r.className, r.innerText])"
        )
        seqs = [int(text.split("\t")[0].replace(",", "")) for _, text in rows]
        assert seqs == list(range(trigger["seq"] - 3, trigger["seq"] + 4))
        assert [cls for cls, _ in rows].count("trigger") == 1
        trigger_row = next(text for cls, text in rows if cls == "trigger")
        assert "print('hello from the network')" in trigger_row
        assert "1 alert" in text_of(browser, "#tree")
        browser.screenshot(artifact("report-alerts.png"), max_height=2500)


def test_errors_name_the_problem(tmp_path):
    proc = aw("report", "-o", str(tmp_path / "r.html"), cwd=tmp_path)
    assert proc.returncode == 1 and "no run found" in proc.stderr
    proc = aw("report", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert proc.returncode == 1 and "does not exist" in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = aw("report", str(tmp_path / "empty"), cwd=tmp_path)
    assert proc.returncode == 1 and "is not a run directory" in proc.stderr
    bad = tmp_path / "bad"
    bad.mkdir()
    start = '{"v":1,"seq":1,"run":"ab","pid":1,"ts":1,"kind":"start","proc":{}}\n'
    (bad / "records.jsonl").write_text(
        start + start.replace('"seq":1', '"seq":2') + '{"v":1,"kind\n'
    )
    proc = aw("report", str(bad), "-o", str(tmp_path / "r.html"), cwd=tmp_path)
    assert proc.returncode == 1
    assert f"{bad / 'records.jsonl'}: line 3: not a JSON record" in proc.stderr
    assert not (tmp_path / "r.html").exists()


@pytest.mark.heavy
def test_one_million_events(tmp_path):
    """Generation and page load on a synthetic run of 1,000,000 events; the timings
    go to tests/artifacts/report-1m.json. Bounds are loose: the machine is shared."""
    started = time.monotonic()
    run = write_run(tmp_path / "big", 1_000_000)
    synthesis = time.monotonic() - started
    out = tmp_path / "big.html"
    started = time.monotonic()
    proc = aw("report", str(run), "-o", str(out), timeout=600)
    generation = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    size = out.stat().st_size
    with Browser() as browser:
        load = browser.open(out.as_uri(), RENDERED)
        page = browser.evaluate("JSON.stringify(window.auditwatchReport)")
        cards = text_of(browser, "#cards")
        assert "1,000,000\nevents" in cards and "200\nalerts" in cards
        assert "1\nmissing exit" in cards
        assert text_of(browser, "#tree").count("missing exit") == 1
        # Paged: 50 rows drawn of the 5,000 embedded of the ~10,000 files read.
        embedded = re.search(
            r"The first 5,000 of ([\d,]+) rows are embedded", text_of(browser, "#t-read")
        )
        assert embedded and int(embedded.group(1).replace(",", "")) > 9000
        assert browser.evaluate("document.querySelectorAll('#t-read tbody tr').length") == 50
        started = time.monotonic()
        set_control(browser, "f-process", option_value(browser, "f-process", "worker20 "))
        filtered = time.monotonic() - started
        assert "worker20" in text_of(browser, "#timeline")
        browser.screenshot(artifact("report-1m.png"), max_height=3000)
    page_timing = json.loads(page)
    metrics = {
        "events": 1_000_000,
        "records_file_bytes": (run / "records.jsonl").stat().st_size,
        "synthesis_s": round(synthesis, 2),
        "generation_s": round(generation, 2),
        "html_bytes": size,
        "page_load_s": round(load, 3),
        "page_painted_ms": page_timing["paintedMs"],
        "page_script_ms": round(page_timing["scriptMs"], 1),
        "page_draw_ms": page_timing["timings"],
        "process_filter_s": round(filtered, 3),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }
    artifact("report-1m.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics))
    assert size < 10_000_000  # aggregates and bounded tables, not the records
    assert generation < 240
    assert load < 20 and page_timing["paintedMs"] < 15_000
