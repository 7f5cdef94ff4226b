"""A synthetic run directory of any size, shaped like what ``auditwatch run`` writes.

Records follow docs/schema.md: a tree of processes (one of them killed, so without
an exit record), and an event mix like a real program's (imports with the full
``sys.path``, opens, bytecode loads, exec of code objects, compiles, sockets,
spawns, attribute access) with alerts from the collector spread through it.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SYS_PATH = json.dumps(
    [
        "/usr/lib/python311.zip",
        "/usr/lib/python3.11",
        "/usr/lib/python3.11/lib-dynload",
        "/srv/app/.venv/lib/python3.11/site-packages",
    ]
)
META_PATH = '[{"$":"type","name":"BuiltinImporter"},{"$":"type","name":"FrozenImporter"},{"$":"type","name":"PathFinder"}]'
T0 = 1_700_000_000_000_000_000


def _head(seq: int, run: str, parent: str | None, pid: int, ts: int) -> str:
    parent_json = f'"{parent}"' if parent else "null"
    return f'{{"v":1,"seq":{seq},"run":"{run}","parent_run":{parent_json},"pid":{pid},"installed":"site","ts":{ts}'


def _event(i: int, rnd: random.Random) -> tuple[str, str]:
    """(event name, args JSON) for the i-th event of a process."""
    k = i % 20
    if k < 5:
        mod = f"pkg{i % 700}.mod{i % 13}"
        return "import", f'["{mod}",null,{SYS_PATH},{META_PATH},[]]'
    if k < 9:
        n = i // 20 * 4 + k - 5  # a new file each time, as many as there are events
        path = f"/srv/app/data/dir{n % 50}/file{n}.json"
        return "open", f'["{path}","r",524288]'
    if k == 9:
        return "open", f'["/srv/app/out/result{i % 300}.txt","w",524865]'
    if k < 12:
        return "marshal.loads", f'[{{"$":"bytes","len":4000,"b64":"{"4wAAAAAAAAAA" * 12}"}}]'
    if k < 14:
        code = f'{{"$":"code","name":"<module>","file":"/srv/app/pkg{i % 700}/mod.py","line":1,"sha256":"{i % 700:064x}"}}'
        return "exec", f"[{code}]"
    if k == 14:
        src = f"lambda _cls, a{i % 40}, b: _tuple_new(_cls, (a{i % 40}, b))"
        return "compile", f'[{{"$":"bytes","len":{len(src)},"text":"{src}"}},"<string>"]'
    if k == 15:
        code = f'{{"$":"code","name":"<module>","file":"<string>","line":1,"sha256":"{(i % 40) + 10**6:064x}"}}'
        return "exec", f"[{code}]"
    if k == 16:
        host = f"10.{i % 7}.{i % 250}.{i % 200}"
        return "socket.connect", f'[{{"$":"object","type":"socket"}},["{host}",{443 + i % 3}]]'
    if k == 17 and i % 2000 == 17:
        return "subprocess.Popen", f'["/usr/bin/git",["git","status","--short","{i}"],null,null]'
    if k == 18:
        return "object.__getattr__", f'[{{"$":"function","name":"f{i % 90}"}},"__code__"]'
    return "os.listdir", f'["/srv/app/data/dir{rnd.randrange(50)}"]'


def write_run(directory: Path, events: int, processes: int = 21, alerts: int = 200) -> Path:
    """Write ``directory/records.jsonl`` (and command.json) with ``events`` event
    records spread over ``processes`` processes; returns the directory."""
    rnd = random.Random(6)
    directory.mkdir(parents=True, exist_ok=True)
    runs = [f"{n:032x}" for n in range(1, processes + 1)]
    parents = [None] + [runs[(n - 1) // 4] for n in range(1, processes)]
    per_run = events // processes
    span = 60 * 10**9  # the run lasts a minute
    step = span // max(1, per_run)
    alert_every = max(1, per_run * processes // max(1, alerts))
    emitted = 0
    with open(directory / "records.jsonl", "w", encoding="utf-8") as out:
        for n, run in enumerate(runs):
            pid = 1000 + n
            start = T0 + n * 10**9 // 2
            head = _head(1, run, parents[n], pid, start)
            argv = json.dumps(["/srv/app/.venv/bin/python", "-m", f"worker{n}", "--task", str(n)])
            out.write(
                f'{head},"kind":"start","proc":{{"exe":"/usr/bin/python3.11","argv":{argv},'
                f'"cwd":"/srv/app","uid":1000,"gid":1000,"user":"app","ppid":{pid - 1},'
                f'"python":"3.11.7 (main)","fork":false,"host":"build-7"}}}}\n'
            )
            count = per_run + (events - per_run * processes if n == processes - 1 else 0)
            lines = []
            for i in range(count):
                seq = i + 2
                ts = start + i * step
                name, args = _event(i, rnd)
                lines.append(
                    f'{_head(seq, run, parents[n], pid, ts)},"tid":{pid},"interp":0,"kind":"event",'
                    f'"event":"{name}","args":{args},"where":{{"file":"/srv/app/worker.py",'
                    f'"line":{10 + i % 300},"func":"step"}},"action":"record"}}\n'
                )
                emitted += 1
                if emitted % alert_every == 0:
                    lines.append(
                        f'{{"v":1,"kind":"alert","ts":{ts + 1000},"run":"{run}","seq":{seq},'
                        f'"parent_run":null,"pid":{pid},"rule":"Synthetic rule {emitted % 7}",'
                        f'"priority":"warning","tags":["mitre_execution","T1059"],'
                        f'"output":"{name} seen in worker{n} (seq {seq})","event":"{name}",'
                        f'"record_ts":{ts},"action":"alert"}}\n'
                    )
                if len(lines) >= 10_000:
                    out.writelines(lines)
                    lines.clear()
            out.writelines(lines)
            if n != processes - 1:  # the last process was killed: no exit record
                end = start + count * step
                out.write(
                    f'{_head(count + 2, run, parents[n], pid, end)},"kind":"exit",'
                    f'"status":{{"how":"exit","code":0}}}}\n'
                )
    (directory / "command.json").write_text(
        json.dumps({"argv": ["/srv/app/.venv/bin/python", "-m", "app"], "cwd": "/srv/app"}) + "\n"
    )
    return directory
