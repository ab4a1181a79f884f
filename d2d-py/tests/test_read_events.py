"""d2d.read_events: tables, dtypes, order, rejects, errors."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from conftest import REGISTER, period, update, utc

import d2d

ONS = ["vehicle", "operating_period"]
EVENTS = ["register", "update", "deregister", "create", "delete"]
UTC_US = pa.timestamp("us", tz="UTC")


@pytest.fixture(scope="module")
def day(landing: Path) -> d2d.ReadResult:
    return d2d.read_events(landing)


def test_sample_counts_match_the_files(day: d2d.ReadResult, landing_files, sample_rows):
    assert day.files == len(landing_files) == 717
    assert day.lines == len(sample_rows) == 35290
    assert len(day.events) + day.duplicates + len(day.rejects) == day.lines
    # The sample is clean: every line is a distinct valid event.
    assert (len(day.events), day.duplicates, len(day.rejects)) == (35290, 0, 0)


def test_arrow_schema(day: d2d.ReadResult):
    schema = day.events.to_arrow().schema
    assert schema.names == [
        "source_key", "line", "source_time", "on", "event", "event_at", "organization_id",
        "vehicle_id", "lat", "lng", "location_at", "operating_period_id", "start_at", "finish_at",
    ]  # fmt: skip
    for name in ("source_key", "on", "event", "organization_id"):
        assert pa.types.is_dictionary(schema.field(name).type), name
    for name in ("event_at", "location_at", "start_at", "finish_at"):
        assert schema.field(name).type == UTC_US, name
    assert schema.field("lat").type == pa.float64()
    assert schema.field("lng").type == pa.float64()
    assert schema.field("line").type == pa.int64()
    assert pa.types.is_string(schema.field("vehicle_id").type)
    assert pa.types.is_string(schema.field("operating_period_id").type)
    day.events.to_arrow().validate(full=True)


def test_pandas_dtypes(day: d2d.ReadResult):
    df = day.events.to_pandas()
    assert isinstance(df["on"].dtype, pd.CategoricalDtype)
    assert list(df["on"].cat.categories) == ONS
    assert isinstance(df["event"].dtype, pd.CategoricalDtype)
    assert list(df["event"].cat.categories) == EVENTS
    assert isinstance(df["source_key"].dtype, pd.CategoricalDtype)
    for name in ("event_at", "location_at", "start_at", "finish_at"):
        dtype = df[name].dtype
        assert isinstance(dtype, pd.DatetimeTZDtype), name
        assert str(dtype.tz) == "UTC", name
    assert df["lat"].dtype == "float64"
    assert df["lng"].dtype == "float64"
    assert df["line"].dtype == "int64"
    assert pd.api.types.is_string_dtype(df["vehicle_id"])


def test_every_row_equals_an_independent_json_reading(day: d2d.ReadResult, sample_rows):
    got = day.events.to_arrow().to_pylist()
    assert len(got) == len(sample_rows)
    for row, want in zip(got, sample_rows):
        assert row == want, (row, want)


def test_sources_come_in_numeric_file_name_order(day: d2d.ReadResult, landing_files):
    sources = day.events.to_pandas()["source_key"]
    first_seen = list(dict.fromkeys(sources.astype(str)))
    assert first_seen == [str(p) for p in landing_files]
    assert first_seen[0].endswith("2019-06-01-15-17-3-events.txt")
    assert first_seen[7].endswith("2019-06-01-15-17-10-events.txt")


def test_missing_fields_are_null(day: d2d.ReadResult):
    df = day.events.to_pandas()
    register = df[(df["on"] == "vehicle") & (df["event"] == "register")]
    assert len(register) == 100
    assert register["lat"].isna().all() and register["location_at"].isna().all()
    assert register["operating_period_id"].isna().all()
    updates = df[(df["on"] == "vehicle") & (df["event"] == "update")]
    assert updates[["lat", "lng", "location_at", "vehicle_id"]].notna().all().all()
    periods = df[(df["on"] == "operating_period") & (df["event"] == "create")]
    assert list(periods["operating_period_id"]) == ["op_2", "op_1"]
    assert periods["vehicle_id"].isna().all()
    assert (periods["start_at"] < periods["finish_at"]).all()


BAD = [
    (b"not json", "invalid_json", None),
    (update("v1", 91.2, 13.4, "10:00:00Z").encode(), "invalid_coordinate", "data.location.lat"),
    (REGISTER.replace('"vehicle"', '"bus"').encode() % b"v1", "unknown_kind", None),
    (b'{"event":"update","on":"vehicle","at":"2019-06-01T10:00:00Z","data":{"id":"v1"},'
     b'"organization_id":"org"}', "missing_field", "data.location"),
    (b"\xff\xfe{}", "invalid_utf8", None),
    (update("v1", 52.0, 13.0, "10:00:00").encode(), "invalid_timestamp", "at"),
]  # fmt: skip


def _mixed() -> bytes:
    good = [REGISTER % "v1", update("v1", 52.5, 13.25, "10:00:00.5Z")]
    lines = [good[0].encode(), b"", *(raw for raw, _, _ in BAD), good[1].encode()]
    lines.append(good[1].encode())  # a duplicate
    return b"\r\n".join(lines) + b"\n"


def test_bad_lines_are_rejects_with_line_code_field_and_raw():
    r = d2d.read_events(_mixed())
    assert (r.files, r.lines, len(r.events), r.duplicates, len(r.rejects)) == (1, 9, 2, 1, 6)
    rej = r.rejects.to_pandas()
    assert list(rej.columns) == [
        "source_key",
        "line",
        "source_time",
        "code",
        "field",
        "reason",
        "raw",
    ]
    assert isinstance(rej["code"].dtype, pd.CategoricalDtype)
    assert list(rej["source_key"].astype(str)) == ["<bytes>"] * 6
    # Line 2 is blank: it counts for numbering, not as a line read.
    assert list(rej["line"]) == [3, 4, 5, 6, 7, 8]
    assert list(rej["code"].astype(str)) == [code for _, code, _ in BAD]
    fields = [None if (isinstance(f, float) and math.isnan(f)) else f for f in rej["field"]]
    assert fields[1] == "data.location.lat" and fields[3] == "data.location"
    assert fields[0] is None
    assert rej["reason"][1] == "data.location.lat: 91.2 is outside [-90, 90]"
    assert list(rej["raw"]) == [raw for raw, _, _ in BAD]
    assert r.rejects.to_arrow().schema.field("raw").type == pa.binary()
    ev = r.events.to_pandas()
    assert list(ev["line"]) == [1, 9]
    assert ev["location_at"][1] == pd.Timestamp("2019-06-01T10:00:00.5Z")


def test_strict_raises_the_first_reject():
    with pytest.raises(d2d.ParseError) as info:
        d2d.read_events(_mixed(), strict=True)
    err = info.value
    assert isinstance(err, ValueError) and isinstance(err, d2d.D2dError)
    assert (err.source, err.line, err.code, err.raw) == ("<bytes>", 3, "invalid_json", b"not json")
    assert str(err).startswith("<bytes>:3: not valid JSON")


def test_lists_mix_paths_and_bytes_in_the_given_order(landing_files):
    first, second = landing_files[1], landing_files[0]
    r = d2d.read_events([first, (REGISTER % "zz").encode(), str(second)])
    sources = list(dict.fromkeys(r.events.to_pandas()["source_key"].astype(str)))
    assert sources == [str(first), "<bytes[1]>", str(second)]
    assert r.files == 3


def test_duplicates_across_sources_are_counted_once():
    line = update("v1", 1.0, 2.0, "10:00:00Z").encode() + b"\n"
    r = d2d.read_events([line, line, bytearray(line)])
    assert (r.lines, len(r.events), r.duplicates) == (3, 1, 2)


def test_empty_input_gives_empty_typed_tables():
    with pytest.warns(d2d.EmptyInputWarning, match="no input"):
        r = d2d.read_events([])
    assert (r.files, r.lines, len(r.events), len(r.rejects)) == (0, 0, 0, 0)
    df = r.events.to_pandas()
    assert len(df) == 0 and df["event_at"].dtype == "datetime64[us, UTC]"


def test_unreadable_paths_raise_os_errors(tmp_path: Path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError) as info:
        d2d.read_events(missing)
    assert info.value.filename == str(missing)
    with pytest.raises(FileNotFoundError):
        d2d.read_events([b"", str(missing)])


def test_wrong_argument_types_raise_type_error():
    with pytest.raises(TypeError, match="expected a path"):
        d2d.read_events(42)
    with pytest.raises(TypeError, match="got dict"):
        d2d.read_events([{"a": 1}])


def test_folders_are_walked_recursively(tmp_path: Path):
    nested = tmp_path / "data" / "2019" / "06"
    nested.mkdir(parents=True)
    (nested / "2019-06-01-15-17-10-events.txt").write_text(update("a", 1, 1, "10:00:10Z") + "\n")
    (tmp_path / "2019-06-01-15-17-9-events.txt").write_text(update("a", 1, 1, "10:00:09Z") + "\n")
    (tmp_path / "zz-notes.txt").write_text("not an event\n")
    with pytest.warns(d2d.SkippedFilesWarning, match="zz-notes.txt"):
        r = d2d.read_events(tmp_path)
    assert r.files == 2
    names = [Path(s).name for s in r.events.to_pandas()["source_key"].astype(str)]
    assert names == ["2019-06-01-15-17-9-events.txt", "2019-06-01-15-17-10-events.txt"]
    assert [Path(s).name for s in r.skipped] == ["zz-notes.txt"]
    assert len(r.rejects) == 0


def test_timestamps_keep_offsets_as_utc():
    line = update("v", 1, 1, "10:00:00Z").replace('T10:00:00Z","data', 'T12:00:00+02:00","data')
    df = d2d.read_events(line.encode()).events.to_pandas()
    assert df["event_at"][0] == pd.Timestamp(utc("2019-06-01T10:00:00Z"))


def test_table_speaks_the_arrow_pycapsule_interface(day: d2d.ReadResult):
    via_capsule = pa.table(day.events)
    assert via_capsule.equals(day.events.to_arrow())
    assert len(day.events) == day.events.num_rows == 35290
    assert "35290 rows" in repr(day.events)


def test_concurrent_calls_from_threads_agree(landing_files):
    files = landing_files[:50]
    results: list[int] = []

    def work() -> None:
        results.append(len(d2d.read_events(files).events))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and len(results) == 4


def test_periods_survive_a_round_trip_through_bytes():
    r = d2d.read_events(period("op_9", "10:00:00Z", "11:00:00Z").encode())
    row = r.events.to_arrow().to_pylist()[0]
    assert (row["on"], row["event"]) == ("operating_period", "create")
    assert row["source_time"] is None, "bytes have no landing file name"
    assert (row["start_at"], row["finish_at"]) == (
        utc("2019-06-01T10:00:00Z"),
        utc("2019-06-01T11:00:00Z"),
    )
