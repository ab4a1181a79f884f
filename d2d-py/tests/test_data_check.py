"""d2d.data_check: the Rust profile as a dict and a DataFrame, checked against pandas."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import REGISTER, update

import d2d

KEYS = {
    "files", "lines", "events", "rejects", "duplicates", "by_kind", "reject_reasons",
    "vehicles", "periods", "missing", "time_ranges", "coordinate_ranges",
}  # fmt: skip


@pytest.fixture(scope="module")
def profile(landing: Path) -> d2d.Profile:
    return d2d.data_check(landing)


@pytest.fixture(scope="module")
def events(landing: Path) -> pd.DataFrame:
    return d2d.read_events(landing).events.to_pandas()


def test_keys_are_exactly_those_of_the_rust_profile(profile: d2d.Profile):
    assert isinstance(profile, dict)
    assert set(profile) == KEYS


def test_counts_agree_with_the_event_table(profile: d2d.Profile, events: pd.DataFrame):
    assert (profile["files"], profile["lines"]) == (717, 35290)
    assert profile["events"] == len(events)
    assert profile["events"] + profile["duplicates"] + profile["rejects"] == profile["lines"]
    # The profile's kinds are the feed's `on.event`; the table has `on` and `event` apart.
    kinds = (events["on"].astype(str) + "." + events["event"].astype(str)).value_counts()
    assert {k: n for k, n in profile["by_kind"].items() if n} == kinds.to_dict()
    assert sum(profile["by_kind"].values()) == profile["events"]
    assert profile["by_kind"]["operating_period.delete"] == 0
    assert profile["vehicles"] == events["vehicle_id"].nunique() == 100
    assert profile["periods"] == events["operating_period_id"].nunique() == 2
    assert profile["reject_reasons"] == {}
    vehicle = events["vehicle_id"].notna()
    assert profile["missing"] == {"data.location": int((vehicle & events["lat"].isna()).sum())}


def test_ranges_agree_with_pandas(profile: d2d.Profile, events: pd.DataFrame):
    columns = {
        "at": "event_at",
        "data.location.at": "location_at",
        "data.start": "start_at",
        "data.finish": "finish_at",
    }
    assert set(profile["time_ranges"]) == set(columns)
    for field, column in columns.items():
        r = profile["time_ranges"][field]
        assert r["min"].tzinfo is not None
        assert pd.Timestamp(r["min"]) == events[column].min(), field
        assert pd.Timestamp(r["max"]) == events[column].max(), field
    for field, column in {"data.location.lat": "lat", "data.location.lng": "lng"}.items():
        r = profile["coordinate_ranges"][field]
        assert (r["min"], r["max"]) == (events[column].min(), events[column].max())


def test_rejects_are_counted_by_code():
    raw = b"\n".join([
        (REGISTER % "v1").encode(),
        b"[1, 2]",
        b"{",
        update("v1", 0, 200, "10:00:00Z").encode(),
        update("v1", 0, 20, "10:00:00Z").encode(),
        update("v1", 0, 20, "10:00:00Z").encode(),
    ])  # fmt: skip
    p = d2d.data_check(raw)
    assert p["reject_reasons"] == {"not_an_object": 1, "invalid_json": 1, "invalid_coordinate": 1}
    assert (p["lines"], p["events"], p["duplicates"], p["rejects"]) == (6, 2, 1, 3)
    assert p["coordinate_ranges"]["data.location.lng"] == {"min": 20.0, "max": 20.0}
    assert "data.start" not in p["time_ranges"]


def test_to_pandas_has_one_row_per_number(profile: d2d.Profile):
    frame = profile.to_pandas()
    assert list(frame.columns) == ["section", "name", "stat", "value"]
    counts = frame[frame["section"] == "counts"].set_index("name")["value"]
    assert counts["lines"] == 35290 and counts["vehicles"] == 100
    lat = frame[(frame["section"] == "coordinate_ranges") & (frame["name"] == "data.location.lat")]
    assert list(lat["stat"]) == ["min", "max"]
    at_min = frame[(frame["name"] == "at") & (frame["stat"] == "min")]["value"].iloc[0]
    assert isinstance(at_min, pd.Timestamp) and str(at_min.tz) == "UTC"
    assert profile.to_dict() == dict(profile)


def test_empty_input_profiles_to_zeros():
    with pytest.warns(d2d.EmptyInputWarning, match="no input"):
        p = d2d.data_check([])
    assert (p["files"], p["lines"], p["events"]) == (0, 0, 0)
    assert p["time_ranges"] == {} and p["coordinate_ranges"] == {}
    assert set(p["by_kind"].values()) == {0}
