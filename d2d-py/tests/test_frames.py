"""Results as frames: the same converters everywhere, warehouse column names, every reject code
as a category, polars, results re-used from a ReadResult, and docstrings in Python style."""

from __future__ import annotations

import inspect
import pydoc
import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from conftest import REGISTER

import d2d

# d2d_model::reject::RejectReason::CODES, in its order.
REJECT_CODES = [
    "invalid_utf8", "invalid_json", "not_an_object", "invalid_type", "duplicate_field",
    "missing_field", "unknown_kind", "invalid_id", "invalid_coordinate", "finish_before_start",
    "invalid_timestamp", "line_too_long",
]  # fmt: skip

# The warehouse's names (d2d-pipeline/SCHEMA.md): dwh.fact_vehicle_event and
# dwh.fact_period_event for events (plus the feed's `on`, which the warehouse splits by),
# staging.reject for rejects, dwh.vehicle_period_distance.
EVENT_COLUMNS = [
    "source_key", "line", "source_time", "on", "event", "event_at", "organization_id",
    "vehicle_id", "lat", "lng", "location_at", "operating_period_id", "start_at", "finish_at",
]  # fmt: skip
REJECT_COLUMNS = ["source_key", "line", "source_time", "code", "field", "reason", "raw"]
DISTANCE_COLUMNS = [
    "operating_period_id", "vehicle_id", "fixes", "first_at", "last_at", "metres",
]  # fmt: skip
SCHEMA = Path(__file__).resolve().parents[2] / "d2d-pipeline" / "SCHEMA.md"


@pytest.fixture(scope="module")
def day(landing: Path) -> d2d.ReadResult:
    return d2d.read_events(landing)


def test_tables_share_one_set_of_converters(day: d2d.ReadResult, landing: Path):
    dist = d2d.distances(day)
    for table in (day.events, day.rejects, dist):
        assert isinstance(table, d2d.Table)
        assert isinstance(table.to_arrow(), pa.Table)
        assert isinstance(table.to_pandas(), pd.DataFrame)
        assert pa.table(table).equals(table.to_arrow())
        assert len(table) == table.num_rows == table.to_arrow().num_rows
    assert isinstance(d2d.data_check(day), d2d.Profile)


def test_column_names_are_the_warehouses(day: d2d.ReadResult):
    assert day.events.column_names == EVENT_COLUMNS
    assert day.rejects.column_names == REJECT_COLUMNS
    assert d2d.distances(day).column_names == DISTANCE_COLUMNS
    schema = SCHEMA.read_text()
    for name in set(EVENT_COLUMNS + REJECT_COLUMNS + DISTANCE_COLUMNS) - {"on"}:
        assert f"`{name}`" in schema, name


def test_reject_codes_category_holds_every_code():
    r = d2d.read_events(b"not json\n")
    codes = r.rejects.to_pandas()["code"]
    assert list(codes.cat.categories) == REJECT_CODES
    assert codes.value_counts()["missing_field"] == 0
    assert r.rejects.to_arrow().column("code").type == pa.dictionary(pa.int32(), pa.string())
    with pytest.warns(d2d.EmptyInputWarning):
        empty = d2d.read_events(b"\n").rejects.to_pandas()["code"]
    assert list(empty.cat.categories) == REJECT_CODES


def test_to_polars(day: d2d.ReadResult):
    pl = pytest.importorskip("polars", reason="Table.to_polars() needs polars")
    frame = day.events.to_polars()
    assert isinstance(frame, pl.DataFrame)
    assert frame.columns == EVENT_COLUMNS and frame.height == 35290
    assert frame.schema["event"] == pl.Categorical
    assert frame.schema["event_at"] == pl.Datetime("us", "UTC")
    assert frame.schema["source_time"] == pl.Datetime("us")
    assert frame.schema["lat"] == pl.Float64
    kinds = frame.group_by("event").len()
    by_pandas = day.events.to_pandas()["event"].value_counts()
    assert dict(zip(kinds["event"].cast(pl.String), kinds["len"])) == {
        k: n for k, n in by_pandas.items() if n
    }
    rejects = d2d.read_events(b"\xff\n").rejects.to_polars()
    assert rejects.schema["raw"] == pl.Binary and rejects["raw"][0] == b"\xff"
    dist = d2d.distances(day).to_polars()
    assert dist.columns == DISTANCE_COLUMNS
    # The Arrow PyCapsule route gives the same frame.
    assert pl.DataFrame(day.events).equals(frame)


def test_distances_and_data_check_answer_from_a_read_result(day: d2d.ReadResult, landing: Path):
    assert d2d.data_check(day) == d2d.data_check(landing)
    for limit in (None, 30.0):
        assert (
            d2d.distances(day, max_speed_mps=limit)
            .to_arrow()
            .equals(d2d.distances(landing, max_speed_mps=limit).to_arrow())
        )
    with pytest.raises(ValueError, match="max_speed_mps"):
        d2d.distances(day, max_speed_mps=-1.0)


def test_a_read_result_with_rejects_and_duplicates_profiles_like_the_bytes():
    raw = b"\n".join([(REGISTER % "v1").encode(), (REGISTER % "v1").encode(), b"{"])
    assert d2d.data_check(d2d.read_events(raw)) == d2d.data_check(raw)


PUBLIC = [getattr(d2d, name) for name in d2d.__all__]


def _documented() -> list[tuple[str, str]]:
    out = [("d2d", d2d.__doc__ or "")]
    for obj in PUBLIC:
        out.append((obj.__name__, inspect.getdoc(obj) or ""))
        if inspect.isclass(obj):
            for name, member in vars(obj).items():
                if name.startswith("_") and name != "__init__":
                    continue
                doc = getattr(member, "__doc__", None)
                if doc and not isinstance(member, (str, int)):
                    out.append((f"{obj.__name__}.{name}", doc))
    return out


@pytest.mark.parametrize(("name", "doc"), _documented(), ids=lambda v: v if "\n" not in v else "")
def test_docstrings_are_python_style(name: str, doc: str):
    assert doc.strip(), f"{name} has no docstring"
    # reST literals may hold anything; Sphinx roles (:class:`Table`) are Python style too.
    plain = re.sub(r"``[^`]*``|:\w+:`[^`]*`", "", doc)
    assert "[`" not in plain, f"{name}: Rust intra-doc link in {doc!r}"
    assert not re.search(r"`[^`\n]+`", plain), f"{name}: Markdown code span in {doc!r}"
    assert "::" not in plain, f"{name}: Rust path in {doc!r}"


def test_help_shows_no_rust_doc_syntax():
    text = pydoc.render_doc(d2d, renderer=pydoc.plaintext)
    for obj in PUBLIC:
        text += pydoc.render_doc(obj, renderer=pydoc.plaintext)
    assert "[`" not in text
    assert "Event`]" not in text
