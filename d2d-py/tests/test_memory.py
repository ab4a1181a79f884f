"""distances and data_check stream: their peak memory does not follow the input's size.

Each measurement runs in a fresh Python process and reads the growth of its peak RSS (VmHWM,
which sees Rust's allocations; not ``ru_maxrss``, which Linux carries over from the forking
parent, here pytest) over the peak after imports and a warm-up. The
day is read from files, so the input itself is never in memory; each copy renames the
organisation, so every event is distinct. What may grow is only what the answer needs: a
16-byte fingerprint per distinct event (data_check) or a 32-byte fix per update (distances),
against about 220 bytes of input per line. Holding the parsed events, as the calls did before,
costs more than the input itself.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import day_copy

SCRIPT = """
import re, sys, d2d

def peak():
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\\s+(\\d+) kB", f.read()).group(1)) * 1024

call, folder, warm = sys.argv[1], sys.argv[2], sys.argv[3]
getattr(d2d, call)(warm)
before = peak()
getattr(d2d, call)(folder)
print(peak() - before)
"""


def _write_copies(root: Path, landing: Path, files: list[Path], copies: int) -> int:
    size = 0
    for k in range(copies):
        for p in files:
            out = root / f"copy{k}" / p.relative_to(landing)
            out.parent.mkdir(parents=True, exist_ok=True)
            data = day_copy(p.read_bytes(), k)
            out.write_bytes(data)
            size += len(data)
    return size


@pytest.fixture(scope="module")
def days(tmp_path_factory, landing: Path, landing_files: list[Path]):
    """The sample day once and four times (31 MB), as folders of files."""
    root = tmp_path_factory.mktemp("days")
    small = _write_copies(root / "x1", landing, landing_files, 1)
    large = _write_copies(root / "x4", landing, landing_files, 4)
    warm = root / "warm"
    _write_copies(warm, landing, landing_files[:20], 1)
    return root / "x1", small, root / "x4", large, warm


def _growth(call: str, folder: Path, warm: Path) -> int:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, call, str(folder), str(warm)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return int(done.stdout.split()[-1])


def _extra(call: str, days) -> tuple[int, int]:
    small, small_bytes, large, large_bytes, warm = days
    grown = _growth(call, large, warm) - _growth(call, small, warm)
    return grown, large_bytes - small_bytes


@pytest.mark.parametrize("call", ["data_check", "distances"])
def test_peak_memory_does_not_follow_the_input(call: str, days):
    grown, extra_input = _extra(call, days)
    # Holding the parsed events, as before, grew by 1.5 times the extra input. Now the
    # fingerprints or fixes of the extra lines, with their hash table's or vectors' doubling:
    # about a quarter of it.
    assert grown < extra_input / 2, (grown, extra_input)


def test_the_measure_sees_memory_a_call_holds(days):
    # read_events must hold its table: the same measure shows it, so the bound above can fail.
    grown, extra_input = _extra("read_events", days)
    assert grown > extra_input * 0.8, (grown, extra_input)
