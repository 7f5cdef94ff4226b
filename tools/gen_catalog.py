"""Generate src/auditwatch/catalog/events.json from CPython's own sources.

Usage::

    python tools/gen_catalog.py --cpython-git DIR [--cpython-git DIR2 ...]
                                [--pyenv-root ~/.pyenv/versions | --no-interpreters]
                                [--check]

``DIR`` is a CPython git directory (bare or not), e.g. a mirror of
github.com/python/cpython. It is read with ``git show``/``git grep`` only; nothing is
checked out and nothing from it is copied into this repository except facts (event
names, argument names, format-string types, the API each event is documented at).

How each CPython version 3.8 ... 3.13 is read
----------------------------------------------
For every minor version the script picks the best revision any ``--cpython-git`` holds:

1. the newest final release tag ``v3.X.N`` (best: the released tree);
2. else the *branch point* on a branch's first-parent history: the parent of the
   commit that raised ``PY_MINOR_VERSION`` in ``Include/patchlevel.h`` from X to X+1.
   That is the tree of 3.X at feature freeze (beta 1), when the set of audit events is
   fixed; events backported in bug-fix releases are missed here (see step 4);
3. else the newest branch head whose ``patchlevel.h`` still says 3.X (a development
   snapshot; recorded as ``"dev"``).

From that tree it reads: ``.. audit-event:: NAME ARGS REF`` directives and the
"internal events" table in ``Doc/**/*.rst`` (argument names, the documented API);
``PySys_Audit("name", "fmt", ...)``, ``_PySys_Audit(tstate, "name", ...)`` and
``PySys_AuditTuple("name", ...)`` calls in C sources (argument types from the
``Py_BuildValue`` format; whether the caller checks the result, i.e. whether a hook
that raises aborts the operation); ``sys.audit("name", ...)`` calls in ``Lib/**/*.py``.
Tests and test helpers are skipped.

4. Installed interpreters (``--pyenv-root``, default ``~/.pyenv/versions``) fill the
   gaps of steps 2 and 3: for each minor version the newest installed 3.X.Y is
   scanned — ``sys.audit("...")`` literals in its standard library, and the
   NUL-terminated strings of ``libpython3.X.so*`` and ``lib-dynload/*.so`` — and every
   name that is a known event (from any version's sources) found there is recorded
   as raised by that version. tests/test_catalog.py applies the same check, so the
   checked-in catalogue stays consistent with the machine's interpreters.

The hand-written overlay (src/auditwatch/catalog/overlay.json: categories by prefix
and per event, summaries, gaps, platforms, abort behaviour) is merged last, so
regenerating never loses human-written text. Output is sorted and has no timestamps:
running the script twice on the same inputs gives the same file (``--check`` exits 1
when the checked-in file differs from what would be generated).
"""

from __future__ import annotations

import argparse
import ast
import functools
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

VERSIONS = ("3.8", "3.9", "3.10", "3.11", "3.12", "3.13")
ROOT = Path(__file__).resolve().parent.parent
CATALOG_DIR = ROOT / "src" / "auditwatch" / "catalog"

# Files that raise events only for tests, or only in test builds.
SKIP_PATH = re.compile(r"(^|/)(test|tests|idle_test|_test\w*\.c|_testembed\.c|Tools/)")
WINDOWS_FILES = re.compile(r"^(PC/|Modules/_winapi\.c|Modules/overlapped\.c|Modules/_msi)")

C_CALL = re.compile(
    r"\b(?P<fn>_?PySys_Audit(?:Tuple)?)\s*\(\s*(?:(?:ts|\w*tstate)\s*,\s*)?"
    r'"(?P<name>[^"]+)"\s*(?:,\s*(?:"(?P<fmt>[^"]*)"|(?P<nofmt>NULL)))?'
)
PY_CALL_NAME = re.compile(r"\b_?sys\.audit\(\s*(['\"])([^'\"]+)\1")
EVENT_SHAPE = re.compile(rb"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*(?:/\w+)?$")
DOC_DIRECTIVE = re.compile(r"^\s*\.\.\s+audit-event::\s+(\S+)(?:\s+(\S+))?(?:\s+(\S+))?\s*$")
DOC_CONTEXT = re.compile(
    r"^\s*\.\.\s+(?P<kind>function|method|class|classmethod|staticmethod|attribute|"
    r"c:function|module|currentmodule|decorator)::\s+(?P<sig>.+)$"
)


