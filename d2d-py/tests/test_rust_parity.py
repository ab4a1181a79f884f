"""The bindings against the Rust example `data_check`, run as a separate program.

Runs `cargo run --example data_check -- --json PATH` and `... --distances PATH` from the repo
root. Never skipped: a missing example is a failure, not a silent pass.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
from datetime import datetime

from conftest import REPO

import d2d

SAMPLE = "testdata/landing"


def cargo_example(*args: str) -> str:
    cmd = ["cargo", "run", "--quiet", "--example", "data_check", "--", *args]
    done = subprocess.run(
        cmd,
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
        env=os.environ.copy(),
    )
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stderr}"
    return done.stdout


def _plain(value):
    """The JSON spelling of a profile value: timestamps as UTC datetimes."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, str) and len(value) >= 20 and value[10] == "T":
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value


def test_data_check_json_equals_the_python_profile():
    rust = json.loads(cargo_example("--json", SAMPLE))
    counts = {"files", "lines", "events", "rejects", "duplicates", "by_kind", "reject_reasons",
              "vehicles", "periods"}  # fmt: skip
    assert counts <= rust.keys()
    py = d2d.data_check(REPO / SAMPLE)
    # Every key the Rust output has (at least the counts) must agree exactly.
    for key, value in rust.items():
        assert key in py, key
        assert py[key] == _plain(value), key


def _decimals(text: str) -> int:
    return len(text.split(".", 1)[1]) if "." in text else 0


def test_distances_equal_the_rust_rows():
    out = cargo_example("--distances", SAMPLE)
    header = "period,vehicle,fixes,first_at,last_at,metres"
    assert header in out, out[:500]
    rows = list(csv.DictReader(io.StringIO(out[out.index(header) :])))
    py = d2d.distances(REPO / SAMPLE).to_pandas()
    assert len(rows) == len(py) > 0
    for want, got in zip(rows, py.itertuples(index=False)):
        assert (got.operating_period_id, got.vehicle_id, got.fixes) == (
            want["period"],
            want["vehicle"],
            int(want["fixes"]),
        )
        for column in ("first_at", "last_at"):
            assert getattr(got, column).to_pydatetime() == _plain(want[column]), column
        # Equal up to the digits the example prints.
        tolerance = 0.5 * 10 ** -_decimals(want["metres"]) + 1e-9
        assert abs(got.metres - float(want["metres"])) <= tolerance, (got, want)
