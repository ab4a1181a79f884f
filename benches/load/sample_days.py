"""Landing days made from the bundled sample day: "sample ×K" (the issue's method).

Every vehicle of the sample (2019-06-01, 100 vehicles, 717 files) is copied K times under new
ids, in the same files, so a day is K times longer but has the same shape: the same 717 files,
the same seconds, the same two operating periods. Copy 0 keeps the original ids; copy k > 0
gets a UUID derived from (original id, k), the same on every day, so consecutive days name the
same fleet.

Days after the sample's own date are the sample shifted by whole days: the date in the keys,
file names and every timestamp moves, and the operating periods get the date appended to their
ids (``op_1-2019-06-02``) so that each day keeps its own periods in a multi-day warehouse.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from pathlib import Path

SAMPLE_DATE = dt.date(2019, 6, 1)
VEHICLE_ID = re.compile(rb'("on":"vehicle".*?"data":\{"id":")([^"]+)(")')
PERIOD_ID = re.compile(rb'("on":"operating_period".*?"data":\{"id":")([^"]+)(")')


def sample_events(landing: Path) -> int:
    """Non-blank lines of the sample."""
    return sum(
        sum(1 for line in p.read_bytes().splitlines() if line.strip()) for p in _files(landing)
    )


def _files(landing: Path) -> list[Path]:
    return sorted(p for p in landing.rglob("*-events.*") if p.is_file())


def _copy_id(original: bytes, k: int, cache: dict) -> bytes:
    key = (original, k)
    if key not in cache:
        cache[key] = (
            original
            if k == 0
            else str(uuid.uuid5(uuid.NAMESPACE_URL, f"{original!r}/{k}")).encode()
        )
    return cache[key]


def make_days(landing: Path, out: Path, first: dt.date, days: int, copies: int) -> list[dt.date]:
    """Write ``days`` consecutive landing days from ``first`` under ``out`` (keys as in
    ``landing``); returns the dates."""
    cache: dict = {}
    dates = [first + dt.timedelta(days=i) for i in range(days)]
    old_path = SAMPLE_DATE.strftime("%Y/%m/%d").encode()
    old_name = SAMPLE_DATE.isoformat().encode() + b"-"
    old_stamp = SAMPLE_DATE.isoformat().encode() + b"T"
    for path in _files(landing):
        rel = path.relative_to(landing).as_posix()
        lines = [line for line in path.read_bytes().splitlines() if line.strip()]
        # Vehicle lines, split once around their id: (head, id, tail), or the line itself.
        parts: list = []
        for line in lines:
            m = VEHICLE_ID.search(line)
            parts.append((line[: m.end(1)], m.group(2), line[m.start(3) :]) if m else line)
        for day in dates:
            new_path = day.strftime("%Y/%m/%d").encode()
            new_name = day.isoformat().encode() + b"-"
            new_stamp = day.isoformat().encode() + b"T"
            suffix = b"" if day == SAMPLE_DATE else b"-" + day.isoformat().encode()
            shift = day != SAMPLE_DATE

            def moved(text: bytes, shift=shift, new_stamp=new_stamp) -> bytes:
                return text.replace(old_stamp, new_stamp) if shift else text

            chunks = []
            for part in parts:
                if isinstance(part, tuple):
                    head, vid, tail = (moved(part[0]), part[1], moved(part[2]))
                    for k in range(copies):
                        chunks.append(head + _copy_id(vid, k, cache) + tail)
                else:
                    line = moved(part)
                    if suffix:
                        line = PERIOD_ID.sub(
                            lambda m, s=suffix: m.group(1) + m.group(2) + s + m.group(3), line
                        )
                    chunks.append(line)
            target = (
                out / rel.encode().replace(old_path, new_path).replace(old_name, new_name).decode()
            )
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"\n".join(chunks) + b"\n")
    return dates