# ---------------------------------------------------------------- git access


def git(gitdir: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "--git-dir", str(gitdir), *args],
        check=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    return out.stdout.decode("utf-8", "replace")


def git_dir(path: Path) -> Path:
    return path / ".git" if (path / ".git").is_dir() else path


def cat_files(gitdir: Path, rev: str, paths: list[str]) -> dict[str, str]:
    """Read many blobs in one ``git cat-file --batch`` process (fast)."""
    if not paths:
        return {}
    spec = "".join(f"{rev}:{p}\n" for p in paths).encode()
    out = subprocess.run(
        ["git", "--git-dir", str(gitdir), "cat-file", "--batch"],
        input=spec,
        stdout=subprocess.PIPE,
        check=True,
    ).stdout
    result: dict[str, str] = {}
    pos = 0
    for p in paths:
        end = out.index(b"\n", pos)
        header = out[pos:end].split()
        pos = end + 1
        if header[-1] == b"missing":
            continue
        size = int(header[2])
        result[p] = out[pos : pos + size].decode("utf-8", "replace")
        pos += size + 1
    return result


def grep_files(gitdir: Path, rev: str, pattern: str, pathspecs: Iterable[str]) -> list[str]:
    try:
        out = git(gitdir, "grep", "-l", "-E", pattern, rev, "--", *pathspecs)
    except subprocess.CalledProcessError:  # no match
        return []
    return sorted(line.split(":", 1)[1] for line in out.splitlines() if line)


# ---------------------------------------------------------------- choosing revisions


@dataclass(frozen=True)
class Revision:
    gitdir: Path
    rev: str  # commit sha
    kind: str  # "tag", "branch-point", "dev"
    label: str  # human description, e.g. "v3.12.0"
    rank: tuple[int, ...]  # higher is better


@functools.lru_cache(maxsize=None)
def _minor_of(gitdir: Path, rev: str) -> int | None:
    try:
        text = git(gitdir, "show", f"{rev}:Include/patchlevel.h")
    except subprocess.CalledProcessError:
        return None
    m = re.search(r"#define\s+PY_MINOR_VERSION\s+(\d+)", text)
    major = re.search(r"#define\s+PY_MAJOR_VERSION\s+(\d+)", text)
    if not m or not major or major.group(1) != "3":
        return None
    return int(m.group(1))


def _tag_revisions(gitdir: Path) -> Iterator[tuple[str, Revision]]:
    for tag in git(gitdir, "tag", "-l", "v3.*").split():
        m = re.fullmatch(r"v3\.(\d+)\.(\d+)", tag)
        if not m:
            continue
        sha = git(gitdir, "rev-parse", f"{tag}^{{commit}}").strip()
        version = f"3.{m.group(1)}"
        yield version, Revision(gitdir, sha, "tag", tag, (3, int(m.group(2))))


