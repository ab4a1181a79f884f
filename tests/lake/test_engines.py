"""DuckDB and Apache Spark read the lake's curated zone and find what the warehouse holds.

One daily load of the bundled sample day, into a fresh database on the test PostgreSQL server
and a fresh lake folder, by the same `daily_load` binary the Rust tests build; then each engine
reads `curated/` by itself (Hive partitions, no PostgreSQL) and its row counts and per-period
average distances must equal the warehouse's.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import psycopg
import pytest
from pyspark.sql import SparkSession, functions

REPO = Path(__file__).resolve().parents[2]
DAY = "2019-06-01"


@dataclass
class Loaded:
    lake: Path
    vehicle_events: int
    period_events: int
    distance_rows: int
    averages: dict[str, float]


def _with_dbname(url: str, name: str) -> str:
    base, sep, query = url.partition("?")
    scheme, _, rest = base.partition("://")
    authority = rest.split("/", 1)[0]
    return f"{scheme}://{authority}/{name}{sep}{query}"


def _example(name: str) -> str:
    path = Path(os.environ.get("D2D_EXAMPLES", REPO / "target/debug/examples")) / name
    if not path.is_absolute():
        path = REPO / path
    if not path.exists():
        pytest.fail(f"{path} is missing: build the examples first (cargo test or cargo build)")
    return str(path)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    admin = os.environ["DATABASE_URL"]
    name = f"d2d_lake_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")  # our own [a-z0-9_] name
    url = _with_dbname(admin, name)
    lake = tmp_path_factory.mktemp("lake")
    try:
        env = {**os.environ, "DATABASE_URL": url, "D2D_OUTPUT": "json"}
        subprocess.run([_example("setup_warehouse")], env=env, check=True, cwd=REPO)
        subprocess.run(
            [
                _example("daily_load"),
                "--date",
                DAY,
                "--landing",
                "testdata/landing",
                "--lake",
                lake,
            ],
            env=env,
            check=True,
            cwd=REPO,
        )
        with psycopg.connect(url) as conn:

            def one(sql: str) -> int:
                row = conn.execute(sql).fetchone()
                assert row is not None
                return int(row[0])

            averages = {
                period: float(avg)
                for period, avg in conn.execute(
                    "SELECT operating_period_id, avg_metres"
                    " FROM bi.avg_distance_per_operating_period WHERE avg_metres IS NOT NULL"
                )
            }
            yield Loaded(
                lake=lake,
                vehicle_events=one("SELECT count(*) FROM dwh.fact_vehicle_event"),
                period_events=one("SELECT count(*) FROM dwh.fact_period_event"),
                distance_rows=one("SELECT count(*) FROM dwh.vehicle_period_distance"),
                averages=averages,
            )
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _assert_same_averages(got: dict[str, float], expected: dict[str, float]) -> None:
    assert sorted(got) == sorted(expected)
    for period, metres in expected.items():
        assert got[period] == pytest.approx(metres, rel=1e-12), period


def test_duckdb_reads_the_curated_zone(loaded: Loaded) -> None:
    curated = loaded.lake / "curated"
    con = duckdb.connect()

    def scan(table: str) -> str:
        return f"read_parquet('{curated / table}/*/*.parquet', hive_partitioning = true)"

    count, days, day_type = con.execute(
        "SELECT count(*), count(DISTINCT landing_day), any_value(typeof(landing_day))"
        f" FROM {scan('vehicle_event')}"
    ).fetchone()
    assert (count, days, day_type) == (loaded.vehicle_events, 1, "DATE")
    assert con.execute(f"SELECT count(*) FROM {scan('period_event')}").fetchone() == (
        loaded.period_events,
    )
    # Timestamps are UTC instants, as in the warehouse.
    (at_type,) = con.execute(
        f"SELECT any_value(typeof(location_at)) FROM {scan('vehicle_event')}"
    ).fetchone()
    assert at_type == "TIMESTAMP WITH TIME ZONE"
    rows = con.execute(
        "SELECT operating_period_id, avg(metres), count(*)"
        f" FROM {scan('vehicle_period_distance')} GROUP BY 1"
    ).fetchall()
    assert sum(n for _, _, n in rows) == loaded.distance_rows
    _assert_same_averages({p: a for p, a, _ in rows}, loaded.averages)
    # One landing day is one partition: a filter on it prunes by path.
    (pruned,) = con.execute(
        f"SELECT count(*) FROM {scan('vehicle_event')} WHERE landing_day = DATE '{DAY}'"
    ).fetchone()
    assert pruned == loaded.vehicle_events


def test_spark_reads_the_curated_zone(loaded: Loaded) -> None:
    spark = (
        SparkSession.builder.master("local[1]")
        .appName("d2d-lake-test")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    try:
        curated = loaded.lake / "curated"
        events = spark.read.parquet(str(curated / "vehicle_event"))
        assert events.count() == loaded.vehicle_events
        assert dict(events.dtypes)["landing_day"] == "date"
        assert dict(events.dtypes)["location_at"] == "timestamp"
        days = [str(r.landing_day) for r in events.select("landing_day").distinct().collect()]
        assert days == [DAY]
        assert spark.read.parquet(str(curated / "period_event")).count() == loaded.period_events
        distances = spark.read.parquet(str(curated / "vehicle_period_distance"))
        assert distances.count() == loaded.distance_rows
        got = {
            r.operating_period_id: r.avg_metres
            for r in distances.groupBy("operating_period_id")
            .agg(functions.avg("metres").alias("avg_metres"))
            .collect()
        }
        _assert_same_averages(got, loaded.averages)
    finally:
        spark.stop()
