"""What an :class:`~trex.events.log.EventLog` keeps between reads, so that a read after a position is cheap.

* Sealed segments are immutable: the (min, max) seq of each search in one is read once (from the
  Parquet footer's ``trex.seq_ranges``, or from its columns for segments sealed before that key
  existed) and a read after seq N skips every segment whose max seq for the search is ≤ N.
* The open segment is parsed incrementally: the byte offset already decoded is remembered, and a
  later read decodes only the bytes appended since. The cache is dropped if the file is replaced
  (``verify --repair``) or shrinks.
"""
from __future__ import annotations

import bisect
import os
import threading
from pathlib import Path

from trex.events import records
from trex.events.fsio import open_nofollow


class OpenTail:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._reset(None, None)

    def _reset(self, n, ino) -> None:
        self.n, self.ino, self.version, self.end = n, ino, None, 0
        self.records: list[dict] = []
        self.by_search: dict[str, list[dict]] = {}

    def update(self, path: Path, n: int) -> None:
        """Decode what was appended to open segment ``n`` since the last call. Caller holds ``lock``."""
        fd = open_nofollow(path, os.O_RDONLY)
        try:
            st = os.fstat(fd)
            if self.n != n or self.ino != st.st_ino or st.st_size < self.end:
                self._reset(n, st.st_ino)
            if st.st_size <= self.end:
                return
            os.lseek(fd, self.end, os.SEEK_SET)
            chunks = []
            while True:
                b = os.read(fd, 1 << 20)
                if not b:
                    break
                chunks.append(b)
        finally:
            os.close(fd)
        data = b"".join(chunks)
        sc = records.scan(data, path.name, base=self.end, version=self.version if self.end else None)
        if self.end == 0:
            self.version = sc.version
        self.records.extend(sc.records)
        for r in sc.records:
            self.by_search.setdefault(r["search_id"], []).append(r)
        self.end = sc.end

    def select(self, search_id: str | None, after_seq: int, until_seq: int | None) -> list[dict]:
        if search_id is None:
            recs = self.records
            if after_seq or until_seq is not None:
                return [r for r in recs if r["seq"] > after_seq and (until_seq is None or r["seq"] <= until_seq)]
            return list(recs)
        recs = self.by_search.get(search_id, [])
        lo = bisect.bisect_right(recs, after_seq, key=_seq) if after_seq else 0
        hi = bisect.bisect_right(recs, until_seq, key=_seq) if until_seq is not None else len(recs)
        return recs[lo:hi]


def _seq(r: dict) -> int:
    return r["seq"]


class SealedRanges:
    """Per sealed segment number: {search_id: (min seq, max seq)}; read once, segments never change."""

    def __init__(self) -> None:
        self._ranges: dict[tuple[str, int], dict[str, tuple[int, int]]] = {}

    def get(self, path: Path, n: int) -> dict[str, tuple[int, int]]:
        key = (str(path), n)
        r = self._ranges.get(key)
        if r is None:
            from trex.events import segments

            r = self._ranges[key] = segments.seq_ranges(path)
        return r

    @staticmethod
    def may_hold(ranges: dict[str, tuple[int, int]], search_id: str | None, after_seq: int,
                 until_seq: int | None) -> bool:
        if search_id is None:
            if not ranges:
                return False
            lo, hi = min(v[0] for v in ranges.values()), max(v[1] for v in ranges.values())
        else:
            if search_id not in ranges:
                return False
            lo, hi = ranges[search_id]
        return hi > after_seq and (until_seq is None or lo <= until_seq)
