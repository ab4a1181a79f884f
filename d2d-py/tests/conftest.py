"""Shared fixtures: the real sample day and an independent, pure-Python reading of it."""

from __future__ import annotations

import json
import os
import re
from datetime import datetime
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LANDING = REPO / "testdata" / "landing"

# Built from the feed's own spelling, not from d2d: the expected side of the comparisons.
UPDATE = (
    '{"event":"update","on":"vehicle","at":"2019-06-01T%s","data":{"id":"%s",'
    '"location":{"lat":%s,"lng":%s,"at":"2019-06-01T%s"}},"organization_id":"org"}'
)
PERIOD = (
    '{"event":"%s","on":"operating_period","at":"2019-06-01T09:00:00Z","data":{"id":"%s",'
    '"start":"2019-06-01T%s","finish":"2019-06-01T%s"},"organization_id":"org"}'
)
REGISTER = (
    '{"event":"register","on":"vehicle","at":"2019-06-01T09:00:00Z","data":{"id":"%s"},'
    '"organization_id":"org"}'
)


def update(vehicle: str, lat: float, lng: float, at: str) -> str:
    return UPDATE % (at, vehicle, lat, lng, at)


def period(pid: str, start: str, finish: str, verb: str = "create") -> str:
    return PERIOD % (verb, pid, start, finish)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def source_time(path: Path) -> datetime:
    """The date and time in a landing file's name (the API's clock: naive), by regex."""
    y, mo, d, h, mi, s = _landing_key(path)
    return datetime(y, mo, d, h, mi, s)


def _landing_key(path: Path) -> tuple[int, ...]:
    m = re.fullmatch(r"(\d+)-(\d+)-(\d+)-(\d+)-(\d+)-(\d+)-events\.\w+", path.name)
    assert m, path
    return tuple(int(g) for g in m.groups())


def s3_options() -> dict:
    """fsspec's options for the test S3-compatible server; skips the test when there is none."""
    pytest.importorskip("s3fs", reason="s3:// inputs need s3fs (d2d-py/requirements-dev.txt)")
    endpoint = os.environ.get("D2D_S3_ENDPOINT")
    if not endpoint:
        pytest.skip("no S3-compatible server: run under scripts/test, or eval scripts/services")
    return {
        "key": os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        "secret": os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
        "client_kwargs": {"endpoint_url": endpoint},
    }


@pytest.fixture(scope="session")
def landing() -> Path:
    assert LANDING.is_dir(), f"sample data missing at {LANDING}"
    return LANDING


@pytest.fixture(scope="session")
def landing_files(landing: Path) -> list[Path]:
    """Every sample file, in numeric file-name time order."""
    return sorted((p for p in landing.rglob("*") if p.is_file()), key=_landing_key)


@pytest.fixture(scope="session")
def sample_rows(landing_files: list[Path]) -> list[dict]:
    """The sample, read with the json module line by line and flattened by hand."""
    rows = []
    for path in landing_files:
        with path.open("rb") as f:
            for number, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                obj = json.loads(raw)
                data = obj["data"]
                loc = data.get("location") or {}
                is_vehicle = obj["on"] == "vehicle"
                rows.append(
                    {
                        "source_key": str(path),
                        "line": number,
                        "source_time": source_time(path),
                        "on": obj["on"],
                        "event": obj["event"],
                        "event_at": utc(obj["at"]),
                        "organization_id": obj["organization_id"],
                        "vehicle_id": data["id"] if is_vehicle else None,
                        "lat": loc.get("lat"),
                        "lng": loc.get("lng"),
                        "location_at": utc(loc["at"]) if loc.get("at") else None,
                        "operating_period_id": None if is_vehicle else data["id"],
                        "start_at": None if is_vehicle else utc(data["start"]),
                        "finish_at": None if is_vehicle else utc(data["finish"]),
                    }
                )
    return rows


def day_copy(data: bytes, k: int) -> bytes:
    """The sample bytes with the organisation renamed, so no event repeats another copy's."""
    return data.replace(b'"organization_id":"org-id"', b'"organization_id":"org-%d"' % k)


@pytest.fixture(scope="session")
def sample_bytes(landing_files: list[Path]) -> bytes:
    """The whole sample day as one NDJSON buffer (7.8 MB)."""
    return b"".join(p.read_bytes() for p in landing_files)
