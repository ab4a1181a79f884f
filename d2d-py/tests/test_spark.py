"""Spark's ``d2d`` data source (d2d.spark) against d2d.read_events, in Spark's local mode.

On the sample day and on a built day with repeats across files and within one large file,
refused lines, a gzip file and CRLF line ends: the events (after d2d.spark.drop_duplicates)
and the rejects Spark reads equal, row for row and value for value, what read_events gives,
and do not change with the number of tasks (1, 3 and 7 pieces of the large file).
"""

from __future__ import annotations

import gzip
import json
import math
import os
import shutil
import sys
import uuid
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import period, s3_options, update

import d2d

pyspark = pytest.importorskip("pyspark", reason="d2d.spark needs pyspark (pip install pyspark)")
if shutil.which("java") is None:
    pytest.skip("Spark needs Java", allow_module_level=True)

from pyspark.sql import SparkSession  # noqa: E402

import d2d.spark  # noqa: E402 -- after the skips


@pytest.fixture(scope="module")
def spark():
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = (
        SparkSession.builder.master("local[2]")
        .appName("d2d-spark-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "4")
        .getOrCreate()
    )
    d2d.spark.register(session)
    yield session
    session.stop()


def rows(table: pa.Table, order: list[str]) -> list[tuple]:
    """The rows of ``table`` sorted by ``order``, labels as strings, NaN-free floats."""
    plain = table.cast(
        pa.schema(
            [
                f.with_type(f.type.value_type) if pa.types.is_dictionary(f.type) else f
                for f in table.schema
            ]
        )
    )
    names = plain.column_names
    listed = [tuple(r[n] for n in names) for r in plain.to_pylist()]
    keys = [names.index(o) for o in order]
    return sorted(listed, key=lambda r: tuple(r[k] for k in keys))


def read_with_spark(spark, path: Path, table: str, split_bytes: int | None = None) -> pa.Table:
    reader = spark.read.format("d2d").option("table", table)
    if split_bytes is not None:
        reader = reader.option("splitBytes", str(split_bytes))
    df = reader.load(str(path))
    if table == "events":
        df = d2d.spark.drop_duplicates(df)
    return df.toArrow()


def test_the_schema_is_read_events_with_labels_as_strings(spark, landing: Path):
    expected = d2d.read_events(landing).events.to_arrow().schema
    got = spark.read.format("d2d").load(str(landing)).schema
    assert got.fieldNames() == expected.names
    nullable = {f.name: f.nullable for f in expected}
    assert {f.name: f.nullable for f in got.fields} == nullable
    assert read_with_spark(spark, landing, "rejects").schema.names == (
        d2d.read_events(landing).rejects.to_arrow().schema.names
    )


def test_the_sample_day_equals_read_events(spark, landing: Path):
    expected = d2d.read_events(landing)
    got = read_with_spark(spark, landing, "events")
    assert got.num_rows == len(expected.events) == 35_290
    order = ["source_key", "line"]
    assert rows(got, order) == rows(expected.events.to_arrow(), order)


@pytest.fixture(scope="module")
def built_day(tmp_path_factory) -> Path:
    """A day with repeats within and across files, refused lines, CRLF, gzip, a large file."""
    root = tmp_path_factory.mktemp("spark-day") / "data"
    root.mkdir()
    fixes = [
        update(f"v{i % 7}", 52.0 + i / 1e4, 13.0 + i / 1e4, f"10:{i // 60 % 60:02}:{i % 60:02}Z")
        for i in range(3000)
    ]
    big = []
    for i, line in enumerate(fixes):
        big.append(line)
        if i % 250 == 0:
            big.append("not json")
        if i % 400 == 0:
            big.append(fixes[i // 3])  # a repeat of a line far back, in another piece
    (root / "2019-06-01-9-0-0-events.txt").write_text(
        "\n".join([period("op_1", "09:00:00Z", "11:00:00Z"), *big]) + "\n"
    )
    (root / "2019-06-01-9-0-1-events.txt").write_bytes(
        ("\r\n".join([*fixes[:50], '{"on":"vehicle"}']) + "\r\n").encode()
    )
    (root / "2019-06-01-9-0-2-events.txt.gz").write_bytes(
        gzip.compress(("\n".join([*fixes[100:200], fixes[2999], "[]"]) + "\n").encode())
    )
    return root.parent


@pytest.mark.parametrize("pieces", [1, 3, 7])
def test_a_built_day_equals_read_events_however_it_is_cut(spark, built_day: Path, pieces: int):
    expected = d2d.read_events(built_day)
    big = built_day / "data" / "2019-06-01-9-0-0-events.txt"
    split = math.ceil(big.stat().st_size / pieces)
    events = read_with_spark(spark, built_day, "events", split)
    rejects = read_with_spark(spark, built_day, "rejects", split)
    order = ["source_key", "line"]
    assert rows(events, order) == rows(expected.events.to_arrow(), order)
    assert rows(rejects, order) == rows(expected.rejects.to_arrow(), order)
    # The large file is cut in `pieces` pieces, each a task of its own.
    every = spark.read.format("d2d").option("splitBytes", str(split)).load(str(built_day))
    assert pieces <= every.rdd.getNumPartitions() <= pieces + 1
    # Lines, events, duplicates and rejects add up as in Rust.
    read = every.count()
    assert read - events.num_rows == expected.duplicates > 0
    assert read + rejects.num_rows == expected.lines


def test_an_unknown_table_is_refused_naming_the_option(spark, built_day: Path):
    with pytest.raises(Exception, match="table must be events or rejects"):
        spark.read.format("d2d").option("table", "nope").load(str(built_day)).count()


def test_s3a_objects_are_read_and_cut_like_local_files(spark, built_day: Path):
    options = s3_options()
    import s3fs  # noqa: PLC0415 -- s3_options skips the test without it

    fs = s3fs.S3FileSystem(**options)
    bucket = f"d2d-spark-{uuid.uuid4().hex[:12]}"
    fs.mkdir(bucket)
    try:
        for p in (built_day / "data").iterdir():
            fs.pipe(f"{bucket}/landing/data/{p.name}", p.read_bytes())
        big = built_day / "data" / "2019-06-01-9-0-0-events.txt"
        split = math.ceil(big.stat().st_size / 3)
        df = (
            spark.read.format("d2d")
            .option("storageOptions", json.dumps(options))
            .option("splitBytes", str(split))
            .load(f"s3a://{bucket}/landing")
        )
        assert df.rdd.getNumPartitions() >= 3
        expected = d2d.read_events(f"s3://{bucket}/landing", storage_options=options)
        got = d2d.spark.drop_duplicates(df).toArrow()
        order = ["source_key", "line"]
        assert rows(got, order) == rows(expected.events.to_arrow(), order)
        assert str(rows(got, order)[0][0]).startswith(f"s3://{bucket}/landing/data/")
    finally:
        fs.rm(bucket, recursive=True)