def _branch_revisions(gitdir: Path) -> Iterator[tuple[str, Revision]]:
    refs = git(gitdir, "for-each-ref", "--format=%(refname)", "refs/heads", "refs/remotes")
    for ref in refs.split():
        head_minor = _minor_of(gitdir, ref)
        if head_minor is None or head_minor < 8:
            continue  # 2.x or too old a branch
        # 3.8.0a0 began in 2018: older history cannot hold a supported branch point.
        log = git(
            gitdir,
            "log",
            "--first-parent",
            "--since=2018-01-01",
            "--format=%H %ct",
            ref,
            "--",
            "Include/patchlevel.h",
        ).split("\n")
        commits = [line.split() for line in log if line]
        head_sha, head_time = git(gitdir, "log", "-1", "--format=%H %ct", ref).split()
        if head_minor is not None:
            label = f"{ref} head {head_sha[:10]}"
            yield f"3.{head_minor}", Revision(gitdir, head_sha, "dev", label, (1, int(head_time)))
        # Walk newest to oldest; where the minor version goes up, the parent is a branch point.
        for sha, _ in commits:
            this = _minor_of(gitdir, sha)
            if this is None or this < 8:
                break  # older than any supported version
            minor = _minor_of(gitdir, sha + "^")
            if minor is not None and this == minor + 1:
                parent = git(gitdir, "rev-parse", sha + "^").strip()
                ptime = int(git(gitdir, "log", "-1", "--format=%ct", parent).strip())
                label = f"branch point of 3.{minor} ({parent[:10]})"
                yield f"3.{minor}", Revision(gitdir, parent, "branch-point", label, (2, ptime))


def choose_revisions(gitdirs: list[Path]) -> dict[str, Revision]:
    best: dict[str, Revision] = {}
    for gitdir in gitdirs:
        for version, rev in [*_tag_revisions(gitdir), *_branch_revisions(gitdir)]:
            if version in VERSIONS and (version not in best or rev.rank > best[version].rank):
                best[version] = rev
    return best


# ---------------------------------------------------------------- reading one tree


@dataclass
class Site:
    """One place that raises or documents an event in one version."""

    kind: str  # "doc", "c", "py", "binary", "stdlib"
    path: str
    args: tuple[str, ...] = ()  # argument names (doc) or expressions (code)
    types: tuple[str, ...] = ()
    ref: str = ""  # documented API
    checked: bool | None = None  # C: caller checks the result


@dataclass
class VersionScan:
    version: str
    source: str
    sites: dict[str, list[Site]] = field(default_factory=dict)

    def add(self, name: str, site: Site) -> None:
        self.sites.setdefault(name, []).append(site)


_SIMPLE = {"O": "object", "S": "object", "N": "object", "s": "str", "U": "str", "z": "str | None"}
_SIMPLE.update({"y": "bytes", "d": "float", "f": "float", "p": "bool", "C": "str", "c": "bytes"})
_SIMPLE.update(dict.fromkeys("bBhHiIlkLKn", "int"))
_OPEN = {"(": ")", "[": "]", "{": "}"}
_CONTAINER = {"(": "tuple", "[": "list", "{": "dict"}


def format_types(fmt: str | None) -> tuple[str, ...]:
    """Top-level Python types a Py_BuildValue format builds, e.g. "Osi" -> object, str, int."""
    if not fmt:
        return ()
    fmt = fmt.replace(" ", "")
    if fmt.startswith("(") and _group_end(fmt) == len(fmt) - 1:
        fmt = fmt[1:-1]  # "(O)" builds the argument tuple itself: its items are the args
    types: list[str] = []
    depth = 0
    for ch in fmt:
        if depth:
            depth += ch in _OPEN
            depth -= ch in _OPEN.values()
        elif ch in _OPEN:
            types.append(_CONTAINER[ch])
            depth = 1
        elif ch in _SIMPLE:
            types.append(_SIMPLE[ch])
        # '#', '&', '!' and spaces modify the previous unit; they add no argument.
    return tuple(types)


def _group_end(fmt: str) -> int:
    depth = 0
    for i, ch in enumerate(fmt):
        depth += ch in _OPEN
        depth -= ch in _OPEN.values()
        if depth == 0:
            return i
    return -1


def _split_c_args(text: str) -> list[str]:
    """Split the argument list that follows the format string at top-level commas."""
    args: list[str] = []
    depth, cur = 0, ""
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            if depth == 0:
                break
            depth -= 1
        elif ch == "," and depth == 0:
            args.append(cur.strip())
            cur = ""
            continue
        cur += ch
    if cur.strip():
        args.append(cur.strip())
    return [" ".join(a.split()) for a in args]


