"""The lake and the notebook agree: every column of the curated zone has, in ``read_events`` and
``distances``, the same name, Arrow type and nullability.

One daily load of the sample day (the `setup_warehouse` and `daily_load` examples, run with
cargo as in test_rust_parity.py) into a fresh database on the test PostgreSQL server and a fresh
lake folder; then pyarrow reads the schemas of the curated Parquet files and compares them with
the tables d2d returns for the same day. Both sides take their schemas from
``d2d_model::columnar``: renaming or retyping a column on one side only fails here.

Needs ``DATABASE_URL`` (scripts/services, which scripts/test starts); skipped, saying so,
without it.
"""

from __future__ import annotations

import os
import struct
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import REPO

import d2d

DAY = "2019-06-01"


def _with_dbname(url: str, name: str) -> str:
    base, sep, query = url.partition("?")
    scheme, _, rest = base.partition("://")
    authority = rest.split("/", 1)[0]
    return f"{scheme}://{authority}/{name}{sep}{query}"


def _example(name: str, *args: str, env: dict[str, str]) -> None:
    cmd = ["cargo", "run", "--quiet", "--example", name, "--", *args]
    done = subprocess.run(cmd, check=False, cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stderr}"


@pytest.fixture(scope="module")
def curated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    admin = os.environ.get("DATABASE_URL")
    if not admin:
        pytest.skip("needs DATABASE_URL, a test PostgreSQL server (scripts/services start)")
    import psycopg  # noqa: PLC0415 -- only this test talks to PostgreSQL

    name = f"d2d_py_lake_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")  # our own [a-z0-9_] name
    lake = tmp_path_factory.mktemp("lake")
    try:
        env = {**os.environ, "DATABASE_URL": _with_dbname(admin, name), "D2D_OUTPUT": "json"}
        _example("setup_warehouse", env=env)
        _example(
            "daily_load", "--date", DAY, "--landing", "testdata/landing", "--lake", str(lake),
            env=env,
        )  # fmt: skip
        yield lake / "curated"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _lake_schema(curated: Path, table: str, partition: str) -> pa.Schema:
    return pq.read_schema(curated / table / partition / "part-0.parquet")


def _fields(schema: pa.Schema) -> list[tuple[str, pa.DataType, bool]]:
    return [(f.name, f.type, f.nullable) for f in schema]


@pytest.fixture(scope="module")
def day(landing: Path) -> d2d.ReadResult:
    return d2d.read_events(landing)


def test_read_events_has_every_lake_event_column_with_its_type(curated: Path, day):
    vehicle = _lake_schema(curated, "vehicle_event", f"landing_day={DAY}")
    period = _lake_schema(curated, "period_event", f"landing_day={DAY}")
    events = day.events.schema
    # The events table is both lake tables in one, plus `on` (which the lake splits by).
    assert set(events.names) == set(vehicle.names) | set(period.names) | {"on"}
    for lake, other in ((vehicle, period), (period, vehicle)):
        for field in lake:
            got = events.field(field.name)
            assert got.type == field.type, (field.name, got.type, field.type)
            # A column only one lake table has is null in the other's rows.
            nullable = field.nullable or field.name not in other.names
            assert got.nullable == nullable, (field.name, got.nullable, field.nullable)


def test_the_lake_event_tables_are_read_events_rows_of_their_kind(curated: Path, day):
    # Each lake table's columns, in the lake's order, with the lake's types and nullability, are
    # a projection of the events table (nullability aside where the other kind has no value).
    events = day.events.schema
    for table, on in (("vehicle_event", "vehicle"), ("period_event", "operating_period")):
        lake = _lake_schema(curated, table, f"landing_day={DAY}")
        everything = day.events.to_arrow()
        rows = everything.filter(pc.equal(everything["on"], on))
        projected = rows.select(lake.names)
        assert [(f.name, f.type) for f in lake] == [
            (n, events.field(n).type) for n in projected.column_names
        ]
        for field in lake:
            if not field.nullable:
                assert projected[field.name].null_count == 0, (table, field.name)


def test_distances_have_the_lake_schema(curated: Path, day):
    (partition,) = [p.name for p in (curated / "vehicle_period_distance").glob("start_day=*")]
    lake = _lake_schema(curated, "vehicle_period_distance", partition)
    assert _fields(d2d.distances(day).schema) == _fields(lake)


def _rows_with_metres_bits(table: pa.Table) -> list[tuple]:
    """Rows sorted by (period, vehicle), ``metres`` as its IEEE-754 bits: equality to the bit."""
    table = table.select(["operating_period_id", "vehicle_id", "fixes", "first_at", "last_at",
                          "metres"])  # fmt: skip
    rows = [tuple(r.values()) for r in table.to_pylist()]
    return sorted((*r[:5], struct.unpack("<Q", struct.pack("<d", r[5]))[0]) for r in rows)


def test_distances_equal_the_lake_and_warehouse_to_the_bit(curated: Path, day):
    # The warehouse's distances are the loader's d2d_model kernel, the same as d2d.distances;
    # the curated zone is the warehouse's rows. Every pair, every column, metres bit for bit.
    lake = pq.read_table(curated / "vehicle_period_distance", partitioning="hive")
    mine = _rows_with_metres_bits(d2d.distances(day).to_arrow())
    assert len(mine) == 144
    assert mine == _rows_with_metres_bits(lake)
