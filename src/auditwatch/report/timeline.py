"""Event counts over time by category, kept in bounded memory.

Records arrive in store order, not time order, and the time span is not known until
the end. Counts are kept per power-of-two-nanosecond bucket; when there are too many
buckets the bucket width doubles and neighbours merge, so memory stays bounded
however long the run. At the end the buckets are laid onto a fixed number of columns.
"""

from __future__ import annotations

CAT_BITS = 4  # keys are (bucket << CAT_BITS) | category index: 13 categories fit
CAT_MASK = (1 << CAT_BITS) - 1


class Buckets:
    def __init__(self, max_keys: int, shift: int = 20) -> None:
        self.max_keys = max_keys
        self.shift = shift  # bucket width is 2**shift ns; 2**20 ns is about 1 ms
        self.counts: dict[int, int] = {}

    def add(self, ts: int, cat: int) -> None:
        key = ((ts >> self.shift) << CAT_BITS) | cat
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1
        if len(counts) > self.max_keys:
            self._coarsen()

    def _coarsen(self) -> None:
        merged: dict[int, int] = {}
        for key, n in self.counts.items():
            k = ((key >> (CAT_BITS + 1)) << CAT_BITS) | (key & CAT_MASK)
            merged[k] = merged.get(k, 0) + n
        self.counts = merged
        self.shift += 1

    def span(self) -> tuple[int, int] | None:
        """First and last nanosecond covered, or None when empty."""
        if not self.counts:
            return None
        buckets = [key >> CAT_BITS for key in self.counts]
        return min(buckets) << self.shift, (max(buckets) + 1) << self.shift

    def columns(self, start: int, width: float, ncols: int) -> dict[int, list[int]]:
        """Counts per category index on the grid ``start + i * width``."""
        out: dict[int, list[int]] = {}
        half = (1 << self.shift) // 2
        for key, n in self.counts.items():
            mid = ((key >> CAT_BITS) << self.shift) + half
            col = min(ncols - 1, max(0, int((mid - start) / width)))
            row = out.get(key & CAT_MASK)
            if row is None:
                row = out[key & CAT_MASK] = [0] * ncols
            row[col] += n
        return out
