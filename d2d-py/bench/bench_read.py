"""Bench: ``d2d.read_events(...).to_pandas()`` against the natural pandas route.

Run with a release build of the bindings (numbers from a debug build mean nothing):

    (cd d2d-py && maturin develop --release)
    python d2d-py/bench/bench_read.py [--landing testdata/landing] [--times 10] [--repeat 3]

Inputs: the sample day, and the day repeated ``--times`` times into a temporary folder (each copy
with its own organisation id, so the copies are distinct events and not de-duplicated away).

Methods, each producing one typed row per event (UTC timestamps, float64 coordinates):

- ``d2d``: ``d2d.read_events(folder).events.to_pandas()``.
- ``pandas``: ``pandas.read_json(path, lines=True)`` per file, ``pandas.concat``,
  ``pandas.json_normalize`` of the ``data`` column, and ``pandas.to_datetime(..., utc=True)`` of
  the four timestamp columns (read_json leaves ``at`` as text).

Every run is a fresh child process that imports pandas, pyarrow and d2d and warms the method up
on 3 files (lazy imports), then reads the RSS (the baseline) and runs the method once. Time is
the best of ``--repeat`` runs; memory is the largest growth of the child's peak resident set
size (``ru_maxrss``, which sees the Rust and Arrow allocations that tracemalloc does not) over
its baseline.
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TIMESTAMPS = ["at", "data.location.at", "data.start", "data.finish"]


def _rss_mb() -> float:
    """Current resident set size, from /proc (Linux)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _landing_key(path: Path) -> tuple:
    m = re.fullmatch(r"(\d+)-(\d+)-(\d+)-(\d+)-(\d+)-(\d+)-events\.\w+", path.name)
    numbers = tuple(int(g) for g in m.groups()) if m else (sys.maxsize,)
    return (*numbers, str(path))


def _files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.rglob("*") if p.is_file()), key=_landing_key)


def run_d2d(folder: Path):
    import d2d  # noqa: PLC0415 -- imported by the child before timing

    return d2d.read_events(folder).events.to_pandas()


def run_pandas(folder: Path):
    import pandas as pd  # noqa: PLC0415 -- imported by the child before timing

    frames = [pd.read_json(path, lines=True) for path in _files(folder)]
    raw = pd.concat(frames, ignore_index=True)
    data = pd.json_normalize(raw.pop("data").tolist()).add_prefix("data.")
    df = pd.concat([raw, data], axis=1)
    for column in (c for c in TIMESTAMPS if c in df):
        df[column] = pd.to_datetime(df[column], utc=True, format="ISO8601")
    return df


METHODS = {"d2d": run_d2d, "pandas": run_pandas}


def child(method: str, folder: Path) -> None:
    """Runs one method once in this (fresh) process and prints its figures as JSON."""
    import pandas  # noqa: F401, PLC0415
    import pyarrow  # noqa: F401, PLC0415

    import d2d  # noqa: F401, PLC0415 -- same imports for every method: the baseline

    # A warm-up on a few files loads what each route imports lazily, so that the growth below
    # is the data's, not the code's.
    with tempfile.TemporaryDirectory() as few:
        for path in _files(folder)[:3]:
            shutil.copy(path, few)
        METHODS[method](Path(few))
    gc.collect()
    baseline = _rss_mb()
    start = time.perf_counter()
    frame = METHODS[method](folder)
    seconds = time.perf_counter() - start
    peak = _peak_mb()
    print(json.dumps({"seconds": seconds, "rows": len(frame), "growth_mb": peak - baseline}))


def measure(method: str, folder: Path, repeat: int) -> dict:
    """Best time and largest memory growth over ``repeat`` fresh processes."""
    runs = []
    for _ in range(repeat):
        cmd = [sys.executable, __file__, "--child", method, "--input", str(folder)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    return {
        "seconds": min(r["seconds"] for r in runs),
        "growth_mb": max(r["growth_mb"] for r in runs),
        "rows": runs[0]["rows"],
    }


def repeated_day(landing: Path, times: int, into: Path) -> Path:
    """The day copied ``times`` times, copy k with organisation ``org-id-k``."""
    for k in range(times):
        for path in _files(landing):
            target = into / f"copy{k}" / path.relative_to(landing)
            target.parent.mkdir(parents=True, exist_ok=True)
            data = path.read_bytes().replace(b'"organization_id":"', b'"organization_id":"c%d-' % k)
            target.write_bytes(data)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--landing", type=Path, default=REPO / "testdata" / "landing")
    parser.add_argument("--times", type=int, default=10, help="copies of the day for the big input")
    parser.add_argument("--repeat", type=int, default=3, help="runs per method; the best counts")
    parser.add_argument("--child", choices=sorted(METHODS), help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.input)
        return

    tmp = Path(tempfile.mkdtemp(prefix="d2d-bench-"))
    try:
        inputs = [("day", args.landing)]
        if args.times > 1:
            inputs.append((f"day x{args.times}", repeated_day(args.landing, args.times, tmp)))
        header = (
            f"{'input':<10} {'MB':>6} {'method':<7} {'rows':>8} {'best s':>8} {'speed-up':>9} "
            f"{'memory MB':>10} {'memory ratio':>13}"
        )
        print(header)
        print("-" * len(header))
        for name, folder in inputs:
            size = sum(p.stat().st_size for p in _files(folder)) / 2**20
            results = {m: measure(m, folder, args.repeat) for m in ("pandas", "d2d")}
            base = results["pandas"]
            for method, r in results.items():
                print(
                    f"{name:<10} {size:>6.1f} {method:<7} {r['rows']:>8} {r['seconds']:>8.3f} "
                    f"{base['seconds'] / r['seconds']:>8.1f}x {r['growth_mb']:>10.0f} "
                    f"{r['growth_mb'] / base['growth_mb']:>13.2f}"
                )
        print(
            f"\npython {sys.version.split()[0]}; time: best of {args.repeat} fresh processes; "
            "memory: largest growth of the peak RSS over the RSS after imports and a warm-up "
            "on 3 files; ratios against pandas"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
