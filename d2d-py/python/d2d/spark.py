"""Apache Spark reads landing and lake files with d2d's own parser.

    import d2d.spark
    d2d.spark.register(spark)
    events = spark.read.format("d2d").load("/data/landing")              # a folder, file or glob
    rejects = spark.read.format("d2d").option("table", "rejects").load("s3://landing/data/")
    events = d2d.spark.drop_duplicates(events)                            # d2d's duplicate rule

A Spark 4 Python data source (``pyspark.sql.datasource``). Each task parses its files with
the Rust parser the daily load and :func:`d2d.read_events` use, and hands Spark the Arrow
record batches of ``d2d_model::columnar``'s tables: the events (``source_key``, ``line``,
``source_time``, ``on``, ``event``, ``event_at``, ``organization_id``, ``vehicle_id``,
``lat``, ``lng``, ``location_at``, ``operating_period_id``, ``start_at``, ``finish_at``) or,
with ``table=rejects``, the refused lines (``source_key``, ``line``, ``source_time``,
``code``, ``field``, ``reason``, ``raw``), as :func:`d2d.read_events` gives them; labels are
plain strings here, as Spark has no dictionary type.

Options:

- ``table``: ``events`` (the default) or ``rejects``.
- ``splitBytes``: bytes a task reads, about (64 MiB by default). Small files are grouped up to
  it; a larger plain file is cut at line ends into pieces of about that size, whose line
  numbers are the file's (the driver reads each such file once to find the cuts). A gzip file
  (``.gz``, or gzip's magic bytes) is one piece, decompressed as the daily load does it.
- ``storageOptions``: a JSON object for fsspec, for ``s3://`` and ``s3a://`` paths (e.g.
  ``{"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}``); needs ``s3fs``.

Every valid line is an event, repeats included, whatever the cuts: the result does not depend
on ``splitBytes`` or on the number of tasks. :func:`drop_duplicates` then keeps, of equal
events, the first in landing order, as the daily load and :func:`d2d.read_events` do; so
lines = events read + rejects, and duplicates = events read - events kept.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.datasource import DataSource, DataSourceReader, InputPartition

from . import _d2d, _inputs, _tables

__all__ = ["EVENT_COLUMNS", "drop_duplicates", "register"]

SPLIT_BYTES = 64 << 20
"""Bytes a task reads by default (``splitBytes``)."""

_BLOCK = 8 << 20
_GZIP_MAGIC = b"\x1f\x8b"

EVENT_COLUMNS = [
    "on",
    "event",
    "event_at",
    "organization_id",
    "vehicle_id",
    "lat",
    "lng",
    "location_at",
    "operating_period_id",
    "start_at",
    "finish_at",
]
"""The columns that make an event what it is: two rows equal in all of them are one event."""


def register(spark: SparkSession) -> None:
    """Registers the ``d2d`` format with ``spark``."""
    spark.dataSource.register(D2dSource)


def drop_duplicates(events: DataFrame) -> DataFrame:
    """Keeps, of events equal in :data:`EVENT_COLUMNS`, the first in landing order (file
    time, files without one last, then file name, then line), as the daily load does."""
    order = Window.partitionBy(*EVENT_COLUMNS).orderBy(
        F.col("source_time").asc_nulls_last(), F.col("source_key"), F.col("line")
    )
    return (
        events.withColumn("_d2d_occurrence", F.row_number().over(order))
        .where(F.col("_d2d_occurrence") == 1)
        .drop("_d2d_occurrence")
    )


def _arrow_schema(table: str) -> pa.Schema:
    """The table's schema as the parser writes it, labels decoded to strings."""
    native = _d2d.parse_range("", b"", whole=False)
    schema = _tables.table(native[0 if table == "events" else 1]).schema
    return pa.schema([_plain(f) for f in schema])


def _plain(field: pa.Field) -> pa.Field:
    if pa.types.is_dictionary(field.type):
        return field.with_type(field.type.value_type)
    return field


_SPARK_TYPES = {
    pa.string(): T.StringType(),
    pa.int64(): T.LongType(),
    pa.float64(): T.DoubleType(),
    pa.binary(): T.BinaryType(),
    pa.timestamp("us"): T.TimestampNTZType(),
    pa.timestamp("us", tz="UTC"): T.TimestampType(),
}


def _spark_schema(schema: pa.Schema) -> T.StructType:
    return T.StructType(
        [T.StructField(f.name, _SPARK_TYPES[f.type], nullable=f.nullable) for f in schema]
    )


@dataclass(frozen=True)
class _Piece:
    """Lines of one source: all of it (``end`` None), or bytes ``[start, end)`` cut at line
    ends, after ``first_line`` lines."""

    name: str
    location: str
    start: int = 0
    end: int | None = None
    first_line: int = 0
    size: int = 0
    """Bytes to read (listed size of a whole file), for grouping pieces into tasks."""


