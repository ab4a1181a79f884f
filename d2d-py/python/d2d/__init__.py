"""door2door fleet events for analysts, parsed by the same Rust code the d2d pipeline runs.

Every function reads ``source``: a path (``str`` or ``os.PathLike``) to an NDJSON file or to a
folder (walked recursively; files read in landing order: by the time in their
``YYYY-MM-DD-H-M-S-events.*`` names, numerically, then by path; files that are not event files,
such as a README, are skipped and reported), a glob (``"landing/**/*.txt"``), an ``s3://`` URL
(through fsspec and s3fs, when installed), NDJSON ``bytes``, a binary file object, or a list,
tuple or other iterable of these (kept in the given order). ``distances`` and ``data_check``
also take the :class:`ReadResult` of an earlier :func:`read_events`, so a notebook reads a day
once.

Lines that are not valid events are never dropped silently: they are *rejects*, reported with
source, line, a stable ``code`` and a ``reason`` naming the field. Events equal to an earlier
one (within or across sources) are kept once and counted as ``duplicates``.

Long calls release the GIL, check for Ctrl-C (and Jupyter's "interrupt kernel") several times
per 100 ms of work, and show a progress bar with ``progress=True`` when tqdm is installed.

>>> import d2d
>>> day = d2d.read_events("testdata/landing")                       # doctest: +SKIP
>>> day.events.to_pandas().groupby(["on", "event"]).size()         # doctest: +SKIP
>>> d2d.data_check(day)["rejects"]                                 # doctest: +SKIP
>>> d2d.distances(day).to_pandas().metres.describe()               # doctest: +SKIP

Errors: a path that cannot be read raises the standard ``OSError`` subclass
(``FileNotFoundError``, ...); ``parse_line`` and ``read_events(strict=True)`` raise
:class:`ParseError` (a :class:`D2dError` and a ``ValueError``) carrying ``source``, ``line``,
``reason``, ``code``, ``field`` and ``raw``. Skipped files and an empty input raise no error but
a warning (:class:`SkippedFilesWarning`, :class:`EmptyInputWarning`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Callable, Union

import pyarrow as pa

from . import _d2d, _inputs, _tables
from ._d2d import D2dError, Event, Location, ParseError, Period, parse_line

if TYPE_CHECKING:
    # Imported when a frame is made, so that `import d2d` stays fast.
    import pandas as pd
    import polars as pl

__all__ = [
    "D2dError",
    "D2dWarning",
    "EmptyInputWarning",
    "Event",
    "Location",
    "ParseError",
    "Period",
    "Profile",
    "ReadResult",
    "SkippedFilesWarning",
    "Table",
    "data_check",
    "distances",
    "parse_line",
    "read_events",
]

__version__: str = _d2d.__version__

_Input = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, Any]
#: What every function reads: a path, folder, glob or URL, NDJSON bytes, a binary file object,
#: or an iterable of these.
Source = Union[_Input, "Iterable[_Input]"]
#: ``progress=``: ``True`` for a tqdm bar, or a callable ``(bytes_done, total_bytes_or_None)``.
Progress = Union[bool, Callable[[int, Union[int, None]], object]]


class D2dWarning(UserWarning):
    """Base class of the warnings d2d gives."""


class SkippedFilesWarning(D2dWarning):
    """Files in a folder were not read because their names are not event files' names.

    Event files are landing files (``YYYY-MM-DD-H-M-S-events.<ext>``) and ``*.ndjson`` /
    ``*.jsonl``; the others (a README, a picture, a ``.bak`` copy) are listed in the result's
    ``skipped``. Name a file explicitly, or match it with a glob, to read it anyway.
    """


class EmptyInputWarning(D2dWarning):
    """The input holds no line: no file at all (an empty folder, a glob that matches nothing,
    an empty list), or only empty files."""


class Table:
    """A table of results: convert it with :meth:`to_arrow`, :meth:`to_pandas` or
    :meth:`to_polars`.

    Also exports itself through the Arrow PyCapsule interface (``__arrow_c_stream__``), so
    ``pyarrow.table(t)``, ``polars.DataFrame(t)``, ``duckdb`` and others take it directly.
    """

    __slots__ = ("_table",)

    def __init__(self, table: pa.Table) -> None:
        self._table = table

    def to_arrow(self) -> pa.Table:
        """The table as a ``pyarrow.Table`` (no copy)."""
        return self._table

    def to_pandas(self, **kwargs: Any) -> pd.DataFrame:
        """The table as a ``pandas.DataFrame``.

        Dictionary columns become ``Categorical``, timestamps ``datetime64[us, UTC]``,
        coordinates ``float64`` (``NaN`` where absent). Keyword arguments go to
        ``pyarrow.Table.to_pandas`` (e.g. ``types_mapper=pd.ArrowDtype``); ``split_blocks``
        defaults to ``True``, which saves a copy of every column.
        """
        kwargs.setdefault("split_blocks", True)
        return self._table.to_pandas(**kwargs)

    def to_polars(self) -> pl.DataFrame:
        """The table as a ``polars.DataFrame`` (needs polars: ``pip install polars``).

        Dictionary columns become ``Categorical``, timestamps ``Datetime("us", "UTC")``, raw
        rejected lines ``Binary``.
        """
        try:
            import polars as pl  # noqa: PLC0415 -- optional
        except ImportError:
            raise ImportError("Table.to_polars() needs polars (pip install polars)") from None
        frame = pl.from_arrow(self._table)
        assert isinstance(frame, pl.DataFrame)
        return frame

    @property
    def schema(self) -> pa.Schema:
        """Column names and Arrow types."""
        return self._table.schema

    @property
    def column_names(self) -> list[str]:
        """Column names, in order."""
        return list(self._table.column_names)

    @property
    def num_rows(self) -> int:
        """Number of rows."""
        return self._table.num_rows

    def __len__(self) -> int:
        return self._table.num_rows

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        """Arrow PyCapsule stream export, delegated to pyarrow."""
        return self._table.__arrow_c_stream__(requested_schema)

    def __repr__(self) -> str:
        names = ", ".join(self._table.column_names)
        return f"Table({self._table.num_rows} rows: {names})"


class ReadResult:
    """What :func:`read_events` read.

    Attributes:
        events: one row per distinct valid event, in input order (a :class:`Table`).
            Columns, named and typed as in the warehouse and the lake's curated zone (one
            schema, ``d2d_model::columnar``): ``source_key`` (dictionary: the path, URL or
            ``<bytes>`` read), ``line`` (int64), ``source_time`` (timestamp without zone: the
            time in a landing file's name, else null), ``on`` (dictionary of ``vehicle``,
            ``operating_period``), ``event`` (dictionary of ``register``, ``update``,
            ``deregister``, ``create``, ``delete``), ``event_at`` (timestamp UTC),
            ``organization_id`` (dictionary), ``vehicle_id`` (string), ``lat``, ``lng``
            (float64), ``location_at`` (timestamp UTC), ``operating_period_id`` (string),
            ``start_at``, ``finish_at`` (timestamp UTC). Fields an event does not have are
            null.
        rejects: one row per refused line, in input order (a :class:`Table`). Columns
            ``source_key`` (dictionary), ``line`` (int64), ``source_time`` (as for events),
            ``code`` (dictionary of every reject code, e.g. ``invalid_json``), ``field``
            (string, the dotted field at fault, null when the line is not even JSON),
            ``reason`` (string), ``raw`` (binary: the line verbatim, which need not be UTF-8).
        files: sources read.
        lines: non-blank lines read; always ``events + duplicates + rejects``.
        duplicates: valid lines equal to an earlier event, not in ``events``.
        skipped: files of folders that were not read, not being event files (sorted).
    """

    __slots__ = ("_summary", "duplicates", "events", "files", "lines", "rejects", "skipped")

    def __init__(
        self,
        events: Table,
        rejects: Table,
        files: int,
        lines: int,
        duplicates: int,
        *,
        skipped: list[str] | None = None,
        summary: Any = None,
    ) -> None:
        self.events = events
        self.rejects = rejects
        self.files = files
        self.lines = lines
        self.duplicates = duplicates
        self.skipped = list(skipped or [])
        self._summary = summary

    def __repr__(self) -> str:
        skipped = f", skipped={len(self.skipped)}" if self.skipped else ""
        return (
            f"ReadResult(files={self.files}, lines={self.lines}, events={len(self.events)}, "
            f"duplicates={self.duplicates}, rejects={len(self.rejects)}{skipped})"
        )


def _report(function: str, plan: _inputs.Plan, files: int, lines: int) -> None:
    """Warns about skipped files and empty input, pointing at the caller's line."""
    if plan.skipped:
        shown = ", ".join(plan.skipped[:3]) + (", ..." if len(plan.skipped) > 3 else "")
        warnings.warn(
            f"{function}: skipped {len(plan.skipped)} file(s) that are not event files "
            f"(see .skipped): {shown}",
            SkippedFilesWarning,
            stacklevel=3,
        )
    if files == 0:
        warnings.warn(
            f"{function}: no input: nothing to read (an empty folder, a glob that matches "
            "nothing, or an empty list)",
            EmptyInputWarning,
            stacklevel=3,
        )
    elif lines == 0:
        warnings.warn(
            f"{function}: the {files} source(s) read hold no line",
            EmptyInputWarning,
            stacklevel=3,
        )


