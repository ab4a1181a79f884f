"""d2d.distances: hand-computed values, and an independent re-computation on the sample."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from conftest import period, update

import d2d

R = 6_371_008.8
ONE_HUNDREDTH_DEGREE = R * math.pi / 180 * 0.01  # 1,111.95 m along a meridian or the equator


def haversine(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * R * math.asin(math.sqrt(a))


FLEET = "\n".join([
    period("op_1", "10:00:00Z", "10:10:00Z"),
    period("op_2", "10:00:00Z", "10:10:00Z"),
    period("op_2", "10:00:00Z", "10:10:00Z", verb="delete").replace("09:00:00Z", "09:30:00Z"),
    # v1: north by 0.01 degree inside the window; a repeated fix; one fix after the window.
    update("v1", 0.0, 0.0, "10:00:00Z"),
    update("v1", 0.01, 0.0, "10:05:00Z"),
    update("v1", 0.01, 0.0, "10:05:00Z").replace('"at":"2019-06-01T10:05:00Z","data"',
                                                 '"at":"2019-06-01T10:05:01Z","data"'),
    update("v1", 0.02, 0.0, "10:20:00Z"),
    # v2: only outside the window.
    update("v2", 5.0, 5.0, "09:59:59.999Z"),
    # v3: east by 0.01 degree, with a 1-second jump of a degree in between, and a fix on the
    # finish instant (inclusive).
    update("v3", 0.0, 0.0, "10:00:00Z"),
    update("v3", 0.0, 1.0, "10:00:01Z"),
    update("v3", 0.0, 0.01, "10:10:00Z"),
])  # fmt: skip


def test_hand_computed_rows():
    table = d2d.distances(FLEET.encode())
    assert isinstance(table, d2d.Table)
    df = table.to_pandas()
    assert list(df.columns) == [
        "operating_period_id", "vehicle_id", "fixes", "first_at", "last_at", "metres",
    ]  # fmt: skip
    pairs = list(zip(df["operating_period_id"], df["vehicle_id"]))
    assert pairs == [("op_1", "v1"), ("op_1", "v3")]
    v1, v3 = df.iloc[0], df.iloc[1]
    assert v1["fixes"] == 2
    assert v1["metres"] == pytest.approx(ONE_HUNDREDTH_DEGREE, rel=1e-12)
    assert v1["first_at"] == pd.Timestamp("2019-06-01T10:00:00Z")
    assert v1["last_at"] == pd.Timestamp("2019-06-01T10:05:00Z")
    assert v3["fixes"] == 3
    there_and_back = haversine(0, 0, 0, 1) + haversine(0, 1, 0, 0.01)
    assert v3["metres"] == pytest.approx(there_and_back, rel=1e-12)
    assert v3["last_at"] == pd.Timestamp("2019-06-01T10:10:00Z")


def test_speed_filter_drops_the_jump():
    df = d2d.distances(FLEET.encode(), max_speed_mps=50.0).to_pandas()
    v3 = df.set_index("vehicle_id").loc["v3"]
    assert v3["fixes"] == 2
    assert v3["metres"] == pytest.approx(ONE_HUNDREDTH_DEGREE, rel=1e-12)
    # 1,112 m in 300 s is 3.7 m/s: a limit below that drops v1's move too.
    slow = d2d.distances(FLEET.encode(), max_speed_mps=3.0).to_pandas()
    v1 = slow.set_index("vehicle_id").loc["v1"]
    assert (v1["fixes"], v1["metres"]) == (1, 0.0)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_speed_limits_raise(bad: float):
    with pytest.raises(ValueError, match="max_speed_mps"):
        d2d.distances(FLEET.encode(), max_speed_mps=bad)


def test_dtypes(landing: Path):
    df = d2d.distances(landing).to_pandas()
    assert df["fixes"].dtype == "int64"
    assert df["metres"].dtype == "float64"
    assert str(df["first_at"].dtype) == "datetime64[us, UTC]"
    assert str(df["last_at"].dtype) == "datetime64[us, UTC]"
    assert pd.api.types.is_string_dtype(df["operating_period_id"])
    assert pd.api.types.is_string_dtype(df["vehicle_id"])


def _recompute(events: pd.DataFrame, max_speed_mps: float | None) -> list[tuple]:
    """The distance definition, written again from the design text with pandas."""
    periods = events[events["on"] == "operating_period"]
    # The latest event of each period wins (a later line wins a tie).
    latest = periods.sort_values("event_at", kind="stable").groupby("operating_period_id").tail(1)
    live = latest[latest["event"] == "create"].sort_values("operating_period_id")
    updates = events[(events["on"] == "vehicle") & (events["event"] == "update")]
    fixes = updates[["vehicle_id", "location_at", "lat", "lng"]]
    fixes = fixes.drop_duplicates().sort_values(["vehicle_id", "location_at", "lat", "lng"])
    rows = []
    for p in live.itertuples():
        inside = fixes[(fixes["location_at"] >= p.start_at) & (fixes["location_at"] <= p.finish_at)]
        for vehicle, track in inside.groupby("vehicle_id", sort=True):
            pts = list(track[["location_at", "lat", "lng"]].itertuples(index=False))
            kept, metres, last = 1, 0.0, pts[0]
            for fix in pts[1:]:
                step = haversine(last.lat, last.lng, fix.lat, fix.lng)
                if max_speed_mps is not None:
                    seconds = (fix.location_at - last.location_at).total_seconds()
                    fast = step / seconds > max_speed_mps if seconds > 0 else step > 0
                    if fast:
                        continue
                metres, kept, last = metres + step, kept + 1, fix
            rows.append(
                (p.operating_period_id, vehicle, kept, pts[0].location_at, last.location_at, metres)
            )
    return rows


@pytest.mark.parametrize("limit", [None, 30.0])
def test_sample_equals_an_independent_recomputation(landing: Path, limit: float | None):
    events = d2d.read_events(landing).events.to_pandas()
    want = _recompute(events, limit)
    got = d2d.distances(landing, max_speed_mps=limit).to_pandas()
    got = list(got.itertuples(index=False, name=None))
    assert len(got) == len(want) > 0
    for g, w in zip(got, want):
        assert g[:5] == w[:5]
        assert g[5] == pytest.approx(w[5], rel=1e-9, abs=1e-6)


def test_filter_never_adds_distance(landing: Path):
    plain = d2d.distances(landing).to_pandas()
    filtered = d2d.distances(landing, max_speed_mps=30.0).to_pandas()
    key = ["operating_period_id", "vehicle_id"]
    assert (filtered[key] == plain[key]).all().all()
    assert (filtered["fixes"] <= plain["fixes"]).all()
    assert (filtered["metres"] <= plain["metres"] + 1e-6).all()
    assert filtered["metres"].sum() < plain["metres"].sum()