class _Split(InputPartition):
    def __init__(self, pieces: list[_Piece]) -> None:
        super().__init__(pieces)
        self.pieces = pieces


class D2dSource(DataSource):
    """The ``d2d`` format: see the module's documentation."""

    @classmethod
    def name(cls) -> str:
        return "d2d"

    def _options(self) -> dict[str, str]:
        # Spark hands options over with their keys in lower case.
        return {k.lower(): v for k, v in self.options.items()}

    def _table(self) -> str:
        table = self._options().get("table", "events")
        if table not in ("events", "rejects"):
            raise ValueError(f"d2d: option table must be events or rejects, not {table!r}")
        return table

    def schema(self) -> T.StructType:
        return _spark_schema(_arrow_schema(self._table()))

    def reader(self, schema: T.StructType) -> DataSourceReader:
        return _Reader(self._options(), self._table())


class _Reader(DataSourceReader):
    def __init__(self, options: dict[str, str], table: str) -> None:
        """``options`` with their keys in lower case."""
        if "path" not in options:
            raise ValueError("d2d: give the files to read: spark.read.format('d2d').load(path)")
        self.path = options["path"]
        self.table = table
        self.split_bytes = int(options.get("splitbytes", SPLIT_BYTES))
        if self.split_bytes <= 0:
            raise ValueError(f"d2d: splitBytes must be positive, not {self.split_bytes}")
        self.storage_options: dict[str, Any] = json.loads(options.get("storageoptions", "{}"))

    def partitions(self) -> list[InputPartition]:
        path = self.path
        if path.startswith("s3a://"):
            path = "s3://" + path[len("s3a://") :]
        plan = _inputs.Plan(path, self.storage_options)
        pieces: list[_Piece] = []
        for descriptor, size in zip(list(plan.descriptors), plan.sizes):
            if isinstance(descriptor, str):
                name = location = descriptor
            else:
                name, location = descriptor[0], descriptor[0]
            pieces.extend(self._cut(name, location, size))
        return _pack(pieces, self.split_bytes) or [_Split([])]

    def _cut(self, name: str, location: str, size: int | None) -> list[_Piece]:
        """The file as one piece, or as pieces of about ``split_bytes`` cut at line ends."""
        whole = _Piece(name, location, size=size or 0)
        if size is None or size <= self.split_bytes or name.endswith(".gz"):
            return [whole]
        with _open(location, self.storage_options) as f:
            if f.read(2) == _GZIP_MAGIC:
                return [whole]
            f.seek(0)
            pieces: list[_Piece] = []
            start, first = 0, 0  # the piece being cut: where it starts, lines before it
            offset, lines = 0, 0  # bytes and lines before `block`
            while block := f.read(_BLOCK):
                at = start + self.split_bytes - offset
                while at < len(block) and (i := block.find(b"\n", max(at, 0))) >= 0:
                    end = offset + i + 1
                    pieces.append(_Piece(name, location, start, end, first, end - start))
                    start, first = offset + i + 1, lines + block.count(b"\n", 0, i + 1)
                    at = start + self.split_bytes - offset
                lines += block.count(b"\n")
                offset += len(block)
            if start < offset:
                pieces.append(_Piece(name, location, start, offset, first, offset - start))
            return pieces

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        assert isinstance(partition, _Split)
        schema = _arrow_schema(self.table)
        for piece in partition.pieces:
            with _open(piece.location, self.storage_options) as f:
                f.seek(piece.start)
                data = f.read() if piece.end is None else f.read(piece.end - piece.start)
            events, rejects, _lines = _d2d.parse_range(
                piece.name, data, first_line=piece.first_line, whole=piece.end is None
            )
            native = events if self.table == "events" else rejects
            yield from _tables.table(native).cast(schema).to_batches()


def _pack(pieces: list[_Piece], target: int) -> list[InputPartition]:
    """Consecutive pieces grouped up to about ``target`` bytes, in landing order."""
    splits: list[InputPartition] = []
    group: list[_Piece] = []
    size = 0
    for p in pieces:
        n = p.size
        if group and size + n > target:
            splits.append(_Split(group))
            group, size = [], 0
        group.append(p)
        size += n
    if group:
        splits.append(_Split(group))
    return splits


def _open(location: str, storage_options: dict[str, Any]) -> Any:
    if _inputs._URL.match(location) and not location.startswith("file://"):
        import fsspec  # noqa: PLC0415 -- optional: only URLs need it

        fs, path = fsspec.core.url_to_fs(location, **storage_options)
        return fs.open(path, "rb")
    return open(location.removeprefix("file://"), "rb")