def _run(function: str, progress: Progress, call: Callable[[Any], Any]) -> Any:
    callback, bar = _inputs.progress_callback(progress, function)
    try:
        return call(callback)
    finally:
        if bar is not None:
            bar.close()


def read_events(
    source: Source,
    *,
    strict: bool = False,
    progress: Progress = False,
    storage_options: dict[str, Any] | None = None,
) -> ReadResult:
    """Reads NDJSON event files, folders, globs, URLs, file objects or bytes into tables.

    Bad lines go to ``.rejects``; with ``strict=True`` the first one raises
    :class:`ParseError` instead. A path that cannot be read raises ``OSError``.
    ``progress=True`` shows a tqdm bar (a callable gets ``(bytes_done, total_or_None)``
    instead); ``storage_options`` go to fsspec for URLs (e.g.
    ``{"client_kwargs": {"endpoint_url": ...}}`` for an S3-compatible server).

    >>> r = d2d.read_events(b'{"event":"register","on":"vehicle","at":"2019-06-01T18:17:04Z",'
    ...                     b'"data":{"id":"v1"},"organization_id":"o"}\\nnot json\\n')
    >>> (len(r.events), len(r.rejects), r.lines)               # doctest: +SKIP
    (1, 1, 2)
    """
    plan = _inputs.Plan(source, storage_options)
    events, rejects, counts, summary = _run(
        "read_events",
        progress,
        lambda callback: _d2d.read_events(
            plan.descriptors, strict=strict, progress=callback, total=plan.total
        ),
    )
    _report("read_events", plan, counts["files"], counts["lines"])
    return ReadResult(
        Table(_tables.table(events)),
        Table(_tables.table(rejects)),
        files=counts["files"],
        lines=counts["lines"],
        duplicates=counts["duplicates"],
        skipped=plan.skipped,
        summary=summary,
    )


