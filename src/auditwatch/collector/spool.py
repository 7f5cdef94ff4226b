"""Leftover spool files: records that processes wrote locally while no collector
answered (``<spool dir>/<run>-<pid>.jsonl``, docs/collector.md).

A process that is still alive replays its own spool after it reconnects; the
collector reads the files as well, at start-up and periodically, so the records of
processes that died meanwhile are not lost. Both paths go through the Sequencer,
which takes each (run, seq) once. Files are read from where the last scan stopped,
up to the last complete line (a writer may be in the middle of one).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import time
from typing import Callable

Feed = Callable[[bytes], None]

_NAME = re.compile(r"^(?P<run>[0-9a-f]+)-(?P<pid>\d+)\.jsonl$")
READ_BYTES = 1 << 20


class SpoolIngest:
    def __init__(
        self, directory: str, feed: Feed, *, every: float = 5.0, remove_done: bool = True
    ) -> None:
        self.directory = directory
        self.feed = feed
        self.every = every
        self.remove_done = remove_done  # delete a file once read and its process is gone
        self._offsets: dict[tuple[int, int], int] = {}  # (dev, ino) -> bytes consumed
        self._next = 0.0
        self.lines = 0
        self.files_removed = 0

    def tick(self) -> None:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.every
            self.scan()

    def scan(self) -> int:
        """Read what is new in every spool file; returns the number of lines fed."""
        try:
            names = sorted(os.listdir(self.directory))
        except OSError:
            return 0
        fed = 0
        for name in names:
            m = _NAME.match(name)
            if m is None:
                continue
            fed += self._read(os.path.join(self.directory, name), int(m.group("pid")))
        self.lines += fed
        return fed

    def _read(self, path: str, pid: int) -> int:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return 0
        fed = 0
        try:
            st = os.fstat(fd)
            if not _is_regular(st.st_mode):
                return 0
            key = (st.st_dev, st.st_ino)
            offset = self._offsets.get(key, 0)
            if st.st_size < offset:
                offset = 0  # truncated and rewritten: read it again (replays are skipped)
            rest = b""
            while True:
                chunk = os.pread(fd, READ_BYTES, offset + len(rest))
                if not chunk:
                    break
                data = rest + chunk
                end = data.rfind(b"\n")
                if end < 0:
                    rest = data
                    continue
                for line in data[:end].split(b"\n"):
                    if line:
                        self.feed(line)
                        fed += 1
                offset += end + 1
                rest = data[end + 1 :]
            self._offsets[key] = offset
            if self.remove_done and not rest and not _alive(pid):
                with contextlib.suppress(OSError):
                    os.unlink(path)
                    self._offsets.pop(key, None)
                    self.files_removed += 1
        finally:
            os.close(fd)
        return fed


def _is_regular(mode: int) -> bool:
    return stat.S_ISREG(mode)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM  # exists, belongs to someone else
    return True