def _is_checked(text: str, start: int) -> bool:
    """Does the C caller use the result (``if (PySys_Audit(...) < 0)``, ``x = ...``)?"""
    line_start = text.rfind("\n", 0, start) + 1
    before = text[line_start:start].strip()
    return not (
        before == "" or before.endswith(";") or before.endswith("{") or before.endswith("}")
    )


def scan_c(scan: VersionScan, path: str, text: str) -> None:
    windows = bool(WINDOWS_FILES.match(path))
    for m in C_CALL.finditer(text):
        name = m.group("name")
        if not EVENT_SHAPE.match(name.encode()):
            continue
        fmt = m.group("fmt")
        rest = text[m.end() :]
        args = _split_c_args(rest[1:]) if fmt is not None and rest.lstrip().startswith(",") else []
        if m.group("fn") == "PySys_AuditTuple":
            fmt = None  # the tuple is built elsewhere; types unknown here
        site = Site("c", path + (" [windows]" if windows else ""), tuple(args))
        site.types = format_types(fmt)
        site.checked = _is_checked(text, m.start())
        scan.add(name, site)


def _py_arg(node: ast.expr, source: str) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Starred):
        return "*" + _py_arg(node.value, source)
    return ast.get_source_segment(source, node) or "?"


def scan_py(scan: VersionScan, path: str, text: str) -> None:
    try:
        tree = ast.parse(text)
    except SyntaxError:  # newer syntax than this interpreter knows: names only
        for m in PY_CALL_NAME.finditer(text):
            scan.add(m.group(2), Site("py", path))
        return
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr != "audit" or not node.args:
            continue
        first = node.args[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            args = tuple(_py_arg(a, text) for a in node.args[1:])
            scan.add(first.value, Site("py", path, args))


def _doc_context(lines: list[str], index: int) -> str:
    """The API the directive at ``lines[index]`` belongs to: nearest preceding directive."""
    module, what = "", ""
    for line in lines[:index]:
        m = DOC_CONTEXT.match(line)
        if not m:
            continue
        kind, sig = m.group("kind"), m.group("sig").strip()
        if kind in ("module", "currentmodule"):
            module = sig
        elif kind == "c:function":
            what = "C API " + re.sub(r"^.*?(\w+)\s*\(.*$", r"\1", sig)
        else:
            what = sig.split("(")[0].strip()
            if module and kind != "class" and not what.startswith(module + "."):
                what = f"{module}.{what}"
    return what


def scan_docs(scan: VersionScan, path: str, text: str) -> None:
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = DOC_DIRECTIVE.match(line)
        if not m:
            continue
        name, raw_args, ref = m.group(1), m.group(2) or "", m.group(3) or ""
        args = tuple(a.strip() for a in raw_args.strip('"').split(",") if a.strip())
        ref = ref or _doc_context(lines, i)
        windows = "windows" if re.search(r"(winreg|msvcrt|winsound|msilib)\.rst$", path) else ""
        scan.add(name, Site("doc", path + (" [windows]" if windows else ""), args, ref=ref))
    if path.endswith("audit_events.rst"):
        scan_internal_table(scan, path, text)


def scan_internal_table(scan: VersionScan, path: str, text: str) -> None:
    """The grid table of events "raised internally" in Doc/library/audit_events.rst."""
    current: list[str] | None = None
    for line in text.splitlines():
        if not line.startswith("|"):
            if current and line.startswith("+"):
                _add_table_row(scan, path, current)
                current = None
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != 2 or cells[0] == "Audit event":
            continue
        if cells[0]:
            current = [cells[0], cells[1]]
        elif current:
            current[1] += " " + cells[1]


def _add_table_row(scan: VersionScan, path: str, row: list[str]) -> None:
    name = row[0]
    args = tuple(re.findall(r"``(\w+)``", row[1]))
    windows = " [windows]" if name.startswith(("_winapi.", "winreg.", "msvcrt.")) else ""
    scan.add(name, Site("doc", path + windows, args, ref="internal"))


def scan_revision(version: str, rev: Revision) -> VersionScan:
    scan = VersionScan(version, f"{rev.label} ({rev.kind}, {rev.rev[:12]})")
    specs = {
        "c": (r"PySys_Audit", ["*.c", "*.h"]),
        "py": (r"audit\(", ["Lib/*.py"]),
        "doc": (r"audit-event|Audit event", ["Doc/*.rst"]),
    }
    readers = {"c": scan_c, "py": scan_py, "doc": scan_docs}
    for kind, (pattern, pathspecs) in specs.items():
        paths = [p for p in grep_files(rev.gitdir, rev.rev, pattern, pathspecs)]
        paths = [p for p in paths if not SKIP_PATH.search(p) or kind == "doc"]
        for path, text in sorted(cat_files(rev.gitdir, rev.rev, paths).items()):
            readers[kind](scan, path, text)
    return scan


# ---------------------------------------------------------------- installed interpreters


def installed_interpreters(root: Path) -> dict[str, Path]:
    """Newest installed 3.X.Y prefix per supported minor version."""
    found: dict[str, tuple[int, Path]] = {}
    for prefix in sorted(root.glob("3.*")) if root.is_dir() else []:
        m = re.fullmatch(r"(3\.\d+)\.(\d+)", prefix.name)
        if m and m.group(1) in VERSIONS and int(m.group(2)) >= found.get(m.group(1), (-1,))[0]:
            found[m.group(1)] = (int(m.group(2)), prefix)
    return {v: p for v, (_, p) in found.items()}


BINARY_STRING = re.compile(rb"\x00([A-Za-z_][A-Za-z0-9_./]{1,98})(?=\x00)")


def binary_strings(paths: Iterable[Path]) -> set[str]:
    """NUL-terminated strings shaped like event names, read from shared objects."""
    names: set[str] = set()
    for path in paths:
        found = set(BINARY_STRING.findall(path.read_bytes()))
        names.update(s.decode("ascii") for s in found if EVENT_SHAPE.match(s))
    return names


def interpreter_files(prefix: Path, version: str) -> tuple[list[Path], list[Path]]:
    libdir = prefix / "lib" / f"python{version}"
    shared = sorted(prefix.glob(f"lib/libpython{version}*.so*"))
    shared += sorted((libdir / "lib-dynload").glob("*.so"))
    sources = [p for p in sorted(libdir.rglob("*.py")) if not SKIP_PATH.search(str(p))]
    sources = [p for p in sources if "site-packages" not in p.parts]
    return shared, sources


def scan_interpreter(version: str, prefix: Path, known: set[str]) -> VersionScan:
    scan = VersionScan(version, f"interpreter {prefix.name}")
    shared, sources = interpreter_files(prefix, version)
    for name in sorted(binary_strings(shared) & known):
        scan.add(name, Site("binary", f"{prefix.name} binaries"))
    for path in sources:
        text = path.read_text("utf-8", "replace")
        if "audit(" in text:
            for m in PY_CALL_NAME.finditer(text):
                scan.add(m.group(2), Site("stdlib", str(path.relative_to(prefix))))
    return scan


# ---------------------------------------------------------------- merging


def _args_of(sites: list[Site]) -> tuple[tuple[str, str], ...]:
    """Argument names (docs win, then Python, then C expressions) with C types."""
    docs = [s for s in sites if s.kind == "doc" and s.args]
    pys = [s for s in sites if s.kind == "py" and s.args]
    cs = [s for s in sites if s.kind == "c"]
    names: tuple[str, ...] = docs[0].args if docs else pys[0].args if pys else ()
    if not names and cs:
        names = tuple(_c_arg_name(a) for a in cs[0].args)
    types: tuple[str, ...] = ()
    for s in cs:
        if s.types and len(s.types) == len(names):
            types = s.types
            break
    if not types:
        types = ("",) * len(names)
    return tuple(zip(names, types))


def _c_arg_name(expr: str) -> str:
    words = re.findall(r"[A-Za-z_]\w*", expr)
    words = [w for w in words if w not in {"Py_None", "NULL", "self", "const", "char"}]
    return words[-1] if words else expr


def _platforms(sites: list[Site]) -> tuple[str, ...]:
    located = [s for s in sites if s.kind in ("c", "doc", "py")]
    if located and all(s.path.endswith("[windows]") for s in located):
        return ("windows",)
    return ("all",)


def _aborts(sites: list[Site]) -> bool | None:
    cs = [s.checked for s in sites if s.kind == "c"]
    if cs:
        return all(cs) if len(set(cs)) == 1 else None
    if any(s.kind in ("py", "stdlib") for s in sites):
        return True  # sys.audit() raises the hook's exception in the caller
    return None


def _default_summary(name: str, sites: list[Site]) -> str:
    """A plain summary from the documented API; overlay.json replaces it where it matters."""
    refs = [s.ref for s in sites if s.kind == "doc" and s.ref and s.ref != "internal"]
    if refs:
        ref = refs[0]
        if ref.startswith("c."):
            return f"Call to the C API function {ref[2:]}()."
        if ref.startswith("C API "):
            return f"Call to the C API function {ref[6:]}()."
        return f"Call to {ref}()."
    code = sorted({s.path.split(" ")[0] for s in sites if s.kind in ("c", "py")})
    if code:
        return f"Internal operation in {', '.join(code[:2])} (no documented API)."
    return "Internal operation (listed in CPython's audit events table, no public API)."


def merge(scans: dict[str, list[VersionScan]], overlay: dict) -> tuple[list[dict], list[str]]:
    """One entry per event name; returns the entries and warnings for the human."""
    per_event: dict[str, dict[str, list[Site]]] = {}
    for version, version_scans in scans.items():
        for scan in version_scans:
            for name, sites in scan.sites.items():
                per_event.setdefault(name, {}).setdefault(version, []).extend(sites)
    warnings: list[str] = []
    entries = []
    for name in sorted(per_event):
        by_version = per_event[name]
        raised = [v for v in VERSIONS if v in by_version]
        newest = by_version[raised[-1]]
        all_sites = [s for v in raised for s in by_version[v]]
        args = _args_of(newest) or _args_of(all_sites)
        entry = {
            "name": name,
            "args": [list(a) for a in args],
            "category": category_for(name, overlay),
            "first": raised[0],
            "last": None if raised[-1] == VERSIONS[-1] else raised[-1],
            "versions": raised,
            "platforms": list(_platforms(all_sites)),
            "summary": _default_summary(name, newest + all_sites),
            "aborts": _aborts(all_sites),
            "gaps": entry_gaps(name, by_version, raised),
            "documented": any(s.kind == "doc" for s in all_sites),
        }
        human = overlay.get("events", {}).get(name, {})
        entry.update(human)
        if human.get("gaps") and entry_gaps(name, by_version, raised):
            # Keep the machine-found facts (holes, argument changes) after the human text.
            entry["gaps"] = human["gaps"] + " " + entry_gaps(name, by_version, raised) + "."
        if name not in overlay.get("events", {}):
            warnings.append(f"no overlay entry for {name}")
        if not any(s.kind != "doc" for s in all_sites):
            warnings.append(f"{name} is documented but no code raising it was found")
        entries.append(entry)
    for name in sorted(set(overlay.get("events", {})) - set(per_event)):
        warnings.append(f"overlay entry for unknown event {name}")
    for entry in entries:
        if entry["category"] not in overlay["categories"]:
            raise SystemExit(f"{entry['name']}: unknown category {entry['category']!r}")
    return entries, warnings


def entry_gaps(name: str, by_version: dict[str, list[Site]], raised: list[str]) -> str:
    notes = []
    holes = [v for v in VERSIONS[VERSIONS.index(raised[0]) :] if v not in by_version]
    holes = [v for v in holes if VERSIONS.index(v) < VERSIONS.index(raised[-1])]
    if holes:
        notes.append(f"not found in {', '.join(holes)}")
    changes = []
    previous: tuple[tuple[str, ...], bool] | None = None
    for v in raised:
        sites = by_version[v]
        current = (
            tuple(a for a, _ in _args_of(sites)),
            any(s.kind == "doc" and s.args for s in sites),
        )
        if current[0] and previous and previous[0] and _args_differ(previous, current):
            changes.append(f"{v}: ({', '.join(previous[0])}) -> ({', '.join(current[0])})")
        previous = current if current[0] else previous
    if changes:
        notes.append("arguments changed in " + "; ".join(changes))
    return "; ".join(notes)


def _args_differ(old: tuple[tuple[str, ...], bool], new: tuple[tuple[str, ...], bool]) -> bool:
    """A different count, or different documented names (names read from code vary)."""
    if len(old[0]) != len(new[0]):
        return True
    return old[1] and new[1] and old[0] != new[0]


def category_for(name: str, overlay: dict) -> str:
    event = overlay.get("events", {}).get(name, {})
    if "category" in event:
        return event["category"]
    best = ("", "other")
    for prefix, category in overlay.get("prefix_categories", {}).items():
        if (name == prefix or name.startswith(prefix)) and len(prefix) > len(best[0]):
            best = (prefix, category)
    return best[1]


# ---------------------------------------------------------------- main


def build(gitdirs: list[Path], pyenv_root: Path | None, overlay: dict) -> tuple[dict, list]:
    revisions = choose_revisions([git_dir(g) for g in gitdirs])
    scans: dict[str, list[VersionScan]] = {v: [] for v in VERSIONS}
    for version, rev in sorted(revisions.items()):
        scans[version].append(scan_revision(version, rev))
    known = {n for vs in scans.values() for s in vs for n in s.sites}
    interpreters = installed_interpreters(pyenv_root) if pyenv_root else {}
    for version, prefix in sorted(interpreters.items()):
        stdlib_scan = scan_interpreter(version, prefix, known)
        known |= set(stdlib_scan.sites)
        scans[version].append(stdlib_scan)
    entries, warnings = merge(scans, overlay)
    sources = {v: [s.source for s in scans[v]] for v in VERSIONS}
    missing = [v for v in VERSIONS if not scans[v]]
    warnings += [f"no source at all for {v}" for v in missing]
    data = {
        "schema": 1,
        "versions": list(VERSIONS),
        "categories": overlay["categories"],
        "sources": sources,
        "events": entries,
    }
    return data, warnings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpython-git", action="append", type=Path, required=True)
    parser.add_argument("--pyenv-root", type=Path, default=Path("~/.pyenv/versions").expanduser())
    parser.add_argument("--no-interpreters", action="store_true")
    parser.add_argument("--overlay", type=Path, default=CATALOG_DIR / "overlay.json")
    parser.add_argument("--out", type=Path, default=CATALOG_DIR / "events.json")
    parser.add_argument("--check", action="store_true", help="exit 1 if --out would change")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every warning")
    opts = parser.parse_args(argv)
    overlay = json.loads(opts.overlay.read_text("utf-8"))
    pyenv = None if opts.no_interpreters else opts.pyenv_root
    data, warnings = build(opts.cpython_git, pyenv, overlay)
    text = json.dumps(data, indent=1, sort_keys=False, ensure_ascii=False) + "\n"
    for version, sources in data["sources"].items():
        print(f"{version}: {'; '.join(sources) or 'NONE'}", file=sys.stderr)
    shown = warnings if opts.verbose else [w for w in warnings if "overlay" not in w]
    for warning in shown:
        print("warning:", warning, file=sys.stderr)
    print(f"{len(data['events'])} events, {len(warnings)} warnings", file=sys.stderr)
    if opts.check:
        current = opts.out.read_text("utf-8") if opts.out.exists() else ""
        return 0 if current == text else 1
    if not opts.out.exists() or opts.out.read_text("utf-8") != text:
        opts.out.write_text(text, "utf-8")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("GIT_PAGER", "cat")
    sys.exit(main())