class Profile(dict):  # type: ignore[type-arg]
    """The data-check profile: a ``dict``, plus :meth:`to_pandas`.

    Keys, as in the Rust ``d2d_model::check::Profile`` (and ``data_check --json``):
    ``files, lines, events, rejects, duplicates`` (int), ``by_kind`` (kind -> count, every kind
    present), ``reject_reasons`` (code -> count), ``vehicles, periods`` (distinct ids),
    ``missing`` (optional field -> valid events lacking it), ``time_ranges`` (timestamp field ->
    ``{"min", "max"}`` as UTC ``datetime``), ``coordinate_ranges`` (``data.location.lat`` /
    ``lng`` -> ``{"min", "max"}`` floats). Fields never seen have no range.

    The attribute ``skipped`` lists the files of folders that were not read.
    """

    skipped: list[str]

    def __init__(self, *args: Any, skipped: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.skipped = list(skipped or [])

    def to_dict(self) -> dict[str, Any]:
        """A plain ``dict`` copy."""
        return dict(self)

    def to_pandas(self) -> pd.DataFrame:
        """The profile in long form, one row per number: columns ``section``, ``name``,
        ``stat``, ``value``.

        ``section`` is ``counts``, ``by_kind``, ``reject_reasons``, ``missing``,
        ``time_ranges`` or ``coordinate_ranges``; ``stat`` is ``count`` for counts and
        ``min``/``max`` for ranges; ``value`` holds ints, UTC ``Timestamp``s or floats (object
        dtype, since the sections differ in type).
        """
        import pandas as pd  # noqa: PLC0415 -- `import d2d` stays fast without pandas

        rows: list[tuple[str, str, str, Any]] = []
        for key in ("files", "lines", "events", "rejects", "duplicates", "vehicles", "periods"):
            rows.append(("counts", key, "count", self[key]))
        for section in ("by_kind", "reject_reasons", "missing"):
            rows.extend((section, name, "count", n) for name, n in self[section].items())
        for section in ("time_ranges", "coordinate_ranges"):
            for name, r in self[section].items():
                for stat in ("min", "max"):
                    v = pd.Timestamp(r[stat]) if section == "time_ranges" else r[stat]
                    rows.append((section, name, stat, v))
        frame = pd.DataFrame(rows, columns=["section", "name", "stat", "value"])
        frame["value"] = frame["value"].astype(object)
        return frame


def data_check(
    source: Source | ReadResult,
    *,
    progress: Progress = False,
    storage_options: dict[str, Any] | None = None,
) -> Profile:
    """Profiles the input exactly as the Rust data check does (``d2d_model::check::profile``).

    Returns a :class:`Profile`: a ``dict`` (see there for the keys) with ``.to_pandas()``.
    Streams: memory holds a 16-byte fingerprint per distinct event, not the events. Given the
    :class:`ReadResult` of :func:`read_events`, answers from it without reading again.
    """
    if isinstance(source, ReadResult):
        return Profile(source._summary.profile(), skipped=source.skipped)
    plan = _inputs.Plan(source, storage_options)
    profile = _run(
        "data_check",
        progress,
        lambda callback: _d2d.data_check(plan.descriptors, progress=callback, total=plan.total),
    )
    _report("data_check", plan, profile["files"], profile["lines"])
    return Profile(profile, skipped=plan.skipped)


def distances(
    source: Source | ReadResult,
    *,
    max_speed_mps: float | None = None,
    progress: Progress = False,
    storage_options: dict[str, Any] | None = None,
) -> Table:
    """Distance travelled by each vehicle during each operating period, as a :class:`Table`.

    The very rows of the Rust ``d2d_model::distance::period_distances`` (after
    ``resolve_periods`` and ``tracks``): for each non-deleted period and each vehicle with a
    fix inside ``[start_at, finish_at]``, the haversine length (Earth radius 6,371,008.8 m) of
    its de-duplicated, time-ordered fixes. Sorted by ``operating_period_id``, then
    ``vehicle_id``; the columns of the warehouse's ``dwh.vehicle_period_distance``.

    ``max_speed_mps``: drop fixes that would need a higher speed (m/s) from the last kept fix;
    ``None`` (the default) keeps every fix, since the sample feed is a sped-up replay.

    Columns: ``operating_period_id``, ``vehicle_id`` (string), ``fixes`` (int64: fixes used),
    ``first_at``, ``last_at`` (timestamp UTC), ``metres`` (float64).

    Streams: memory holds each vehicle's fixes (32 bytes each), not the events. Given the
    :class:`ReadResult` of :func:`read_events`, answers from it without reading again.
    """
    if isinstance(source, ReadResult):
        native = source._summary.distances(max_speed_mps=max_speed_mps)
        return Table(_tables.table(native))
    plan = _inputs.Plan(source, storage_options)
    native, counts = _run(
        "distances",
        progress,
        lambda callback: _d2d.distances(
            plan.descriptors, max_speed_mps=max_speed_mps, progress=callback, total=plan.total
        ),
    )
    _report("distances", plan, counts["files"], counts["lines"])
    return Table(_tables.table(native))
